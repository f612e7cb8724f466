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

/** The indices of the recipe's interventions of one op (its probes, its logit lenses). */
export function indicesOf(interventions: Intervention[], op: Intervention["op"]): number[] {
  return interventions.flatMap((item, index) => (item.op === op ? [index] : []));
}
