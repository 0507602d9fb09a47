// The HTTP surface of mport-server: the whole URL map in one place.
import { Hono } from "hono";
import { controlPath, streamPath } from "../shared/protocol.ts";
import type { Stats } from "./stats.ts";

/** Handlers the app routes to; the request's client IP is resolved by the app. */
export interface AppHandlers {
  readonly pathPrefix: string;
  readonly stats: Stats;
  control(req: Request, ip: string): Response | Promise<Response>;
  stream(req: Request, ip: string): Response;
  health(): { ok: boolean; detail: Record<string, unknown> };
}

/** Connection info Deno.serve passes as Hono's `env`. */
type Env = { Bindings: Deno.ServeHandlerInfo<Deno.NetAddr> };

/**
 * The client's address: the socket peer, or the last `X-Forwarded-For` hop when the peer is a
 * reverse proxy on loopback (nginx on the same host).
 */
export function clientIp(
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr> | undefined,
): string {
  const peer = info?.remoteAddr?.hostname ?? "unknown";
  const loopback = peer === "127.0.0.1" || peer === "::1" || peer.startsWith("::ffff:127.");
  const xff = req.headers.get("x-forwarded-for");
  if (loopback && xff) {
    const hops = xff.split(",").map((h) => h.trim()).filter(Boolean);
    const last = hops[hops.length - 1];
    if (last && last.length <= 64) return last;
  }
  return peer;
}

/** Builds the Hono app. */
export function buildApp(h: AppHandlers): Hono<Env> {
  const app = new Hono<Env>();
  app.get("/healthz", (c) => {
    const { ok, detail } = h.health();
    return c.json({ status: ok ? "ok" : "shutting_down", ...detail }, ok ? 200 : 503);
  });
  app.get("/metrics", () =>
    new Response(h.stats.prometheus(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    }));
  app.get(controlPath(h.pathPrefix), (c) => h.control(c.req.raw, clientIp(c.req.raw, c.env)));
  app.get(streamPath(h.pathPrefix), (c) => h.stream(c.req.raw, clientIp(c.req.raw, c.env)));
  app.notFound((c) => c.text("not found\n", 404));
  app.onError((err, c) => c.text(`internal error: ${err.message}\n`, 500));
  return app;
}
