// The chat transcript as a pure reducer over server frames.
//
// Frames of a run are keyed (attempt, seq): a frame at or before the last one seen is a
// duplicate (a resumed stream re-sends from the database) and changes nothing; a frame of a newer
// attempt starts the run's answer over (the worker retried it). The server delivers in order, so
// "later than the last seen" is the whole rule.
import type { LensRead, LoggedAdjustment, RunFrame, RunSummary, ServerFrame } from "./protocol";
import { ACTIVE } from "./protocol";

export interface TokenRead {
  probes: Record<string, number>;
  lens: Record<string, LensRead>;
}

export interface RunState {
  id: number;
  kind: string;
  status: string;
  detail: string;
  summary: RunSummary;
  last: [number, number];
  attempt: number;
  tokens: string[]; // by generated-token index
  reads: Record<number, TokenRead>; // by generated-token index (prompt positions are not kept)
  adjustments: LoggedAdjustment[];
  error: string;
  /** The stored text, shown until (if) the run's events are streamed again. */
  storedText: string;
}

export interface Turn {
  key: string;
  prompt: string;
  runIds: number[];
}

export type Pending = { prompt: string } | { replayOf: number };

export interface ChatState {
  runs: Record<number, RunState>;
  turns: Turn[];
  pending: Record<string, Pending>;
  errors: { code: string; message: string }[];
}

export type ChatAction =
  | { kind: "frame"; frame: ServerFrame }
  | { kind: "pending"; ref: string; pending: Pending }
  | { kind: "history"; turns: { prompt: string; run: RunSummary }[] }
  | { kind: "error"; code: string; message: string }
  | { kind: "clear-errors" };

export const initialChat: ChatState = { runs: {}, turns: [], pending: {}, errors: [] };

const MAX_ERRORS = 5;

export const later = (a: readonly [number, number], b: readonly [number, number]): boolean =>
  a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);

export function isActive(run: RunState): boolean {
  return ACTIVE.has(run.status);
}

function newRun(summary: RunSummary): RunState {
  return {
    id: summary.id,
    kind: summary.kind,
    status: summary.status,
    detail: "",
    summary,
    last: [0, 0],
    attempt: 0,
    tokens: [],
    reads: {},
    adjustments: summary.adjustments,
    error: "",
    storedText: summary.text,
  };
}

function restart(run: RunState): RunState {
  return { ...run, tokens: [], reads: {}, adjustments: [], error: "", storedText: "" };
}

function withTurn(turns: Turn[], key: string, prompt: string, runId: number): Turn[] {
  const index = turns.findIndex((turn) => turn.key === key);
  if (index < 0) return [...turns, { key, prompt, runIds: [runId] }];
  const turn = turns[index];
  if (!turn || turn.runIds.includes(runId)) return turns;
  const next = [...turns];
  next[index] = { ...turn, runIds: [...turn.runIds, runId] };
  return next;
}

function applyRunFrame(run: RunState, frame: RunFrame): RunState {
  const key: [number, number] = [frame.attempt, frame.seq];
  if (!later(key, run.last)) return run; // a duplicate
  let next: RunState = { ...run, last: key };
  if (frame.attempt !== run.attempt) {
    if (run.attempt !== 0) next = restart(next); // a retried run starts over
    next.attempt = frame.attempt;
  }
  switch (frame.type) {
    case "started":
      next = { ...restart(next), status: "running", detail: frame.attempt > 1 ? `attempt ${frame.attempt}` : "" };
      break;
    case "token": {
      const tokens = [...next.tokens];
      tokens[frame.index] = frame.text;
      next.tokens = tokens;
      next.storedText = "";
      break;
    }
    case "reads":
      if (frame.index >= 0) next.reads = { ...next.reads, [frame.index]: { probes: frame.probes, lens: frame.lens } };
      break;
    case "adjusted": {
      const { type: _type, run: _run, attempt: _attempt, seq: _seq, ...entry } = frame;
      next.adjustments = [...next.adjustments, entry];
      break;
    }
    case "finished":
      next = { ...next, status: frame.status, detail: frame.reason, error: frame.error };
      if (frame.tail && next.tokens.length > 0) {
        // The token frames' texts and the tail join to the run's text: the tail ends the last token.
        const tokens = [...next.tokens];
        tokens[tokens.length - 1] = (tokens[tokens.length - 1] ?? "") + frame.tail;
        next.tokens = tokens;
      }
      if (next.tokens.length === 0) next.storedText = frame.text;
      break;
  }
  return next;
}

function pushError(state: ChatState, code: string, message: string): ChatState {
  return { ...state, errors: [{ code, message }, ...state.errors].slice(0, MAX_ERRORS) };
}

export function chatReducer(state: ChatState, action: ChatAction): ChatState {
  switch (action.kind) {
    case "pending":
      return { ...state, pending: { ...state.pending, [action.ref]: action.pending } };
    case "error":
      return pushError(state, action.code, action.message);
    case "clear-errors":
      return { ...state, errors: [] };
    case "history": {
      let next = state;
      for (const { prompt, run } of action.turns) {
        if (next.runs[run.id]) continue;
        const key = run.compare_group ? `group-${run.compare_group}` : `run-${run.id}`;
        const heading = run.kind === "replay" ? `Replay of run ${run.replay_of ?? "?"}: ${prompt}` : prompt;
        next = {
          ...next,
          runs: { ...next.runs, [run.id]: newRun(run) },
          turns: withTurn(next.turns, key, heading, run.id),
        };
      }
      return next;
    }
    case "frame":
      return onFrame(state, action.frame);
  }
}

function onFrame(state: ChatState, frame: ServerFrame): ChatState {
  switch (frame.type) {
    case "runs": {
      const pending = frame.ref !== undefined ? state.pending[frame.ref] : undefined;
      const { [frame.ref ?? ""]: _dropped, ...rest } = state.pending;
      let next: ChatState = { ...state, pending: rest };
      for (const summary of frame.runs) {
        const prompt =
          pending && "prompt" in pending
            ? pending.prompt
            : pending && "replayOf" in pending
              ? `Replay of run ${pending.replayOf}`
              : `Run ${summary.id}`;
        const key = frame.ref !== undefined ? `ref-${frame.ref}` : `run-${summary.id}`;
        const existing = next.runs[summary.id];
        next = {
          ...next,
          runs: { ...next.runs, [summary.id]: existing ? { ...existing, status: summary.status } : newRun(summary) },
          turns: withTurn(next.turns, key, prompt, summary.id),
        };
      }
      return next;
    }
    case "queued": {
      const run = state.runs[frame.run];
      if (!run || run.status !== "queued") return state;
      return { ...state, runs: { ...state.runs, [run.id]: { ...run, detail: `${frame.position} ahead` } } };
    }
    case "resumed": {
      const run = state.runs[frame.run.id];
      // Only a run that has seen no frame takes the server's status (frames carry the rest).
      if (!run || run.last[1] !== 0 || run.status === frame.run.status) return state;
      return { ...state, runs: { ...state.runs, [run.id]: { ...run, status: frame.run.status } } };
    }
    case "cancelled": {
      const run = state.runs[frame.run];
      if (!run) return state;
      return { ...state, runs: { ...state.runs, [run.id]: { ...run, status: frame.status ?? "cancelled" } } };
    }
    case "gap": {
      const run = state.runs[frame.run];
      if (!run) return state;
      return { ...state, runs: { ...state.runs, [run.id]: { ...run, error: "Some events were lost." } } };
    }
    case "error":
      return pushError(state, frame.code, frame.message);
    case "started":
    case "token":
    case "reads":
    case "adjusted":
    case "finished": {
      const run = state.runs[frame.run];
      if (!run) return state; // a run of another tab's turn, before its summary: resume fills it in
      const next = applyRunFrame(run, frame);
      return next === run ? state : { ...state, runs: { ...state.runs, [run.id]: next } };
    }
    default:
      return state; // ack, pong, status, recipe
  }
}

/** The runs to resume after (re)connecting: active ones, from the last frame each has seen. */
export function resumable(state: ChatState): { run: number; attempt: number; seq: number }[] {
  return Object.values(state.runs)
    .filter(isActive)
    .map((run) => ({ run: run.id, attempt: run.last[0], seq: run.last[1] }));
}
