// Small pieces shared by the library's three tabs: types, formatting, the search debounce,
// multipart bodies for openapi-fetch, key/value tables and the deployment select of an upload.
import { useEffect, useState } from "react";
import type { ReactNode } from "react";
import type { Schemas } from "../api/client";
import { Badge, Field } from "../ui/components";

export type Visibility = Schemas["Visibility"];
export type Team = Schemas["TeamOut"];
export type Deployment = Schemas["DeploymentOut"];

/** What vectors, probes and datasets have in common (the list, details and delete use it). */
export interface Listed {
  id: number;
  name: string;
  description: string;
  owner: string;
  visibility: Visibility;
  team_id: number | null;
  forked_from_id: number | null;
  content_hash: string;
  created_at: string;
  updated_at: string;
  provenance: Record<string, unknown>;
}

export const VISIBILITIES: readonly Visibility[] = ["private", "team", "public"];

export const isVisibility = (value: string): value is Visibility =>
  (VISIBILITIES as readonly string[]).includes(value);

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** A short display for any JSON value (metrics, provenance). */
export function formatValue(value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  if (typeof value === "boolean") return value ? "yes" : "no";
  return JSON.stringify(value);
}

/** `value`, once it has stopped changing for `ms` (search-as-you-type without a request per key). */
export function useDebounced<T>(value: T, ms = 250): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = window.setTimeout(() => {
      setSettled(value);
    }, ms);
    return () => {
      window.clearTimeout(timer);
    };
  }, [value, ms]);
  return settled;
}

/** The multipart body of an upload: the typed fields (empty ones left out) and the file itself. */
export function toFormData(fields: Record<string, string | number | null | undefined>, file: File): FormData {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) {
    if (key === "file" || value === null || value === undefined || value === "") continue;
    form.append(key, String(value));
  }
  form.append("file", file, file.name);
  return form;
}

export function VisibilityBadge({ visibility }: { visibility: Visibility }) {
  const tone = visibility === "public" ? "good" : visibility === "team" ? "info" : "neutral";
  return <Badge tone={tone}>{visibility}</Badge>;
}

export function teamName(teams: Team[], id: number | null): string {
  if (id === null) return "—";
  return teams.find((t) => t.id === id)?.name ?? `team #${id}`;
}

export type Row = readonly [label: string, value: ReactNode];

export function KeyValueTable({ rows, label }: { rows: readonly Row[]; label: string }) {
  return (
    <table className="kv" aria-label={label}>
      <tbody>
        {rows.map(([key, value]) => (
          <tr key={key}>
            <th scope="row">{key}</th>
            <td>{value}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Provenance (a free-form object) as rows of a key/value table. */
export function provenanceRows(provenance: Record<string, unknown>): Row[] {
  return Object.entries(provenance).map(([key, value]) => [`Provenance: ${key}`, formatValue(value)] as const);
}

/** The upload's model select; `chosen` is the picked name, or the first model's until one is picked. */
export function DeploymentField({
  deployments,
  chosen,
  onChange,
}: {
  deployments: Deployment[];
  chosen: string;
  onChange: (name: string) => void;
}) {
  return (
    <Field label="Deployment" hint={deployments.length === 0 ? "No models are registered." : undefined}>
      {(id, describedBy) => (
        <select id={id} aria-describedby={describedBy} required value={chosen} onChange={(e) => { onChange(e.target.value); }}>
          {deployments.map((d) => (
            <option key={d.id} value={d.name}>{d.name} ({d.num_layers} layers, hidden size {d.hidden_size})</option>
          ))}
        </select>
      )}
    </Field>
  );
}
