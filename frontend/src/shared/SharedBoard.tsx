// A shared board, read-only: what it evaluates and, once evaluated, its results (the same
// metrics table, agreement matrix and ROC curves as the board's own page; no per-token traces).
import type { Schemas } from "../api/client";
import { EvaluationResults } from "../boards/BoardPage";
import { evaluationOf } from "../boards/evaluation";
import { formatDate } from "../library/shared";
import { Empty, PageHeader, Panel } from "../ui/components";

export function SharedBoard({ board }: { board: Schemas["BoardDetailOut"] }) {
  const evaluation = evaluationOf(board.evaluation);
  const rows: [string, string][] = [
    ["Description", board.description || "—"],
    ["Evaluation set", board.dataset_name],
    ["Positive label", board.positive_label],
    ["Pooling", board.pooling === "last" ? "last token" : "mean over tokens"],
    ["Probes", String(board.probe_ids.length)],
  ];
  return (
    <>
      <PageHeader title={board.name} />
      <p className="meta">
        A board by {board.owner} · model <strong>{board.deployment}</strong> · read-only
      </p>
      <Panel title="About the board">
        <table className="kv">
          <caption className="sr-only">Board details</caption>
          <tbody>
            {rows.map(([label, value]) => (
              <tr key={label}>
                <th scope="row">{label}</th>
                <td>{value}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {evaluation && board.evaluation ? (
          <p className="meta">Results of the evaluation finished {formatDate(board.evaluation.finished_at)}.</p>
        ) : null}
      </Panel>
      {evaluation ? <EvaluationResults evaluation={evaluation} /> : <Empty>Not evaluated yet.</Empty>}
    </>
  );
}
