import { describe, expect, it } from "vitest";
import type { Job } from "./model";
import type { JobFrame, JobServerFrame, ProgressState } from "./progress";
import { applyFrame, forgetJob, fractionDone, initialProgress, isStale, progressOf } from "./progress";

const frame = (job: number, status: JobFrame["status"], done: number, total = 4, attempt = 1, error = ""): JobFrame => ({
  type: "job", job, status, attempt, done, total, error,
});

/** Plays frames in order; the jobs each one reported as ended. */
function play(frames: JobServerFrame[], state: ProgressState = initialProgress) {
  const ended: number[] = [];
  for (const f of frames) {
    const applied = applyFrame(state, f);
    state = applied.state;
    if (applied.ended !== null) ended.push(applied.ended);
  }
  return { state, ended };
}

describe("applyFrame", () => {
  it("follows a job's batches to its end, reporting the end once", () => {
    const { state, ended } = play([frame(5, "queued", 0, 0, 0), frame(5, "running", 0), frame(5, "running", 1), frame(5, "running", 4), frame(5, "done", 4), frame(5, "done", 4)]);
    expect(state.jobs[5]).toEqual({ status: "done", attempt: 1, done: 4, total: 4, error: "" });
    expect(ended).toEqual([5]);
  });

  it("ignores a frame older than the one it has (the state read on watch races the updates)", () => {
    const { state, ended } = play([frame(5, "running", 3), frame(5, "running", 2), frame(5, "done", 4), frame(5, "running", 4)]);
    expect(state.jobs[5]?.status).toBe("done");
    expect(state.jobs[5]?.done).toBe(4);
    expect(ended).toEqual([5]);
    const before = play([frame(5, "running", 3)]).state;
    expect(applyFrame(before, frame(5, "running", 1)).state).toBe(before); // unchanged: the same object
  });

  it("keeps each job apart and reports failures with their error", () => {
    const { state, ended } = play([frame(1, "running", 1), frame(2, "running", 2), frame(1, "failed", 1, 4, 1, "the engine failed")]);
    expect(state.jobs[1]).toMatchObject({ status: "failed", error: "the engine failed" });
    expect(state.jobs[2]).toMatchObject({ status: "running", done: 2 });
    expect(ended).toEqual([1]);
  });

  it("takes a resumed job's new run (its attempt starts over) and reports its new end", () => {
    const cancelled = play([frame(5, "running", 2), frame(5, "cancelled", 2)]);
    const resumed = play([frame(5, "queued", 2, 4, 0), frame(5, "running", 2, 4, 1), frame(5, "done", 4, 4, 1)], cancelled.state);
    expect(cancelled.ended).toEqual([5]);
    expect(resumed.state.jobs[5]).toMatchObject({ status: "done", done: 4, attempt: 1 });
    expect(resumed.ended).toEqual([5]);
  });

  it("keeps the server's error message", () => {
    const { state } = play([{ type: "error", code: "not_found", message: "no job 9 that you can see" }]);
    expect(state.error).toBe("no job 9 that you can see");
  });
});

describe("progress helpers", () => {
  it("says which frames are stale", () => {
    const known = { status: "running", attempt: 2, done: 3, total: 4, error: "" } as const;
    expect(isStale(undefined, known)).toBe(false);
    expect(isStale(known, { ...known, done: 2 })).toBe(true);
    expect(isStale(known, { ...known, status: "queued" })).toBe(true);
    expect(isStale(known, { ...known, attempt: 3, done: 0 })).toBe(false);
    expect(isStale({ ...known, status: "done" }, { ...known, status: "running", done: 4 })).toBe(true);
  });

  it("forgets a job and falls back to the job as fetched", () => {
    const { state } = play([frame(5, "running", 3)]);
    const job = { id: 5, status: "queued", attempt: 0, done_batches: 0, total_batches: 0, error: "" } as Job;
    expect(progressOf(job, state.jobs[5])).toMatchObject({ status: "running", done: 3 });
    const forgotten = forgetJob(state, 5);
    expect(forgotten.jobs[5]).toBeUndefined();
    expect(progressOf(job, forgotten.jobs[5])).toEqual({ status: "queued", attempt: 0, done: 0, total: 0, error: "" });
    expect(forgetJob(forgotten, 5)).toBe(forgotten);
  });

  it("computes the share done (unknown before the batches are counted)", () => {
    expect(fractionDone({ status: "queued", attempt: 0, done: 0, total: 0, error: "" })).toBeNull();
    expect(fractionDone({ status: "running", attempt: 1, done: 1, total: 4, error: "" })).toBe(0.25);
    expect(fractionDone({ status: "done", attempt: 1, done: 0, total: 0, error: "" })).toBe(1);
  });
});
