// A finished sweep: the chosen metric as a layers × scales heatmap (a cell opens its transcripts)
// and as curves against the scale, one per layer.
import { useMemo, useState } from "react";
import { Field, Panel } from "../ui/components";
import { LineChart } from "../ui/LineChart";
import type { Metric, SweepResult } from "./sweep";
import { cellTint, curvesByLayer, formatNumber, isShift, metricOptions, metricRange, metricValue, sweepGrid } from "./sweep";
import { Transcripts } from "./Transcripts";

export function SweepView({ jobId, result }: { jobId: number; result: SweepResult }) {
  const [metric, setMetric] = useState<Metric>("kl_mean");
  const [opened, setOpened] = useState<number | null>(null);
  const options = metricOptions(result);
  const label = options.find(([value]) => value === metric)?.[1] ?? metric;
  const grid = useMemo(() => sweepGrid(result), [result]);
  const range = useMemo(() => metricRange(result, metric), [result, metric]);
  const curves = useMemo(() => curvesByLayer(result, metric), [result, metric]);
  const openedCell = opened === null ? undefined : result.cells[opened];

  return (
    <>
      <Panel
        title="Sweep results"
        actions={
          <Field label="Metric" inline>
            {(id) => (
              <select id={id} value={metric} onChange={(e) => { setMetric(e.target.value); }}>
                {options.map(([value, text]) => (
                  <option key={value} value={value}>{text}</option>
                ))}
              </select>
            )}
          </Field>
        }
      >
        <p className="meta">
          {result.prompts} prompt{result.prompts === 1 ? "" : "s"} · {grid.layers.length} layer{grid.layers.length === 1 ? "" : "s"} ×{" "}
          {grid.scales.length} scale{grid.scales.length === 1 ? "" : "s"}. Select a cell to read its transcripts.
        </p>
        <div className="grid-2">
          <div className="table-scroll">
            <table className="matrix" aria-label={`${label} by layer and scale`}>
              <thead>
                <tr>
                  <th scope="col">Layer \ scale</th>
                  {grid.scales.map((scale) => (
                    <th key={scale} scope="col">{scale}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {grid.layers.map((layer) => (
                  <tr key={layer}>
                    <th scope="row">layer {layer}</th>
                    {grid.scales.map((scale) => {
                      const index = grid.cell(layer, scale);
                      const cell = index === undefined ? undefined : result.cells[index];
                      if (index === undefined || !cell) return <td key={scale}>—</td>;
                      const value = metricValue(cell, metric);
                      return (
                        <td key={scale} className="heat-cell" style={{ background: cellTint(value, metric, range) }}>
                          <button
                            type="button"
                            aria-pressed={opened === index}
                            aria-label={`Layer ${layer}, scale ${scale}: ${label} ${formatNumber(value)}. Show transcripts`}
                            data-cell={index}
                            onClick={() => { setOpened(index); }}
                          >
                            {formatNumber(value)}
                          </button>
                        </td>
                      );
                    })}
                  </tr>
                ))}
              </tbody>
            </table>
            <div className="heat-legend" aria-hidden="true">
              <span>{range ? formatNumber(isShift(metric) ? -Math.max(Math.abs(range[0]), Math.abs(range[1])) : range[0]) : ""}</span>
              <span
                className="scale"
                style={{
                  background: isShift(metric)
                    ? "linear-gradient(90deg, rgba(var(--neg), .6), #fff, rgba(var(--pos), .6))"
                    : "linear-gradient(90deg, #fff, rgba(var(--pos), .6))",
                }}
              />
              <span>{range ? formatNumber(isShift(metric) ? Math.max(Math.abs(range[0]), Math.abs(range[1])) : range[1]) : ""}</span>
            </div>
          </div>
          <LineChart
            x={curves.x}
            series={curves.series}
            label={`${label} against the scale, one line per layer`}
            xLabel="scale"
            yLabel={isShift(metric) ? "probe shift" : metric === "perplexity" ? "perplexity" : "KL (nats)"}
            points
          />
        </div>
      </Panel>
      {openedCell && opened !== null ? (
        <Transcripts key={opened} jobId={jobId} cell={opened} layer={openedCell.layer} scale={openedCell.scale} probes={result.probes} />
      ) : null}
    </>
  );
}
