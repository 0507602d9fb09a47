// The WebSocket endpoints: authenticate, answer the upgrade, and hand the socket to a session.
import { formatHostPort } from "../shared/address.ts";
import { Mux } from "../shared/mux.ts";
import { closeQuietly, writeAll } from "../shared/net.ts";
import { limitUnsentBytes } from "../shared/tcp_reset.ts";
import {
  CloseCode,
  controlPath,
  encode,
  type ErrorCode,
  legacyControlPath,
  legacyStreamPath,
  MAX_CONTROL_MESSAGE_BYTES,
  MUX_KERNEL_UNSENT_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  streamPath,
  SUBPROTOCOL,
  truncateReason,
} from "../shared/protocol.ts";
import { WsConn } from "../shared/ws_conn.ts";
import { checkUpgradeRequest, serverHandshakeResponse } from "../shared/ws_handshake.ts";
import type { Accounts } from "./accounts/accounts.ts";
import { type AuthLimiter, secretsEqual } from "./auth.ts";
import { ControlSession, type SessionDeps } from "./control/session.ts";
import type { FrontSlot, RequestHead } from "./listeners/http_front.ts";
import type { OwnerBudgets } from "./streams/budgets.ts";

/** Parts the endpoints need beyond a session's. */
export interface EndpointDeps extends SessionDeps {
  readonly accounts: Accounts;
  readonly limiter: AuthLimiter;
  readonly budgets: OwnerBudgets;
  /** Every data connection, for shutdown. */
  readonly muxes: Set<Mux>;
}

/** Which upgrade endpoint a path is, or null when it is none (ordinary HTTP). */
export function upgradeEndpoint(
  prefix: string,
  path: string,
): "control" | "stream" | "legacy" | null {
  if (path === controlPath(prefix)) return "control";
  if (path === streamPath(prefix)) return "stream";
  if (path === legacyControlPath(prefix) || path === legacyStreamPath(prefix)) return "legacy";
  return null;
}

/**
 * The client's address: the socket peer, or the last `X-Forwarded-For` hop when the peer is a
 * reverse proxy on loopback (nginx on the same host).
 */
export function clientIpOf(headers: Headers, peer: string): string {
  const loopback = peer === "127.0.0.1" || peer === "::1" || peer.startsWith("::ffff:127.");
  const xff = headers.get("x-forwarded-for");
  if (loopback && xff) {
    const hops = xff.split(",").map((h) => h.trim()).filter(Boolean);
    const last = hops[hops.length - 1];
    if (last && last.length <= 64) return last;
  }
  return peer;
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  426: "Upgrade Required",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** Answers with a plain-text refusal and closes: our client shows the body and the error code. */
async function refuse(
  conn: Deno.Conn,
  slot: FrontSlot,
  status: number,
  code: ErrorCode,
  message: string,
): Promise<void> {
  const body = new TextEncoder().encode(message + "\n");
  const head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\n` +
    "content-type: text/plain; charset=utf-8\r\n" +
    `x-mport-error: ${code}\r\n` +
    `content-length: ${body.byteLength}\r\nconnection: close\r\n\r\n`;
  try {
    await writeAll(conn, new Uint8Array([...new TextEncoder().encode(head), ...body]));
  } catch {
    // the peer left
  }
  closeQuietly(conn);
  slot.release();
}

/** Completes the upgrade: writes `101` and wraps the socket. */
async function accept(
  head: RequestHead,
  conn: Deno.Conn,
  leftover: Uint8Array,
  slot: FrontSlot,
  maxMessageBytes: number,
): Promise<WsConn> {
  const offered = (head.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) =>
    p.trim()
  );
  const protocol = offered.includes(SUBPROTOCOL) ? SUBPROTOCOL : null;
  await writeAll(
    conn,
    await serverHandshakeResponse(head.headers.get("sec-websocket-key")!, protocol),
  );
  const tcp = conn as Partial<Deno.TcpConn>;
  try {
    // Small frames (a keystroke, a window update) must not wait for Nagle; dead clients must be
    // noticed by the kernel. TLS connections have neither knob in Deno.
    tcp.setNoDelay?.(true);
    tcp.setKeepAlive?.(true);
  } catch {
    // the peer may already be gone
  }
  const ws = new WsConn(conn, { role: "server", maxMessageBytes, leftover });
  ws.closed.then(() => slot.release());
  return ws;
}

function bearer(headers: Headers): string | null {
  const h = headers.get("authorization");
  const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  return m ? m[1]! : null;
}

function authFailed(deps: EndpointDeps, ip: string, what: string): void {
  deps.stats.refusal("unauthorized");
  if (deps.limiter.fail(ip)) {
    deps.log.warn("blocking {ip} after too many failed authentication attempts", { ip });
  } else {
    deps.log.info("{what} from {ip}", { what, ip });
  }
}

/** An upgrade request the front handed over; owns `conn` from here on. */
export async function handleUpgrade(
  head: RequestHead,
  conn: Deno.Conn,
  leftover: Uint8Array,
  slot: FrontSlot,
  deps: EndpointDeps,
): Promise<void> {
  const ip = clientIpOf(head.headers, head.remote.hostname);
  const endpoint = upgradeEndpoint(deps.config.pathPrefix, head.path);
  const bad = checkUpgradeRequest(head.method, head.headers);
  if (bad !== null || endpoint === null) {
    await refuse(
      conn,
      slot,
      426,
      "bad_message",
      `this endpoint expects a WebSocket upgrade: ${bad}`,
    );
    return;
  }
  if (endpoint === "legacy") {
    // A v1 client understands only an `error` message on an open WebSocket: tell it to upgrade.
    const ws = await accept(head, conn, leftover, slot, MAX_CONTROL_MESSAGE_BYTES);
    const message =
      `protocol version mismatch: the client speaks v1, the server speaks v${PROTOCOL_VERSION} (upgrade the mport client)`;
    ws.sendText(encode({ type: "error", code: "version_mismatch", message }));
    await ws.close(CloseCode.versionMismatch, truncateReason(message), 1000);
    return;
  }
  if (endpoint === "control") await control(head, ip, conn, leftover, slot, deps);
  else await stream(head, ip, conn, leftover, slot, deps);
}

async function control(
  head: RequestHead,
  ip: string,
  conn: Deno.Conn,
  leftover: Uint8Array,
  slot: FrontSlot,
  deps: EndpointDeps,
): Promise<void> {
  if (deps.limiter.blocked(ip)) {
    deps.stats.refusal("too_many_attempts");
    await refuse(
      conn,
      slot,
      429,
      "too_many_attempts",
      "too many failed authentication attempts from this address; try again later",
    );
    return;
  }
  if (deps.shuttingDown()) {
    await refuse(conn, slot, 503, "shutting_down", "the server is shutting down; reconnect later");
    return;
  }
  const hostHeader = (head.headers.get("host") ?? "localhost").replace(/:\d+$/, "").replace(
    /^\[|\]$/g,
    "",
  );
  const token = bearer(head.headers);
  if (token === null) {
    authFailed(deps, ip, "control connection without a token");
    deps.audit("auth_failed", null, { address: ip, reason: "no token" });
    await refuse(conn, slot, 401, "unauthorized", "no token: pass --token or set MPORT_TOKEN");
    return;
  }
  let result;
  try {
    result = await deps.accounts.authenticate(token);
  } catch (e) {
    deps.stats.error("store");
    deps.log.error("cannot check a token: {error}", { error: String(e) });
    await refuse(
      conn,
      slot,
      503,
      "internal",
      "the server cannot check tokens right now (database unavailable); retrying",
    );
    return;
  }
  if (!result.ok) {
    authFailed(deps, ip, "wrong token");
    deps.audit("auth_failed", null, { address: ip, reason: result.message });
    await refuse(conn, slot, 401, "unauthorized", result.message);
    return;
  }
  slot.authenticated();
  // Twice the limit: a message a little over it still reaches the decoder, which answers with an
  // `error` naming the limit (4013); anything larger is cut off by the WebSocket layer (1009).
  const ws = await accept(head, conn, leftover, slot, 2 * MAX_CONTROL_MESSAGE_BYTES);
  const session = new ControlSession(ws, result.principal, ip, hostHeader, deps);
  deps.sessions.set(session.id, session);
}

async function stream(
  head: RequestHead,
  ip: string,
  conn: Deno.Conn,
  leftover: Uint8Array,
  slot: FrontSlot,
  deps: EndpointDeps,
): Promise<void> {
  const cred = bearer(head.headers) ?? "";
  const dot = cred.indexOf(".");
  const session = dot > 0 ? deps.sessions.get(cred.slice(0, dot)) : undefined;
  if (!session || session.closed || !secretsEqual(cred.slice(dot + 1), session.secret)) {
    if (deps.limiter.blocked(ip)) {
      deps.stats.refusal("too_many_attempts");
      await refuse(
        conn,
        slot,
        429,
        "too_many_attempts",
        "too many failed authentication attempts from this address; try again later",
      );
      return;
    }
    authFailed(deps, ip, "data connection with an unknown session");
    await refuse(
      conn,
      slot,
      401,
      "unauthorized",
      "unknown or expired session: reconnect the control channel",
    );
    return;
  }
  slot.authenticated();
  const ws = await accept(head, conn, leftover, slot, MUX_MAX_MESSAGE_BYTES);
  limitUnsentBytes(conn, MUX_KERNEL_UNSENT_BYTES);
  deps.stats.dataConnsOpened++;
  const mux = new Mux(ws, { role: "server", budget: deps.budgets.of(session.owner) });
  deps.muxes.add(mux);
  mux.done.then(() => deps.muxes.delete(mux));
  const refusal = session.addMux(mux);
  if (refusal) {
    deps.log.info("data connection refused for session {id} from {addr}: {refusal}", {
      id: session.id,
      addr: formatHostPort(head.remote.hostname, head.remote.port),
      refusal,
    });
    mux.close(CloseCode.tooManyAttempts, truncateReason(refusal));
  }
}
