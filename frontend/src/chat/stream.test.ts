import { describe, expect, it } from "vitest";
import type { RunFrame, RunSummary, ServerFrame } from "./protocol";
import type { ChatState } from "./stream";
import { chatReducer, initialChat, resumable } from "./stream";

const summary = (id: number, extra: Partial<RunSummary> = {}): RunSummary => ({
  id,
  kind: "chat",
  status: "queued",
  attempt: 1,
  compare_group: null,
  recipe_version: 1,
  interventions: [{ op: "probe", probe: "prb_1", layer: 1 }],
  sampling: {},
  overrides: [],
  adjustments: [],
  text: "",
  finish_reason: "",
  replay_of: null,
  ...extra,
});

const token = (run: number, seq: number, index: number, text: string, attempt = 1): RunFrame => ({
  type: "token", run, attempt, seq, index, text, token_id: index, logprob: 0,
});
const reads = (run: number, seq: number, index: number, score: number): RunFrame => ({
  type: "reads", run, attempt: 1, seq, index, position: index + 5, probes: { "0": score }, lens: {},
});

function play(frames: ServerFrame[], state: ChatState = initialChat): ChatState {
  return frames.reduce((s, frame) => chatReducer(s, { kind: "frame", frame }), state);
}

function started(): ChatState {
  const pending = chatReducer(initialChat, { kind: "pending", ref: "g1", pending: { prompt: "hello" } });
  return play([{ type: "runs", ref: "g1", runs: [summary(7)] }], pending);
}

describe("chatReducer", () => {
  it("puts a turn's runs under its prompt and streams tokens and reads in order", () => {
    const state = play(
      [
        { type: "started", run: 7, attempt: 1, seq: 1, run_kind: "chat", prompt_tokens: 5 },
        token(7, 2, 0, "Hel"),
        reads(7, 3, 0, 0.5),
        token(7, 4, 1, "lo"),
        reads(7, 5, 1, -1.5),
        { type: "finished", run: 7, attempt: 1, seq: 6, status: "done", reason: "length", text: "Hello", error: "" },
      ],
      started(),
    );
    expect(state.turns).toEqual([{ key: "ref-g1", prompt: "hello", runIds: [7] }]);
    const run = state.runs[7];
    expect(run?.tokens).toEqual(["Hel", "lo"]);
    expect(run?.reads[1]?.probes).toEqual({ "0": -1.5 });
    expect(run?.status).toBe("done");
    expect(run?.detail).toBe("length");
    expect(run?.last).toEqual([1, 6]);
    expect(state.pending).toEqual({});
  });

  it("ends the last token with the finished frame's tail: the tokens' texts join to the run's text", () => {
    // "é" is two bytes: its first token shows nothing until the second completes it; a run that
    // ends mid-character gives the held-back rest (as the stored text has it) in the tail.
    const state = play(
      [
        token(7, 1, 0, "caf"),
        token(7, 2, 1, ""),
        token(7, 3, 2, "é"),
        token(7, 4, 3, ""),
        { type: "finished", run: 7, attempt: 1, seq: 5, status: "done", reason: "length", text: "café\ufffd", tail: "\ufffd", error: "" },
      ],
      started(),
    );
    expect(state.runs[7]?.tokens).toEqual(["caf", "", "é", "\ufffd"]);
    expect(state.runs[7]?.tokens.join("")).toBe("café\ufffd");
  });

  it("drops duplicates: a resume that re-sends frames already seen changes nothing", () => {
    const live = play([token(7, 1, 0, "a"), token(7, 2, 1, "b")], started());
    const resumed = play([token(7, 1, 0, "a"), token(7, 2, 1, "b"), token(7, 3, 2, "c")], live);
    expect(resumed.runs[7]?.tokens).toEqual(["a", "b", "c"]);
    expect(play([token(7, 2, 1, "b")], live)).toBe(live); // the same object: nothing changed
  });

  it("ignores a frame older than the last one seen, even with new content", () => {
    const live = play([token(7, 1, 0, "a"), token(7, 3, 1, "b")], started());
    const late = play([token(7, 2, 1, "X")], live);
    expect(late.runs[7]?.tokens).toEqual(["a", "b"]);
  });

  it("starts the answer over on a new attempt (a retried run)", () => {
    const first = play([token(7, 1, 0, "a"), token(7, 2, 1, "b"), reads(7, 3, 0, 1)], started());
    const retried = play(
      [{ type: "started", run: 7, attempt: 2, seq: 1, run_kind: "chat", prompt_tokens: 5 }, token(7, 2, 0, "z", 2)],
      first,
    );
    expect(retried.runs[7]?.tokens).toEqual(["z"]);
    expect(retried.runs[7]?.reads).toEqual({});
    expect(retried.runs[7]?.detail).toBe("attempt 2");
    expect(play([token(7, 3, 1, "late", 1)], retried)).toBe(retried); // the old attempt is over
  });

  it("keeps only generated positions' reads and logs adjustments", () => {
    const state = play(
      [
        reads(7, 1, -2, 3), // a prompt position
        token(7, 2, 0, "a"),
        { type: "adjusted", run: 7, attempt: 1, seq: 3, step: 1, index: 0, scale: -4 },
      ],
      started(),
    );
    expect(state.runs[7]?.reads).toEqual({});
    expect(state.runs[7]?.adjustments).toEqual([{ step: 1, index: 0, scale: -4 }]);
  });

  it("shows compare mode's two runs side by side in one turn", () => {
    const pending = chatReducer(initialChat, { kind: "pending", ref: "g2", pending: { prompt: "compare" } });
    const state = play(
      [{ type: "runs", ref: "g2", runs: [summary(8, { kind: "baseline" }), summary(9, { kind: "steered" })] }],
      pending,
    );
    expect(state.turns).toEqual([{ key: "ref-g2", prompt: "compare", runIds: [8, 9] }]);
  });

  it("resumes active runs from the last frame each has seen", () => {
    const state = play(
      [
        { type: "runs", runs: [summary(10, { status: "done" })] },
        token(7, 1, 0, "a"),
        token(7, 2, 1, "b"),
      ],
      started(),
    );
    expect(resumable(state)).toEqual([{ run: 7, attempt: 1, seq: 2 }]); // 10 has finished
    const done = play(
      [{ type: "finished", run: 7, attempt: 1, seq: 3, status: "done", reason: "stop", text: "ab", error: "" }],
      state,
    );
    expect(resumable(done)).toEqual([]);
  });

  it("loads history runs once, grouping a compare pair into one turn", () => {
    const history = [
      { prompt: "p", run: summary(1, { status: "done", text: "stored", compare_group: "g" }) },
      { prompt: "p", run: summary(2, { status: "done", compare_group: "g" }) },
    ];
    const once = chatReducer(initialChat, { kind: "history", turns: history });
    const twice = chatReducer(once, { kind: "history", turns: history });
    expect(twice.turns).toEqual([{ key: "group-g", prompt: "p", runIds: [1, 2] }]);
    expect(twice.runs[1]?.storedText).toBe("stored");
    // Re-streamed from the database, the events replace the stored text.
    expect(play([token(1, 1, 0, "s")], twice).runs[1]?.storedText).toBe("");
  });

  it("keeps the last five errors, newest first", () => {
    let state = initialChat;
    for (let i = 0; i < 7; i++) state = play([{ type: "error", code: "invalid", message: `m${i}` }], state);
    expect(state.errors.map((e) => e.message)).toEqual(["m6", "m5", "m4", "m3", "m2"]);
  });
});
