// Who calls the REST API: a bearer token with an api/admin scope, or a browser session cookie
// (with its CSRF token on state-changing requests); and the API's error answers.
import type { Context, MiddlewareHandler } from "hono";
import { blockMessage } from "../auth.ts";
import type { Principal } from "../accounts/accounts.ts";
import { authFailed, bearer, type EndpointDeps } from "../endpoints.ts";
import type { TokenScope, User } from "../store/store.ts";
import type { Actor } from "./service.ts";
import { isStateChanging, type WebSession, type WebSessions } from "./web_sessions.ts";

/** How a request was authenticated, and as whom. */
export interface ApiAuth {
  readonly user: User;
  readonly actor: Actor;
  readonly via: "token" | "session";
  /** The token's scope (bearer requests), or null for a session. */
  readonly scope: TokenScope | null;
  readonly principal: Principal | null;
  readonly session: WebSession | null;
}

/** The Hono env of the API: the client's address and TLS-ness from the front, and the caller. */
export type ApiEnv = {
  Bindings: { ip: string; secure?: boolean };
  Variables: { auth: ApiAuth };
};

/** A refusal the API answers with `{error:{code,message}}` and `status`. */
export class ApiError extends Error {
  readonly status: 400 | 401 | 403 | 404 | 409 | 429 | 503;
  readonly code: string;
  readonly headers: Record<string, string>;
  constructor(
    status: ApiError["status"],
    code: string,
    message: string,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/** The JSON error answer. */
export function errorResponse(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return Response.json({ error: { code, message } }, { status, headers });
}

/** What authentication needs from the server. */
export interface AuthDeps {
  readonly endpoint: EndpointDeps;
  readonly webSessions: WebSessions;
}

/** The actor for a user authenticated with `scope` (null: a browser session). */
export function actorOf(user: User, scope: TokenScope | null): Actor {
  // An admin acts as one through a session or an admin-scoped token; an api-scoped token of an
  // admin user is limited to that user's own objects.
  const admin = user.role === "admin" && (scope === null || scope === "admin");
  return { userId: user.id, name: user.name, admin };
}

/**
 * Middleware: sets `auth` or answers 401 (no or wrong credential), 403 (a `client` token, a
 * missing CSRF token), 429 (blocked after failures) or 503 (store down).
 */
export function authenticate(deps: AuthDeps): MiddlewareHandler<ApiEnv> {
  const d = deps.endpoint;
  return async (c, next) => {
    const ip = c.env.ip;
    const token = bearer(c.req.raw.headers);
    if (token !== null) {
      const blockedMs = d.limiter.blockedFor(ip, token);
      if (blockedMs > 0) {
        d.stats.refusal("too_many_attempts");
        throw new ApiError(429, "too_many_attempts", blockMessage(blockedMs), {
          "retry-after": String(Math.ceil(blockedMs / 1000)),
        });
      }
      let user: User | null;
      let principal: Principal;
      try {
        const r = await d.accounts.authenticate(token);
        if (!r.ok) {
          authFailed(d, ip, token, "wrong API token", r.message);
          throw new ApiError(401, "unauthorized", r.message);
        }
        principal = r.principal;
        user = await d.accounts.store.userById(principal.userId);
      } catch (e) {
        if (e instanceof ApiError) throw e;
        throw storeDown(d, e);
      }
      if (!user) throw new ApiError(401, "unauthorized", "the token's user no longer exists");
      if (principal.scope === "client") {
        d.stats.refusal("forbidden");
        throw new ApiError(
          403,
          "scope",
          "this token may only open tunnels (scope client): create one for the API with " +
            `mport-server token create --user ${user.name} --scope api`,
        );
      }
      c.set("auth", {
        user,
        actor: actorOf(user, principal.scope),
        via: "token",
        scope: principal.scope,
        principal,
        session: null,
      });
      return await next();
    }
    const session = deps.webSessions.fromRequest(c.req.raw);
    if (!session) {
      throw new ApiError(
        401,
        "unauthorized",
        "not logged in: send Authorization: Bearer TOKEN (a token of scope api or admin) or " +
          "log in with POST /api/v1/login",
      );
    }
    let user: User | null;
    try {
      user = await d.accounts.store.userById(session.userId);
    } catch (e) {
      throw storeDown(d, e);
    }
    if (!user || user.disabled) {
      deps.webSessions.endUser(session.userId);
      throw new ApiError(401, "unauthorized", "this session ended: log in again");
    }
    if (isStateChanging(c.req.method) && !deps.webSessions.csrfOk(session, c.req.raw)) {
      d.stats.refusal("forbidden");
      throw new ApiError(
        403,
        "csrf",
        "missing or wrong x-csrf-token header (the csrfToken from POST /login or GET /me)",
      );
    }
    c.set("auth", {
      user,
      actor: actorOf(user, null),
      via: "session",
      scope: null,
      principal: null,
      session,
    });
    return await next();
  };
}

function storeDown(d: EndpointDeps, e: unknown): ApiError {
  d.stats.error("store");
  d.log.error("cannot check API credentials: {error}", { error: String(e) });
  return new ApiError(503, "unavailable", "the server cannot check credentials right now");
}

/** The caller (set by {@link authenticate}). */
export function authOf(c: Context<ApiEnv>): ApiAuth {
  return c.get("auth");
}

/** Throws 403 unless the caller acts as an admin. */
export function requireAdmin(c: Context<ApiEnv>): ApiAuth {
  const auth = c.get("auth");
  if (!auth.actor.admin) {
    throw new ApiError(
      403,
      "forbidden",
      auth.user.role === "admin"
        ? "this needs a token of scope admin (or a dashboard session)"
        : "only an admin may do this",
    );
  }
  return auth;
}

/** Items of one page and the cursor of the next (an offset, opaque to callers). */
export function paginate<T>(
  all: readonly T[],
  limit: number | undefined,
  cursor: string | undefined,
): { items: T[]; nextCursor: string | null } {
  const size = limit ?? 100;
  let offset = 0;
  if (cursor !== undefined) {
    const m = /^o(\d{1,9})$/.exec(cursor);
    if (!m) throw new ApiError(400, "bad_request", "cursor: not a cursor this API returned");
    offset = Number(m[1]);
  }
  const items = all.slice(offset, offset + size);
  const next = offset + size < all.length ? `o${offset + size}` : null;
  return { items, nextCursor: next };
}
