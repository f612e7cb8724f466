// How a shared run's settings read: one line per intervention, override and live adjustment, and
// the sampling as label/value rows.
type Spec = Record<string, unknown>;

function text(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return "";
}

// The library items an intervention reads, in the order they are named.
const REFERENCES = ["vector", "direction", "probe", "mean"] as const;

/** “#0 steer “name” · layer 2 · resid_post · scale 4 · vector vec_1” (and “disabled” when off). */
export function describeSpec(item: Spec, index: number): string {
  const name = text(item.name);
  const parts = [`#${index} ${text(item.op) || "?"}${name ? ` “${name}”` : ""}`, `layer ${text(item.layer) || "?"}`];
  if (text(item.point)) parts.push(text(item.point));
  if (typeof item.scale === "number") parts.push(`scale ${item.scale}`);
  if (typeof item.value === "number") parts.push(`value ${item.value}`);
  for (const key of REFERENCES) {
    if (text(item[key])) parts.push(`${key} ${text(item[key])}`);
  }
  if (item.enabled === false) parts.push("disabled");
  return parts.join(" · ");
}

/** An override or a logged adjustment: “#0 scale 12.00 disabled”, after “from token 4:” for the log. */
export function describeAdjustment(item: Spec): string {
  const step = typeof item.step === "number" ? `from token ${item.step}: ` : "";
  const scale = typeof item.scale === "number" ? ` scale ${item.scale.toFixed(2)}` : "";
  const enabled = typeof item.enabled === "boolean" ? (item.enabled ? " enabled" : " disabled") : "";
  return `${step}#${text(item.index) || "?"}${scale}${enabled}`;
}

const SAMPLING: readonly (readonly [string, string])[] = [
  ["temperature", "Temperature"],
  ["top_p", "Top p"],
  ["seed", "Seed"],
  ["max_new_tokens", "Max new tokens"],
];

/** The sampling settings as [label, value] rows (“—” for one not set). */
export function samplingRows(sampling: Spec): [string, string][] {
  return SAMPLING.map(([key, label]) => [label, text(sampling[key]) || "—"]);
}
