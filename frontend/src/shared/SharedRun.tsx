// A shared run, read-only: the conversation up to its prompt, the answer, and everything that
// made it (the model, the interventions, the sampling, the overrides and the live adjustments).
import type { Schemas } from "../api/client";
import { KIND_LABEL, REASONS } from "../chat/RunCard";
import { formatDate } from "../library/shared";
import { Badge, Empty, PageHeader, Panel, statusTone } from "../ui/components";
import { describeAdjustment, describeSpec, samplingRows } from "./runFacts";

export type SharedRunData = Schemas["SharedRunOut"];

// The chat's wording, but for a visitor (not the run's user).
const FINISH_REASONS: Record<string, string> = { ...REASONS, stopped: "stopped by its user" };

export function SharedRun({ run }: { run: SharedRunData }) {
  return (
    <>
      <PageHeader title={`Shared run ${run.id}`}>
        <Badge tone={statusTone(run.status)}>{run.status}</Badge>
      </PageHeader>
      <p className="meta">
        Model <strong data-testid="shared-model">{run.deployment}</strong> · {KIND_LABEL[run.kind] ?? run.kind} · finished{" "}
        {formatDate(run.finished_at)} · read-only
      </p>
      <Panel title="Conversation">
        {run.messages.length ? (
          <ol className="list" aria-label="Messages">
            {run.messages.map((message, i) => (
              <li key={i}>
                <div className="meta">{message.role}</div>
                <p style={{ whiteSpace: "pre-wrap", margin: "0 0 8px" }}>{message.content}</p>
              </li>
            ))}
          </ol>
        ) : (
          <Empty>No messages.</Empty>
        )}
      </Panel>
      <Panel title="Answer">
        <div className="answer" data-testid="shared-answer">{run.text}</div>
        <p className="meta" data-testid="finish-reason">
          Finish reason: {run.finish_reason ? (FINISH_REASONS[run.finish_reason] ?? run.finish_reason) : "—"}
        </p>
      </Panel>
      <div className="grid-2">
        <Panel title="Interventions">
          {run.interventions.length ? (
            <ol className="adjust-log" aria-label="Interventions">
              {run.interventions.map((item, i) => (
                <li key={i}>{describeSpec(item, i)}</li>
              ))}
            </ol>
          ) : (
            <Empty>None: the model was not steered.</Empty>
          )}
        </Panel>
        <Panel title="Settings">
          <table className="kv">
            <caption className="meta" style={{ textAlign: "left" }}>Sampling</caption>
            <tbody>
              {samplingRows(run.sampling).map(([label, value]) => (
                <tr key={label}>
                  <th scope="row">{label}</th>
                  <td>{value}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h3 className="section-title">Overrides</h3>
          <AdjustmentList items={run.overrides} label="Overrides" empty="None: the recipe's settings." />
          <h3 className="section-title">Adjustment log</h3>
          <AdjustmentList items={run.adjustments} label="Adjustment log" empty="No live adjustments." />
        </Panel>
      </div>
    </>
  );
}

function AdjustmentList({ items, label, empty }: { items: Record<string, unknown>[]; label: string; empty: string }) {
  if (!items.length) return <Empty>{empty}</Empty>;
  return (
    <ol className="adjust-log" aria-label={label}>
      {items.map((item, i) => (
        <li key={i}>{describeAdjustment(item)}</li>
      ))}
    </ol>
  );
}
