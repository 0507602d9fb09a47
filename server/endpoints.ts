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
import {
  checkUpgradeRequest,
  offeredProtocols,
  serverHandshakeResponse,
} from "../shared/ws_handshake.ts";
import type { Accounts } from "./accounts/accounts.ts";
import { type AuthFailureAudit, type AuthLimiter, blockMessage, secretsEqual } from "./auth.ts";
import { normalizeIp, type TrustedProxies } from "./client_address.ts";
import { ControlSession, type SessionDeps } from "./control/session.ts";
import type { FrontSlot, RequestHead } from "./listeners/http_front.ts";
import { httpResponse } from "./listeners/http_refusals.ts";
import type { OwnerBudgets } from "./streams/budgets.ts";

/** Parts the endpoints need beyond a session's. */
export interface EndpointDeps extends SessionDeps {
  readonly accounts: Accounts;
  readonly limiter: AuthLimiter;
  /** Aggregates `auth_failed` audit rows (one per address per minute). */
  readonly authFailures: AuthFailureAudit;
  /** Peers whose `X-Forwarded-For` is believed (`--trusted-proxy`). */
  readonly proxies: TrustedProxies;
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

/** Answers with a plain-text refusal and closes: our client shows the body and the error code. */
async function refuse(
  conn: Deno.Conn,
  slot: FrontSlot,
  status: number,
  code: ErrorCode,
  message: string,
  extraHeaders = "",
): Promise<void> {
  try {
    await writeAll(
      conn,
      httpResponse(status, message, `x-mport-error: ${code}\r\n` + extraHeaders),
    );
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
  const protocol = offeredProtocols(head.headers).includes(SUBPROTOCOL) ? SUBPROTOCOL : null;
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

/** The token of an `Authorization: Bearer …` header, or null. */
export function bearer(headers: Headers): string | null {
  const h = headers.get("authorization");
  const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  return m ? m[1]! : null;
}

/**
 * Counts a failed authentication against (ip, credential), logs a block it starts, and (when
 * `reason` is given) tallies an `auth_failed` audit row.
 */
export function authFailed(
  deps: EndpointDeps,
  ip: string,
  credential: string | null,
  what: string,
  reason: string | null,
): void {
  deps.stats.refusal("unauthorized");
  if (reason !== null) deps.authFailures.record(ip, reason);
  const outcome = deps.limiter.fail(ip, credential);
  const minutes = Math.ceil(deps.limiter.blockMs / 60_000);
  if (outcome === "address_blocked") {
    deps.log.warn(
      "blocking {ip} for {minutes} min: {n} failed authentication attempts within a minute",
      { ip, minutes, n: deps.limiter.addressCeiling },
    );
  } else if (outcome === "credential_blocked") {
    deps.log.warn(
      "blocking one credential from {ip} for {minutes} min after repeated failures ({what})",
      { ip, minutes, what },
    );
  } else {
    deps.log.info("{what} from {ip}", { what, ip });
  }
}

/**
 * Answers 429 when `ip` may not present `credential` now; true when it did. Asked only before a
 * credential is checked: a valid session's data connections never come here.
 */
async function refusedAsBlocked(
  deps: EndpointDeps,
  ip: string,
  credential: string | null,
  conn: Deno.Conn,
  slot: FrontSlot,
): Promise<boolean> {
  const ms = deps.limiter.blockedFor(ip, credential);
  if (ms <= 0) return false;
  deps.stats.refusal("too_many_attempts");
  await refuse(
    conn,
    slot,
    429,
    "too_many_attempts",
    blockMessage(ms),
    `retry-after: ${Math.ceil(ms / 1000)}\r\n`,
  );
  return true;
}

/** An upgrade request the front handed over; owns `conn` from here on. */
export async function handleUpgrade(
  head: RequestHead,
  conn: Deno.Conn,
  leftover: Uint8Array,
  slot: FrontSlot,
  deps: EndpointDeps,
): Promise<void> {
  const ip = deps.proxies.clientIp(head.headers, head.remote.hostname);
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
  const token = bearer(head.headers);
  if (await refusedAsBlocked(deps, ip, token, conn, slot)) return;
  if (deps.shuttingDown()) {
    await refuse(conn, slot, 503, "shutting_down", "the server is shutting down");
    return;
  }
  const hostHeader = (head.headers.get("host") ?? "localhost").replace(/:\d+$/, "").replace(
    /^\[|\]$/g,
    "",
  );
  if (token === null) {
    authFailed(deps, ip, null, "control connection without a token", "no token");
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
    authFailed(deps, ip, token, "wrong token", result.message);
    await refuse(conn, slot, 401, "unauthorized", result.message);
    return;
  }
  slot.authenticated();
  // Twice the limit: a message a little over it still reaches the decoder, which answers with an
  // `error` naming the limit (4013); anything larger is cut off by the WebSocket layer (1009).
  const ws = await accept(head, conn, leftover, slot, 2 * MAX_CONTROL_MESSAGE_BYTES);
  // Behind a trusted proxy that says the client came over https, HTTP tunnels' URLs are https on
  // the default port (unless --public-http-url-scheme says otherwise).
  const peer = normalizeIp(head.remote.hostname) ?? head.remote.hostname;
  const viaHttpsProxy = deps.proxies.trusts(peer) &&
    head.headers.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase() === "https";
  const session = new ControlSession(ws, result.principal, ip, hostHeader, deps, viaHttpsProxy);
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
  const presented = bearer(head.headers);
  const cred = presented ?? "";
  const dot = cred.indexOf(".");
  const session = dot > 0 ? deps.sessions.get(cred.slice(0, dot)) : undefined;
  // A valid session credential is never refused by the limiter, however many failures its
  // address has: blocks only stop guessing.
  if (!session || session.closed || !secretsEqual(cred.slice(dot + 1), session.secret)) {
    if (await refusedAsBlocked(deps, ip, presented, conn, slot)) return;
    authFailed(deps, ip, presented, "data connection with an unknown session", null);
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
  const mux: Mux = new Mux(ws, {
    role: "server",
    budget: deps.budgets.of(session.owner),
    // Streams the client opens: egress (mport socks) and the VPN's packets (mport vpn).
    onConnect: (stream, host, port, service) => {
      if (service === "vpn") {
        if (!deps.vpn) {
          return stream.reset(
            "egress_denied",
            "this server does not offer a VPN (its operator starts mport-server with --vpn-pool)",
          );
        }
        return deps.vpn.handle(mux, stream, session.vpnUser(), session.vpnAddress);
      }
      if (!deps.egress) return stream.reset("egress_denied", "this server does not offer egress");
      if (service === "udp") {
        return deps.egress.handleUdp(mux, stream, session.egressUser(), deps.config.udpIdleMs);
      }
      deps.egress.handle(mux, stream, host, port, session.egressUser());
    },
  });
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
