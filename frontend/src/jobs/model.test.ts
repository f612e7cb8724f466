import { describe, expect, it } from "vitest";
import type { Job } from "./model";
import { formatInterval, madeLink, parseIntList, parseLines, parseNumberList, probeResult } from "./model";

describe("lists typed into forms", () => {
  it("reads whole numbers and ranges", () => {
    expect(parseIntList("0, 2-4 7")).toEqual({ ok: true, value: [0, 2, 3, 4, 7] });
    expect(parseIntList("-1")).toEqual({ ok: true, value: [-1] });
    expect(parseIntList("")).toMatchObject({ ok: false });
    expect(parseIntList("1, x")).toEqual({ ok: false, error: "“x” is not a whole number or a range like 2-4." });
    expect(parseIntList("4-2")).toMatchObject({ ok: false, error: "“4-2” is an empty range." });
    expect(parseIntList("1, 1-2")).toMatchObject({ ok: false, error: "A number is listed twice." });
  });

  it("reads numbers and lines", () => {
    expect(parseNumberList("-4, 0 2.5")).toEqual({ ok: true, value: [-4, 0, 2.5] });
    expect(parseNumberList("1e3, abc")).toEqual({ ok: false, error: "“abc” is not a number." });
    expect(parseLines("  one\n\n two  \r\n")).toEqual(["  one", " two"]);
  });
});

describe("job results", () => {
  const base = { id: 3, status: "done", vector_id: null, probe_id: null, board_id: null, result: {} } as unknown as Job;

  it("links what a job made", () => {
    expect(madeLink({ ...base, kind: "train_probe", probe_id: 9 })).toEqual({ to: "/library?section=probes&item=9", label: "Probe prb_9" });
    expect(madeLink({ ...base, kind: "build_vector", vector_id: 2 })?.to).toBe("/library?section=vectors&item=2");
    expect(madeLink({ ...base, kind: "evaluate", board_id: 4 })?.to).toBe("/boards/4");
    expect(madeLink({ ...base, kind: "sweep" })?.to).toBe("/jobs/3");
    expect(madeLink({ ...base, kind: "sweep", status: "running" })).toBeNull();
  });

  it("reads a trained probe's result and formats intervals", () => {
    const metrics = { heldout: { auroc: 0.9, accuracy: 0.8, f1: null, ece: 0.1, n: 10, positives: 5 }, heldout_intervals: { auroc: [0.75, 1] } };
    const job = { ...base, kind: "train_probe", result: { probe_id: 9, public_id: "prb_9", metrics } } as unknown as Job;
    expect(probeResult(job)?.metrics.heldout?.auroc).toBe(0.9);
    expect(probeResult({ ...job, kind: "sweep" })).toBeNull();
    expect(formatInterval([0.75, 1])).toBe("[0.750, 1.000]");
    expect(formatInterval([null, 0.5])).toBe("[—, 0.500]");
    expect(formatInterval([null, null])).toBe("");
  });
});
