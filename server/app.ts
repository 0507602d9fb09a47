// The HTTP surface of mport-server: the whole URL map of ordinary requests in one place.
//
// WebSocket upgrades of the tunnel protocol never reach this app: the front listener
// (`listeners/http_front.ts`) answers them itself, so they run on sockets it owns.
import { Hono } from "hono";
import { adminPath } from "../shared/protocol.ts";
import type { LiveClient, LiveTunnel } from "./admin/live.ts";
import type { Stats } from "./stats.ts";

/** Handlers the app routes to. */
export interface AppHandlers {
  readonly pathPrefix: string;
  readonly stats: Stats;
  health(): { ok: boolean; detail: Record<string, unknown> };
  /** The live admin view (`mport-server clients` / `tunnels`); absent: no admin endpoints. */
  readonly admin?: {
    /** Null when the request carries an admin's token, else the refusal to send. */
    authorize(req: Request, ip: string): Promise<Response | null>;
    clients(): LiveClient[];
    tunnels(): LiveTunnel[];
  };
}

/** What the front passes as Hono's `env`: the client's address. */
export type AppEnv = { Bindings: { ip: string } };

/** Builds the Hono app. */
export function buildApp(h: AppHandlers): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/healthz", (c) => {
    const { ok, detail } = h.health();
    return c.json({ status: ok ? "ok" : "shutting_down", ...detail }, ok ? 200 : 503);
  });
  app.get("/metrics", () =>
    new Response(h.stats.prometheus(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    }));
  const admin = h.admin;
  if (admin) {
    const base = adminPath(h.pathPrefix);
    app.get(
      `${base}/clients`,
      async (c) =>
        await admin.authorize(c.req.raw, c.env.ip) ?? c.json({ clients: admin.clients() }),
    );
    app.get(
      `${base}/tunnels`,
      async (c) =>
        await admin.authorize(c.req.raw, c.env.ip) ?? c.json({ tunnels: admin.tunnels() }),
    );
  }
  app.all(
    `${h.pathPrefix}/*`,
    (c) => c.text("this endpoint expects a WebSocket upgrade from an mport client\n", 426),
  );
  app.notFound((c) => c.text("not found\n", 404));
  app.onError((err, c) => c.text(`internal error: ${err.message}\n`, 500));
  return app;
}
