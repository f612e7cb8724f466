// The jobs websocket for one page: watches the jobs it is given (their progress frames go to the
// reducer), re-watches them all after a dropped socket reconnects (with backoff), and calls
// `onEnded` when a frame says a job ended, so that the page fetches its result over HTTP.
import { useCallback, useEffect, useReducer, useRef, useState } from "react";
import type { Connection } from "../chat/useConversationSocket";
import type { JobClientMessage, JobServerFrame, ProgressState } from "./progress";
import { applyFrame, forgetJob, initialProgress } from "./progress";

const MAX_DELAY_MS = 10_000;

/** Sends when the socket is open; otherwise the next connection's `open` watches every job. */
function sendOn(socket: WebSocket | null, message: JobClientMessage): void {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

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
  const [connection, setConnection] = useState<Connection>("connecting");
  const socketRef = useRef<WebSocket | null>(null);
  const watched = useRef(new Set<number>());
  const onEndedRef = useRef(onEnded);
  const reported = useRef(0);
  useEffect(() => {
    onEndedRef.current = onEnded;
  });

  // One socket for the page's life; every watched job is watched again on each (re)connection.
  useEffect(() => {
    let attempts = 0;
    let timer: number | undefined;
    let stopped = false;
    const connect = () => {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(`${scheme}${window.location.host}/ws/jobs/`);
      socketRef.current = socket;
      socket.addEventListener("open", () => {
        attempts = 0;
        setConnection("connected");
        for (const job of watched.current) socket.send(JSON.stringify({ type: "watch", job }));
      });
      socket.addEventListener("message", (event: MessageEvent<string>) => {
        try {
          dispatch({ kind: "frame", frame: JSON.parse(event.data) as JobServerFrame });
        } catch (exc) {
          dispatch({ kind: "frame", frame: { type: "error", code: "client", message: String(exc) } });
        }
      });
      socket.addEventListener("close", (event) => {
        if (socketRef.current === socket) socketRef.current = null;
        if (stopped) return;
        if (event.code === 4401 || event.code === 4403) {
          setConnection("closed");
          return;
        }
        setConnection("reconnecting");
        timer = window.setTimeout(connect, Math.min(MAX_DELAY_MS, 500 * 2 ** attempts++));
      });
    };
    connect();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
      socketRef.current?.close();
      socketRef.current = null;
    };
  }, []);

  // Watch the jobs the page follows now; stop watching the others.
  const key = [...new Set(jobs)].sort((a, b) => a - b).join(",");
  useEffect(() => {
    const wanted = new Set(key ? key.split(",").map(Number) : []);
    for (const job of watched.current) {
      if (!wanted.has(job)) {
        watched.current.delete(job);
        sendOn(socketRef.current, { type: "unwatch", job });
      }
    }
    for (const job of wanted) {
      if (!watched.current.has(job)) {
        watched.current.add(job);
        dispatch({ kind: "forget", job }); // what is known of an earlier run of it is stale
        sendOn(socketRef.current, { type: "watch", job });
      }
    }
  }, [key]);

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
