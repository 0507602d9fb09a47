// API routes of accounts: login/logout, me, users (admins) and tokens.
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { blockMessage } from "../auth.ts";
import { hashPassword, verifyPassword } from "../accounts/secrets.ts";
import type { User } from "../store/store.ts";
import type { ApiDeps } from "./api.ts";
import { type ApiEnv, ApiError, authOf, paginate, requireAdmin } from "./api_auth.ts";
import {
  body,
  errors,
  json,
  LoginBody,
  LoginResult,
  MeSchema,
  OkSchema,
  page,
  PageQuery,
  PasswordBody,
  TokenCreateBody,
  TokenCreated,
  TokenSchema,
  UserCreateBody,
  UserPatchBody,
  UserQuery,
  UserSchema,
} from "./schemas.ts";
import { publicUser, tokenState } from "./service.ts";
import { clearedCookie, sessionCookie } from "./web_sessions.ts";

const NameParam = z.object({
  name: z.string().min(1).max(64).openapi({ param: { name: "name", in: "path" } }),
});
const IdParam = z.object({
  id: z.coerce.number().int().min(1).openapi({ param: { name: "id", in: "path" } }),
});

const WRONG_LOGIN = "wrong user name or password";

/** POST /login (no caller yet). */
export function registerLoginRoutes(api: OpenAPIHono<ApiEnv>, deps: ApiDeps): void {
  let dummyHash: Promise<string> | null = null;
  const { endpoint: d, loginLimiter: limiter, webSessions } = deps;
  api.openapi(
    createRoute({
      method: "post",
      path: "/login",
      summary: "Log in with a user name and password; sets the mport_session cookie",
      security: [],
      request: { body: body(LoginBody) },
      responses: { 200: json(LoginResult, "Logged in"), ...errors(400, 401, 429) },
    }),
    async (c) => {
      const { username, password } = c.req.valid("json");
      const ip = c.env.ip;
      const nameKey = `user:${username.toLowerCase()}`;
      const blockedMs = Math.max(
        limiter.blockedFor(ip, username),
        limiter.blockedFor(nameKey, null),
      );
      if (blockedMs > 0) {
        d.stats.refusal("too_many_attempts");
        throw new ApiError(429, "too_many_attempts", blockMessage(blockedMs), {
          "retry-after": String(Math.ceil(blockedMs / 1000)),
        });
      }
      const user = await d.accounts.store.userByName(username);
      // Unknown names cost a scrypt too, so timing does not tell which names exist.
      const hash = user?.passwordHash ?? await (dummyHash ??= hashPassword("no such user"));
      const matches = await verifyPassword(password, hash);
      const ok = matches && user !== null && user.passwordHash !== null && !user.disabled;
      if (!ok || !user) {
        // Per address (over all names, with its ceiling) and per name (over all addresses).
        limiter.fail(ip, username);
        limiter.fail(nameKey, null);
        d.stats.refusal("unauthorized");
        d.audit("login_failed", user?.id ?? null, {
          username: username.slice(0, 64),
          address: ip,
          ...(user?.disabled ? { disabled: true } : {}),
        });
        throw new ApiError(401, "unauthorized", WRONG_LOGIN);
      }
      const { id, session } = webSessions.create(user.id);
      await d.accounts.store.touchUser(user.id, deps.now());
      d.audit("login", user.id, { address: ip });
      c.header("set-cookie", sessionCookie(id, c.env.secure === true));
      c.header("cache-control", "no-store");
      return c.json({ user: publicUser(user), csrfToken: session.csrfToken }, 200);
    },
  );
}

/** me, logout, users, tokens. */
export function registerAccountRoutes(api: OpenAPIHono<ApiEnv>, deps: ApiDeps): void {
  const { service, webSessions, endpoint: d } = deps;

  api.openapi(
    createRoute({
      method: "get",
      path: "/me",
      summary: "The caller: user, how authenticated, and the session's CSRF token",
      responses: { 200: json(MeSchema, "The caller"), ...errors(401, 403) },
    }),
    (c) => {
      const a = authOf(c);
      c.header("cache-control", "no-store");
      return c.json({
        user: publicUser(a.user),
        auth: a.via,
        scope: a.scope,
        admin: a.actor.admin,
        csrfToken: a.session?.csrfToken ?? null,
      }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "post",
      path: "/logout",
      summary: "End the browser session (cookie requests need x-csrf-token)",
      responses: { 200: json(OkSchema, "Logged out"), ...errors(401, 403) },
    }),
    (c) => {
      const a = authOf(c);
      if (a.via === "session") {
        webSessions.end(webSessions.idOf(c.req.raw));
        d.audit("logout", a.user.id, { address: c.env.ip });
      }
      c.header("set-cookie", clearedCookie(c.env.secure === true));
      return c.json({ ok: true as const }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/users",
      summary: "Users (admins)",
      request: { query: z.object(PageQuery) },
      responses: { 200: json(page(UserSchema), "Users by id"), ...errors(400, 401, 403) },
    }),
    async (c) => {
      const { actor } = requireAdmin(c);
      const q = c.req.valid("query");
      const users = (await service.listUsers(actor)).map(publicUser);
      return c.json(paginate(users, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "post",
      path: "/users",
      summary: "Create a user (admins)",
      request: { body: body(UserCreateBody) },
      responses: { 201: json(UserSchema, "Created"), ...errors(400, 401, 403, 409) },
    }),
    async (c) => {
      const { actor } = requireAdmin(c);
      const b = c.req.valid("json");
      const user = await service.createUser(actor, b);
      return c.json(publicUser(user), 201);
    },
  );

  api.openapi(
    createRoute({
      method: "patch",
      path: "/users/{name}",
      summary: "Change a user's limits (null: the server default), grant or withdraw egress and " +
        "vpn, or disable/enable them (admins)",
      request: { params: NameParam, body: body(UserPatchBody) },
      responses: { 200: json(UserSchema, "Updated"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { actor } = requireAdmin(c);
      const { name } = c.req.valid("param");
      const b = c.req.valid("json");
      if (
        b.limits === undefined && b.disabled === undefined && b.egress === undefined &&
        b.vpn === undefined
      ) {
        throw new ApiError(400, "bad_request", "body: give limits, egress, vpn and/or disabled");
      }
      let user: User = await service.user(name);
      if (b.limits !== undefined && Object.keys(b.limits).length > 0) {
        user = await service.setLimits(actor, name, b.limits);
      }
      if (b.egress !== undefined || b.vpn !== undefined) {
        user = await service.setPermissions(actor, name, { egress: b.egress, vpn: b.vpn });
      }
      if (b.disabled !== undefined && b.disabled !== user.disabled) {
        user = await service.setDisabled(actor, name, b.disabled);
        if (b.disabled) webSessions.endUser(user.id);
      }
      return c.json(publicUser(user), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "put",
      path: "/users/{name}/password",
      summary: "Set a password (admins: anyone's; users: their own)",
      request: { params: NameParam, body: body(PasswordBody) },
      responses: { 200: json(OkSchema, "Changed"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const a = authOf(c);
      const { name } = c.req.valid("param");
      const user = await service.setPassword(a.actor, name, c.req.valid("json").password);
      // Someone else changed it: that user's browsers log in again.
      if (user.id !== a.user.id) webSessions.endUser(user.id);
      return c.json({ ok: true as const }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/tokens",
      summary: "Tokens, never their values (users: their own; admins: all, or ?user=)",
      request: { query: z.object({ ...PageQuery, user: UserQuery }) },
      responses: { 200: json(page(TokenSchema), "Tokens by id"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { actor } = authOf(c);
      const q = c.req.valid("query");
      const user = q.user === undefined ? undefined : await service.visibleUser(actor, q.user);
      const tokens = await service.listTokens(actor, user?.id);
      return c.json(paginate(tokens, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "post",
      path: "/tokens",
      summary: "Create a token; its secret is in this answer only",
      request: { body: body(TokenCreateBody) },
      responses: { 201: json(TokenCreated, "Created"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const a = authOf(c);
      const b = c.req.valid("json");
      const user = b.user === undefined ? a.user : await service.visibleUser(a.actor, b.user);
      const { record, token } = await service.createToken(a.actor, {
        user,
        label: b.label,
        scope: b.scope,
        expiresAt: b.expiresInSeconds === undefined ? null : deps.now() + b.expiresInSeconds * 1000,
      });
      const { hash: _hash, ...rest } = record;
      c.header("cache-control", "no-store");
      return c.json({
        token: { ...rest, user: user.name, state: tokenState(record, deps.now()) },
        secret: token,
      }, 201);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/tokens/{id}",
      summary: "Revoke a token (its clients are disconnected within the recheck interval)",
      request: { params: IdParam },
      responses: { 200: json(OkSchema, "Revoked (or already was)"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { actor } = authOf(c);
      await service.revokeToken(actor, c.req.valid("param").id);
      return c.json({ ok: true as const }, 200);
    },
  );
}
