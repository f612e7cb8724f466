// Job progress from the jobs websocket (/ws/jobs/; webapp/jobs/consumers.py): its frames, and the
// reducer that keeps each watched job's latest state. Frames of one job can arrive out of order
// (the state read on `watch` races the published updates): within one attempt, a frame that goes
// backwards (an earlier status, or fewer batches done) is stale and ignored. A new attempt (a
// takeover, or a resume, which restarts the count at 0) is always taken.
import type { Job, JobStatus } from "./model";
import { isEnded } from "./model";

export interface JobFrame {
  type: "job";
  job: number;
  status: JobStatus;
  attempt: number;
  done: number;
  total: number;
  error: string;
}

export type JobServerFrame = JobFrame | { type: "error"; code: string; message: string };

export type JobClientMessage = { type: "watch"; job: number } | { type: "unwatch"; job: number };

export interface Progress {
  status: JobStatus;
  attempt: number;
  done: number;
  total: number;
  error: string;
}

export interface ProgressState {
  jobs: Record<number, Progress>;
  /** The last error frame's message ("" when none). */
  error: string;
}

export const initialProgress: ProgressState = { jobs: {}, error: "" };

const RANK: Record<JobStatus, number> = { queued: 0, running: 1, done: 2, failed: 2, cancelled: 2 };

/** Whether `next` is older than `known` (same attempt, and it goes backwards). */
export function isStale(known: Progress | undefined, next: Progress): boolean {
  if (!known || known.attempt !== next.attempt) return false;
  const rank = RANK[known.status] - RANK[next.status];
  if (rank !== 0) return rank > 0;
  return next.done < known.done;
}

export interface Applied {
  state: ProgressState;
  /** The job that this frame shows ended (done, failed or cancelled): its result is worth a fetch. */
  ended: number | null;
}

export function applyFrame(state: ProgressState, frame: JobServerFrame): Applied {
  if (frame.type === "error") return { state: { ...state, error: frame.message }, ended: null };
  const next: Progress = {
    status: frame.status,
    attempt: frame.attempt,
    done: frame.done,
    total: frame.total,
    error: frame.error,
  };
  const known = state.jobs[frame.job];
  if (isStale(known, next)) return { state, ended: null };
  const ended = isEnded(next.status) && (known === undefined || known.status !== next.status) ? frame.job : null;
  return { state: { ...state, jobs: { ...state.jobs, [frame.job]: next } }, ended };
}

/** Drops what is known of `job` (before watching it again: after a resume its state starts over). */
export function forgetJob(state: ProgressState, job: number): ProgressState {
  if (!(job in state.jobs)) return state;
  const { [job]: _forgotten, ...jobs } = state.jobs;
  return { ...state, jobs };
}

/** The job's state from the socket when there is one, else from the job as fetched. */
export function progressOf(job: Job, live: Progress | undefined): Progress {
  return (
    live ?? {
      status: job.status,
      attempt: job.attempt,
      done: job.done_batches,
      total: job.total_batches,
      error: job.error,
    }
  );
}

/** The share done, 0..1, or null while the number of batches is not known yet. */
export function fractionDone(p: Progress): number | null {
  if (p.status === "done") return 1;
  if (p.total <= 0) return null;
  return Math.min(1, Math.max(0, p.done / p.total));
}
