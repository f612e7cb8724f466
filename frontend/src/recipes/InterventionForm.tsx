// One intervention of a recipe as a form: the op, where it acts (layer, point, positions), what it
// uses (a vector or probe picked from the library, filtered to the recipe's model), its strength,
// and an optional probe gate. Messages (the editor's own checks, then the server's) appear next to
// the field they name. A field that does not hold a valid value keeps the typed text in the draft
// (`typedNumber`, `typedIntList`), so what is saved is always what was typed.
import { useState } from "react";
import type { Gate } from "../generated/recipe";
import type { Intervention } from "../chat/protocol";
import { Button, Field } from "../ui/components";
import type { Op, PositionsKind } from "./model";
import {
  NAMED_POSITIONS,
  OPS,
  POINTS,
  WRITES,
  defaultGate,
  defaultIntervention,
  positionsKind,
  positionsOf,
  typedIntList,
  typedNumber,
} from "./model";

export interface Choice {
  id: string; // the public id a recipe refers to (vec_12, prb_3)
  label: string;
  layer?: number; // a probe's layer
}

type Loose = Record<string, unknown>;

const text = (value: unknown, fallback: string): string => (typeof value === "string" ? value : fallback);

export function InterventionForm({
  index,
  value,
  numLayers,
  vectors,
  probes,
  errors,
  onChange,
  onRemove,
  onMove,
}: {
  index: number;
  value: Intervention;
  numLayers: number;
  vectors: Choice[];
  probes: Choice[];
  errors: Record<string, string>;
  onChange: (next: Intervention) => void;
  onRemove: () => void;
  onMove: (delta: -1 | 1) => void;
}) {
  const op = (value.op ?? "steer");
  const item = value as unknown as Loose;
  const set = (key: string, v: unknown) => {
    // An absent optional field (a removed gate) is left out, not sent as undefined.
    const next = Object.fromEntries(Object.entries({ ...item, [key]: v }).filter(([, x]) => x !== undefined));
    onChange(next as unknown as Intervention);
  };
  const err = (field: string) => errors[field];
  const title = `Intervention ${index + 1}`;
  const directions: Choice[] = [...vectors, ...probes];

  const refPicker = (key: string, label: string, choices: Choice[], hint?: string) => (
    <Field label={label} error={err(key)} hint={hint}>
      {(id, describedBy) => (
        <select
          id={id}
          aria-describedby={describedBy}
          value={text(item[key], "")}
          onChange={(e) => {
            const choice = choices.find((c) => c.id === e.target.value);
            // A probe read sits where its probe was trained, unless moved afterwards.
            if (op === "probe" && key === "probe" && choice?.layer !== undefined) {
              onChange({ ...item, probe: e.target.value, layer: choice.layer });
            } else {
              set(key, e.target.value);
            }
          }}
        >
          <option value="">Choose…</option>
          {choices.map((c) => (
            <option key={c.id} value={c.id}>
              {c.label} ({c.id})
            </option>
          ))}
        </select>
      )}
    </Field>
  );

  const kind = positionsKind(item.positions);
  const gate = item.when as Gate | null | undefined;

  return (
    <fieldset className="intervention" aria-label={title} data-testid="intervention">
      <div className="intervention-head">
        <h3>{title}</h3>
        <div className="btn-group">
          <Button small variant="ghost" onClick={() => { onMove(-1); }} aria-label={`Move intervention ${index + 1} up`}>↑</Button>
          <Button small variant="ghost" onClick={() => { onMove(1); }} aria-label={`Move intervention ${index + 1} down`}>↓</Button>
          <Button small variant="danger" onClick={onRemove} aria-label={`Remove intervention ${index + 1}`}>Remove</Button>
        </div>
      </div>
      {err("") ? <p className="field-error">{err("")}</p> : null}
      <div className="form-row">
        <Field label="Operation" hint={OPS.find((o) => o.op === op)?.help}>
          {(id, describedBy) => (
            <select
              id={id}
              aria-describedby={describedBy}
              value={op}
              onChange={(e) => {
                const nextOp = e.target.value as Op;
                const ref = nextOp === "probe" ? (probes[0]?.id ?? "") : (vectors[0]?.id ?? "");
                // The layer stays as typed (even while it is not a valid one yet).
                onChange(defaultIntervention(nextOp, (item.layer ?? 0) as number, ref));
              }}
            >
              {OPS.map((o) => (
                <option key={o.op} value={o.op}>{o.label}</option>
              ))}
            </select>
          )}
        </Field>
        <NumberField
          label="Layer"
          value={item.layer}
          integer
          error={err("layer")}
          hint={`0 to ${String(numLayers - 1)}; negative counts from the end`}
          onChange={(v) => { set("layer", v); }}
        />
        <Field label="Point" error={err("point")}>
          {(id) => (
            <select id={id} value={text(item.point, "resid_post")} onChange={(e) => { set("point", e.target.value); }}>
              {POINTS.map((p) => <option key={p} value={p}>{p}</option>)}
            </select>
          )}
        </Field>
        <Field label="Positions" error={err("positions")}>
          {(id) => (
            <select id={id} value={kind} onChange={(e) => { set("positions", positionsOf(e.target.value as PositionsKind)); }}>
              {NAMED_POSITIONS.map((p) => <option key={p} value={p}>{p.replace("_", " ")}</option>)}
              <option value="slice">a slice (start:stop:step)</option>
              <option value="indices">listed positions</option>
            </select>
          )}
        </Field>
      </div>
      {kind === "slice" ? (
        <SliceFields value={item.positions as Loose} errors={errors} onChange={(v) => { set("positions", v); }} />
      ) : null}
      {kind === "indices" ? (
        <IntListField
          label="Position indices"
          hint="Comma-separated; negatives count from the end of the prompt."
          value={(item.positions as { indices: unknown }).indices}
          error={err("positions") ?? err("positions.indices")}
          onChange={(indices) => { set("positions", { indices }); }}
        />
      ) : null}

      <div className="form-row">
        {op === "steer" ? refPicker("vector", "Steering vector", vectors) : null}
        {op === "steer" ? (
          <Field label="Normalize" error={err("normalize")} hint="unit: scale is the added norm; resid_norm: relative to the residual">
            {(id, describedBy) => (
              <select id={id} aria-describedby={describedBy} value={text(item.normalize, "none")} onChange={(e) => { set("normalize", e.target.value); }}>
                <option value="none">none</option>
                <option value="unit">unit</option>
                <option value="resid_norm">resid_norm</option>
              </select>
            )}
          </Field>
        ) : null}
        {op === "project_out" || op === "clamp" ? refPicker("direction", "Direction (a vector or probe)", directions) : null}
        {op === "clamp" ? (
          <NumberField label="Value" value={item.value} error={err("value")} onChange={(v) => { set("value", v); }} />
        ) : null}
        {op === "probe" ? refPicker("probe", "Probe", probes) : null}
        {op === "probe" ? (
          <Field label="Name" error={err("name")} hint="Shown in the chat's heatmap picker.">
            {(id, describedBy) => (
              <input id={id} type="text" aria-describedby={describedBy} maxLength={100} value={text(item.name, "")}
                onChange={(e) => { set("name", e.target.value || undefined); }} />
            )}
          </Field>
        ) : null}
        {op === "logit_lens" ? (
          <NumberField label="Top k" value={item.k} integer error={err("k")} hint="1 to 20" onChange={(v) => { set("k", v); }} />
        ) : null}
        {op === "ablate" ? (
          <>
            <Field label="Dimensions" error={item.dims === "all" ? err("dims") : undefined}>
              {(id) => (
                <select id={id} value={item.dims === "all" || item.dims === undefined ? "all" : "list"}
                  onChange={(e) => { set("dims", e.target.value === "all" ? "all" : ""); }}>
                  <option value="all">all</option>
                  <option value="list">listed dimensions</option>
                </select>
              )}
            </Field>
            <Field label="Mode" error={err("mode")}>
              {(id) => (
                <select id={id} value={text(item.mode, "zero")} onChange={(e) => {
                  onChange({ ...item, mode: e.target.value, mean: e.target.value === "mean" ? (vectors[0]?.id ?? "") : null } as Intervention);
                }}>
                  <option value="zero">zero</option>
                  <option value="mean">mean (from a vector)</option>
                </select>
              )}
            </Field>
            {item.mode === "mean" ? refPicker("mean", "Mean values (a vector)", vectors) : null}
          </>
        ) : null}
        {op === "patch" ? (
          <Field label="Align" error={err("align")}>
            {(id) => (
              <select id={id} value={text(item.align, "start")} onChange={(e) => { set("align", e.target.value); }}>
                <option value="start">start</option>
                <option value="end">end</option>
              </select>
            )}
          </Field>
        ) : null}
      </div>
      {op === "ablate" && item.dims !== "all" && item.dims !== undefined ? (
        <IntListField label="Dimension indices" hint="Comma-separated, from 0." value={item.dims} error={err("dims")} onChange={(dims) => { set("dims", dims); }} />
      ) : null}
      {op === "patch" ? (
        <Field label="Source prompt" error={err("source") ?? err("source.text")} hint="Its activations (run without interventions) are patched in.">
          {(id, describedBy) => (
            <textarea id={id} rows={2} aria-describedby={describedBy}
              value={(item.source as { text?: string } | undefined)?.text ?? ""}
              onChange={(e) => { set("source", { text: e.target.value }); }} />
          )}
        </Field>
      ) : null}

      {WRITES.has(op) ? (
        <>
          <div className="form-row">
            <NumberField label="Scale" value={item.scale} error={err("scale")} onChange={(v) => { set("scale", v); }} />
            <Field label="Enabled" inline>
              {(id) => (
                <input id={id} type="checkbox" checked={item.enabled !== false} onChange={(e) => { set("enabled", e.target.checked); }} />
              )}
            </Field>
            <Field label="Only where a probe fires" inline>
              {(id) => (
                <input id={id} type="checkbox" checked={Boolean(gate)}
                  onChange={(e) => { set("when", e.target.checked ? defaultGate((item.layer ?? 0) as number, probes[0]?.id ?? "") : undefined); }} />
              )}
            </Field>
          </div>
          {gate ? <GateFields gate={gate} probes={probes} numLayers={numLayers} errors={errors} onChange={(g) => { set("when", g); }} /> : null}
        </>
      ) : null}
    </fieldset>
  );
}

/** The text a field shows for a draft value: a number as written, typed text as typed. */
const shownText = (value: unknown): string => {
  if (Array.isArray(value)) return value.join(", ");
  return typeof value === "number" || typeof value === "string" ? String(value) : "";
};

/**
 * A field's text while it is typed: a new value from outside (another field, a loaded version)
 * replaces it, while what this field reported keeps the text as typed ("1." stays "1.").
 */
function useTypedText(value: unknown): [string, (text: string, reported: unknown) => void] {
  const [text, setText] = useState(shownText(value));
  const [seen, setSeen] = useState(() => JSON.stringify(value ?? null));
  const current = JSON.stringify(value ?? null);
  if (current !== seen) {
    setSeen(current);
    setText(shownText(value));
  }
  return [text, (typed, reported) => { setText(typed); setSeen(JSON.stringify(reported ?? null)); }];
}

/** A number, typed as text: reports the number, or the text when it is not one (an error then). */
function NumberField({
  label, value, onChange, error, hint, integer = false,
}: {
  label: string; value: unknown; onChange: (v: number | string) => void; error?: string | undefined; hint?: string;
  integer?: boolean;
}) {
  const [text, setText] = useTypedText(value);
  return (
    <Field label={label} error={error} hint={hint}>
      {(id, describedBy) => (
        <input id={id} type="text" inputMode={integer ? "numeric" : "decimal"} autoComplete="off"
          aria-describedby={describedBy} aria-invalid={error ? true : undefined} value={text}
          onChange={(e) => {
            const typed = typedNumber(e.target.value, integer);
            setText(e.target.value, typed);
            onChange(typed);
          }} />
      )}
    </Field>
  );
}

/** Whole numbers typed as "1, 2 3": reports the list, or the text when it is not one (an error then). */
function IntListField({
  label, value, onChange, error, hint,
}: {
  label: string; value: unknown; onChange: (v: number[] | string) => void; error?: string | undefined; hint?: string;
}) {
  const [text, setText] = useTypedText(value);
  return (
    <Field label={label} error={error} hint={hint}>
      {(id, describedBy) => (
        <input id={id} type="text" autoComplete="off" aria-describedby={describedBy} aria-invalid={error ? true : undefined}
          value={text}
          onChange={(e) => {
            const typed = typedIntList(e.target.value);
            setText(e.target.value, typed);
            onChange(typed);
          }} />
      )}
    </Field>
  );
}

function SliceFields({ value, errors, onChange }: { value: Loose; errors: Record<string, string>; onChange: (v: Loose) => void }) {
  const err = (key: string) => errors[`positions.${key}`];
  return (
    <div className="form-row">
      <NumberField label="Start" integer value={value.start} error={err("start")} hint="First position (0 is the first token)."
        onChange={(v) => { onChange({ ...value, start: v }); }} />
      <NumberField label="Stop" integer value={value.stop} error={err("stop")} hint="Empty: runs on into the generated tokens."
        onChange={(v) => { onChange({ ...value, stop: v === "" ? null : v }); }} />
      <NumberField label="Step" integer value={value.step} error={err("step")} hint="1 or more."
        onChange={(v) => { onChange({ ...value, step: v }); }} />
    </div>
  );
}

function GateFields({
  gate, probes, numLayers, errors, onChange,
}: {
  gate: Gate; probes: Choice[]; numLayers: number; errors: Record<string, string>; onChange: (g: Gate) => void;
}) {
  return (
    <div className="form-row" aria-label="Probe gate">
      <Field label="Gate probe" error={errors["when.probe"]}>
        {(id) => (
          <select id={id} value={gate.probe} onChange={(e) => {
            const choice = probes.find((c) => c.id === e.target.value);
            onChange({ ...gate, probe: e.target.value, layer: choice?.layer ?? gate.layer });
          }}>
            <option value="">Choose…</option>
            {probes.map((c) => <option key={c.id} value={c.id}>{c.label} ({c.id})</option>)}
          </select>
        )}
      </Field>
      <NumberField label="Gate layer" value={gate.layer} integer error={errors["when.layer"]}
        hint={`0 to ${String(numLayers - 1)}`} onChange={(v) => { onChange({ ...gate, layer: v as number }); }} />
      <Field label="Gate fires when the score is">
        {(id) => (
          <select id={id} value={gate.direction ?? "above"} onChange={(e) => { onChange({ ...gate, direction: e.target.value as "above" | "below" }); }}>
            <option value="above">above</option>
            <option value="below">below</option>
          </select>
        )}
      </Field>
      <NumberField label="Threshold" value={gate.threshold ?? 0} error={errors["when.threshold"]}
        onChange={(v) => { onChange({ ...gate, threshold: v as number }); }} />
    </div>
  );
}
