// Jobs: start one (train a probe, build a vector, sweep a vector, a batch run), follow the one just started
// live until its result shows, and the list of every job you can see with live progress.
import { useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import { useResource } from "../api/useResource";
import { useDebounced } from "../library/shared";
import { SweepForm } from "../sweeps/SweepForm";
import { Badge, Button, Empty, Field, Loading, Notice, PageHeader, Panel } from "../ui/components";
import { BatchRunForm } from "./BatchRunForm";
import { BuildVectorForm } from "./BuildVectorForm";
import { JobActions } from "./JobActions";
import { JobProgressBar } from "./JobProgressBar";
import { JobResult } from "./JobResult";
import { JobsTable } from "./JobsTable";
import type { Job, JobKind } from "./model";
import { JOB_KINDS, KIND_LABELS, isActive } from "./model";
import type { ProgressState } from "./progress";
import { progressOf } from "./progress";
import { TrainProbeForm } from "./TrainProbeForm";
import { useJobProgress } from "./useJobProgress";

const FORMS = [
  ["probe", "Train probe"],
  ["vector", "Build vector"],
  ["sweep", "New sweep"],
  ["batch", "Batch run"],
] as const;
type FormKey = (typeof FORMS)[number][0];
const isForm = (value: string | null): value is FormKey => FORMS.some(([key]) => key === value);

export function JobsPage() {
  const [params, setParams] = useSearchParams();
  const raw = params.get("form");
  const form: FormKey = isForm(raw) ? raw : "probe";
  const [kind, setKind] = useState<JobKind | "">("");
  const [q, setQ] = useState("");
  const query = useDebounced(q.trim());
  const [latestId, setLatestId] = useState<number | null>(null);

  const setup = useResource(async () => {
    const [deployments, teams] = await Promise.all([
      unwrap(api.GET("/api/deployments", { params: { query: { limit: 100 } } })),
      unwrap(api.GET("/api/teams", { params: { query: { limit: 100 } } })),
    ]);
    return { deployments: deployments.items, teams: teams.items };
  }, "setup");
  const list = useResource(
    () => unwrap(api.GET("/api/jobs", { params: { query: { kind: kind || undefined, q: query || undefined, limit: 100 } } })),
    `${kind}\n${query}`,
  );
  const latest = useResource(
    () => (latestId === null ? Promise.resolve(null) : unwrap(api.GET("/api/jobs/{job_id}", { params: { path: { job_id: latestId } } }))),
    String(latestId),
  );

  const jobs = list.data?.items ?? [];
  const following = jobs.filter((j) => isActive(j.status)).map((j) => j.id);
  if (latest.data && isActive(latest.data.status)) following.push(latest.data.id);
  const live = useJobProgress(following, (id) => {
    list.reload();
    if (id === latestId) latest.reload();
  });

  const started = (job: Job) => {
    setLatestId(job.id);
    list.reload();
  };
  const changed = (job: Job) => {
    live.forget(job.id);
    list.reload();
    if (job.id === latestId) latest.reload();
  };
  const deployments = setup.data?.deployments ?? [];
  const teams = setup.data?.teams ?? [];

  return (
    <>
      <PageHeader title="Jobs">
        <div role="group" aria-label="Start a job" className="form-row">
          {FORMS.map(([key, label]) => (
            <Button
              key={key}
              variant={key === form ? "primary" : "secondary"}
              aria-pressed={key === form}
              onClick={() => {
                setParams({ form: key });
              }}
            >
              {label}
            </Button>
          ))}
        </div>
      </PageHeader>
      <Notice>{setup.error}</Notice>
      <Notice>{live.progress.error}</Notice>
      {live.connection === "reconnecting" ? <Notice tone="info">Live progress lost its connection: reconnecting…</Notice> : null}
      <div className="split-form">
        <div>
          {!setup.data ? <Loading what="the form" /> : null}
          {setup.data && form === "probe" ? <TrainProbeForm deployments={deployments} teams={teams} onStarted={started} /> : null}
          {setup.data && form === "vector" ? <BuildVectorForm deployments={deployments} teams={teams} onStarted={started} /> : null}
          {setup.data && form === "sweep" ? <SweepForm deployments={deployments} teams={teams} onStarted={started} /> : null}
          {setup.data && form === "batch" ? <BatchRunForm deployments={deployments} teams={teams} onStarted={started} /> : null}
        </div>
        <div>
          {latest.data ? <LatestJob job={latest.data} progress={live.progress} onChanged={changed} /> : null}
          <Panel title="All jobs">
            <div className="form-row">
              <Field label="Kind">
                {(id) => (
                  <select
                    id={id}
                    value={kind}
                    onChange={(e) => {
                      const value = e.target.value;
                      setKind(JOB_KINDS.find((k) => k === value) ?? "");
                    }}
                  >
                    <option value="">All kinds</option>
                    {JOB_KINDS.map((k) => (
                      <option key={k} value={k}>{KIND_LABELS[k]}</option>
                    ))}
                  </select>
                )}
              </Field>
              <Field label="Search jobs" hint="Words the name must contain.">
                {(id, describedBy) => (
                  <input id={id} type="search" aria-describedby={describedBy} value={q} onChange={(e) => { setQ(e.target.value); }} />
                )}
              </Field>
            </div>
            <Notice>{list.error}</Notice>
            {list.loading && !list.data ? <Loading what="jobs" /> : null}
            {list.data && jobs.length === 0 ? <Empty>{kind || query ? "No jobs match." : "No jobs yet: start one with the form."}</Empty> : null}
            {jobs.length > 0 ? (
              <>
                <p className="meta">
                  {list.data && list.data.count > jobs.length ? `The newest ${jobs.length} of ${list.data.count} jobs.` : `${jobs.length} job${jobs.length === 1 ? "" : "s"}.`}
                </p>
                <JobsTable jobs={jobs} progress={live.progress} onChanged={changed} />
              </>
            ) : null}
          </Panel>
        </div>
      </div>
    </>
  );
}

/** The job just started: its live progress, then its result. */
function LatestJob({ job, progress, onChanged }: { job: Job; progress: ProgressState; onChanged: (job: Job) => void }) {
  const p = progressOf(job, progress.jobs[job.id]);
  return (
    <Panel
      title={`Latest job: ${job.name}`}
      actions={
        <>
          <Badge tone="info">{KIND_LABELS[job.kind]}</Badge>
          <Link to={`/jobs/${job.id}`}>Job page</Link>
        </>
      }
    >
      <div data-testid="latest-job" data-status={job.status}>
        <JobProgressBar progress={p} label={`Progress of ${job.name}`} />
        {p.error ? <p className="job-error">{p.error}</p> : null}
        <JobActions job={job} status={p.status} onChanged={onChanged} />
        {job.status === "done" ? <JobResult job={job} compact /> : null}
      </div>
    </Panel>
  );
}
