// Pick probes of one model: any probe the user can see (theirs, their teams', public ones), with
// its owner, site and held-out AUROC, searchable by name.
import { useState } from "react";
import { api, unwrap } from "../api/client";
import type { Schemas } from "../api/client";
import { useResource } from "../api/useResource";
import { formatMetric, trainedMetrics } from "../jobs/model";
import { useDebounced } from "../library/shared";
import { Empty, Field, Loading, Notice } from "../ui/components";

export type Probe = Schemas["ProbeOut"];

/** The probes of `deployment` matching `q` (the first 100). */
export function useProbes(deployment: string, q = "") {
  return useResource(
    () =>
      deployment
        ? unwrap(api.GET("/api/probes", { params: { query: { deployment, q: q || undefined, limit: 100 } } }))
        : Promise.resolve({ items: [] as Probe[], count: 0 }),
    `${deployment}\n${q}`,
  );
}

/** The held-out AUROC a trained probe carries in its metrics, if any. */
export function heldoutAuroc(probe: Probe): number | null {
  return trainedMetrics(probe.metrics)?.heldout?.auroc ?? null;
}

export function ProbePicker({
  deployment,
  selected,
  onChange,
  exclude = [],
  legend = "Probes",
  error,
}: {
  deployment: string;
  selected: readonly number[];
  onChange: (ids: number[]) => void;
  /** Probes not offered (already on the board). */
  exclude?: readonly number[];
  legend?: string;
  error?: string | undefined;
}) {
  const [q, setQ] = useState("");
  const query = useDebounced(q.trim());
  const probes = useProbes(deployment, query);
  const items = (probes.data?.items ?? []).filter((p) => !exclude.includes(p.id));
  const toggle = (id: number, on: boolean) => {
    onChange(on ? [...selected.filter((s) => s !== id), id] : selected.filter((s) => s !== id));
  };
  return (
    <fieldset className={`plain${error ? " field-invalid" : ""}`}>
      <legend>{legend}</legend>
      <Field label="Search probes" hint={`Probes of ${deployment || "the model"} you can see; ${selected.length} chosen.`}>
        {(id, describedBy) => (
          <input id={id} type="search" aria-describedby={describedBy} value={q} onChange={(e) => { setQ(e.target.value); }} />
        )}
      </Field>
      <Notice>{probes.error}</Notice>
      {probes.loading && !probes.data ? <Loading what="probes" /> : null}
      {probes.data && items.length === 0 ? <Empty>{query ? "No probe matches." : "No probes to add for this model."}</Empty> : null}
      {items.length > 0 ? (
        <ul className="checks" data-testid="probe-picker">
          {items.map((p) => (
            <li key={p.id}>
              <label>
                <input
                  type="checkbox"
                  checked={selected.includes(p.id)}
                  onChange={(e) => { toggle(p.id, e.target.checked); }}
                />
                <strong>{p.name}</strong> <code>{p.public_id}</code>{" "}
                <span className="meta">
                  {p.owner} · layer {p.layer} · {p.point}
                  {heldoutAuroc(p) !== null ? ` · held-out AUROC ${formatMetric(heldoutAuroc(p))}` : ""}
                </span>
              </label>
            </li>
          ))}
        </ul>
      ) : null}
      {error ? <span className="field-error">{error}</span> : null}
    </fieldset>
  );
}
