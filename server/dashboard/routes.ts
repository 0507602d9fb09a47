// Serves the dashboard (page, script, style, icon) on the server's own host, with strict headers.
import type { Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { FAVICON_SVG, pageHtml, type PageSettings } from "./page.ts";
import { PAGE_SCRIPT } from "./page_script.ts";
import { PAGE_STYLE } from "./page_style.ts";

/** Headers of every dashboard response: no inline script, no framing, no referrer. */
export const DASHBOARD_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": "default-src 'self'; base-uri 'none'; form-action 'self'; " +
    "frame-ancestors 'none'; object-src 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

/**
 * The paths the dashboard is served under: `/`, and the parent of a non-default `--path-prefix`
 * (a server behind nginx at `/mport/` with `--path-prefix /mport/_mport` serves it at `/mport/`).
 * The page links relatively (`assets/…`, `api/v1/…`), so it works under either.
 */
export function dashboardBases(pathPrefix: string): string[] {
  const parent = pathPrefix.slice(0, pathPrefix.lastIndexOf("/"));
  return parent === "" ? [""] : ["", parent];
}

/** Adds the dashboard's routes to `app`. */
export function mountDashboard(
  app: Hono<AppEnv>,
  pathPrefix: string,
  settings: PageSettings,
): void {
  const html = pageHtml(settings);
  const send = (body: string, type: string, cache: string) =>
    new Response(body, {
      headers: { ...DASHBOARD_HEADERS, "content-type": type, "cache-control": cache },
    });
  for (const base of dashboardBases(pathPrefix)) {
    if (base !== "") app.get(base, (c) => c.redirect(`${base}/`, 308));
    app.get(`${base}/`, () => send(html, "text/html; charset=utf-8", "no-store"));
    app.get(
      `${base}/assets/app.js`,
      () => send(PAGE_SCRIPT, "text/javascript; charset=utf-8", "no-cache"),
    );
    app.get(
      `${base}/assets/app.css`,
      () => send(PAGE_STYLE, "text/css; charset=utf-8", "no-cache"),
    );
    app.get(
      `${base}/assets/favicon.svg`,
      () => send(FAVICON_SVG, "image/svg+xml", "max-age=86400"),
    );
  }
}
