// A trained probe's metrics: held-out (with 95% bootstrap intervals) beside the training split.
import type { Intervals, Metrics, TrainedMetrics } from "./model";
import { formatInterval, formatMetric } from "./model";

const ROWS = [
  ["auroc", "AUROC"],
  ["accuracy", "Accuracy"],
  ["f1", "F1"],
  ["ece", "ECE (calibration error)"],
] as const;

export function ProbeMetricsTable({ metrics, label = "Probe metrics" }: { metrics: TrainedMetrics; label?: string }) {
  const heldout: Metrics | undefined = metrics.heldout;
  const intervals: Intervals = metrics.heldout_intervals ?? {};
  return (
    <table aria-label={label}>
      <thead>
        <tr>
          <th scope="col">Metric</th>
          <th scope="col">Held out {metrics.n_heldout !== undefined ? `(n = ${metrics.n_heldout})` : ""}</th>
          <th scope="col">95% interval</th>
          <th scope="col">Train {metrics.n_train !== undefined ? `(n = ${metrics.n_train})` : ""}</th>
        </tr>
      </thead>
      <tbody>
        {ROWS.map(([key, name]) => (
          <tr key={key} data-metric={key}>
            <th scope="row">{name}</th>
            <td className="num">{heldout ? formatMetric(heldout[key]) : "—"}</td>
            <td className="num">{formatInterval(intervals[key]) || "—"}</td>
            <td className="num">{metrics.train ? formatMetric(metrics.train[key]) : "—"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
