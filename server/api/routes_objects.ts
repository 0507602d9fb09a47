// API routes of stored objects: reserved ports, domains, usage, audit events and the counters.
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { UsageRow } from "../store/store.ts";
import type { ApiDeps } from "./api.ts";
import { type ApiEnv, ApiError, authOf, paginate } from "./api_auth.ts";
import {
  body,
  DomainCreateBody,
  errors,
  EventSchema,
  HostSchema,
  json,
  OkSchema,
  page,
  PageQuery,
  parseTime,
  PortCreateBody,
  PortSchema,
  StatsSchema,
  TimeQuery,
  UsageSchema,
  UserQuery,
} from "./schemas.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Sums hourly rows into hours or UTC days, per user and tunnel, oldest first. */
export function rollUp(rows: readonly UsageRow[], granularity: "hour" | "day") {
  const out = new Map<string, UsageRow & { start: number }>();
  for (const r of rows) {
    const start = granularity === "day" ? Math.floor(r.hour / DAY) * DAY : r.hour;
    const key = `${start} ${r.userId} ${r.tunnel}`;
    const sum = out.get(key);
    if (!sum) {
      out.set(key, { ...r, start });
      continue;
    }
    out.set(key, {
      ...sum,
      bytesIn: sum.bytesIn + r.bytesIn,
      bytesOut: sum.bytesOut + r.bytesOut,
      connections: sum.connections + r.connections,
      errors: sum.errors + r.errors,
    });
  }
  return [...out.values()].sort((a, b) => a.start - b.start || a.userId - b.userId);
}

/** ports, domains, usage, events, stats. */
export function registerObjectRoutes(api: OpenAPIHono<ApiEnv>, deps: ApiDeps): void {
  const { service } = deps;
  const time = (field: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const t = parseTime(v);
    if (t === null) throw new ApiError(400, "bad_request", `${field}: not a time`);
    return t;
  };

  api.openapi(
    createRoute({
      method: "get",
      path: "/ports",
      summary: "Reserved ports (users: their own; admins: all, or ?user=)",
      request: { query: z.object({ ...PageQuery, user: UserQuery }) },
      responses: { 200: json(page(PortSchema), "By port"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { actor } = authOf(c);
      const q = c.req.valid("query");
      const user = q.user === undefined ? undefined : await service.visibleUser(actor, q.user);
      const names = await service.userNames();
      const ports = (await service.listPorts(actor, user?.id)).map((r) => ({
        ...r,
        user: names.get(r.userId),
        expiresAt: service.expiresAt(r),
      }));
      return c.json(paginate(ports, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "post",
      path: "/ports",
      summary: "Reserve a public port (explicit: never expires)",
      request: { body: body(PortCreateBody) },
      responses: { 201: json(PortSchema, "Reserved"), ...errors(400, 401, 403, 404, 409) },
    }),
    async (c) => {
      const a = authOf(c);
      const b = c.req.valid("json");
      const user = b.user === undefined ? a.user : await service.visibleUser(a.actor, b.user);
      const r = await service.reservePort(a.actor, { port: b.port, user, tunnel: b.tunnel });
      return c.json({ ...r, user: user.name, expiresAt: service.expiresAt(r) }, 201);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/ports/{port}",
      summary: "Release a reserved port",
      request: {
        params: z.object({
          port: z.coerce.number().int().min(1).max(65535).openapi({
            param: { name: "port", in: "path" },
          }),
        }),
      },
      responses: { 200: json(OkSchema, "Released"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { port } = c.req.valid("param");
      if (!(await service.releasePort(authOf(c).actor, port))) {
        throw new ApiError(404, "not_found", `port ${port} is not reserved`);
      }
      return c.json({ ok: true as const }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/domains",
      summary: "Custom domains and tunnels' subdomains (users: their own)",
      request: { query: z.object({ ...PageQuery, user: UserQuery }) },
      responses: { 200: json(page(HostSchema), "By host"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { actor } = authOf(c);
      const q = c.req.valid("query");
      const user = q.user === undefined ? undefined : await service.visibleUser(actor, q.user);
      const names = await service.userNames();
      const hosts = (await service.listHosts(actor, user?.id)).map((h) => ({
        ...h,
        user: names.get(h.userId),
      }));
      return c.json(paginate(hosts, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "post",
      path: "/domains",
      summary: "Assign a custom domain to a user (admins)",
      request: { body: body(DomainCreateBody) },
      responses: { 201: json(HostSchema, "Assigned"), ...errors(400, 401, 403, 404, 409) },
    }),
    async (c) => {
      const { actor } = authOf(c);
      const b = c.req.valid("json");
      if (!actor.admin) throw new ApiError(403, "forbidden", "only an admin may assign domains");
      const user = await service.user(b.user);
      const h = await service.assignDomain(actor, b.host, user);
      return c.json({ ...h, user: user.name }, 201);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/domains/{host}",
      summary: "Free a custom domain or a subdomain",
      request: {
        params: z.object({
          host: z.string().min(1).max(253).openapi({ param: { name: "host", in: "path" } }),
        }),
      },
      responses: { 200: json(OkSchema, "Freed"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { host } = c.req.valid("param");
      if (!(await service.removeHost(authOf(c).actor, host))) {
        throw new ApiError(404, "not_found", `${host} is not reserved`);
      }
      return c.json({ ok: true as const }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/usage",
      summary: "Bytes and connections per tunnel per hour or day (users: their own)",
      request: {
        query: z.object({
          ...PageQuery,
          user: UserQuery,
          from: TimeQuery.openapi({ param: { name: "from", in: "query" } }),
          to: TimeQuery.openapi({ param: { name: "to", in: "query" } }),
          granularity: z.enum(["hour", "day"]).optional().openapi({
            param: { name: "granularity", in: "query" },
          }),
        }),
      },
      responses: { 200: json(page(UsageSchema), "Oldest first"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { actor } = authOf(c);
      const q = c.req.valid("query");
      const user = q.user === undefined ? undefined : await service.visibleUser(actor, q.user);
      const rows = await service.usage(actor, {
        userId: user?.id,
        since: time("from", q.from),
        until: time("to", q.to),
      });
      const names = await service.userNames();
      const items = rollUp(rows, q.granularity ?? "hour").map(({ hour: _h, ...r }) => ({
        ...r,
        user: names.get(r.userId),
      }));
      return c.json(paginate(items, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/events",
      summary: "Audit events, newest first (users: their own)",
      request: {
        query: z.object({
          ...PageQuery,
          user: UserQuery,
          type: z.string().max(64).optional().openapi({ param: { name: "type", in: "query" } }),
          since: TimeQuery.openapi({ param: { name: "since", in: "query" } }),
        }),
      },
      responses: { 200: json(page(EventSchema), "Newest first"), ...errors(400, 401, 403, 404) },
    }),
    async (c) => {
      const { actor } = authOf(c);
      const q = c.req.valid("query");
      const user = q.user === undefined ? undefined : await service.visibleUser(actor, q.user);
      const events = await service.events(actor, {
        userId: user?.id,
        since: time("since", q.since),
        kind: q.type,
        limit: 1000,
      });
      const names = await service.userNames();
      const items = events.map((e) => ({
        id: e.id,
        at: e.at,
        type: e.kind,
        userId: e.userId,
        user: e.userId === null ? null : names.get(e.userId) ?? null,
        detail: e.detail,
      }));
      return c.json(paginate(items, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/stats",
      summary: "The server's counters (as /metrics), as JSON",
      responses: { 200: json(StatsSchema, "Counters"), ...errors(401, 403) },
    }),
    (c) => c.json(deps.endpoint.stats.snapshot(), 200),
  );
}
