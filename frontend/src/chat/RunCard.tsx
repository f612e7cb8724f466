// One run of a turn: its streamed tokens as a probe-score heatmap (hover or focus a token for its
// score and the logit lens), a score chart, the adjustment log, Stop and Replay; Share and Export
// once finished.
import { useMemo, useState } from "react";
import { Badge, Button, statusTone } from "../ui/components";
import { RunShare, SHAREABLE } from "./RunShare";
import { ScoreChart } from "./ScoreChart";
import { describeIntervention, heatColour, indicesOf } from "./heat";
import type { RunState } from "./stream";
import { isActive } from "./stream";

export const REASONS: Record<string, string> = {
  length: "reached the token limit",
  stop: "stop token",
  stopped: "stopped by you",
};

export const KIND_LABEL: Record<string, string> = { chat: "answer", steered: "steered", baseline: "baseline (unsteered)", replay: "replay" };

export function RunCard({
  run,
  probe,
  onStop,
  onReplay,
}: {
  run: RunState;
  probe: number | null;
  onStop: (run: number) => void;
  onReplay: (run: number) => void;
}) {
  const [selected, setSelected] = useState<number | null>(null);
  const interventions = run.summary.interventions;
  const probeItem = probe !== null ? interventions[probe] : undefined;
  const hasProbe = probeItem?.op === "probe";
  const key = String(probe);

  const scores = useMemo(
    () => run.tokens.map((_, i) => (hasProbe ? (run.reads[i]?.probes[key] ?? null) : null)),
    [run.tokens, run.reads, hasProbe, key],
  );
  const maxAbs = scores.reduce<number>((m, s) => (s === null ? m : Math.max(m, Math.abs(s))), 0);
  const lenses = indicesOf(interventions, "logit_lens");
  const detail = selected !== null ? run.reads[selected] : undefined;
  const label = probeItem && probe !== null ? describeIntervention(probeItem, probe) : "";

  return (
    <article className="run" aria-label={`Run ${run.id}`} data-run={run.id} data-status={run.status}>
      <div className="run-head">
        <h3>
          Run {run.id} · {KIND_LABEL[run.kind] ?? run.kind}
        </h3>
        <Badge tone={statusTone(run.status)}>{run.status}</Badge>
        {run.detail ? <span className="meta">{REASONS[run.detail] ?? run.detail}</span> : null}
        <span style={{ marginLeft: "auto" }} />
        {isActive(run) ? (
          <Button small variant="danger" onClick={() => { onStop(run.id); }} aria-label={`Stop run ${run.id}`}>
            Stop
          </Button>
        ) : (
          <Button small onClick={() => { onReplay(run.id); }} aria-label={`Replay run ${run.id}`}>
            Replay
          </Button>
        )}
      </div>
      <div className="answer" data-testid="answer">
        {run.tokens.length === 0 && run.storedText ? run.storedText : null}
        {run.tokens.map((text, i) => (
          <span
            key={i}
            className={`tok${selected === i ? " selected" : ""}`}
            data-index={i}
            data-score={scores[i] ?? ""}
            style={{ backgroundColor: heatColour(scores[i] ?? undefined, maxAbs) }}
            // A token is focusable so the keyboard reaches its score and logit lens too.
            tabIndex={0}
            role="button"
            aria-label={`token ${i}: ${JSON.stringify(text)}${scores[i] !== null && scores[i] !== undefined ? `, score ${scores[i].toFixed(3)}` : ""}`}
            onMouseEnter={() => { setSelected(i); }}
            onFocus={() => { setSelected(i); }}
            onClick={() => { setSelected(i); }}
            onKeyDown={(event) => {
              if (event.key === "Escape") setSelected(null);
            }}
          >
            {text}
          </span>
        ))}
        {isActive(run) ? <span className="meta"> ▍</span> : null}
      </div>
      {run.error ? <p className="field-error" role="alert">{run.error}</p> : null}
      {selected !== null && run.tokens[selected] !== undefined ? (
        <div className="token-detail" aria-live="polite" data-testid="token-detail">
          <strong>
            Token {selected}: <code>{JSON.stringify(run.tokens[selected])}</code>
          </strong>
          {hasProbe ? (
            <div>
              {label}: <code>{scores[selected] !== null && scores[selected] !== undefined ? scores[selected].toFixed(4) : "no score"}</code>
            </div>
          ) : null}
          {lenses.map((index) => {
            const lens = detail?.lens[String(index)];
            const item = interventions[index];
            if (!lens || !item) return null;
            return (
              <table key={index} aria-label={`Logit lens ${describeIntervention(item, index)}`}>
                <caption className="meta" style={{ textAlign: "left" }}>
                  Logit lens {describeIntervention(item, index)}
                </caption>
                <tbody>
                  {lens.tokens.map((token, k) => (
                    <tr key={k}>
                      <td><code>{JSON.stringify(token)}</code></td>
                      <td>{(lens.probs[k] ?? 0).toFixed(3)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            );
          })}
        </div>
      ) : null}
      {hasProbe && run.tokens.length > 1 ? <ScoreChart scores={scores} label={label} /> : null}
      {run.adjustments.length ? (
        <ol className="adjust-log" aria-label={`Adjustments of run ${run.id}`}>
          {run.adjustments.map((a, i) => (
            <li key={i}>
              from token {a.step}: #{a.index}
              {a.scale !== undefined ? ` scale ${a.scale.toFixed(2)}` : ""}
              {a.enabled !== undefined ? (a.enabled ? " enabled" : " disabled") : ""}
            </li>
          ))}
        </ol>
      ) : null}
      {SHAREABLE.has(run.status) ? <RunShare runId={run.id} /> : null}
    </article>
  );
}
