import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { describe, expect, it, vi } from "vitest";
import type { Intervention } from "../chat/protocol";
import { InterventionForm } from "./InterventionForm";
import type { Choice } from "./InterventionForm";

const vectors: Choice[] = [{ id: "vec_1", label: "happy" }];
const probes: Choice[] = [{ id: "prb_4", label: "sentiment", layer: 3 }];

// The form as its page holds it: the value in state, every change also recorded by the spy.
function Stateful({ initial, errors, spy }: { initial: Intervention; errors: Record<string, string>; spy: (next: Intervention) => void }) {
  const [value, setValue] = useState(initial);
  return (
    <InterventionForm
      index={0}
      value={value}
      numLayers={4}
      vectors={vectors}
      probes={probes}
      errors={errors}
      onChange={(next) => { spy(next); setValue(next); }}
      onRemove={vi.fn()}
      onMove={vi.fn()}
    />
  );
}

function setup(value: Intervention, errors: Record<string, string> = {}) {
  const onChange = vi.fn<(next: Intervention) => void>();
  render(<Stateful initial={value} errors={errors} spy={onChange} />);
  return { onChange, form: screen.getByRole("group", { name: "Intervention 1" }) };
}

const steer: Intervention = { op: "steer", layer: 1, vector: "vec_1", scale: 4, normalize: "unit" };

describe("InterventionForm", () => {
  it("shows a steer's fields, its vector picked from the model's library", () => {
    const { form } = setup(steer);
    const picker = within(form).getByLabelText<HTMLSelectElement>("Steering vector");
    expect(picker.value).toBe("vec_1");
    expect(within(picker).getAllByRole("option").map((o) => o.textContent)).toEqual(["Choose…", "happy (vec_1)"]);
    expect(within(form).getByLabelText<HTMLInputElement>("Scale").value).toBe("4");
    expect(within(form).queryByLabelText("Probe")).toBeNull();
  });

  it("switching the op gives that op's defaults, keeping the layer", async () => {
    const { form, onChange } = setup(steer);
    await userEvent.selectOptions(within(form).getByLabelText("Operation"), "probe");
    expect(onChange).toHaveBeenLastCalledWith({ op: "probe", layer: 1, probe: "prb_4", point: "resid_post" });
  });

  it("picking a probe for a read moves it to the probe's layer", async () => {
    const { form, onChange } = setup({ op: "probe", layer: 0, probe: "" });
    await userEvent.selectOptions(within(form).getByLabelText("Probe"), "prb_4");
    expect(onChange).toHaveBeenLastCalledWith({ op: "probe", layer: 3, probe: "prb_4" });
  });

  it("edits the layer, a negative one included; text that is no layer stays text", async () => {
    const { form, onChange } = setup(steer);
    const layer = within(form).getByLabelText<HTMLInputElement>("Layer");
    await userEvent.clear(layer);
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, layer: "" }); // cleared: not 1, not 0
    await userEvent.type(layer, "-");
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, layer: "-" });
    await userEvent.type(layer, "2");
    expect(layer.value).toBe("-2");
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, layer: -2 });
    await userEvent.type(layer, ".5");
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, layer: "-2.5" }); // not a whole number
  });

  it("keeps what was typed in the scale: cleared, 1e400, a number", async () => {
    const { form, onChange } = setup(steer);
    const scale = within(form).getByLabelText<HTMLInputElement>("Scale");
    await userEvent.clear(scale);
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, scale: "" });
    await userEvent.type(scale, "1e400");
    expect(scale.value).toBe("1e400");
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, scale: "1e400" });
    await userEvent.clear(scale);
    await userEvent.type(scale, "2.");
    expect(scale.value).toBe("2."); // what is typed stays as typed
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, scale: 2 });
  });

  it("listed dimensions start empty and keep what was typed", async () => {
    const { form, onChange } = setup({ op: "ablate", layer: 1, dims: "all", scale: 1 });
    await userEvent.selectOptions(within(form).getByLabelText("Dimensions"), "list");
    expect(onChange).toHaveBeenLastCalledWith({ op: "ablate", layer: 1, dims: "", scale: 1 }); // never [0]
    const dims = within(form).getByLabelText<HTMLInputElement>("Dimension indices");
    expect(dims.value).toBe("");
    await userEvent.type(dims, "3, 5");
    expect(onChange).toHaveBeenLastCalledWith({ op: "ablate", layer: 1, dims: [3, 5], scale: 1 });
    await userEvent.clear(dims);
    expect(onChange).toHaveBeenLastCalledWith({ op: "ablate", layer: 1, dims: "", scale: 1 });
  });

  it("an emptied slice start stays empty (an error), an emptied stop means none", async () => {
    const { form, onChange } = setup({ ...steer, positions: { start: 2, stop: 5, step: 1 } });
    await userEvent.clear(within(form).getByLabelText("Start"));
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, positions: { start: "", stop: 5, step: 1 } });
    await userEvent.clear(within(form).getByLabelText("Stop"));
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, positions: { start: "", stop: null, step: 1 } });
  });

  it("adds and removes a probe gate", async () => {
    const { form, onChange } = setup(steer);
    await userEvent.click(within(form).getByLabelText("Only where a probe fires"));
    expect(onChange).toHaveBeenLastCalledWith({
      ...steer,
      when: { probe: "prb_4", layer: 1, point: "resid_post", threshold: 0, direction: "above" },
    });
  });

  it("removes an absent optional field instead of sending undefined", async () => {
    const gated: Intervention = { ...steer, when: { probe: "prb_4", layer: 3 } };
    const { form, onChange } = setup(gated);
    await userEvent.click(within(form).getByLabelText("Only where a probe fires"));
    const last = onChange.mock.lastCall?.[0];
    expect(last).toEqual(steer);
    expect(last !== undefined && "when" in last).toBe(false);
  });

  it("shows the server's messages at their fields", () => {
    const { form } = setup(steer, { layer: "layer 99 is out of range", "": "this intervention is invalid" });
    const layer = within(form).getByLabelText("Layer");
    expect(layer.getAttribute("aria-describedby")).toBeTruthy();
    expect(within(form).getByText("layer 99 is out of range")).toBeTruthy();
    expect(within(form).getByText("this intervention is invalid")).toBeTruthy();
  });

  it("offers a slice of positions with its own fields", async () => {
    const { form, onChange } = setup(steer);
    await userEvent.selectOptions(within(form).getByLabelText("Positions"), "slice");
    expect(onChange).toHaveBeenLastCalledWith({ ...steer, positions: { start: 0, stop: null, step: 1 } });
  });
});
