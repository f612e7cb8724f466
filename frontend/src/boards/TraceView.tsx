// One evaluation example, token by token: its tokens tinted by a chosen probe's score, and every
// probe's score per token in one chart.
import { useMemo, useState } from "react";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { heatColour } from "../chat/heat";
import { Button, Field, Loading, Notice } from "../ui/components";
import { LineChart } from "../ui/LineChart";
import type { EvaluatedProbe } from "./evaluation";

type Trace = Schemas["TraceOut"];

export function TraceView({ boardId, count, probes, version }: { boardId: number; count: number; probes: readonly EvaluatedProbe[]; version: number }) {
  const [text, setText] = useState("0");
  const parsed = Number(text);
  const valid = text.trim() !== "" && Number.isInteger(parsed) && parsed >= 0 && parsed < count;
  const [example, setExample] = useState(0);
  const shown = valid ? parsed : example;
  const trace = useResource(
    () => unwrap(api.GET("/api/boards/{board_id}/traces/{example}", { params: { path: { board_id: boardId, example: shown } } })),
    `${boardId}:${shown}:${version}`,
  );
  const go = (next: number) => {
    const clamped = Math.min(count - 1, Math.max(0, next));
    setExample(clamped);
    setText(String(clamped));
  };

  return (
    <div>
      <div className="form-row trace-controls">
        <Field label="Example" hint={`0 to ${count - 1}`} error={valid ? undefined : `Enter a whole number from 0 to ${count - 1}.`}>
          {(id, describedBy) => (
            <input
              id={id}
              type="number"
              min={0}
              max={count - 1}
              step={1}
              aria-describedby={describedBy}
              value={text}
              onChange={(e) => {
                setText(e.target.value);
                const value = Number(e.target.value);
                if (e.target.value.trim() !== "" && Number.isInteger(value) && value >= 0 && value < count) setExample(value);
              }}
            />
          )}
        </Field>
        <div className="trace-steps">
          <Button small disabled={shown <= 0} onClick={() => { go(shown - 1); }}>Previous</Button>
          <Button small disabled={shown >= count - 1} onClick={() => { go(shown + 1); }}>Next</Button>
        </div>
      </div>
      <Notice>{trace.error}</Notice>
      {trace.loading && !trace.data ? <Loading what="the trace" /> : null}
      {trace.data ? <TraceBody trace={trace.data} probes={probes} /> : null}
    </div>
  );
}

function TraceBody({ trace, probes }: { trace: Trace; probes: readonly EvaluatedProbe[] }) {
  const [chosen, setChosen] = useState(0);
  const column = Math.min(chosen, Math.max(0, trace.probes.length - 1));
  const scores = trace.scores[column] ?? [];
  const maxAbs = Math.max(0, ...scores.map((s) => Math.abs(s)));
  const nameOf = (publicId: string) => probes.find((p) => p.public_id === publicId)?.name ?? publicId;
  const x = useMemo(() => trace.tokens.map((_, i) => i), [trace.tokens]);
  const series = useMemo(
    () => trace.probes.map((p, i) => ({ label: `${nameOf(p)} (${p})`, values: trace.scores[i] ?? [] })),
    // eslint-disable-next-line react-hooks/exhaustive-deps -- names only label the lines
    [trace],
  );
  return (
    <div data-testid="trace" data-example={trace.example}>
      <p>
        Example {trace.example} · label <strong>{trace.label}</strong> · {trace.tokens.length} tokens
      </p>
      <Field label="Colour tokens by" inline>
        {(id) => (
          <select id={id} value={column} onChange={(e) => { setChosen(Number(e.target.value)); }}>
            {trace.probes.map((p, i) => (
              <option key={p} value={i}>{nameOf(p)} ({p})</option>
            ))}
          </select>
        )}
      </Field>
      <div className="legend" style={{ margin: "8px 0" }}>
        <span>{(-maxAbs).toFixed(2)}</span>
        <span className="scale" aria-hidden="true" />
        <span>{maxAbs.toFixed(2)}</span>
      </div>
      <p className="trace" data-testid="trace-tokens">
        {trace.tokens.map((token, i) => {
          const score = scores[i];
          return (
            <span
              key={i}
              className="tok"
              data-index={i}
              data-score={score}
              title={`token ${i}: ${score === undefined ? "—" : score.toFixed(3)}`}
              style={{ background: heatColour(score, maxAbs) }}
            >
              {token}
            </span>
          );
        })}
      </p>
      <LineChart x={x} series={series} label={`Every probe's score per token of example ${trace.example}`} xLabel="token" yLabel="score" height={200} points integerX />
    </div>
  );
}
