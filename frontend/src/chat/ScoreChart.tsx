// A probe's score per generated token (uPlot), under the heatmap.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export function ScoreChart({ scores, label }: { scores: (number | null)[]; label: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const node = box.current;
    if (!node) return;
    const width = Math.max(240, node.clientWidth);
    plot.current = new uPlot(
      {
        width,
        height: 120,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false } },
        axes: [{ label: "token", size: 36 }, { size: 48 }],
        series: [{}, { label, stroke: "#2952cc", width: 1.5, spanGaps: false, points: { size: 4 } }],
      },
      [[], []],
      node,
    );
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, [label]);

  useEffect(() => {
    plot.current?.setData([scores.map((_, i) => i), scores]);
  }, [scores]);

  return <div className="chart" ref={box} role="img" aria-label={`${label}: score per generated token`} />;
}
