// One websocket to a path on this site that comes back by itself: after a drop it reconnects with
// exponential backoff (0.5 s doubling, at most 10 s), and each (re)connection calls `onOpen` with
// the socket so the caller can resume or re-watch what it follows. A close code in `finalCodes`
// ends it for good, with that code's reason. Each message is parsed as JSON and handed to
// `onFrame` (or its error to `onParseError`). The options are read through a ref: changing them
// never reconnects; changing `path` does (and unmounting closes the socket).
import { useCallback, useEffect, useRef, useState } from "react";

export type Connection = "connecting" | "connected" | "reconnecting" | "closed";

const MAX_DELAY_MS = 10_000;

export interface SocketOptions<Frame> {
  /** Close codes after which the socket does not come back, each with the reason to show. */
  finalCodes: Readonly<Record<number, string>>;
  /** Called on every (re)connection, once the socket is open. */
  onOpen: (socket: WebSocket) => void;
  onFrame: (frame: Frame) => void;
  /** A message that is not JSON, or that `onFrame` threw on: the error's text. */
  onParseError: (message: string) => void;
}

export interface ReconnectingSocket<Message> {
  connection: Connection;
  /** Why the socket closed for good ("" until it does). */
  closedReason: string;
  /** Sends `message` as JSON if the socket is open; false (nothing sent) otherwise. Stable. */
  send: (message: Message) => boolean;
}

export function useReconnectingSocket<Frame, Message>(
  path: string,
  options: SocketOptions<Frame>,
): ReconnectingSocket<Message> {
  const [connection, setConnection] = useState<Connection>("connecting");
  const [closedReason, setClosedReason] = useState("");
  const socketRef = useRef<WebSocket | null>(null);
  const optionsRef = useRef(options);
  useEffect(() => {
    optionsRef.current = options;
  });

  useEffect(() => {
    let attempts = 0;
    let timer: number | undefined;
    let stopped = false;

    const connect = () => {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(`${scheme}${window.location.host}${path}`);
      socketRef.current = socket;
      socket.addEventListener("open", () => {
        attempts = 0;
        setConnection("connected");
        optionsRef.current.onOpen(socket);
      });
      socket.addEventListener("message", (event: MessageEvent<string>) => {
        try {
          optionsRef.current.onFrame(JSON.parse(event.data) as Frame);
        } catch (exc) {
          optionsRef.current.onParseError(String(exc));
        }
      });
      socket.addEventListener("close", (event) => {
        if (socketRef.current === socket) socketRef.current = null;
        if (stopped) return;
        const reason = optionsRef.current.finalCodes[event.code];
        if (reason !== undefined) {
          setConnection("closed");
          setClosedReason(reason);
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
  }, [path]);

  const send = useCallback((message: Message): boolean => {
    const socket = socketRef.current;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }, []);

  return { connection, closedReason, send };
}
