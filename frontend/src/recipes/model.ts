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
  // Nothing chosen yet: the field starts empty (an error until positions are typed), never [0].
  if (kind === "indices") return { indices: "" } as unknown as PositionIndices;
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

// ------------------------------------------------------------------------------------------
// Drafts: what is being typed. A number field that does not hold a valid number keeps the
// typed text (a string where the spec wants a number), so the field shows it and the form
// refuses to save it: a value that was not typed is never sent.
// ------------------------------------------------------------------------------------------

/** The largest |scale| a write takes: the live sliders' and overrides' range. */
export const MAX_ABS_SCALE = 1e4;
export const MAX_LENS_K = 20;
export const MAX_POSITIONS = 64;
export const MAX_STEP = 65536;

/** Typed text as a field's value: the number it holds, or the text itself when it holds none. */
export function typedNumber(text: string, integer = false): number | string {
  const trimmed = text.trim();
  const value = Number(trimmed);
  if (trimmed === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value))) return text;
  return value;
}

/** A list typed as text ("1, 2 3"): its whole numbers, or the text itself when it holds none. */
export function typedIntList(text: string): number[] | string {
  const parsed = parseIntList(text);
  return typeof parsed === "string" ? text : parsed;
}

interface NumberRule {
  integer?: boolean;
  min?: number;
  max?: number;
}

function numberProblem(value: unknown, what: string, rule: NumberRule = {}): string | null {
  const { integer = false, min, max } = rule;
  const kind = integer ? "a whole number" : "a number";
  const range =
    min !== undefined && max !== undefined ? ` from ${String(min)} to ${String(max)}` : min !== undefined ? ` of at least ${String(min)}` : "";
  if (value === undefined || value === null || (typeof value === "string" && value.trim() === "")) {
    return `${what} is required: ${kind}${range}.`;
  }
  if (typeof value !== "number" || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    const typed = typeof value === "string" || typeof value === "number" ? String(value) : JSON.stringify(value);
    return `${what} must be ${kind}${range}, not “${typed}”.`;
  }
  if ((min !== undefined && value < min) || (max !== undefined && value > max)) {
    return `${what} must be ${kind}${range}, not ${String(value)}.`;
  }
  return null;
}

function listProblem(value: unknown, what: string, rule: { min?: number; most: number; unique?: boolean }): string | null {
  if (typeof value === "string") {
    const parsed = parseIntList(value);
    return `${what}: ${typeof parsed === "string" ? parsed : "whole numbers only, separated by commas."}`;
  }
  if (!Array.isArray(value) || value.length === 0) return `${what}: give at least one number.`;
  if (value.length > rule.most) return `${what}: at most ${String(rule.most)} numbers.`;
  if (rule.min !== undefined && value.some((v) => typeof v !== "number" || v < (rule.min ?? 0))) {
    return `${what}: numbers of at least ${String(rule.min)} only.`;
  }
  if (rule.unique && new Set(value).size !== value.length) return `${what}: each number once.`;
  return null;
}

const REFS: Partial<Record<Op, [string, string]>> = {
  steer: ["vector", "a steering vector"],
  project_out: ["direction", "a direction"],
  clamp: ["direction", "a direction"],
  probe: ["probe", "a probe"],
};

/**
 * Every problem of a draft the server must not be sent, keyed as the server keys its own
 * (`interventions[2].scale`), all at once: empty fields, text that is not a number, values out of
 * range (layers for this model), lists that hold nothing, references not chosen.
 */
export function draftErrors(draft: Intervention[], numLayers: number): Record<string, string[]> {
  const errors: Record<string, string[]> = {};
  const layerRule = { integer: true, min: -numLayers, max: numLayers - 1 };
  draft.forEach((intervention, index) => {
    const item = intervention as unknown as Record<string, unknown>;
    const at = (field: string, problem: string | null) => {
      if (problem) errors[`interventions[${String(index)}].${field}`] = [problem];
    };
    const op = (item.op ?? "steer") as Op;
    at("layer", numberProblem(item.layer, "The layer", layerRule));
    const positions = item.positions;
    if (positions && typeof positions === "object") {
      if ("indices" in positions) {
        at("positions", listProblem((positions).indices, "Position indices", { most: MAX_POSITIONS }));
      } else {
        const slice = positions as Record<string, unknown>;
        at("positions.start", numberProblem(slice.start, "The slice's start", { integer: true }));
        if (slice.stop !== null && slice.stop !== undefined) {
          at("positions.stop", numberProblem(slice.stop, "The slice's stop", { integer: true }));
        }
        at("positions.step", numberProblem(slice.step, "The slice's step", { integer: true, min: 1, max: MAX_STEP }));
      }
    }
    const ref = REFS[op];
    if (ref && !item[ref[0]]) at(ref[0], `Choose ${ref[1]}.`);
    if (WRITES.has(op)) {
      at("scale", numberProblem(item.scale, "The scale", { min: -MAX_ABS_SCALE, max: MAX_ABS_SCALE }));
    }
    if (op === "clamp") at("value", numberProblem(item.value, "The value"));
    if (op === "logit_lens") at("k", numberProblem(item.k, "Top k", { integer: true, min: 1, max: MAX_LENS_K }));
    if (op === "ablate") {
      if (item.dims !== "all" && item.dims !== undefined) {
        at("dims", listProblem(item.dims, "Dimension indices", { min: 0, most: 65536, unique: true }));
      }
      if (item.mode === "mean" && !item.mean) at("mean", "Choose a vector of mean values.");
    }
    if (op === "patch") {
      const source = item.source as { text?: unknown } | undefined;
      if (typeof source?.text !== "string" || !source.text.trim()) at("source", "Type the source prompt.");
    }
    const gate = item.when as Record<string, unknown> | null | undefined;
    if (gate) {
      if (!gate.probe) at("when.probe", "Choose the gate's probe.");
      at("when.layer", numberProblem(gate.layer, "The gate's layer", layerRule));
      at("when.threshold", numberProblem(gate.threshold ?? 0, "The threshold"));
    }
  });
  return errors;
}
