// A line chart (uPlot) of one or more series over a shared x, with its own legend below (uPlot's
// legend is off: a plain list reads better and stays accessible). Callers memoize `x` and `series`:
// the plot is rebuilt when they change.
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface LineSeries {
  label: string;
  values: (number | null)[];
  color?: string;
  dash?: number[];
  /** Hidden from the legend (a reference line such as a ROC chart's diagonal). */
  quiet?: boolean;
}

/** Distinguishable colours (each readable as a line on white). */
export const PALETTE = ["#2952cc", "#c0392b", "#1e6b3a", "#8a5a00", "#7b3fb5", "#0f7c8c", "#b0367a", "#4d5566"];

const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

export const colourOf = (index: number): string => PALETTE[index % PALETTE.length] ?? "#2952cc";

export function LineChart({
  x,
  series,
  label,
  xLabel,
  yLabel,
  height = 220,
  xRange,
  yRange,
  points = false,
  integerX = false,
}: {
  x: number[];
  series: LineSeries[];
  /** What the chart shows, for screen readers (role=img). */
  label: string;
  xLabel: string;
  yLabel: string;
  height?: number;
  xRange?: [number, number];
  yRange?: [number, number];
  points?: boolean;
  /** x counts things (tokens): ticks at whole numbers only. */
  integerX?: boolean;
}) {
  const box = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(0);

  // Follow the container's width (the plot is drawn at a fixed pixel size).
  useEffect(() => {
    const node = box.current;
    if (!node || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => {
      setWidth(Math.round(node.clientWidth));
    });
    observer.observe(node);
    return () => {
      observer.disconnect();
    };
  }, []);

  const xMin = xRange?.[0];
  const xMax = xRange?.[1];
  const yMin = yRange?.[0];
  const yMax = yRange?.[1];

  useEffect(() => {
    const node = box.current;
    if (!node) return;
    const plot = new uPlot(
      {
        width: Math.max(240, width || node.clientWidth),
        height,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: false, ...(xMin !== undefined && xMax !== undefined ? { range: [xMin, xMax] } : {}) },
          y: yMin !== undefined && yMax !== undefined ? { range: [yMin, yMax] } : {},
        },
        axes: [
          { label: xLabel, size: 40, ...(integerX ? { incrs: INTEGER_STEPS } : {}) },
          { label: yLabel, size: 56 },
        ],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: s.color ?? colourOf(i),
            width: 1.5,
            spanGaps: false,
            ...(s.dash ? { dash: s.dash } : {}),
            points: { show: points, size: 4 },
          })),
        ],
      },
      [x, ...series.map((s) => s.values)] as uPlot.AlignedData,
      node,
    );
    return () => {
      plot.destroy();
    };
  }, [x, series, width, height, xLabel, yLabel, xMin, xMax, yMin, yMax, points, integerX]);

  return (
    <figure className="chart-figure">
      <div className="chart" ref={box} role="img" aria-label={label} />
      <figcaption>
        <ul className="chart-legend" aria-label={`Legend: ${label}`}>
          {series.map((s, i) =>
            s.quiet ? null : (
              <li key={`${i}-${s.label}`}>
                <span className="swatch" style={{ background: s.color ?? colourOf(i) }} aria-hidden="true" />
                {s.label}
              </li>
            ),
          )}
        </ul>
      </figcaption>
    </figure>
  );
}
