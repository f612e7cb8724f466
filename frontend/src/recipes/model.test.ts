import { describe, expect, it } from "vitest";
import { defaultIntervention, errorsFor, generalErrors, parseIntList, positionsKind } from "./model";

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
});
