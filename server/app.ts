// The HTTP surface of mport-server: the whole URL map of ordinary requests in one place.
//
// WebSocket upgrades of the tunnel protocol never reach this app: the front listener
// (`listeners/http_front.ts`) answers them itself, so they run on sockets it owns.
import { Hono } from "hono";
import { adminPath } from "../shared/protocol.ts";
import type { LiveClient, LiveTunnel } from "./admin/live.ts";
import { dashboardBases, mountDashboard } from "./dashboard/routes.ts";
import type { PageSettings } from "./dashboard/page.ts";
import type { MetricsAccess } from "./metrics_access.ts";
import type { Stats } from "./stats.ts";

/** Handlers the app routes to. */
export interface AppHandlers {
  readonly pathPrefix: string;
  readonly stats: Stats;
  /** Who may read /metrics; absent: anyone (tests of the app alone). */
  readonly metricsAccess?: MetricsAccess;
  health(): { ok: boolean; detail: Record<string, unknown> };
  /** The web dashboard at `/` (it talks to `/api/v1`); absent: no dashboard. */
  readonly dashboard?: PageSettings;
  /** The live admin view (`mport-server clients` / `tunnels`); absent: no admin endpoints. */
  readonly admin?: {
    /** Null when the request carries an admin's token, else the refusal to send. */
    authorize(req: Request, ip: string): Promise<Response | null>;
    clients(): LiveClient[];
    tunnels(): LiveTunnel[];
  };
  /** The REST API, mounted at `/api/v1`; absent: none. */
  // deno-lint-ignore no-explicit-any
  readonly api?: Hono<any>;
}

/**
 * What the front passes as Hono's `env`: the client's address, and whether the request came over
 * TLS (the server's own, or a trusted proxy's `X-Forwarded-Proto: https`).
 */
export type AppEnv = { Bindings: { ip: string; secure?: boolean } };

/** Builds the Hono app. */
export function buildApp(h: AppHandlers): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/healthz", (c) => {
    const { ok, detail } = h.health();
    return c.json({ status: ok ? "ok" : "shutting_down", ...detail }, ok ? 200 : 503);
  });
  app.get("/metrics", (c) => {
    const refused = h.metricsAccess?.check(c.req.header("authorization") ?? null, c.env.ip);
    if (refused) {
      return c.text(
        `${refused.reason}\n`,
        refused.status,
        refused.status === 401 ? { "www-authenticate": 'Bearer realm="metrics"' } : {},
      );
    }
    return new Response(h.stats.prometheus(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  });
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
  if (h.dashboard) mountDashboard(app, h.pathPrefix, h.dashboard);
  if (h.api) app.route("/api/v1", h.api);
  // The dashboard under a --path-prefix's parent calls the API relative to itself.
  for (const base of dashboardBases(h.pathPrefix)) {
    if (h.api && h.dashboard && base !== "") app.route(`${base}/api/v1`, h.api);
  }
  app.all(
    `${h.pathPrefix}/*`,
    (c) => c.text("this endpoint expects a WebSocket upgrade from an mport client\n", 426),
  );
  app.notFound((c) => c.text("not found\n", 404));
  app.onError((err, c) => c.text(`internal error: ${err.message}\n`, 500));
  return app;
}
