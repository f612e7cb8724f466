// The pickers the job and board forms share: datasets of one kind, a labelled dataset's labels,
// and the small selects (point, reduction, pooling).
import type { ReactNode } from "react";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import type { Resource } from "../api/useResource";
import { Field } from "../ui/components";

export type Dataset = Schemas["DatasetOut"];
type DatasetKind = Schemas["DatasetKind"];

/** The datasets of `kind` the user can see (the first 100). */
export function useDatasets(kind: DatasetKind): Resource<Dataset[]> {
  return useResource(async () => {
    const page = await unwrap(api.GET("/api/datasets", { params: { query: { limit: 100 } } }));
    return page.items.filter((d) => d.kind === kind);
  }, kind);
}

/** A labelled dataset's distinct labels ([] until one is chosen). */
export function useLabels(datasetId: number | null): Resource<string[]> {
  return useResource(async () => {
    if (datasetId === null) return [];
    const rows = await unwrap(api.GET("/api/datasets/{dataset_id}/rows", { params: { path: { dataset_id: datasetId } } }));
    return rows.labels;
  }, String(datasetId));
}

export function DatasetField({
  datasets,
  kind,
  value,
  onChange,
  error,
  label = "Dataset",
  hint: about,
}: {
  datasets: Resource<Dataset[]>;
  kind: DatasetKind;
  value: number | null;
  onChange: (id: number | null) => void;
  error?: string | undefined;
  label?: string;
  /** What the rows are for (default: the kind's description). */
  hint?: ReactNode;
}) {
  const items = datasets.data ?? [];
  const hint: ReactNode =
    datasets.error ||
    (datasets.data && items.length === 0
      ? `No ${kind} datasets yet: write or upload one in the library.`
      : about ??
        (kind === "labelled" ? "Labelled prompts (text, label) with two labels." : "Contrastive pairs (positive, negative)."));
  return (
    <Field label={label} hint={hint} error={error}>
      {(id, describedBy) => (
        <select
          id={id}
          aria-describedby={describedBy}
          required
          value={value ?? ""}
          onChange={(e) => {
            onChange(e.target.value === "" ? null : Number(e.target.value));
          }}
        >
          <option value="">Choose…</option>
          {items.map((d) => (
            <option key={d.id} value={d.id}>
              {d.name} ({d.row_count} rows, {d.owner})
            </option>
          ))}
        </select>
      )}
    </Field>
  );
}

/** The positive label: one of the dataset's labels ("" lets the server take the last one). */
export function PositiveLabelField({
  labels,
  value,
  onChange,
  error,
}: {
  labels: Resource<string[]>;
  value: string;
  onChange: (label: string) => void;
  error?: string | undefined;
}) {
  const items = labels.data ?? [];
  const hint =
    labels.error ||
    (items.length > 0 && items.length !== 2
      ? `This dataset has ${items.length} labels; a probe separates two.`
      : "The class the probe's score rises for.");
  return (
    <Field label="Positive label" hint={hint} error={error}>
      {(id, describedBy) => (
        <select id={id} aria-describedby={describedBy} value={value} onChange={(e) => { onChange(e.target.value); }}>
          <option value="">{items.length ? `Default (${items[items.length - 1] ?? ""})` : "—"}</option>
          {items.map((label) => (
            <option key={label} value={label}>{label}</option>
          ))}
        </select>
      )}
    </Field>
  );
}

/** A select over fixed choices: `[value, label]` pairs. */
export function ChoiceField<T extends string>({
  label,
  choices,
  value,
  onChange,
  hint,
  error,
}: {
  label: string;
  choices: readonly (readonly [T, string])[];
  value: T;
  onChange: (value: T) => void;
  hint?: ReactNode;
  error?: string | undefined;
}) {
  return (
    <Field label={label} hint={hint} error={error}>
      {(id, describedBy) => (
        <select
          id={id}
          aria-describedby={describedBy}
          value={value}
          onChange={(e) => {
            const next = choices.find(([v]) => v === e.target.value);
            if (next) onChange(next[0]);
          }}
        >
          {choices.map(([v, text]) => (
            <option key={v} value={v}>{text}</option>
          ))}
        </select>
      )}
    </Field>
  );
}

export const POINTS = [
  ["resid_post", "resid_post"],
  ["resid_pre", "resid_pre"],
  ["attn_out", "attn_out"],
  ["mlp_out", "mlp_out"],
  ["mlp_act", "mlp_act"],
] as const;

export const REDUCTIONS = [
  ["last", "Last token"],
  ["mean", "Mean over tokens"],
] as const;

export type Reduce = (typeof REDUCTIONS)[number][0];
export type Point = (typeof POINTS)[number][0];

/** A text input for a number: the text as typed (the form parses it on submit). */
export function NumberField({
  label,
  value,
  onChange,
  hint,
  error,
  step = "any",
  min,
  max,
}: {
  label: string;
  value: string;
  onChange: (value: string) => void;
  hint?: ReactNode;
  error?: string | undefined;
  step?: number | "any";
  min?: number;
  max?: number;
}) {
  return (
    <Field label={label} hint={hint} error={error}>
      {(id, describedBy) => (
        <input
          id={id}
          type="number"
          aria-describedby={describedBy}
          aria-invalid={error ? true : undefined}
          required
          step={step}
          min={min}
          max={max}
          value={value}
          onChange={(e) => { onChange(e.target.value); }}
        />
      )}
    </Field>
  );
}

/** A name input (what the job makes is saved under it). */
export function NameField({ value, onChange, error, hint }: { value: string; onChange: (v: string) => void; error?: string | undefined; hint?: ReactNode }) {
  return (
    <Field label="Name" hint={hint} error={error}>
      {(id, describedBy) => (
        <input id={id} type="text" required maxLength={100} aria-describedby={describedBy} value={value} onChange={(e) => { onChange(e.target.value); }} />
      )}
    </Field>
  );
}

/** `text` as a whole number, or null. */
export function wholeNumber(text: string): number | null {
  const value = Number(text);
  return text.trim() !== "" && Number.isInteger(value) ? value : null;
}

/** `text` as a finite number, or null. */
export function finiteNumber(text: string): number | null {
  const value = Number(text);
  return text.trim() !== "" && Number.isFinite(value) ? value : null;
}
