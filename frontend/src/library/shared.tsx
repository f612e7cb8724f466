// Pieces shared by the library's three tabs: sharing fields, the file field, key/value tables,
// the delete button with its confirm step, and multipart bodies for openapi-fetch.
import { useEffect, useState } from "react";
import type { ReactNode, RefObject } from "react";
import { errorMessage } from "../api/client";
import type { Schemas } from "../api/client";
import { Badge, Button, Field, Notice } from "../ui/components";

export type Visibility = Schemas["Visibility"];
export type Team = Schemas["TeamOut"];
export type Deployment = Schemas["DeploymentOut"];

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

/** Visibility and team selects of an upload form. */
export function SharingFields({
  visibility,
  onVisibility,
  team,
  onTeam,
  teams,
}: {
  visibility: Visibility;
  onVisibility: (value: Visibility) => void;
  team: string;
  onTeam: (value: string) => void;
  teams: Team[];
}) {
  return (
    <div className="form-row">
      <Field label="Visibility">
        {(id) => (
          <select
            id={id}
            value={visibility}
            onChange={(e) => {
              if (isVisibility(e.target.value)) onVisibility(e.target.value);
            }}
          >
            <option value="private">Private (only me)</option>
            <option value="team">Team</option>
            <option value="public">Public (everyone)</option>
          </select>
        )}
      </Field>
      <Field label="Team" hint="Needed for team visibility.">
        {(id, describedBy) => (
          <select id={id} aria-describedby={describedBy} value={team} onChange={(e) => { onTeam(e.target.value); }}>
            <option value="">No team</option>
            {teams.map((t) => (
              <option key={t.id} value={t.id}>{t.name}</option>
            ))}
          </select>
        )}
      </Field>
    </div>
  );
}

/** A labelled `<input type="file">`; the chosen file goes to `onFile`. The form checks that one was
 * chosen itself (a `required` file input cannot be satisfied in jsdom tests). */
export function FileField({
  label = "File",
  hint,
  accept,
  inputRef,
  onFile,
}: {
  label?: string;
  hint: ReactNode;
  accept: string;
  inputRef: RefObject<HTMLInputElement | null>;
  onFile: (file: File | null) => void;
}) {
  return (
    <Field label={label} hint={hint}>
      {(id, describedBy) => (
        <input
          id={id}
          ref={inputRef}
          type="file"
          accept={accept}
          aria-required="true"
          aria-describedby={describedBy}
          onChange={(e) => { onFile(e.target.files?.[0] ?? null); }}
        />
      )}
    </Field>
  );
}

export type Row = readonly [label: string, value: ReactNode];

export function KeyValueTable({ rows, label }: { rows: readonly Row[]; label: string }) {
  return (
    <table aria-label={label}>
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

/** "Delete", after a confirm step; the server's message if it refuses. */
export function DeleteButton({
  what,
  name,
  remove,
  onDeleted,
}: {
  what: string;
  name: string;
  remove: () => Promise<unknown>;
  onDeleted: () => void;
}) {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const run = async () => {
    if (!window.confirm(`Delete the ${what} “${name}”? This cannot be undone.`)) return;
    setBusy(true);
    setError("");
    try {
      await remove();
      onDeleted();
    } catch (exc) {
      setError(errorMessage(exc));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div>
      <Notice>{error}</Notice>
      <Button variant="danger" disabled={busy} onClick={() => { void run(); }}>
        Delete
      </Button>
    </div>
  );
}

/** The search box (passed to the list endpoint as `q`) and, for vectors and probes, the model filter. */
export function ListControls({
  what,
  q,
  onQ,
  deployments,
  deployment = "",
  onDeployment,
}: {
  what: string;
  q: string;
  onQ: (value: string) => void;
  deployments?: Deployment[];
  deployment?: string;
  onDeployment?: (value: string) => void;
}) {
  return (
    <div className="form-row">
      <Field label={`Search ${what}`} hint="Words the name must contain.">
        {(id, describedBy) => (
          <input id={id} type="search" aria-describedby={describedBy} value={q} onChange={(e) => { onQ(e.target.value); }} />
        )}
      </Field>
      {deployments && onDeployment ? (
        <Field label="Model">
          {(id) => (
            <select id={id} value={deployment} onChange={(e) => { onDeployment(e.target.value); }}>
              <option value="">All models</option>
              {deployments.map((d) => (
                <option key={d.id} value={d.name}>{d.name}</option>
              ))}
            </select>
          )}
        </Field>
      ) : null}
    </div>
  );
}

/** The name cell's button: selects the row for the details panel. */
export function SelectButton({ name, selected, onSelect }: { name: string; selected: boolean; onSelect: () => void }) {
  return (
    <Button variant="ghost" small aria-current={selected ? "true" : undefined} onClick={onSelect}>
      {name}
    </Button>
  );
}

export function countLine(count: number, shown: number, what: string): string {
  const noun = `${what}${count === 1 ? "" : "s"}`;
  return count > shown ? `${count} ${noun}; the first ${shown} are listed: search to narrow them.` : `${count} ${noun}.`;
}
