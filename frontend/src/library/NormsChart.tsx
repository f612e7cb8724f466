// A steering vector's L2 norm per layer (uPlot bars), beside the table of the same values.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

/** Layer -> norm, sorted by layer (the API's keys are the layers as strings). */
export function sortedNorms(norms: Record<string, number>): [number, number][] {
  return Object.entries(norms)
    .map(([layer, norm]): [number, number] => [Number(layer), norm])
    .filter(([layer]) => Number.isFinite(layer))
    .sort((a, b) => a[0] - b[0]);
}

export function NormsChart({ norms }: { norms: Record<string, number> }) {
  const box = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const node = box.current;
    if (!node) return;
    const points = sortedNorms(norms);
    const bars = uPlot.paths.bars?.({ size: [0.6, 48] });
    const plot = new uPlot(
      {
        width: Math.max(240, node.clientWidth),
        height: 160,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: false, range: (_u, min, max) => [min - 0.5, max + 0.5] },
          y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        axes: [
          { label: "layer", size: 36, incrs: [1, 2, 5, 10, 20, 50, 100] },
          { label: "L2 norm", size: 56 },
        ],
        series: [
          {},
          {
            label: "L2 norm",
            stroke: "#2952cc",
            fill: "rgba(41, 82, 204, 0.35)",
            width: 1,
            paths: bars,
            points: { show: false },
          },
        ],
      },
      [points.map(([layer]) => layer), points.map(([, norm]) => norm)],
      node,
    );
    return () => {
      plot.destroy();
    };
  }, [norms]);

  return (
    <div
      className="chart"
      ref={box}
      role="img"
      aria-label="Bar chart of the L2 norm per layer (the table lists the same values)"
    />
  );
}
