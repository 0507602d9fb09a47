// API routes of the running server: connected clients, open tunnels, and the live event stream.
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { liveClients, liveTunnels } from "../admin/live.ts";
import type { Tunnel } from "../tunnels.ts";
import type { ApiDeps } from "./api.ts";
import { type ApiEnv, ApiError, authOf, paginate } from "./api_auth.ts";
import { BUS_EVENT_TYPES, type BusEvent } from "./events_bus.ts";
import { ClientSchema, errors, json, OkSchema, page, PageQuery, TunnelSchema } from "./schemas.ts";
import type { Actor } from "./service.ts";

/** Bytes per second of each tunnel, from the change since the previous look. */
class TunnelRates {
  readonly #last = new Map<string, { at: number; bytesIn: number; bytesOut: number }>();
  readonly #rates = new Map<string, { in: number; out: number }>();

  /** Rates of `t` at `now` (the average since it opened on the first look). */
  of(t: Tunnel, now: number): { in: number; out: number } {
    const last = this.#last.get(t.id) ?? { at: t.openedAt, bytesIn: 0, bytesOut: 0 };
    const secs = (now - last.at) / 1000;
    // Looks closer together than this reuse the rate: a tiny window says nothing.
    if (secs < 0.25) return this.#rates.get(t.id) ?? { in: 0, out: 0 };
    const rate = {
      in: Math.round(Math.max(0, t.bytesIn - last.bytesIn) / secs),
      out: Math.round(Math.max(0, t.bytesOut - last.bytesOut) / secs),
    };
    this.#last.set(t.id, { at: now, bytesIn: t.bytesIn, bytesOut: t.bytesOut });
    this.#rates.set(t.id, rate);
    return rate;
  }

  /** Forgets tunnels that are gone (bounded by the open tunnels). */
  keep(ids: ReadonlySet<string>): void {
    for (const id of this.#last.keys()) {
      if (!ids.has(id)) {
        this.#last.delete(id);
        this.#rates.delete(id);
      }
    }
  }
}

function sees(actor: Actor, userId: number | null): boolean {
  return actor.admin || (userId !== null && userId === actor.userId);
}

/** clients, tunnels, events/stream. */
export function registerLiveRoutes(api: OpenAPIHono<ApiEnv>, deps: ApiDeps): void {
  const { sessions, registry } = deps.endpoint;
  const rates = new TunnelRates();
  const IdParam = z.object({
    id: z.string().min(1).max(64).openapi({ param: { name: "id", in: "path" } }),
  });

  api.openapi(
    createRoute({
      method: "get",
      path: "/clients",
      summary: "Connected clients (users: their own)",
      request: { query: z.object(PageQuery) },
      responses: { 200: json(page(ClientSchema), "Oldest first"), ...errors(400, 401, 403) },
    }),
    (c) => {
      const { actor } = authOf(c);
      const q = c.req.valid("query");
      const mine = [...sessions.values()].filter((s) => sees(actor, s.userId));
      const ids = new Map<string, number>(mine.map((s) => [s.id, s.userId]));
      const items = liveClients(mine).map(({ session, tunnels, ...rest }) => ({
        id: session,
        ...rest,
        tunnels: [...tunnels],
        userId: ids.get(session)!,
      }));
      return c.json(paginate(items, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/clients/{id}",
      summary: "Disconnect a client; its tunnels close at once",
      request: { params: IdParam },
      responses: { 200: json(OkSchema, "Disconnected"), ...errors(400, 401, 403, 404) },
    }),
    (c) => {
      const { actor } = authOf(c);
      const { id } = c.req.valid("param");
      const s = sessions.get(id);
      if (!s || s.closed || !sees(actor, s.userId)) {
        throw new ApiError(404, "not_found", `no connected client with id ${id}`);
      }
      deps.endpoint.audit("client_disconnect_requested", s.userId, {
        session: s.id,
        address: s.remote,
        by: actor.name,
      });
      s.disconnect(`disconnected by ${actor.userId === s.userId ? "its user" : "an admin"}`);
      return c.json({ ok: true as const }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/tunnels",
      summary: "Open tunnels with bytes per second (users: their own)",
      request: { query: z.object(PageQuery) },
      responses: { 200: json(page(TunnelSchema), "By port"), ...errors(400, 401, 403) },
    }),
    (c) => {
      const { actor } = authOf(c);
      const q = c.req.valid("query");
      const now = deps.now();
      const all = registry.all().filter((t) => !t.closed);
      rates.keep(new Set(all.map((t) => t.id)));
      const items = all.filter((t) => sees(actor, t.userId)).map((t) => {
        const live = liveTunnels([t])[0]!;
        const r = rates.of(t, now);
        return {
          id: t.id,
          ...live,
          kind: t.kind,
          userId: t.userId,
          bytesInPerSecond: r.in,
          bytesOutPerSecond: r.out,
        };
      }).sort((a, b) => a.port - b.port || a.url.localeCompare(b.url));
      return c.json(paginate(items, q.limit, q.cursor), 200);
    },
  );

  api.openapi(
    createRoute({
      method: "delete",
      path: "/tunnels/{id}",
      summary: "Close a tunnel: its port is released and its client told",
      request: { params: IdParam },
      responses: { 200: json(OkSchema, "Closed"), ...errors(400, 401, 403, 404) },
    }),
    (c) => {
      const { actor } = authOf(c);
      const { id } = c.req.valid("param");
      const t = registry.all().find((t) => t.id === id && !t.closed);
      if (!t || !sees(actor, t.userId)) {
        throw new ApiError(404, "not_found", `no open tunnel with id ${id}`);
      }
      const reason = `closed by ${actor.userId === t.userId ? "its user" : "an admin"}`;
      const session = t.session;
      deps.endpoint.audit("tunnel_close_requested", t.userId, {
        tunnel: t.name,
        id: t.id,
        by: actor.name,
      });
      registry.release(t, reason);
      session?.lostTunnel(t, reason);
      return c.json({ ok: true as const }, 200);
    },
  );

  api.openapi(
    createRoute({
      method: "get",
      path: "/events/stream",
      summary: `Server-Sent Events: ${BUS_EVENT_TYPES.join(", ")} (rates every second)`,
      responses: {
        200: {
          description: "An event stream; a subscriber that falls behind is cut off",
          content: { "text/event-stream": { schema: z.string() } },
        },
        ...errors(401, 403),
        503: { description: "Too many subscribers" },
      },
    }),
    // deno-lint-ignore no-explicit-any
    ((c: any) => {
      const { actor } = authOf(c);
      const sub = deps.bus.subscribe((e: BusEvent) =>
        e.type === "rates" || sees(actor, e.data.userId)
      );
      if (!sub) throw new ApiError(503, "unavailable", "too many event stream subscribers");
      return streamSSE(c, async (stream) => {
        stream.onAbort(() => sub.close());
        await stream.writeSSE({ event: "ready", data: "{}" });
        for (let e = await sub.next(); e !== null; e = await sub.next()) {
          await stream.writeSSE({ event: e.type, data: JSON.stringify(e.data) });
        }
        if (sub.endReason === "slow") {
          await stream.writeSSE({ event: "error", data: '{"code":"slow_subscriber"}' });
        }
      });
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
}
