// Colours and labels for per-token probe scores (a diverging scale, symmetric around zero).
import type { Intervention } from "./protocol";

const MAX_ALPHA = 0.6; // keeps dark text readable on the strongest colour

export function heatColour(score: number | undefined, maxAbs: number): string | undefined {
  if (score === undefined || !Number.isFinite(score) || maxAbs <= 0) return undefined;
  const alpha = (MAX_ALPHA * Math.min(1, Math.abs(score) / maxAbs)).toFixed(3);
  return score >= 0 ? `rgba(var(--pos), ${alpha})` : `rgba(var(--neg), ${alpha})`;
}

export function describeIntervention(item: Intervention, index: number): string {
  const op = item.op ?? "?";
  const name = "name" in item && item.name ? ` “${item.name}”` : "";
  return `#${index} ${op}${name} @ layer ${item.layer}`;
}

export function probeIndices(interventions: Intervention[]): number[] {
  return interventions.flatMap((item, index) => (item.op === "probe" ? [index] : []));
}

export function lensIndices(interventions: Intervention[]): number[] {
  return interventions.flatMap((item, index) => (item.op === "logit_lens" ? [index] : []));
}
