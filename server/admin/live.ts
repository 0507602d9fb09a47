// The live view for admins: who is connected and which tunnels are open, read from the running server.
import { blockMessage } from "../auth.ts";
import type { ControlSession } from "../control/session.ts";
import { authFailed, bearer, type EndpointDeps } from "../endpoints.ts";
import type { Tunnel } from "../tunnels.ts";

/** One connected client (a control session), as `GET …/admin/clients` reports it. */
export interface LiveClient {
  readonly session: string;
  readonly clientId: string;
  readonly user: string;
  /** The client's address (after `--trusted-proxy`). */
  readonly address: string;
  /** Epoch ms when the control channel was accepted. */
  readonly since: number;
  readonly tunnels: readonly string[];
  readonly dataConnections: number;
  /** The label of the token it logged in with. */
  readonly tokenLabel: string;
  /** The version the client said it is, or null. */
  readonly clientVersion: string | null;
}

/** One open tunnel, as `GET …/admin/tunnels` reports it. */
export interface LiveTunnel {
  readonly name: string;
  /** The local service as the client named it (`192.168.1.5:5555`, `http://127.0.0.1:3000`). */
  readonly local: string;
  readonly port: number;
  readonly url: string;
  readonly user: string;
  /** The session serving it; null while it waits (grace period) for its client to return. */
  readonly session: string | null;
  readonly clientAddress: string | null;
  readonly activeConnections: number;
  /** Public connections waiting for the client. */
  readonly pendingConnections: number;
  /** Bytes from public users to the client since the tunnel opened. */
  readonly bytesIn: number;
  /** Bytes from the client back to public users. */
  readonly bytesOut: number;
  /** Epoch ms when the tunnel opened. */
  readonly since: number;
}

/** The connected clients, oldest first. */
export function liveClients(sessions: Iterable<ControlSession>): LiveClient[] {
  return [...sessions].filter((s) => !s.closed).map((s) => ({
    session: s.id,
    clientId: s.clientId,
    user: s.userName,
    address: s.remote,
    since: s.startedAt,
    tunnels: [...s.tunnels()].filter((t) => t.session === s).map((t) => t.name),
    dataConnections: s.muxes.size,
    tokenLabel: s.principal.tokenLabel,
    clientVersion: s.clientVersion,
  })).sort((a, b) => a.since - b.since);
}

/** The open tunnels, by port. */
export function liveTunnels(tunnels: Iterable<Tunnel>): LiveTunnel[] {
  return [...tunnels].filter((t) => !t.closed).map((t) => ({
    name: t.name,
    port: t.port,
    url: t.url,
    local: t.local,
    user: t.userName,
    session: t.session?.id ?? null,
    clientAddress: t.session?.remote ?? null,
    activeConnections: t.active.size,
    pendingConnections: t.pending.length,
    bytesIn: t.bytesIn,
    bytesOut: t.bytesOut,
    since: t.openedAt,
  })).sort((a, b) => a.port - b.port);
}

function refusal(status: number, message: string, headers: Record<string, string> = {}): Response {
  return Response.json({ error: message }, { status, headers });
}

/**
 * Checks that a request to the admin endpoints carries an admin user's token: null when it may
 * go on, else the answer (401 no or wrong token, 403 not an admin, 429 blocked, 503 store down).
 * Failures count against the same per-address limiter as tunnel logins.
 */
export async function authorizeAdmin(
  req: Request,
  ip: string,
  deps: EndpointDeps,
): Promise<Response | null> {
  const token = bearer(req.headers);
  const blockedMs = deps.limiter.blockedFor(ip, token);
  if (blockedMs > 0) {
    deps.stats.refusal("too_many_attempts");
    return refusal(429, blockMessage(blockedMs), {
      "retry-after": String(Math.ceil(blockedMs / 1000)),
    });
  }
  if (token === null) {
    authFailed(deps, ip, null, "admin request without a token", "no token");
    return refusal(
      401,
      "no admin token: pass --token, --token-file or set MPORT_TOKEN (a token of an admin user)",
    );
  }
  try {
    const result = await deps.accounts.authenticate(token);
    if (!result.ok) {
      authFailed(deps, ip, token, "wrong admin token", result.message);
      return refusal(401, result.message);
    }
    const user = await deps.accounts.store.userById(result.principal.userId);
    if (user?.role !== "admin") {
      deps.stats.refusal("forbidden");
      return refusal(
        403,
        `user ${result.principal.userName} is not an admin: use a token of an admin user ` +
          "(mport-server token create --user ADMIN)",
      );
    }
  } catch (e) {
    deps.stats.error("store");
    deps.log.error("cannot check an admin token: {error}", { error: String(e) });
    return refusal(503, "the server cannot check tokens right now (database unavailable)");
  }
  return null;
}
