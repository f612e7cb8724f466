// A finished sweep's result, typed, and what its views need: the metrics to choose from, the
// layers × scales grid, the tint of a cell and the curves of one metric against the scale.
import type { Job } from "../jobs/model";

export interface SweepCell {
  layer: number;
  scale: number;
  kl_mean: number;
  kl_max: number;
  perplexity: number | null;
  tokens: number;
  /** Per probe (the result's `probes` order): mean score steered minus baseline. */
  probe_shift: (number | null)[];
}

export interface SweepResult {
  prompts: number;
  layers: number[];
  scales: number[];
  probes: string[];
  cells: SweepCell[];
}

export function sweepResult(job: Job): SweepResult | null {
  const r = job.result;
  if (job.kind !== "sweep" || !Array.isArray(r.cells) || !Array.isArray(r.layers) || !Array.isArray(r.scales)) return null;
  return { probes: [], prompts: 0, ...(r as Partial<SweepResult>) } as SweepResult;
}

/** "kl_mean", "kl_max", "perplexity", or "shift:<probe index>". */
export type Metric = string;

export function metricOptions(result: SweepResult): [Metric, string][] {
  return [
    ["kl_mean", "KL mean (steered ‖ unsteered)"],
    ["kl_max", "KL max"],
    ["perplexity", "Perplexity (unsteered model)"],
    ...result.probes.map((probe, i): [Metric, string] => [`shift:${i}`, `Probe shift: ${probe}`]),
  ];
}

export const isShift = (metric: Metric): boolean => metric.startsWith("shift:");

export function metricValue(cell: SweepCell, metric: Metric): number | null {
  if (isShift(metric)) return cell.probe_shift[Number(metric.slice(6))] ?? null;
  if (metric === "kl_mean") return cell.kl_mean;
  if (metric === "kl_max") return cell.kl_max;
  if (metric === "perplexity") return cell.perplexity;
  return null;
}

export interface Grid {
  layers: number[];
  scales: number[];
  /** The index into `result.cells` of (layer, scale), if the sweep has it. */
  cell: (layer: number, scale: number) => number | undefined;
}

export function sweepGrid(result: SweepResult): Grid {
  const index = new Map<string, number>();
  result.cells.forEach((c, i) => index.set(`${c.layer}:${c.scale}`, i));
  const layers = [...new Set(result.cells.map((c) => c.layer))];
  const scales = [...new Set(result.cells.map((c) => c.scale))].sort((a, b) => a - b);
  return { layers, scales, cell: (layer, scale) => index.get(`${layer}:${scale}`) };
}

/** The range of `metric` over the cells (finite values only), or null when none has one. */
export function metricRange(result: SweepResult, metric: Metric): [number, number] | null {
  const values = result.cells.map((c) => metricValue(c, metric)).filter((v): v is number => v !== null && Number.isFinite(v));
  if (values.length === 0) return null;
  return [Math.min(...values), Math.max(...values)];
}

const MAX_ALPHA = 0.6; // the strongest tint keeps dark text readable

/** A cell's background: a sequential red for costs (KL, perplexity), a diverging blue/red around
 * zero for probe shifts. */
export function cellTint(value: number | null, metric: Metric, range: [number, number] | null): string | undefined {
  if (value === null || !Number.isFinite(value) || range === null) return undefined;
  if (isShift(metric)) {
    const maxAbs = Math.max(Math.abs(range[0]), Math.abs(range[1]));
    if (maxAbs <= 0) return undefined;
    const alpha = (MAX_ALPHA * Math.min(1, Math.abs(value) / maxAbs)).toFixed(3);
    return value >= 0 ? `rgba(var(--pos), ${alpha})` : `rgba(var(--neg), ${alpha})`;
  }
  const [low, high] = range;
  const share = high > low ? (value - low) / (high - low) : 0;
  return `rgba(var(--pos), ${(MAX_ALPHA * share).toFixed(3)})`;
}

/** One curve per layer: `metric` at each scale (null where the sweep has no such cell). */
export function curvesByLayer(result: SweepResult, metric: Metric): { x: number[]; series: { label: string; values: (number | null)[] }[] } {
  const grid = sweepGrid(result);
  return {
    x: grid.scales,
    series: grid.layers.map((layer) => ({
      label: `layer ${layer}`,
      values: grid.scales.map((scale) => {
        const i = grid.cell(layer, scale);
        const c = i === undefined ? undefined : result.cells[i];
        return c ? metricValue(c, metric) : null;
      }),
    })),
  };
}

export function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 0.001 || abs >= 10000)) return value.toExponential(2);
  return value.toFixed(abs >= 100 ? 1 : 3);
}
