// The conversation's websocket: frames go to the reducer; a dropped socket reconnects with
// backoff and resumes every run it was following from the last (attempt, seq) it saw, so nothing
// is lost or shown twice.
import type { Dispatch } from "react";
import { useCallback } from "react";
import { useReconnectingSocket } from "../api/useReconnectingSocket";
import type { ClientMessage, ServerFrame } from "./protocol";
import type { ChatAction, ChatState } from "./stream";
import { resumable } from "./stream";

export type { Connection } from "../api/useReconnectingSocket";

const NOT_AVAILABLE = "This conversation is not available.";
const FINAL_CODES: Readonly<Record<number, string>> = {
  4401: "You are not logged in.",
  4403: NOT_AVAILABLE,
  4404: NOT_AVAILABLE,
};

export function useConversationSocket(
  conversationId: number,
  state: ChatState,
  dispatch: Dispatch<ChatAction>,
  resumeOnOpen: () => number[],
) {
  // The socket's handlers are read through a ref: they see the latest state (for resume) without
  // reconnecting on each change.
  const socket = useReconnectingSocket<ServerFrame, ClientMessage>(`/ws/conversations/${conversationId}/`, {
    finalCodes: FINAL_CODES,
    onOpen: (opened) => {
      const resume = resumable(state);
      const following = new Set(resume.map((item) => item.run));
      for (const item of resume) opened.send(JSON.stringify({ type: "resume", ...item }));
      // Finished runs loaded from history: re-streamed once for their per-token reads.
      for (const run of resumeOnOpen()) {
        if (!following.has(run)) opened.send(JSON.stringify({ type: "resume", run, attempt: 0, seq: 0 }));
      }
    },
    onFrame: (frame) => {
      dispatch({ kind: "frame", frame });
    },
    onParseError: (message) => {
      dispatch({ kind: "error", code: "client", message });
    },
  });

  const sendOnSocket = socket.send;
  const send = useCallback(
    (message: ClientMessage): boolean => {
      if (sendOnSocket(message)) return true;
      dispatch({ kind: "error", code: "offline", message: "Not connected: the message was not sent (reconnecting…)." });
      return false;
    },
    [sendOnSocket, dispatch],
  );

  return { connection: socket.connection, closedReason: socket.closedReason, send };
}
