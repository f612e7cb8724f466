// The recipe's writes as live controls: a scale slider and an on/off switch each. A change goes
// to every run in progress at once (it applies from the next token) and to later turns as an
// override.
import { useRef } from "react";
import { Empty } from "../ui/components";
import { describeIntervention } from "./heat";
import type { Adjustment, Intervention } from "./protocol";
import { WRITE_OPS } from "./protocol";

export interface Knob {
  scale: number;
  enabled: boolean;
}

export const initialKnobs = (interventions: Intervention[]): (Knob | null)[] =>
  interventions.map((item) =>
    WRITE_OPS.has(item.op ?? "") && "scale" in item
      ? { scale: item.scale ?? 1, enabled: item.enabled ?? true }
      : null,
  );

/** The knobs that differ from the recipe, as per-turn overrides. */
export function overridesOf(interventions: Intervention[], knobs: (Knob | null)[]): Adjustment[] {
  const initial = initialKnobs(interventions);
  return knobs.flatMap((knob, index) => {
    const start = initial[index];
    if (!knob || !start || (knob.scale === start.scale && knob.enabled === start.enabled)) return [];
    return [{ index, scale: knob.scale, enabled: knob.enabled }];
  });
}

const THROTTLE_MS = 80; // at most one adjust per 80 ms while dragging

export function Knobs({
  interventions,
  knobs,
  onChange,
}: {
  interventions: Intervention[];
  knobs: (Knob | null)[];
  onChange: (index: number, change: Partial<Knob>, live: boolean) => void;
}) {
  const timers = useRef<Record<number, number>>({});
  if (!interventions.length) return <Empty>No recipe: plain chat.</Empty>;
  return (
    <div>
      {interventions.map((item, index) => {
        const knob = knobs[index];
        const title = describeIntervention(item, index);
        if (!knob) {
          return (
            <div className="knob" key={index}>
              <div className="knob-title">{title}</div>
              <div className="meta">A read: shown per token, no live control.</div>
            </div>
          );
        }
        const base = "scale" in item ? Math.abs(item.scale ?? 1) : 1;
        const range = Math.max(10, base * 4);
        const sliderId = `knob-scale-${index}`;
        const switchId = `knob-enabled-${index}`;
        return (
          <div className="knob" key={index}>
            <div className="knob-title">{title}</div>
            <div className="knob-controls">
              <label htmlFor={sliderId} className="meta">Scale</label>
              <input
                id={sliderId}
                type="range"
                min={-range}
                max={range}
                step={range / 200}
                value={knob.scale}
                aria-label={`Scale of ${title}`}
                onChange={(event) => {
                  const scale = Number(event.target.value);
                  onChange(index, { scale }, false);
                  window.clearTimeout(timers.current[index]);
                  timers.current[index] = window.setTimeout(() => { onChange(index, { scale }, true); }, THROTTLE_MS);
                }}
              />
              <output htmlFor={sliderId}>{knob.scale.toFixed(2)}</output>
            </div>
            <div className="knob-controls">
              <input
                id={switchId}
                type="checkbox"
                checked={knob.enabled}
                onChange={(event) => { onChange(index, { enabled: event.target.checked }, true); }}
              />
              <label htmlFor={switchId}>Enabled</label>
            </div>
          </div>
        );
      })}
    </div>
  );
}
