// The board's leaderboard: one row per probe, each metric with its 95% bootstrap interval,
// sortable by clicking a column header (aria-sort says how it is sorted).
import { useState } from "react";
import { formatInterval, formatMetric } from "../jobs/model";
import type { EvaluatedProbe, Sort, SortKey } from "./evaluation";
import { METRIC_COLUMNS, nextSort, sortProbes } from "./evaluation";

const INITIAL: Sort = { key: "auroc", direction: "descending" };

export function MetricsTable({ probes, initial = INITIAL }: { probes: readonly EvaluatedProbe[]; initial?: Sort }) {
  const [sort, setSort] = useState<Sort>(initial);
  const rows = sortProbes(probes, sort);
  const header = (key: SortKey, label: string) => {
    const active = sort.key === key;
    return (
      <th key={key} scope="col" aria-sort={active ? sort.direction : "none"}>
        <button
          type="button"
          className="sort"
          onClick={() => {
            setSort(nextSort(sort, key));
          }}
        >
          {label}
          <span className="arrow" aria-hidden="true">{active ? (sort.direction === "ascending" ? "▲" : "▼") : "↕"}</span>
        </button>
      </th>
    );
  };
  return (
    <div className="table-scroll">
      <table className="metrics" aria-label="Probe metrics">
        <caption className="sr-only">
          Each metric with its 95% bootstrap interval; sorted by {sort.key} ({sort.direction}). Select a column header to sort.
        </caption>
        <thead>
          <tr>
            {header("name", "Probe")}
            {header("layer", "Layer")}
            {METRIC_COLUMNS.map(([key, label]) => header(key, label))}
          </tr>
        </thead>
        <tbody>
          {rows.map((p) => (
            <tr key={p.id} data-probe={p.public_id}>
              <th scope="row">
                {p.name}
                <div className="meta">
                  <code>{p.public_id}</code> · {p.owner}
                </div>
              </th>
              <td>
                {p.layer}
                <div className="meta">{p.point}</div>
              </td>
              {METRIC_COLUMNS.map(([key]) => (
                <td key={key} data-metric={key}>
                  <span className="num">{formatMetric(p.metrics[key])}</span>
                  <span className="interval">{formatInterval(p.intervals[key])}</span>
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

