// A job's status and progress: a badge, a bar (role=progressbar) and "3 / 8 batches".
import { Badge, statusTone } from "../ui/components";
import type { Progress } from "./progress";
import { fractionDone } from "./progress";

export function JobProgressBar({ progress, label }: { progress: Progress; label: string }) {
  const fraction = fractionDone(progress);
  const percent = fraction === null ? null : Math.round(fraction * 100);
  const status = progress.status;
  const fill = status === "done" ? " is-done" : status === "failed" || status === "cancelled" ? " is-bad" : "";
  const counted = progress.total > 0 ? `${progress.done} / ${progress.total} batches` : "";
  const text = status === "queued" && !counted ? "waiting for a worker" : counted;
  return (
    <div className="progress" data-status={status} data-testid="job-progress">
      <Badge tone={status === "cancelled" ? "warn" : statusTone(status)}>{status}</Badge>
      <div
        className="progress-track"
        role="progressbar"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent ?? undefined}
        aria-valuetext={percent === null ? status : `${percent}% (${text})`}
      >
        <div
          className={`progress-fill${percent === null ? " is-waiting" : fill}`}
          style={percent === null ? undefined : { width: `${percent}%` }}
        />
      </div>
      <span className="meta">{text}</span>
    </div>
  );
}
