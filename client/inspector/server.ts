// The inspector's local web server: the page, its JSON API and live updates, on 127.0.0.1 only.
import { Hono } from "hono";
import type { Context } from "hono";
import type { EgressStatus } from "../egress/egress_types.ts";
import type { Capture, CapturedExchange } from "./capture.ts";
import { FAVICON_SVG, PAGE_HTML } from "./page.ts";
import { PAGE_SCRIPT } from "./page_script.ts";
import { STATUS_SCRIPT } from "./page_status_script.ts";
import { PAGE_STYLE } from "./page_style.ts";
import { detail, matches, parseFilter, summarize } from "./views.ts";

/** Changes to a captured request before it is sent again. */
export interface ReplayEdits {
  readonly method?: string;
  readonly target?: string;
  readonly headers?: readonly (readonly [string, string])[];
  /** The body as text (sent UTF-8 encoded). */
  readonly body?: string;
}

/** What `startInspector()` needs. */
export interface InspectorServerOptions {
  /** "127.0.0.1". */
  readonly hostname: string;
  /** 4040; when taken, the next ports up to port+10 are tried. 0: any free port. */
  readonly port: number;
  /** The captured HTTP requests; null: no request list (a SOCKS or VPN client's status page). */
  readonly capture: Capture | null;
  /**
   * Re-sends a captured request (optionally edited) to its local service through the tunnel's
   * rules; resolves with the new exchange id. Rejects with an Error whose message is shown to
   * the user. Without it, replay answers 404.
   */
  readonly replay?: (entry: CapturedExchange, edits?: ReplayEdits) => Promise<string>;
  /** Extra status for the page header: tunnels (name, public URL, local). None: no tunnels. */
  readonly status?: () => { tunnels: readonly { name: string; url: string; local: string }[] };
  /**
   * `mport socks` / `mport vpn`: the connection's status for the page's status panel and
   * `GET /api/egress` (null: none at the moment).
   */
  readonly egress?: () => EgressStatus | null;
  /** Stops the client (the page's Disconnect button, `POST /api/disconnect`). */
  readonly disconnect?: () => void;
}

/** A running inspector. */
export interface RunningInspector {
  readonly addr: Deno.NetAddr;
  /** Ends live-update streams and stops the server. */
  close(): Promise<void>;
}

/** How many ports above the asked one are tried when it is taken. */
export const INSPECTOR_PORT_TRIES = 10;
/** Largest accepted replay request body (the edits as JSON). */
export const MAX_REPLAY_EDITS_BYTES = 4 * 1024 * 1024;
/** Live updates queued for one slow page before its stream is closed (it reconnects and reloads). */
export const MAX_QUEUED_EVENTS = 256;
/** Most headers in a replay edit. */
const MAX_EDIT_HEADERS = 256;

/** The header a page may send instead of a JSON content type on POST and DELETE. */
export const CSRF_HEADER = "x-mport-inspector";

const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy":
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/** A refusal the API sends as `{error:{code,message}}`. */
class ApiError extends Error {
  constructor(
    readonly status: 400 | 403 | 404 | 413 | 415 | 502,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** One page's live-update stream. */
interface EventClient {
  send(event: string, data: unknown): void;
  close(): void;
}

/**
 * Starts the inspector on `opts.hostname:opts.port` (or one of the next ports when it is taken).
 * Only requests naming this address (or localhost) in their Host header are answered, so a
 * foreign web page cannot reach it through DNS rebinding.
 */
// deno-lint-ignore require-await
export async function startInspector(
  opts: InspectorServerOptions,
): Promise<RunningInspector> {
  let port = 0; // the bound port, known after listening
  const events = new Set<EventClient>();
  const app = buildApp(opts, () => port, events);
  const server = listen(opts, app.fetch);
  port = server.addr.port;
  return {
    addr: server.addr,
    async close() {
      for (const client of [...events]) client.close();
      await server.shutdown();
    },
  };
}

function listen(
  opts: InspectorServerOptions,
  handler: (req: Request) => Response | Promise<Response>,
): Deno.HttpServer<Deno.NetAddr> {
  const last = opts.port === 0 ? 0 : Math.min(opts.port + INSPECTOR_PORT_TRIES, 65535);
  const host = opts.hostname.includes(":") ? `[${opts.hostname}]` : opts.hostname;
  for (let port = opts.port; port <= last; port++) {
    try {
      return Deno.serve({ hostname: opts.hostname, port, onListen: () => {} }, handler);
    } catch (e) {
      if (e instanceof Deno.errors.AddrInUse) continue;
      throw new Error(`cannot listen on ${host}:${port}: ${(e as Error).message}`);
    }
  }
  const ports = last === opts.port ? `${opts.port}` : `${opts.port}–${last}`;
  throw new Error(
    `cannot listen on ${host}:${ports}: address already in use ` +
      "(stop what uses these ports or choose another inspector port)",
  );
}

function buildApp(
  opts: InspectorServerOptions,
  boundPort: () => number,
  events: Set<EventClient>,
): Hono {
  const { capture } = opts;
  const captured = (): Capture => {
    if (!capture) {
      throw new ApiError(
        404,
        "no_capture",
        "this client has no HTTP tunnels, so it captures no requests",
      );
    }
    return capture;
  };
  const app = new Hono();

  app.use(async (c, next) => {
    const port = boundPort();
    // Also the address it was told to listen on (e.g. a LAN address): an IP literal in Host
    // cannot be a DNS-rebinding name.
    const bound = opts.hostname.includes(":") ? `[${opts.hostname}]` : opts.hostname;
    const allowed = new Set([
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `[::1]:${port}`,
      `${bound.toLowerCase()}:${port}`,
    ]);
    const host = c.req.header("host")?.toLowerCase() ?? "";
    if (!allowed.has(host)) {
      throw new ApiError(
        403,
        "bad_host",
        `the inspector answers only requests for 127.0.0.1:${port} or localhost:${port}`,
      );
    }
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      const origin = c.req.header("origin");
      const type = c.req.header("content-type")?.split(";")[0]?.trim().toLowerCase();
      if (origin !== undefined && !allowed.has(origin.replace(/^http:\/\//, ""))) {
        throw new ApiError(403, "bad_origin", `requests from ${origin} are not allowed`);
      }
      if (type !== "application/json" && c.req.header(CSRF_HEADER) === undefined) {
        throw new ApiError(
          403,
          "csrf",
          `changes need "content-type: application/json" or an "${CSRF_HEADER}" header`,
        );
      }
    }
    await next();
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) c.res.headers.set(k, v);
  });

  app.get("/", () => asset(PAGE_HTML, "text/html; charset=utf-8"));
  app.get("/app.js", () => asset(PAGE_SCRIPT, "text/javascript; charset=utf-8"));
  app.get("/status.js", () => asset(STATUS_SCRIPT, "text/javascript; charset=utf-8"));
  app.get("/app.css", () => asset(PAGE_STYLE, "text/css; charset=utf-8"));
  app.get("/favicon.svg", () => asset(FAVICON_SVG, "image/svg+xml"));

  app.get("/api/status", (c) =>
    c.json({
      tunnels: opts.status?.().tunnels ?? [],
      capture: capture ? { ...capture.usage, limits: capture.limits } : null,
      egress: opts.egress !== undefined,
      disconnect: opts.disconnect !== undefined,
    }));

  app.get("/api/egress", (c) => {
    const status = opts.egress?.() ?? null;
    if (status === null) {
      throw new ApiError(404, "no_egress", "this client runs no SOCKS proxy or VPN");
    }
    return c.json(status);
  });

  app.post("/api/disconnect", (c) => {
    if (!opts.disconnect) {
      throw new ApiError(404, "no_disconnect", "this client cannot be stopped from its page");
    }
    // The client stops after this answer is sent (its shutdown waits for open requests).
    opts.disconnect();
    return c.json({ disconnecting: true }, 202);
  });

  app.get("/api/requests", (c) => {
    const capture = captured();
    let filter;
    try {
      filter = parseFilter(new URL(c.req.url).searchParams);
    } catch (e) {
      throw new ApiError(400, "bad_filter", (e as Error).message);
    }
    return c.json({ requests: capture.list().filter((e) => matches(e, filter)).map(summarize) });
  });

  app.get("/api/requests/:id", (c) => c.json(detail(find(captured(), c.req.param("id")))));

  app.delete("/api/requests", (c) => {
    captured().clear();
    for (const client of events) client.send("clear", {});
    return c.body(null, 204);
  });

  app.post("/api/requests/:id/replay", async (c) => {
    const entry = find(captured(), c.req.param("id"));
    const edits = parseEdits(await readBody(c.req.raw));
    if (!opts.replay) throw new ApiError(404, "no_replay", "this client cannot replay requests");
    let id: string;
    try {
      id = await opts.replay(entry, edits);
    } catch (e) {
      throw new ApiError(502, "replay_failed", e instanceof Error ? e.message : String(e));
    }
    return c.json({ id }, 201);
  });

  app.get("/api/events", () => eventStream(capture, events));

  app.notFound((c) => errorJson(c, new ApiError(404, "not_found", `no such path: ${c.req.path}`)));
  app.onError((err, c) => {
    if (err instanceof ApiError) return errorJson(c, err);
    return c.json({ error: { code: "internal", message: err.message } }, 500);
  });
  return app;
}

function errorJson(c: Context, err: ApiError): Response {
  const res = c.json({ error: { code: err.code, message: err.message } }, err.status);
  // Refusals made before the route ran still carry the security headers.
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.headers.set(k, v);
  return res;
}

function asset(text: string, type: string): Response {
  return new Response(text, { headers: { "content-type": type } });
}

function find(capture: Capture, id: string): CapturedExchange {
  const entry = capture.get(id);
  if (!entry) {
    throw new ApiError(404, "unknown_request", `no captured request ${id} (cleared or evicted?)`);
  }
  return entry;
}

/** Reads a request body of at most `MAX_REPLAY_EDITS_BYTES`. */
async function readBody(req: Request): Promise<string> {
  if (!req.body) return "";
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_REPLAY_EDITS_BYTES) {
      await reader.cancel();
      throw new ApiError(
        413,
        "too_large",
        `replay edits are limited to ${MAX_REPLAY_EDITS_BYTES} bytes`,
      );
    }
    parts.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.byteLength;
  }
  return new TextDecoder().decode(all);
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// deno-lint-ignore no-control-regex
const TARGET = /^[^\s\x00-\x1f\x7f]{1,8192}$/;
// deno-lint-ignore no-control-regex
const HEADER_VALUE = /^[^\r\n\x00]*$/;

/** Validates replay edits sent as JSON (an empty body: none). */
export function parseEdits(text: string): ReplayEdits | undefined {
  if (text.trim() === "") return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ApiError(400, "bad_edits", "replay edits must be a JSON object");
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ApiError(400, "bad_edits", "replay edits must be a JSON object");
  }
  const bad = (message: string) => new ApiError(400, "bad_edits", message);
  const o = raw as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!["method", "target", "headers", "body"].includes(key)) {
      throw bad(`unknown replay edit "${key}": use method, target, headers or body`);
    }
  }
  const edits: { -readonly [K in keyof ReplayEdits]: ReplayEdits[K] } = {};
  if (o.method !== undefined) {
    if (typeof o.method !== "string" || !TOKEN.test(o.method)) throw bad("invalid method");
    edits.method = o.method;
  }
  if (o.target !== undefined) {
    if (typeof o.target !== "string" || !TARGET.test(o.target)) {
      throw bad("invalid target: use a path like /api/items?x=1, without spaces");
    }
    edits.target = o.target;
  }
  if (o.headers !== undefined) {
    if (!Array.isArray(o.headers) || o.headers.length > MAX_EDIT_HEADERS) {
      throw bad(`headers must be a list of at most ${MAX_EDIT_HEADERS} [name, value] pairs`);
    }
    edits.headers = o.headers.map((h: unknown) => {
      if (
        !Array.isArray(h) || h.length !== 2 || typeof h[0] !== "string" ||
        typeof h[1] !== "string"
      ) {
        throw bad("headers must be a list of [name, value] pairs");
      }
      if (!TOKEN.test(h[0])) throw bad(`invalid header name "${h[0]}"`);
      if (!HEADER_VALUE.test(h[1])) throw bad(`invalid value of header ${h[0]}`);
      return [h[0], h[1]] as const;
    });
  }
  if (o.body !== undefined) {
    if (typeof o.body !== "string") throw bad("body must be a string");
    edits.body = o.body;
  }
  return edits;
}

/**
 * `GET /api/events`: a Server-Sent Events stream of changed exchanges (as list summaries); without
 * a capture it only ends when the inspector closes.
 */
function eventStream(capture: Capture | null, events: Set<EventClient>): Response {
  const encoder = new TextEncoder();
  let client: EventClient | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      let open = true;
      const unsubscribe = capture?.subscribe((e) => client?.send("request", summarize(e))) ??
        (() => {});
      client = {
        send(event, data) {
          if (!open) return;
          // A page that does not read is cut off (it reconnects and reloads the list).
          if ((controller.desiredSize ?? 0) <= 0) return client?.close();
          controller.enqueue(encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`));
        },
        close() {
          if (!open) return;
          open = false;
          unsubscribe();
          events.delete(this);
          try {
            controller.close();
          } catch {
            // already cancelled by the page going away
          }
        },
      };
      events.add(client);
      controller.enqueue(encoder.encode("retry: 1000\n\n"));
    },
    cancel() {
      client?.close();
    },
  }, new CountQueuingStrategy({ highWaterMark: MAX_QUEUED_EVENTS }));
  return new Response(body, {
    headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store" },
  });
}
