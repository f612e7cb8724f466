// Every probe's ROC curve in one chart (uPlot), with the chance diagonal.
import { useMemo } from "react";
import { Empty } from "../ui/components";
import { LineChart, colourOf } from "../ui/LineChart";
import type { LineSeries } from "../ui/LineChart";
import type { EvaluatedProbe } from "./evaluation";
import { rocGrid } from "./evaluation";
import { formatMetric } from "../jobs/model";

const UNIT: [number, number] = [0, 1];

export function RocChart({ probes }: { probes: readonly EvaluatedProbe[] }) {
  const { x, series } = useMemo(() => {
    const grid = rocGrid(probes.map((p) => p.roc));
    const lines: LineSeries[] = probes.map((p, i) => ({
      label: `${p.name} (${p.public_id}, AUROC ${formatMetric(p.metrics.auroc)})`,
      values: grid.ys[i] ?? [],
      color: colourOf(i),
    }));
    lines.push({ label: "chance", values: grid.x, color: "#8a919e", dash: [4, 4], quiet: true });
    return { x: grid.x, series: lines };
  }, [probes]);
  if (!probes.some((p) => p.roc)) return <Empty>No ROC curves: the evaluation set holds one class only.</Empty>;
  return (
    <LineChart
      x={x}
      series={series}
      label="ROC curves of the board's probes: true-positive rate against false-positive rate"
      xLabel="false-positive rate"
      yLabel="true-positive rate"
      height={280}
      xRange={UNIT}
      yRange={UNIT}
    />
  );
}
