// A board's evaluation (the result of its newest finished `evaluate` job), typed, and what its
// views compute from it: the sorted metrics table, the agreement tints and the ROC curves on one x.
import type { Interval, Job, Metrics } from "../jobs/model";

export type MetricKey = "accuracy" | "auroc" | "f1" | "ece";

export interface EvaluatedProbe {
  id: number;
  public_id: string;
  name: string;
  owner: string;
  layer: number;
  point: string;
  metrics: Metrics;
  intervals: Partial<Record<MetricKey, Interval>>;
  roc: { fpr: number[]; tpr: number[] } | null;
}

export interface Evaluation {
  n: number;
  positives: number;
  positive_label: string;
  pooling: string;
  batch_size: number;
  probes: EvaluatedProbe[];
  agreement: { correlation: (number | null)[][]; kappa: (number | null)[][] };
}

export function evaluationOf(job: Job | null): Evaluation | null {
  if (!job || job.kind !== "evaluate" || job.status !== "done") return null;
  const r = job.result;
  if (!Array.isArray(r.probes) || typeof r.agreement !== "object" || r.agreement === null) return null;
  return r as unknown as Evaluation;
}

// --------------------------------------------------------------------------------------------
// Sorting
// --------------------------------------------------------------------------------------------
export type SortKey = "name" | "layer" | MetricKey;
export type Direction = "ascending" | "descending";
export interface Sort {
  key: SortKey;
  direction: Direction;
}

export const METRIC_COLUMNS: readonly (readonly [MetricKey, string])[] = [
  ["accuracy", "Accuracy"],
  ["auroc", "AUROC"],
  ["f1", "F1"],
  ["ece", "ECE"],
];

/** The first direction a click sorts by: best first (low ECE, high scores), names A to Z. */
export function firstDirection(key: SortKey): Direction {
  return key === "accuracy" || key === "auroc" || key === "f1" ? "descending" : "ascending";
}

/** The sort after clicking `key`'s header: its first direction, or the other one when it is the
 * current column. */
export function nextSort(current: Sort, key: SortKey): Sort {
  if (current.key !== key) return { key, direction: firstDirection(key) };
  return { key, direction: current.direction === "ascending" ? "descending" : "ascending" };
}

function sortValue(probe: EvaluatedProbe, key: SortKey): string | number | null {
  if (key === "name") return probe.name.toLowerCase();
  if (key === "layer") return probe.layer;
  const value = probe.metrics[key];
  return value === null || !Number.isFinite(value) ? null : value;
}

/** The probes in `sort` order; undefined metrics (null) always last; ties keep the board's order. */
export function sortProbes(probes: readonly EvaluatedProbe[], sort: Sort): EvaluatedProbe[] {
  const sign = sort.direction === "ascending" ? 1 : -1;
  return probes
    .map((probe, index) => ({ probe, index, value: sortValue(probe, sort.key) }))
    .sort((a, b) => {
      if (a.value === null || b.value === null) {
        if (a.value === b.value) return a.index - b.index;
        return a.value === null ? 1 : -1;
      }
      if (a.value < b.value) return -sign;
      if (a.value > b.value) return sign;
      return a.index - b.index;
    })
    .map((item) => item.probe);
}

// --------------------------------------------------------------------------------------------
// Agreement and ROC
// --------------------------------------------------------------------------------------------
const MAX_ALPHA = 0.6;

/** A diverging tint for a value in [-1, 1] (red: agree, blue: disagree). */
export function agreementTint(value: number | null): string | undefined {
  if (value === null || !Number.isFinite(value)) return undefined;
  const alpha = (MAX_ALPHA * Math.min(1, Math.abs(value))).toFixed(3);
  return value >= 0 ? `rgba(var(--pos), ${alpha})` : `rgba(var(--neg), ${alpha})`;
}

/** Every curve on one sorted x (for uPlot): each false-positive rate a curve has appears twice,
 * with the lowest and the highest true-positive rate there (a vertical step draws as one), and
 * each curve is interpolated linearly where it has no point of its own. */
export function rocGrid(curves: readonly ({ fpr: number[]; tpr: number[] } | null)[]): { x: number[]; ys: (number | null)[][] } {
  const xs = [...new Set(curves.flatMap((c) => c?.fpr ?? []))].sort((a, b) => a - b);
  const x = xs.flatMap((v) => [v, v]);
  const ys = curves.map((curve) => {
    if (!curve || curve.fpr.length === 0) return x.map(() => null);
    const points = curve.fpr.map((f, i) => [f, curve.tpr[i] ?? 0] as const);
    return xs.flatMap((v) => {
      const at = points.filter(([f]) => f === v).map(([, t]) => t);
      if (at.length > 0) return [Math.min(...at), Math.max(...at)];
      const value = interpolate(points, v);
      return [value, value];
    });
  });
  return { x, ys };
}

function interpolate(points: readonly (readonly [number, number])[], v: number): number | null {
  let before: readonly [number, number] | undefined;
  let after: readonly [number, number] | undefined;
  for (const p of points) {
    if (p[0] < v && (!before || p[0] >= before[0])) before = p;
    if (p[0] > v && (!after || p[0] < after[0])) after = p;
  }
  if (!before || !after) return null;
  const t = (v - before[0]) / (after[0] - before[0]);
  return before[1] + t * (after[1] - before[1]);
}
