import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import type { EvaluatedProbe } from "./evaluation";
import { nextSort, rocGrid, sortProbes } from "./evaluation";
import { MetricsTable } from "./MetricsTable";

const probe = (id: number, name: string, layer: number, auroc: number | null, ece: number): EvaluatedProbe => ({
  id,
  public_id: `prb_${id}`,
  name,
  owner: "alice",
  layer,
  point: "resid_post",
  metrics: { accuracy: 0.5 + id / 10, auroc, f1: 0.5, ece, n: 64, positives: 32 },
  intervals: { auroc: auroc === null ? [null, null] : [auroc - 0.05, Math.min(1, auroc + 0.05)], ece: [0, ece * 2] },
  roc: null,
});

const probes = [probe(1, "beta", 2, 0.8, 0.1), probe(2, "alpha", 0, null, 0.3), probe(3, "gamma", 1, 0.95, 0.05)];

const names = () =>
  within(screen.getByRole("table", { name: "Probe metrics" }))
    .getAllByRole("rowheader")
    .map((cell) => cell.textContent.split("prb_")[0]);

const sortOf = (name: RegExp) => screen.getByRole("columnheader", { name }).getAttribute("aria-sort");

describe("MetricsTable", () => {
  it("starts best AUROC first (undefined last) and shows each value with its interval", () => {
    render(<MetricsTable probes={probes} />);
    expect(names()).toEqual(["gamma", "beta", "alpha"]);
    expect(sortOf(/^AUROC/)).toBe("descending");
    expect(sortOf(/^ECE/)).toBe("none");
    const gamma = screen.getAllByRole("row")[1];
    const auroc = gamma?.querySelector("td[data-metric=auroc]");
    expect(auroc?.textContent).toBe("0.950[0.900, 1.000]");
    const alpha = screen.getAllByRole("row")[3];
    expect(alpha?.querySelector("td[data-metric=auroc]")?.textContent).toBe("—");
  });

  it("sorts by the clicked column, each first click best first, a second click reversing it", async () => {
    const user = userEvent.setup();
    render(<MetricsTable probes={probes} />);
    await user.click(screen.getByRole("button", { name: /^AUROC/ }));
    expect(sortOf(/^AUROC/)).toBe("ascending");
    expect(names()).toEqual(["beta", "gamma", "alpha"]); // null stays last either way

    await user.click(screen.getByRole("button", { name: /^ECE/ }));
    expect(sortOf(/^ECE/)).toBe("ascending"); // lower calibration error is better
    expect(sortOf(/^AUROC/)).toBe("none");
    expect(names()).toEqual(["gamma", "beta", "alpha"]);

    await user.click(screen.getByRole("button", { name: /^Probe/ }));
    expect(names()).toEqual(["alpha", "beta", "gamma"]);
    await user.click(screen.getByRole("button", { name: /^Probe/ }));
    expect(sortOf(/^Probe/)).toBe("descending");
    expect(names()).toEqual(["gamma", "beta", "alpha"]);

    await user.click(screen.getByRole("button", { name: /^Layer/ }));
    expect(names()).toEqual(["alpha", "gamma", "beta"]);
  });
});

describe("evaluation helpers", () => {
  it("keeps the board's order on ties", () => {
    const tied = [probe(1, "a", 0, 0.9, 0.1), probe(2, "b", 0, 0.9, 0.1)];
    expect(sortProbes(tied, { key: "auroc", direction: "descending" }).map((p) => p.id)).toEqual([1, 2]);
    expect(sortProbes(tied, { key: "auroc", direction: "ascending" }).map((p) => p.id)).toEqual([1, 2]);
    expect(nextSort({ key: "auroc", direction: "descending" }, "f1")).toEqual({ key: "f1", direction: "descending" });
  });

  it("puts every ROC curve on one x, vertical steps kept, gaps interpolated", () => {
    const grid = rocGrid([
      { fpr: [0, 0, 1], tpr: [0, 1, 1] },
      { fpr: [0, 0.5, 1], tpr: [0, 0.5, 1] },
      null,
    ]);
    expect(grid.x).toEqual([0, 0, 0.5, 0.5, 1, 1]);
    expect(grid.ys[0]).toEqual([0, 1, 1, 1, 1, 1]);
    expect(grid.ys[1]).toEqual([0, 0, 0.5, 0.5, 1, 1]);
    expect(grid.ys[2]).toEqual([null, null, null, null, null, null]);
  });
});
