// The recipe editor's model: defaults per op, field errors by path, and small parsers. The
// intervention types are generated from interventions/schema/recipe.schema.json.
import type { Gate, PositionIndices, PositionSlice } from "../generated/recipe";
import type { Intervention } from "../chat/protocol";

export type Op = NonNullable<Intervention["op"]>;

export const OPS: { op: Op; label: string; help: string }[] = [
  { op: "steer", label: "Steer", help: "Add a steering vector, times a scale." },
  { op: "ablate", label: "Ablate", help: "Zero (or mean-replace) dimensions or neurons." },
  { op: "project_out", label: "Project out", help: "Remove the component along a direction." },
  { op: "clamp", label: "Clamp", help: "Set the component along a direction to a value." },
  { op: "patch", label: "Patch", help: "Replace activations with another prompt's." },
  { op: "probe", label: "Probe", help: "Read: a probe's score on every token." },
  { op: "logit_lens", label: "Logit lens", help: "Read: the top tokens decoded from this site." },
];

export const POINTS = ["resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act"] as const;
export const NAMED_POSITIONS = ["all", "prompt", "generated", "last_prompt"] as const;
export const WRITES: ReadonlySet<Op> = new Set<Op>(["steer", "ablate", "project_out", "clamp", "patch"]);

/** A new intervention of `op` at `layer`; `ref` fills its vector or probe reference. */
export function defaultIntervention(op: Op, layer: number, ref = ""): Intervention {
  switch (op) {
    case "steer":
      return { op, layer, vector: ref, scale: 4, normalize: "unit", positions: "all", point: "resid_post" };
    case "ablate":
      return { op, layer, dims: "all", mode: "zero", scale: 1, point: "resid_post" };
    case "project_out":
      return { op, layer, direction: ref, scale: 1, point: "resid_post" };
    case "clamp":
      return { op, layer, direction: ref, value: 0, scale: 1, point: "resid_post" };
    case "patch":
      return { op, layer, source: { text: "" }, align: "end", scale: 1, point: "resid_post" };
    case "probe":
      return { op, layer, probe: ref, point: "resid_post" };
    case "logit_lens":
      return { op, layer, k: 5, point: "resid_post" };
  }
}

export const defaultGate = (layer: number, probe = ""): Gate => ({
  probe,
  layer,
  point: "resid_post",
  threshold: 0,
  direction: "above",
});

export type PositionsKind = (typeof NAMED_POSITIONS)[number] | "slice" | "indices";

export function positionsKind(positions: unknown): PositionsKind {
  if (typeof positions === "string") return positions as PositionsKind;
  if (positions && typeof positions === "object" && "indices" in positions) return "indices";
  if (positions && typeof positions === "object") return "slice";
  return "all";
}

export function positionsOf(kind: PositionsKind): string | PositionSlice | PositionIndices {
  if (kind === "slice") return { start: 0, stop: null, step: 1 };
  if (kind === "indices") return { indices: [0] };
  return kind;
}

/** "1, 2 3" -> [1, 2, 3]; anything that is not a whole number is an error message instead. */
export function parseIntList(text: string): number[] | string {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length) return "Give at least one number.";
  const numbers = parts.map(Number);
  if (numbers.some((n) => !Number.isInteger(n))) return "Whole numbers only, separated by commas.";
  return numbers;
}

/** The server's keyed messages (`interventions[2].layer`) for intervention `index`, by field. */
export function errorsFor(errors: Record<string, string[]>, index: number): Record<string, string> {
  const prefix = `interventions[${index}]`;
  const out: Record<string, string> = {};
  for (const [path, messages] of Object.entries(errors)) {
    if (path !== prefix && !path.startsWith(`${prefix}.`)) continue;
    let field = path === prefix ? "" : path.slice(prefix.length + 1);
    // pydantic names the union member first (`interventions[0].steer.layer`): drop the tag.
    const tag = OPS.find(({ op }) => field === op || field.startsWith(`${op}.`));
    if (tag) field = field.slice(tag.op.length + 1);
    out[field] = [out[field], ...messages].filter(Boolean).join(" ");
  }
  return out;
}

/** Messages not tied to one intervention (the whole spec, a name, a team). */
export function generalErrors(errors: Record<string, string[]>): string[] {
  return Object.entries(errors)
    .filter(([path]) => !path.startsWith("interventions["))
    .flatMap(([path, messages]) => messages.map((m) => (path && path !== "__all__" ? `${path}: ${m}` : m)));
}

export const prettySpec = (interventions: Intervention[]): string =>
  JSON.stringify({ interventions }, null, 2);
