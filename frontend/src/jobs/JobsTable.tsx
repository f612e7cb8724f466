// The jobs list: kind, name, model, live status and progress, the error of a failed one, what it
// made, and cancel / resume.
import { Link } from "react-router";
import { formatDate } from "../library/shared";

/** "11/23/26, 7:34 PM" (the full date is the cell's title). */
function shortDate(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}
import { JobActions } from "./JobActions";
import { JobProgressBar } from "./JobProgressBar";
import { headline } from "./JobResult";
import type { Job } from "./model";
import { KIND_LABELS, madeLink } from "./model";
import type { ProgressState } from "./progress";
import { progressOf } from "./progress";

export function JobsTable({
  jobs,
  progress,
  onChanged,
}: {
  jobs: Job[];
  progress: ProgressState;
  onChanged: (job: Job) => void;
}) {
  return (
    <div className="table-scroll">
      <table aria-label="Jobs">
        <thead>
          <tr>
            <th scope="col" className="col-name">Job</th>
            <th scope="col">Kind</th>
            <th scope="col">Model</th>
            <th scope="col">Progress</th>
            <th scope="col" className="col-result">Result</th>
            <th scope="col">Created</th>
            <th scope="col"><span className="sr-only">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {jobs.map((job) => {
            const p = progressOf(job, progress.jobs[job.id]);
            const link = madeLink(job);
            return (
              <tr key={job.id} data-job={job.id} data-status={p.status}>
                <td>
                  <Link to={`/jobs/${job.id}`}>{job.name}</Link>
                  <div className="meta">#{job.id} · {job.owner}</div>
                </td>
                <td className="nowrap">{KIND_LABELS[job.kind]}</td>
                <td>{job.deployment}</td>
                <td>
                  <JobProgressBar progress={p} label={`Progress of ${job.name}`} />
                  {p.error ? <p className="job-error">{p.error}</p> : null}
                </td>
                <td>
                  {link ? <Link to={link.to}>{link.label}</Link> : <span className="meta">—</span>}
                  {job.status === "done" && headline(job) ? <div className="meta">{headline(job)}</div> : null}
                </td>
                <td className="meta nowrap" title={formatDate(job.created_at)}>{shortDate(job.created_at)}</td>
                <td>
                  <JobActions job={job} status={p.status} onChanged={onChanged} />
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
