// Jobs as the pages see them: labels, states, the lists typed into forms ("0, 2-4"), the typed
// views of a job's `result` (the API types it as a free-form object) and what a job made.
import type { Schemas } from "../api/client";

export type Job = Schemas["JobOut"];
export type JobKind = Schemas["JobKind"];
export type JobStatus = Schemas["JobStatus"];

export const KIND_LABELS: Record<JobKind, string> = {
  build_vector: "Build vector",
  train_probe: "Train probe",
  evaluate: "Evaluate board",
  sweep: "Sweep",
  batch_run: "Batch run",
};

export const JOB_KINDS = Object.keys(KIND_LABELS) as JobKind[];

const ACTIVE: readonly string[] = ["queued", "running"];
const ENDED: readonly string[] = ["done", "failed", "cancelled"];

export const isActive = (status: string): boolean => ACTIVE.includes(status);
export const isEnded = (status: string): boolean => ENDED.includes(status);
export const canResume = (status: string): boolean => status === "failed" || status === "cancelled";

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** Whole numbers separated by commas or spaces, with ranges: "0, 2-4" -> [0, 2, 3, 4]. Negative
 * numbers count from the end (the server resolves them); ranges need non-negative ends. */
export function parseIntList(text: string): Parsed<number[]> {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (parts.length === 0) return { ok: false, error: "Enter at least one number." };
  const out: number[] = [];
  for (const part of parts) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range) {
      const from = Number(range[1]);
      const to = Number(range[2]);
      if (to < from) return { ok: false, error: `“${part}” is an empty range.` };
      if (to - from > 1000) return { ok: false, error: `“${part}” is too long a range.` };
      for (let n = from; n <= to; n++) out.push(n);
    } else if (/^-?\d+$/.test(part)) {
      out.push(Number(part));
    } else {
      return { ok: false, error: `“${part}” is not a whole number or a range like 2-4.` };
    }
  }
  if (new Set(out).size !== out.length) return { ok: false, error: "A number is listed twice." };
  return { ok: true, value: out };
}

/** Numbers separated by commas or spaces: "-4, 0, 2.5" -> [-4, 0, 2.5]. */
export function parseNumberList(text: string): Parsed<number[]> {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (parts.length === 0) return { ok: false, error: "Enter at least one number." };
  const out: number[] = [];
  for (const part of parts) {
    const value = Number(part);
    if (!Number.isFinite(value)) return { ok: false, error: `“${part}” is not a number.` };
    out.push(value);
  }
  if (new Set(out).size !== out.length) return { ok: false, error: "A number is listed twice." };
  return { ok: true, value: out };
}

/** One entry per non-blank line (trimmed at the end only: leading spaces may matter in a prompt). */
export const parseLines = (text: string): string[] =>
  text
    .split(/\r?\n/)
    .map((line) => line.trimEnd())
    .filter((line) => line.trim() !== "");

// --------------------------------------------------------------------------------------------
// Results
// --------------------------------------------------------------------------------------------

/** A probe's metrics on one split (any may be null: undefined, e.g. AUROC with one class). */
export interface Metrics {
  accuracy: number | null;
  auroc: number | null;
  f1: number | null;
  ece: number | null;
  n: number;
  positives: number;
}

export type Interval = [number | null, number | null];
export type Intervals = Partial<Record<"accuracy" | "auroc" | "f1" | "ece", Interval>>;

export interface TrainedMetrics {
  train?: Metrics;
  heldout?: Metrics;
  heldout_intervals?: Intervals;
  n_train?: number;
  n_heldout?: number;
}

export interface ProbeResult {
  probe_id: number;
  public_id: string;
  metrics: TrainedMetrics;
}

export interface VectorResult {
  vector_id: number;
  public_id: string;
  pairs: number;
  norms: Record<string, number>;
}

/** A finished batch run's summary (its results are downloaded: `batchDownloads`). */
export interface BatchResult {
  prompts: number;
  finish_reasons: Record<string, number>;
  tokens: number;
  mean_tokens: number;
  engines: { engine: string; version: string }[];
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** A trained probe's metrics object (a job's result, or a library probe's `metrics`), if it is one. */
export function trainedMetrics(value: unknown): TrainedMetrics | null {
  if (!isObject(value) || !(isObject(value.heldout) || isObject(value.train))) return null;
  return value;
}

export function probeResult(job: Job): ProbeResult | null {
  const r = job.result;
  if (job.kind !== "train_probe" || typeof r.probe_id !== "number" || !trainedMetrics(r.metrics)) return null;
  return r as unknown as ProbeResult;
}

export function vectorResult(job: Job): VectorResult | null {
  const r = job.result;
  if (job.kind !== "build_vector" || typeof r.vector_id !== "number" || !isObject(r.norms)) return null;
  return r as unknown as VectorResult;
}

export function batchResult(job: Job): BatchResult | null {
  const r = job.result;
  if (job.kind !== "batch_run" || typeof r.prompts !== "number" || !isObject(r.finish_reasons)) return null;
  return r as unknown as BatchResult;
}

/** A finished batch run's downloads: JSON Lines and Parquet, one result per prompt. */
export function batchDownloads(job: Job): { href: string; label: string }[] {
  if (job.kind !== "batch_run" || job.status !== "done") return [];
  return [
    { href: `/api/jobs/${job.id}/results.jsonl`, label: "results.jsonl" },
    { href: `/api/jobs/${job.id}/results.parquet`, label: "results.parquet" },
  ];
}

/** Where to see what a job made (the library item, the board, the sweep's results). */
export function madeLink(job: Job): { to: string; label: string } | null {
  if (job.kind === "build_vector" && job.vector_id !== null) {
    return { to: `/library?section=vectors&item=${job.vector_id}`, label: `Vector vec_${job.vector_id}` };
  }
  if (job.kind === "train_probe" && job.probe_id !== null) {
    return { to: `/library?section=probes&item=${job.probe_id}`, label: `Probe prb_${job.probe_id}` };
  }
  if (job.kind === "evaluate" && job.board_id !== null) {
    return { to: `/boards/${job.board_id}`, label: `Board #${job.board_id}` };
  }
  if (job.kind === "sweep" && job.status === "done") {
    return { to: `/jobs/${job.id}`, label: "Sweep results" };
  }
  return null;
}

/** A metric for display: 3 decimals, "—" when undefined. */
export function formatMetric(value: number | null | undefined, digits = 3): string {
  return value === null || value === undefined || !Number.isFinite(value) ? "—" : value.toFixed(digits);
}

export function formatInterval(interval: Interval | undefined, digits = 3): string {
  if (!interval) return "";
  const [low, high] = interval;
  if (low === null && high === null) return "";
  return `[${formatMetric(low, digits)}, ${formatMetric(high, digits)}]`;
}
