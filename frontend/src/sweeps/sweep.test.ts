import { describe, expect, it } from "vitest";
import type { SweepResult } from "./sweep";
import { cellTint, curvesByLayer, formatNumber, metricOptions, metricRange, metricValue, sweepGrid } from "./sweep";

const cell = (layer: number, scale: number, kl: number, shift: number | null) => ({
  layer, scale, kl_mean: kl, kl_max: kl * 2, perplexity: 10 + kl, tokens: 8, probe_shift: [shift],
});

const result: SweepResult = {
  prompts: 2,
  layers: [2, 1],
  scales: [4, -4, 0],
  probes: ["prb_7"],
  cells: [cell(2, 4, 0.5, 1.5), cell(2, -4, 0.4, -1), cell(2, 0, 0, 0), cell(1, 4, 0.2, 0.5), cell(1, -4, 0.1, null), cell(1, 0, 0, 0)],
};

describe("sweep results", () => {
  it("lays the cells out by layer (as swept) and scale (ascending)", () => {
    const grid = sweepGrid(result);
    expect(grid.layers).toEqual([2, 1]);
    expect(grid.scales).toEqual([-4, 0, 4]);
    expect(grid.cell(1, -4)).toBe(4);
    expect(grid.cell(3, 0)).toBeUndefined();
  });

  it("reads the chosen metric, a probe's shift included", () => {
    expect(metricOptions(result).map(([value]) => value)).toEqual(["kl_mean", "kl_max", "perplexity", "shift:0"]);
    expect(metricValue(result.cells[0] ?? cell(0, 0, 0, 0), "shift:0")).toBe(1.5);
    expect(metricValue(result.cells[4] ?? cell(0, 0, 0, 0), "shift:0")).toBeNull();
    expect(metricRange(result, "kl_max")).toEqual([0, 1]);
    expect(curvesByLayer(result, "kl_mean")).toEqual({
      x: [-4, 0, 4],
      series: [
        { label: "layer 2", values: [0.4, 0, 0.5] },
        { label: "layer 1", values: [0.1, 0, 0.2] },
      ],
    });
  });

  it("tints costs on one scale and shifts around zero", () => {
    expect(cellTint(0.5, "kl_mean", [0, 0.5])).toBe("rgba(var(--pos), 0.600)");
    expect(cellTint(0, "kl_mean", [0, 0.5])).toBe("rgba(var(--pos), 0.000)");
    expect(cellTint(-1, "shift:0", [-1, 1.5])).toBe("rgba(var(--neg), 0.400)");
    expect(cellTint(null, "shift:0", [-1, 1.5])).toBeUndefined();
    expect(formatNumber(0.12345)).toBe("0.123");
    expect(formatNumber(5.8e-7)).toBe("5.80e-7");
    expect(formatNumber(null)).toBe("—");
  });
});
