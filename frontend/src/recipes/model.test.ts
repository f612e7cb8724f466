import { describe, expect, it } from "vitest";
import type { Intervention } from "../chat/protocol";
import { defaultIntervention, draftErrors, errorsFor, generalErrors, parseIntList, positionsKind, positionsOf, typedIntList, typedNumber } from "./model";

describe("recipe model", () => {
  it("maps the server's keyed messages to an intervention's fields, dropping pydantic's union tag", () => {
    const errors = {
      "interventions[0].steer.layer": ["Input should be a valid integer"],
      "interventions[0]": ["layer 99 is out of range for 4 layers"],
      "interventions[1].when.probe": ["unknown probe prb_9"],
      spec: ["too many interventions"],
    };
    expect(errorsFor(errors, 0)).toEqual({
      layer: "Input should be a valid integer",
      "": "layer 99 is out of range for 4 layers",
    });
    expect(errorsFor(errors, 1)).toEqual({ "when.probe": "unknown probe prb_9" });
    expect(errorsFor(errors, 2)).toEqual({});
    expect(generalErrors(errors)).toEqual(["spec: too many interventions"]);
  });

  it("parses integer lists and refuses anything else", () => {
    expect(parseIntList("1, 2 3")).toEqual([1, 2, 3]);
    expect(parseIntList("-1,4")).toEqual([-1, 4]);
    expect(parseIntList("1.5")).toBe("Whole numbers only, separated by commas.");
    expect(parseIntList(" ")).toBe("Give at least one number.");
  });

  it("builds valid defaults per op", () => {
    expect(defaultIntervention("steer", 2, "vec_1")).toMatchObject({ op: "steer", layer: 2, vector: "vec_1" });
    expect(defaultIntervention("probe", 3, "prb_1")).toEqual({ op: "probe", layer: 3, probe: "prb_1", point: "resid_post" });
    expect(positionsKind({ indices: [1] })).toBe("indices");
    expect(positionsKind({ start: 0 })).toBe("slice");
    expect(positionsKind("generated")).toBe("generated");
  });

  it("keeps typed text that is not a valid value, instead of a number nobody typed", () => {
    expect(typedNumber("2.5")).toBe(2.5);
    expect(typedNumber("-3", true)).toBe(-3);
    expect(typedNumber("")).toBe(""); // a cleared field: not 0, not the previous value
    expect(typedNumber("1e400")).toBe("1e400"); // Infinity is no number to save
    expect(typedNumber("-")).toBe("-");
    expect(typedNumber("1.5", true)).toBe("1.5");
    expect(typedIntList("1, 2")).toEqual([1, 2]);
    expect(typedIntList("")).toBe("");
    expect(positionsOf("indices")).toEqual({ indices: "" }); // listed positions start empty, not [0]
  });

  it("finds every problem of a draft at once, keyed as the server keys its own", () => {
    const draft = [
      { op: "steer", layer: 1, vector: "vec_1", scale: "" },
      { op: "ablate", layer: 9, dims: "", scale: "1e400" },
      { op: "steer", layer: "-", vector: "", scale: 1e5, positions: { start: "", stop: null, step: 0 } },
      { op: "logit_lens", layer: 0, k: 21, positions: { indices: "1, x" } },
      { op: "clamp", layer: 0, direction: "vec_1", value: "NaN", scale: 1, when: { probe: "", layer: 2.5, threshold: "" } },
    ] as unknown as Intervention[];
    const errors = draftErrors(draft, 4);
    expect(Object.keys(errors).sort()).toEqual([
      "interventions[0].scale",
      "interventions[1].dims",
      "interventions[1].layer",
      "interventions[1].scale",
      "interventions[2].layer",
      "interventions[2].positions.start",
      "interventions[2].positions.step",
      "interventions[2].scale",
      "interventions[2].vector",
      "interventions[3].k",
      "interventions[3].positions",
      "interventions[4].value",
      "interventions[4].when.layer",
      "interventions[4].when.probe",
      "interventions[4].when.threshold",
    ]);
    expect(errors["interventions[0].scale"]).toEqual(["The scale is required: a number from -10000 to 10000."]);
    expect(errors["interventions[1].scale"]).toEqual(["The scale must be a number from -10000 to 10000, not “1e400”."]);
    expect(errors["interventions[1].layer"]).toEqual(["The layer must be a whole number from -4 to 3, not 9."]);
    expect(errors["interventions[1].dims"]?.[0]).toMatch(/^Dimension indices: /);
    expect(errorsFor(errors, 2)["positions.start"]).toBe("The slice's start is required: a whole number.");
    expect(draftErrors([defaultIntervention("steer", 2, "vec_1"), defaultIntervention("logit_lens", -1)], 4)).toEqual({});
  });
});

