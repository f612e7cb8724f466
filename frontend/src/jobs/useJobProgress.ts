// The jobs websocket for one page: watches the jobs it is given (their progress frames go to the
// reducer), re-watches them all after a dropped socket reconnects (with backoff), and calls
// `onEnded` when a frame says a job ended, so that the page fetches its result over HTTP.
import { useCallback, useEffect, useReducer, useRef } from "react";
import type { Connection } from "../api/useReconnectingSocket";
import { useReconnectingSocket } from "../api/useReconnectingSocket";
import type { JobClientMessage, JobServerFrame, ProgressState } from "./progress";
import { applyFrame, forgetJob, initialProgress } from "./progress";

// Not logged in, or refused: the socket does not come back (the jobs pages show no reason).
const FINAL_CODES: Readonly<Record<number, string>> = {
  4401: "You are not logged in.",
  4403: "These jobs are not available.",
};

type Action = { kind: "frame"; frame: JobServerFrame } | { kind: "forget"; job: number };

interface Reduced {
  progress: ProgressState;
  /** Jobs whose end was seen and not yet reported to the page. */
  ended: number[];
}

function reducer(state: Reduced, action: Action): Reduced {
  if (action.kind === "forget") return { ...state, progress: forgetJob(state.progress, action.job) };
  const applied = applyFrame(state.progress, action.frame);
  if (applied.state === state.progress) return state;
  return { progress: applied.state, ended: applied.ended === null ? state.ended : [...state.ended, applied.ended] };
}

export interface JobProgress {
  progress: ProgressState;
  connection: Connection;
  /** Forget a job's state (call before it starts over: a resume). */
  forget: (job: number) => void;
}

export function useJobProgress(jobs: readonly number[], onEnded: (job: number) => void): JobProgress {
  const [state, dispatch] = useReducer(reducer, { progress: initialProgress, ended: [] });
  const watched = useRef(new Set<number>());
  const onEndedRef = useRef(onEnded);
  const reported = useRef(0);
  useEffect(() => {
    onEndedRef.current = onEnded;
  });

  // One socket for the page's life; every watched job is watched again on each (re)connection.
  const { connection, send } = useReconnectingSocket<JobServerFrame, JobClientMessage>("/ws/jobs/", {
    finalCodes: FINAL_CODES,
    onOpen: (socket) => {
      for (const job of watched.current) socket.send(JSON.stringify({ type: "watch", job }));
    },
    onFrame: (frame) => {
      dispatch({ kind: "frame", frame });
    },
    onParseError: (message) => {
      dispatch({ kind: "frame", frame: { type: "error", code: "client", message } });
    },
  });

  // Watch the jobs the page follows now; stop watching the others.
  const key = [...new Set(jobs)].sort((a, b) => a - b).join(",");
  useEffect(() => {
    const wanted = new Set(key ? key.split(",").map(Number) : []);
    for (const job of watched.current) {
      if (!wanted.has(job)) {
        watched.current.delete(job);
        send({ type: "unwatch", job });
      }
    }
    for (const job of wanted) {
      if (!watched.current.has(job)) {
        watched.current.add(job);
        dispatch({ kind: "forget", job }); // what is known of an earlier run of it is stale
        send({ type: "watch", job }); // if not open now, the next connection's `open` watches it
      }
    }
  }, [key, send]);

  // Report each end once, after the render that recorded it.
  useEffect(() => {
    const fresh = state.ended.slice(reported.current);
    reported.current = state.ended.length;
    for (const job of fresh) onEndedRef.current(job);
  }, [state.ended]);

  const forget = useCallback((job: number) => {
    dispatch({ kind: "forget", job });
  }, []);

  return { progress: state.progress, connection, forget };
}
