// One job: its parameters, live progress (cancel, resume) and, once done, what it made (a sweep's
// results are read here).
import { useParams } from "react-router";
import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import { KeyValueTable, VisibilityBadge, formatDate, formatValue } from "../library/shared";
import type { Row } from "../library/shared";
import { Badge, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { JobActions } from "./JobActions";
import { JobProgressBar } from "./JobProgressBar";
import { JobResult } from "./JobResult";
import type { Job } from "./model";
import { KIND_LABELS, isActive } from "./model";
import { progressOf } from "./progress";
import { useJobProgress } from "./useJobProgress";

export function JobPage() {
  const { id } = useParams();
  const jobId = Number(id);
  const job = useResource(() => unwrap(api.GET("/api/jobs/{job_id}", { params: { path: { job_id: jobId } } })), String(jobId));
  const live = useJobProgress(job.data && isActive(job.data.status) ? [jobId] : [], job.reload);
  if (!job.data) return job.error ? <Notice>{job.error}</Notice> : <Loading what="the job" />;
  const j = job.data;
  const progress = progressOf(j, live.progress.jobs[j.id]);
  return (
    <>
      <PageHeader title={j.name}>
        <Badge tone="info">{KIND_LABELS[j.kind]}</Badge>
        <span className="meta">
          by {j.owner} · <Link to="/jobs">all jobs</Link>
        </span>
      </PageHeader>
      <Notice>{job.error}</Notice>
      <Notice>{live.progress.error}</Notice>
      <div className="grid-2 align-start">
        <Panel title="Progress">
          <JobProgressBar progress={progress} label={`Progress of ${j.name}`} />
          {progress.error ? <p className="job-error">{progress.error}</p> : null}
          <JobActions
            job={j}
            status={progress.status}
            onChanged={() => {
              live.forget(j.id);
              job.reload();
            }}
          />
          {j.kind !== "sweep" ? <JobResult job={j} /> : null}
        </Panel>
        <Panel title="Details">
          <KeyValueTable label="Job details" rows={detailRows(j)} />
          <h3 className="section-title">Parameters</h3>
          <KeyValueTable label="Job parameters" rows={paramRows(j)} />
        </Panel>
      </div>
      {j.kind === "sweep" ? <JobResult job={j} /> : null}
    </>
  );
}

/** A parameter for reading: probes by their public id and site (their hashes left out). */
function describeParam(key: string, value: unknown): string {
  if (key === "probes" && Array.isArray(value)) {
    return (value as { id?: number; layer?: number; point?: string }[])
      .map((p) => `prb_${p.id ?? "?"} (layer ${p.layer ?? "?"}, ${p.point ?? "?"})`)
      .join(", ") || "none";
  }
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.join(" · ");
  if (Array.isArray(value)) return value.map((v) => formatValue(v)).join(", ");
  return formatValue(value);
}

function paramRows(j: Job): Row[] {
  return Object.entries(j.params)
    .filter(([key]) => !key.endsWith("_hash"))
    .map(([key, value]): Row => [key, <code>{describeParam(key, value)}</code>]);
}

function detailRows(j: Job): Row[] {
  return [
    ["Kind", KIND_LABELS[j.kind]],
    ["Model", j.deployment],
    ["Dataset", j.dataset_id === null ? "—" : <Link to={`/datasets/${j.dataset_id}`}>dataset #{j.dataset_id}</Link>],
    ...(j.board_id === null ? [] : [["Board", <Link to={`/boards/${j.board_id}`}>board #{j.board_id}</Link>] as Row]),
    ["Owner", j.owner],
    ["Visibility", <VisibilityBadge visibility={j.visibility} />],
    ["Attempt", j.attempt],
    ["Created", formatDate(j.created_at)],
    ["Started", formatDate(j.started_at)],
    ["Finished", formatDate(j.finished_at)],
  ];
}
