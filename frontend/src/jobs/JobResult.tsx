// What a finished job made, by kind: a probe's held-out metrics, a vector's norms, a board's
// evaluation (a link), a sweep's grid, a batch run's counts and downloads.
import { Link } from "react-router";
import { NormsChart } from "../library/NormsChart";
import { SweepView } from "../sweeps/SweepView";
import { sweepResult } from "../sweeps/sweep";
import { Empty } from "../ui/components";
import type { Job } from "./model";
import { batchDownloads, batchResult, formatInterval, formatMetric, madeLink, probeResult, vectorResult } from "./model";
import { ProbeMetricsTable } from "./ProbeMetricsTable";

/** A one-line summary of a finished job's headline number (for lists and the latest-job panel). */
export function headline(job: Job): string {
  const probe = probeResult(job);
  if (probe) {
    const auroc = probe.metrics.heldout?.auroc;
    const interval = formatInterval(probe.metrics.heldout_intervals?.auroc);
    return `held-out AUROC ${formatMetric(auroc)}${interval ? ` ${interval}` : ""}`;
  }
  const vector = vectorResult(job);
  if (vector) return `${vector.pairs} pairs, ${Object.keys(vector.norms).length} layers`;
  const sweep = sweepResult(job);
  if (sweep) return `${sweep.cells.length} cells on ${sweep.prompts} prompts`;
  const batch = batchResult(job);
  if (batch) return `${batch.prompts} prompts, ${batch.tokens} tokens generated`;
  return "";
}

/** The result of a done job (`compact`: no sweep grid, for the jobs page). */
export function JobResult({ job, compact = false }: { job: Job; compact?: boolean }) {
  if (job.status !== "done") return null;
  const link = madeLink(job);
  const probe = probeResult(job);
  const vector = vectorResult(job);
  const sweep = sweepResult(job);
  const batch = batchResult(job);
  const downloads = batchDownloads(job);
  return (
    <div data-testid="job-result">
      {probe ? (
        <>
          <p>
            Trained the probe <code>{probe.public_id}</code>: {headline(job)}.
          </p>
          <ProbeMetricsTable metrics={probe.metrics} label={`Metrics of ${job.name}`} />
        </>
      ) : null}
      {vector ? (
        <>
          <p>
            Built the vector <code>{vector.public_id}</code> from {vector.pairs} pairs.
          </p>
          <NormsChart norms={vector.norms} />
        </>
      ) : null}
      {sweep && !compact ? <SweepView jobId={job.id} result={sweep} /> : null}
      {sweep && compact ? <p>{headline(job)}.</p> : null}
      {job.kind === "evaluate" ? <p>The evaluation's results are on its board.</p> : null}
      {batch ? (
        <>
          <p>
            {headline(job)} (mean {formatMetric(batch.mean_tokens, 1)} per prompt); finish reasons:{" "}
            {Object.entries(batch.finish_reasons).map(([reason, n]) => `${reason} ${n}`).join(", ")}.
          </p>
          <p>
            Download:{" "}
            {downloads.map((d, i) => (
              <span key={d.href}>
                {i > 0 ? " · " : null}
                <a href={d.href} download>{d.label}</a>
              </span>
            ))}
          </p>
        </>
      ) : null}
      {!probe && !vector && !sweep && !batch && job.kind !== "evaluate" ? <Empty>This job recorded no result.</Empty> : null}
      {link && !(sweep && !compact) ? (
        <p>
          Open: <Link to={link.to}>{link.label}</Link>
        </p>
      ) : null}
    </div>
  );
}
