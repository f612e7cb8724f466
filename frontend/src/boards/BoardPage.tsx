// One board: its probes (add, remove), its evaluation (start or re-run, with live progress) and
// the results: the sortable metrics table, the agreement matrix, the ROC curves and per-token
// traces of any example.
import { Link, useParams } from "react-router";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { isActive } from "../jobs/model";
import { progressOf } from "../jobs/progress";
import { useJobProgress } from "../jobs/useJobProgress";
import { VisibilityBadge } from "../library/shared";
import { ShareButton, ShareResult, useShare } from "../shared/ShareLink";
import { Empty, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { AgreementMatrix } from "./AgreementMatrix";
import { BoardProbesPanel } from "./BoardProbesPanel";
import { EvaluationPanel } from "./EvaluationPanel";
import type { Evaluation } from "./evaluation";
import { evaluationOf } from "./evaluation";
import { MetricsTable } from "./MetricsTable";
import { RocChart } from "./RocChart";
import { TraceView } from "./TraceView";

export type Board = Schemas["BoardDetailOut"];

export function BoardPage() {
  const { id } = useParams();
  const boardId = Number(id);
  const board = useResource(() => unwrap(api.GET("/api/boards/{board_id}", { params: { path: { board_id: boardId } } })), String(boardId));
  const latest = board.data?.latest_job ?? null;
  const live = useJobProgress(latest && isActive(latest.status) ? [latest.id] : [], board.reload);
  // Editors may share; the API answers anyone else with its reason, shown below the header.
  const share = useShare(() => unwrap(api.POST("/api/boards/{board_id}/share", { params: { path: { board_id: boardId } } })));
  if (!board.data) return board.error ? <Notice>{board.error}</Notice> : <Loading what="the board" />;
  const b = board.data;
  const evaluation = evaluationOf(b.evaluation);
  return (
    <>
      <PageHeader title={b.name}>
        <VisibilityBadge visibility={b.visibility} />
        <span className="meta">
          by {b.owner} · {b.deployment} · <Link to="/boards">all boards</Link>
        </span>
        <ShareButton share={share} label="Share the board" />
      </PageHeader>
      <ShareResult share={share} what="this board" />
      <Notice>{board.error}</Notice>
      <Notice>{live.progress.error}</Notice>
      <div className="grid-2">
        <BoardProbesPanel board={b} evaluation={evaluation} onChanged={board.reload} />
        <EvaluationPanel
          board={b}
          evaluation={evaluation}
          progress={latest ? progressOf(latest, live.progress.jobs[latest.id]) : null}
          onChanged={() => {
            if (latest) live.forget(latest.id);
            board.reload();
          }}
        />
      </div>
      {evaluation ? <Results board={b} evaluation={evaluation} /> : null}
    </>
  );
}

function Results({ board, evaluation }: { board: Board; evaluation: Evaluation }) {
  return (
    <>
      <EvaluationResults evaluation={evaluation} />
      <Panel title="Per-token traces">
        {evaluation.n > 0 ? (
          <TraceView boardId={board.id} count={evaluation.n} probes={evaluation.probes} version={board.evaluation?.id ?? 0} />
        ) : (
          <Empty>The evaluation set is empty.</Empty>
        )}
      </Panel>
    </>
  );
}

/** The metrics table, the agreement matrix and the ROC curves (a shared board shows them too). */
export function EvaluationResults({ evaluation }: { evaluation: Evaluation }) {
  return (
    <>
      <Panel title="Metrics">
        <p className="meta">
          {evaluation.n} examples ({evaluation.positives} labelled “{evaluation.positive_label}”), {evaluation.pooling}-token pooling;
          95% bootstrap intervals below each value.
        </p>
        <MetricsTable probes={evaluation.probes} />
      </Panel>
      <div className="grid-2">
        <Panel title="Agreement">
          <AgreementMatrix evaluation={evaluation} />
        </Panel>
        <Panel title="ROC curves">
          <RocChart probes={evaluation.probes} />
        </Panel>
      </div>
    </>
  );
}
