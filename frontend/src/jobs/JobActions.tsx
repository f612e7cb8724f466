// Cancel (a queued or running job) and resume (a failed or cancelled one: it goes on from its
// stored batches), with the server's refusal shown beside the buttons.
import { api, unwrap } from "../api/client";
import { useAction } from "../api/useAction";
import { Button, Notice } from "../ui/components";
import type { Job } from "./model";
import { canResume, isActive } from "./model";

export function JobActions({
  job,
  status,
  onChanged,
}: {
  job: Job;
  /** The live status (the job as fetched may be behind). */
  status: string;
  /** After a change: the job as the server returned it. */
  onChanged: (job: Job) => void;
}) {
  const action = useAction();
  const path = { params: { path: { job_id: job.id } } };
  const cancel = () =>
    action.run(async () => {
      onChanged(await unwrap(api.POST("/api/jobs/{job_id}/cancel", path)));
    });
  const resume = () =>
    action.run(async () => {
      onChanged(await unwrap(api.POST("/api/jobs/{job_id}/resume", path)));
    });
  return (
    <div>
      {isActive(status) ? (
        <Button small variant="danger" disabled={action.busy} onClick={() => void cancel()} aria-label={`Cancel ${job.name}`}>
          Cancel
        </Button>
      ) : null}
      {canResume(status) ? (
        <Button small disabled={action.busy} onClick={() => void resume()} aria-label={`Resume ${job.name}`}>
          Resume
        </Button>
      ) : null}
      <Notice>{action.error}</Notice>
    </div>
  );
}
