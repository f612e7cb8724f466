// One intervention of a recipe as a form: the op, where it acts (layer, point, positions), what it
// uses (a vector or probe picked from the library, filtered to the recipe's model), its strength,
// and an optional probe gate. Server messages appear next to the field they name.
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
  parseIntList,
  positionsKind,
  positionsOf,
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
                onChange(defaultIntervention(nextOp, Number(item.layer ?? 0), ref));
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
          value={Number(item.layer ?? 0)}
          min={-numLayers}
          max={numLayers - 1}
          step={1}
          error={err("layer")}
          hint={`0 to ${numLayers - 1}; negative counts from the end`}
          onChange={(v) => { set("layer", Math.trunc(v)); }}
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
      {kind === "slice" ? <SliceFields value={item.positions as Loose} onChange={(v) => { set("positions", v); }} /> : null}
      {kind === "indices" ? (
        <IntListField
          label="Position indices"
          hint="Comma-separated; negatives count from the end of the prompt."
          value={(item.positions as { indices: number[] }).indices}
          error={err("positions")}
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
          <NumberField label="Value" value={Number(item.value ?? 0)} error={err("value")} onChange={(v) => { set("value", v); }} />
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
          <NumberField label="Top k" value={Number(item.k ?? 5)} min={1} max={20} step={1} error={err("k")} onChange={(v) => { set("k", Math.trunc(v)); }} />
        ) : null}
        {op === "ablate" ? (
          <>
            <Field label="Dimensions" error={err("dims")}>
              {(id) => (
                <select id={id} value={item.dims === "all" || item.dims === undefined ? "all" : "list"}
                  onChange={(e) => { set("dims", e.target.value === "all" ? "all" : [0]); }}>
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
      {op === "ablate" && Array.isArray(item.dims) ? (
        <IntListField label="Dimension indices" value={item.dims as number[]} error={err("dims")} onChange={(dims) => { set("dims", dims); }} />
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
            <NumberField label="Scale" value={Number(item.scale ?? 1)} step={0.1} error={err("scale")} onChange={(v) => { set("scale", v); }} />
            <Field label="Enabled" inline>
              {(id) => (
                <input id={id} type="checkbox" checked={item.enabled !== false} onChange={(e) => { set("enabled", e.target.checked); }} />
              )}
            </Field>
            <Field label="Only where a probe fires" inline>
              {(id) => (
                <input id={id} type="checkbox" checked={Boolean(gate)}
                  onChange={(e) => { set("when", e.target.checked ? defaultGate(Number(item.layer ?? 0), probes[0]?.id ?? "") : undefined); }} />
              )}
            </Field>
          </div>
          {gate ? <GateFields gate={gate} probes={probes} numLayers={numLayers} errors={errors} onChange={(g) => { set("when", g); }} /> : null}
        </>
      ) : null}
    </fieldset>
  );
}

/** A number input that keeps what is being typed ("-", "1.") and reports only whole numbers. */
function NumberField({
  label, value, onChange, error, hint, min, max, step,
}: {
  label: string; value: number; onChange: (v: number) => void; error?: string | undefined; hint?: string;
  min?: number; max?: number; step?: number;
}) {
  const [text, setText] = useState(String(value));
  // A new value from outside (another field, a loaded version) replaces the text being typed.
  const [shown, setShown] = useState(value);
  if (value !== shown) {
    setShown(value);
    setText(String(value));
  }
  return (
    <Field label={label} error={error} hint={hint}>
      {(id, describedBy) => (
        <input id={id} type="number" aria-describedby={describedBy} value={text}
          min={min} max={max} step={step ?? "any"}
          onChange={(e) => {
            setText(e.target.value);
            const v = Number(e.target.value);
            if (e.target.value.trim() !== "" && Number.isFinite(v)) {
              setShown(v);
              onChange(v);
            }
          }} />
      )}
    </Field>
  );
}

function IntListField({
  label, value, onChange, error, hint,
}: {
  label: string; value: number[]; onChange: (v: number[]) => void; error?: string | undefined; hint?: string;
}) {
  const text = value.join(", ");
  return (
    <Field label={label} error={error} hint={hint}>
      {(id, describedBy) => (
        <input id={id} type="text" aria-describedby={describedBy} defaultValue={text} key={text}
          onBlur={(e) => {
            const parsed = parseIntList(e.target.value);
            if (typeof parsed === "string") e.target.setCustomValidity(parsed);
            else { e.target.setCustomValidity(""); onChange(parsed); }
            e.target.reportValidity();
          }} />
      )}
    </Field>
  );
}

function SliceFields({ value, onChange }: { value: Loose; onChange: (v: Loose) => void }) {
  const part = (key: "start" | "stop" | "step", label: string) => (
    <Field label={label}>
      {(id) => (
        <input id={id} type="number" step={1} value={value[key] === null || value[key] === undefined ? "" : Number(value[key])}
          placeholder={key === "step" ? "1" : "none"}
          onChange={(e) => { onChange({ ...value, [key]: e.target.value === "" ? (key === "step" ? 1 : null) : Math.trunc(Number(e.target.value)) }); }} />
      )}
    </Field>
  );
  return <div className="form-row">{part("start", "Start")}{part("stop", "Stop")}{part("step", "Step")}</div>;
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
      <NumberField label="Gate layer" value={gate.layer} min={-numLayers} max={numLayers - 1} step={1} error={errors["when.layer"]}
        onChange={(v) => { onChange({ ...gate, layer: Math.trunc(v) }); }} />
      <Field label="Gate fires when the score is">
        {(id) => (
          <select id={id} value={gate.direction ?? "above"} onChange={(e) => { onChange({ ...gate, direction: e.target.value as "above" | "below" }); }}>
            <option value="above">above</option>
            <option value="below">below</option>
          </select>
        )}
      </Field>
      <NumberField label="Threshold" value={gate.threshold ?? 0} step={0.1} error={errors["when.threshold"]}
        onChange={(v) => { onChange({ ...gate, threshold: v }); }} />
    </div>
  );
}
