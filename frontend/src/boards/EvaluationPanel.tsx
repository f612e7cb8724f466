// A board's evaluation: start or re-run it, its live progress (cancel, resume), and the board's
// details and delete.
import { Link, useNavigate } from "react-router";
import { api, unwrap } from "../api/client";
import { useAction } from "../api/useAction";
import { JobActions } from "../jobs/JobActions";
import { JobProgressBar } from "../jobs/JobProgressBar";
import { isActive } from "../jobs/model";
import type { Progress } from "../jobs/progress";
import { KeyValueTable, formatDate } from "../library/shared";
import { Button, Empty, Notice, Panel } from "../ui/components";
import type { Board } from "./BoardPage";
import type { Evaluation } from "./evaluation";

/** Start (or re-run) the evaluation; its live progress; the board's details and delete. */
export function EvaluationPanel({
  board,
  evaluation,
  progress,
  onChanged,
}: {
  board: Board;
  evaluation: Evaluation | null;
  progress: Progress | null;
  onChanged: () => void;
}) {
  const navigate = useNavigate();
  const action = useAction();
  const removal = useAction();
  const latest = board.latest_job;
  const running = progress !== null && isActive(progress.status);
  const evaluatedIds = evaluation?.probes.map((p) => p.id) ?? [];
  const stale =
    evaluation !== null &&
    (evaluatedIds.length !== board.probe_ids.length || board.probe_ids.some((id) => !evaluatedIds.includes(id)));
  return (
    <Panel
      title="Evaluation"
      actions={
        <Button
          variant="primary"
          disabled={action.busy || running || board.probe_ids.length === 0}
          onClick={() =>
            void action.run(async () => {
              await unwrap(api.POST("/api/boards/{board_id}/evaluate", { params: { path: { board_id: board.id } } }));
              onChanged();
            })
          }
        >
          {evaluation ? "Re-run evaluation" : "Evaluate"}
        </Button>
      }
    >
      <Notice>{action.error}</Notice>
      {latest && progress ? (
        <div data-testid="evaluation-progress" data-status={latest.status}>
          <JobProgressBar progress={progress} label="Progress of the evaluation" />
          {progress.error ? <p className="job-error">{progress.error}</p> : null}
          <JobActions job={latest} status={progress.status} onChanged={onChanged} />
        </div>
      ) : (
        <Empty>Not evaluated yet.</Empty>
      )}
      {stale ? <Notice tone="info">The probes changed since the last evaluation: re-run it to compare them all.</Notice> : null}
      {evaluation && board.evaluation ? (
        <p className="meta">
          Results of the evaluation finished {formatDate(board.evaluation.finished_at)} (<Link to={`/jobs/${board.evaluation.id}`}>job #{board.evaluation.id}</Link>).
        </p>
      ) : null}
      <KeyValueTable
        label="Board details"
        rows={[
          ["Evaluation set", <Link to={`/datasets/${board.dataset_id}`}>{board.dataset_name}</Link>],
          ["Positive label", board.positive_label],
          ["Pooling", board.pooling === "last" ? "last token" : "mean over tokens"],
          ["Description", board.description || "—"],
          ["Created", formatDate(board.created_at)],
        ]}
      />
      <Notice>{removal.error}</Notice>
      <Button
        className="section-title"
        variant="danger"
        small
        disabled={removal.busy}
        onClick={() =>
          void removal.run(async () => {
            if (!window.confirm(`Delete the board “${board.name}” and its evaluations? Its probes and dataset stay.`)) return;
            await unwrap(api.DELETE("/api/boards/{board_id}", { params: { path: { board_id: board.id } } }));
            void navigate("/boards");
          })
        }
      >
        Delete board
      </Button>
    </Panel>
  );
}
