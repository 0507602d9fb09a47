// The read loop of the hand-made WebSocket peers in tests: every message to a handler, then the end.
import type { WsConn, WsMessage } from "../../shared/ws_conn.ts";

/**
 * Hands every message `ws` receives to `onMessage` until the peer closes. Resolves with null after a
 * clean close, or with the error that ended reading (the socket's or `onMessage`'s); never rejects.
 */
export async function readEach(
  ws: WsConn,
  onMessage: (msg: WsMessage) => void,
): Promise<{ error: unknown } | null> {
  try {
    for (;;) {
      const msg = await ws.read();
      if (msg === null) return null;
      onMessage(msg);
    }
  } catch (error) {
    return { error };
  }
}

/** An error as text: its message, or `name: message` with `withName`. */
export function errorText(e: unknown, withName = false): string {
  if (!(e instanceof Error)) return String(e);
  return withName ? `${e.name}: ${e.message}` : e.message;
}
