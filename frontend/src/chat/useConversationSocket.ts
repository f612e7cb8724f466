// The conversation's websocket: frames go to the reducer; a dropped socket reconnects with
// backoff and resumes every run it was following from the last (attempt, seq) it saw, so nothing
// is lost or shown twice.
import type { Dispatch } from "react";
import { useCallback, useEffect, useRef, useState } from "react";
import type { ClientMessage, ServerFrame } from "./protocol";
import type { ChatAction, ChatState } from "./stream";
import { resumable } from "./stream";

export type Connection = "connecting" | "connected" | "reconnecting" | "closed";

const MAX_DELAY_MS = 10_000;

export function useConversationSocket(
  conversationId: number,
  state: ChatState,
  dispatch: Dispatch<ChatAction>,
  resumeOnOpen: () => number[],
) {
  const [connection, setConnection] = useState<Connection>("connecting");
  const [closedReason, setClosedReason] = useState("");
  const socketRef = useRef<WebSocket | null>(null);
  const stateRef = useRef(state);
  const resumeRef = useRef(resumeOnOpen);
  // The socket's handlers read the latest state (for resume) without reconnecting on each change.
  useEffect(() => {
    stateRef.current = state;
    resumeRef.current = resumeOnOpen;
  });

  useEffect(() => {
    let attempts = 0;
    let timer: number | undefined;
    let stopped = false;

    const connect = () => {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(`${scheme}${window.location.host}/ws/conversations/${conversationId}/`);
      socketRef.current = socket;
      socket.addEventListener("open", () => {
        attempts = 0;
        setConnection("connected");
        const resume = resumable(stateRef.current);
        const following = new Set(resume.map((item) => item.run));
        for (const item of resume) socket.send(JSON.stringify({ type: "resume", ...item }));
        // Finished runs loaded from history: re-streamed once for their per-token reads.
        for (const run of resumeRef.current()) {
          if (!following.has(run)) socket.send(JSON.stringify({ type: "resume", run, attempt: 0, seq: 0 }));
        }
      });
      socket.addEventListener("message", (event: MessageEvent<string>) => {
        try {
          dispatch({ kind: "frame", frame: JSON.parse(event.data) as ServerFrame });
        } catch (exc) {
          dispatch({ kind: "error", code: "client", message: String(exc) });
        }
      });
      socket.addEventListener("close", (event) => {
        if (socketRef.current === socket) socketRef.current = null;
        if (stopped) return;
        if (event.code === 4401 || event.code === 4404 || event.code === 4403) {
          setConnection("closed");
          setClosedReason(event.code === 4401 ? "You are not logged in." : "This conversation is not available.");
          return;
        }
        const delay = Math.min(MAX_DELAY_MS, 500 * 2 ** attempts++);
        setConnection("reconnecting");
        timer = window.setTimeout(connect, delay);
      });
    };

    connect();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
      socketRef.current?.close();
      socketRef.current = null;
    };
  }, [conversationId, dispatch]);

  const send = useCallback(
    (message: ClientMessage): boolean => {
      const socket = socketRef.current;
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(message));
        return true;
      }
      dispatch({ kind: "error", code: "offline", message: "Not connected: the message was not sent (reconnecting…)." });
      return false;
    },
    [dispatch],
  );

  return { connection, closedReason, send };
}
