// The WebSocket endpoints: authenticate, upgrade, and hand the socket to a session or the broker.
import {
  CLAIM_HEADER,
  CloseCode,
  encode,
  type ErrorCode,
  SUBPROTOCOL,
} from "../shared/protocol.ts";
import { StreamBridge, truncateReason } from "../shared/stream_bridge.ts";
import type { Accounts } from "./accounts/accounts.ts";
import { type AuthLimiter, secretsEqual } from "./auth.ts";
import { ControlSession, type SessionDeps } from "./control/session.ts";

/** Parts the endpoints need beyond a session's. */
export interface EndpointDeps extends SessionDeps {
  readonly accounts: Accounts;
  readonly limiter: AuthLimiter;
}

function bearer(req: Request): string | null {
  const h = req.headers.get("authorization");
  const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  return m ? m[1]! : null;
}

function upgrade(req: Request): { socket: WebSocket; response: Response } {
  const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
  return Deno.upgradeWebSocket(req, offered.includes(SUBPROTOCOL) ? { protocol: SUBPROTOCOL } : {});
}

/** Upgrades, then tells the peer why it is refused and closes (so the client can print it). */
function refuseUpgraded(
  req: Request,
  code: ErrorCode,
  message: string,
  closeCode: number,
): Response {
  const { socket, response } = upgrade(req);
  socket.onopen = () => {
    socket.send(encode({ type: "error", code, message }));
    socket.close(closeCode, truncateReason(message));
  };
  socket.onerror = () => {};
  return response;
}

function notWebSocket(req: Request): Response | null {
  if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
    return new Response("this endpoint expects a WebSocket upgrade\n", { status: 426 });
  }
  return null;
}

function tooMany(deps: EndpointDeps, ip: string): Response | null {
  if (!deps.limiter.blocked(ip)) return null;
  deps.stats.refusal("too_many_attempts");
  return new Response(
    "too many failed authentication attempts from this address; try again later\n",
    {
      status: 429,
    },
  );
}

function authFailed(deps: EndpointDeps, ip: string, what: string): void {
  deps.stats.refusal("unauthorized");
  if (deps.limiter.fail(ip)) {
    deps.log.warn("blocking {ip} after too many failed authentication attempts", { ip });
  } else {
    deps.log.info("{what} from {ip}", { what, ip });
  }
}

/** `GET …/control`: a client's control channel. */
export async function handleControl(
  req: Request,
  ip: string,
  deps: EndpointDeps,
): Promise<Response> {
  const bad = notWebSocket(req) ?? tooMany(deps, ip);
  if (bad) return bad;
  if (deps.shuttingDown()) {
    return refuseUpgraded(
      req,
      "shutting_down",
      "the server is shutting down; reconnect later",
      CloseCode.goingAway,
    );
  }
  // Read everything needed from the request before upgrading; it is closed afterwards.
  const hostHeader = (req.headers.get("host") ?? "localhost").replace(/:\d+$/, "").replace(
    /^\[|\]$/g,
    "",
  );
  const token = bearer(req);
  if (token === null) {
    authFailed(deps, ip, "control connection without a token");
    deps.audit("auth_failed", null, { address: ip, reason: "no token" });
    return refuseUpgraded(
      req,
      "unauthorized",
      "no token: pass --token or set MPORT_TOKEN",
      CloseCode.unauthorized,
    );
  }
  let result;
  try {
    result = await deps.accounts.authenticate(token);
  } catch (e) {
    deps.stats.error("store");
    deps.log.error("cannot check a token: {error}", { error: String(e) });
    return refuseUpgraded(
      req,
      "internal",
      "the server cannot check tokens right now (database unavailable); retrying",
      CloseCode.internal,
    );
  }
  if (!result.ok) {
    authFailed(deps, ip, "wrong token");
    deps.audit("auth_failed", null, { address: ip, reason: result.message });
    return refuseUpgraded(req, "unauthorized", result.message, CloseCode.unauthorized);
  }
  const { socket, response } = upgrade(req);
  const session = new ControlSession(socket, result.principal, ip, hostHeader, deps);
  deps.sessions.set(session.id, session);
  return response;
}

/** `GET …/stream`: a data stream, pooled (no claim) or for a claimed connection. */
export function handleStream(req: Request, ip: string, deps: EndpointDeps): Response {
  const bad = notWebSocket(req) ?? tooMany(deps, ip);
  if (bad) return bad;
  const cred = bearer(req) ?? "";
  const dot = cred.indexOf(".");
  const session = dot > 0 ? deps.sessions.get(cred.slice(0, dot)) : undefined;
  if (!session || session.closed || !secretsEqual(cred.slice(dot + 1), session.secret)) {
    authFailed(deps, ip, "stream with an unknown session");
    return refuseUpgraded(
      req,
      "unauthorized",
      "unknown or expired session: reconnect the control channel",
      CloseCode.unauthorized,
    );
  }
  const claim = req.headers.get(CLAIM_HEADER);
  const { socket, response } = upgrade(req);
  deps.stats.streamsOpened++;
  socket.onopen = () => {
    const stream = new StreamBridge(socket, {}, { ackWhenIdle: true });
    const serve = (claimId: string | null) => {
      if (session.closed) {
        stream.fail("unauthorized", "session closed", CloseCode.unauthorized);
        return;
      }
      const refusal = deps.broker.onStream(session, stream, claimId);
      if (refusal) {
        deps.log.info("stream refused for session {id}: {refusal}", { id: session.id, refusal });
        stream.fail("unknown_claim", refusal, CloseCode.unknownClaim);
      }
    };
    // Stream reuse: after a clean end and the client's `idle`, the stream is served again (a
    // waiting connection or the idle pool) instead of being closed.
    stream.onReused = () => serve(null);
    serve(claim);
  };
  socket.onerror = () => {};
  return response;
}
