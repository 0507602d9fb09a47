// Error responses a visitor can understand: a small HTML page, or JSON for API clients.
import { isFieldValue, isToken, latin1Bytes } from "./http_head.ts";
import { closeQuietly, writeAll } from "./net.ts";

/** What went wrong, for the visitor. */
export interface ErrorPage {
  /** 401, 403, 404, 413, 421, 431, 502, 503, 504 … */
  readonly status: number;
  /** Machine code, e.g. "tunnel_not_found". */
  readonly code: string;
  /** Short, e.g. "Tunnel not found". */
  readonly title: string;
  /** One or two sentences, e.g. `No tunnel named "foo" on this server.` */
  readonly message: string;
  /** Extra headers, e.g. ["www-authenticate", 'Basic realm="mport"']. */
  readonly headers?: readonly (readonly [string, string])[];
}

/** Options for `errorResponse`. */
export interface ErrorResponseOptions {
  /** The request's Accept header. */
  readonly accept: string | null;
  /** Send `connection: close` (else keep-alive). */
  readonly close: boolean;
  /** Answering a HEAD request: no body, same content-length. */
  readonly head?: boolean;
}

const REASONS: Readonly<Record<number, string>> = {
  100: "Continue",
  101: "Switching Protocols",
  102: "Processing",
  103: "Early Hints",
  200: "OK",
  201: "Created",
  202: "Accepted",
  203: "Non-Authoritative Information",
  204: "No Content",
  205: "Reset Content",
  206: "Partial Content",
  207: "Multi-Status",
  208: "Already Reported",
  226: "IM Used",
  300: "Multiple Choices",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  305: "Use Proxy",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  402: "Payment Required",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  418: "I'm a teapot",
  421: "Misdirected Request",
  422: "Unprocessable Content",
  423: "Locked",
  424: "Failed Dependency",
  425: "Too Early",
  426: "Upgrade Required",
  428: "Precondition Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  451: "Unavailable For Legal Reasons",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
  506: "Variant Also Negotiates",
  507: "Insufficient Storage",
  508: "Loop Detected",
  510: "Not Extended",
  511: "Network Authentication Required",
};

/** Reason phrase for a status code (200 → "OK", 404 → "Not Found", …, unknown → ""). */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}

/** Quality and specificity (2 exact, 1 `type/*`, 0 `*\/*`, -1 no match) of `type` in Accept. */
function acceptQuality(accept: string, type: string): { q: number; spec: number } {
  const [major] = type.split("/");
  let best = { q: 0, spec: -1 };
  for (const range of accept.split(",")) {
    const [mediaRaw = "", ...params] = range.split(";");
    const media = mediaRaw.trim().toLowerCase();
    const spec = media === type ? 2 : media === `${major}/*` ? 1 : media === "*/*" ? 0 : -1;
    if (spec < 0 || spec < best.spec) continue;
    let q = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([01](?:\.[0-9]{0,3})?)\s*$/i.exec(p);
      if (m) q = Math.min(1, Number(m[1]));
    }
    if (spec > best.spec) best = { q, spec };
  }
  return best;
}

/** True when `accept` prefers application/json to text/html (ties go to HTML). */
function prefersJson(accept: string | null): boolean {
  if (accept === null) return false;
  const json = acceptQuality(accept, "application/json");
  const html = acceptQuality(accept, "text/html");
  if (json.spec < 0 || json.q === 0) return false;
  return json.q > html.q || (json.q === html.q && json.spec > html.spec);
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function htmlPage(page: ErrorPage): string {
  const title = escapeHtml(`${page.status} ${page.title}`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;padding:3rem 1rem;color:#222;background:#f6f6f6}
main{max-width:36rem;margin:0 auto;background:#fff;border-radius:8px;padding:2rem;box-shadow:0 1px 3px #0002}
h1{font-size:1.4rem;margin:0 0 1rem}p{line-height:1.5}
footer{max-width:36rem;margin:1rem auto;color:#888;font-size:.85rem;text-align:center}
code{color:#666}
</style>
</head>
<body>
<main>
<h1>${title}</h1>
<p>${escapeHtml(page.message)}</p>
<p><code>${escapeHtml(page.code)}</code></p>
</main>
<footer>mport</footer>
</body>
</html>
`;
}

/**
 * A complete HTTP/1.1 response (status line, headers, body) as bytes: a small self-contained
 * HTML page (escaped, no external resources, inline CSS) or, when `accept` prefers
 * application/json, `{"error":{"code":…,"message":…,"status":…}}`. Always: content-type with
 * charset, content-length, cache-control: no-store, x-content-type-options: nosniff, and
 * "connection: close" when `close` is true (else keep-alive). For HEAD (`head` true) the body is
 * omitted but content-length still given. Throws TypeError for a status outside 100-999 or a bad
 * extra header.
 */
export function errorResponse(page: ErrorPage, opts: ErrorResponseOptions): Uint8Array {
  if (!Number.isInteger(page.status) || page.status < 100 || page.status > 999) {
    throw new TypeError(`invalid HTTP status ${page.status}: expected 100-999`);
  }
  const json = prefersJson(opts.accept);
  const body = new TextEncoder().encode(
    json
      ? JSON.stringify({ error: { code: page.code, message: page.message, status: page.status } })
      : htmlPage(page),
  );
  const lines = [
    `HTTP/1.1 ${page.status} ${reasonPhrase(page.status)}`,
    `content-type: ${json ? "application/json" : "text/html"}; charset=utf-8`,
    `content-length: ${body.length}`,
    "cache-control: no-store",
    "x-content-type-options: nosniff",
  ];
  if (!json) lines.push("content-security-policy: default-src 'none'; style-src 'unsafe-inline'");
  for (const [name, value] of page.headers ?? []) {
    if (!isToken(name) || !isFieldValue(value)) {
      throw new TypeError(`invalid header for an error page: ${JSON.stringify(name)}`);
    }
    lines.push(`${name}: ${value}`);
  }
  lines.push(`connection: ${opts.close ? "close" : "keep-alive"}`);
  const head = latin1Bytes(lines.join("\r\n") + "\r\n\r\n");
  if (opts.head) return head;
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/**
 * Answers with an error page and closes `conn` (the page is small: it fits the socket buffer).
 * Never rejects; resolves once the connection is closed.
 */
export async function answerAndClose(
  conn: Deno.Conn,
  page: ErrorPage,
  opts: { readonly accept: string | null; readonly head?: boolean },
): Promise<void> {
  try {
    await writeAll(
      conn,
      errorResponse(page, { accept: opts.accept, close: true, head: opts.head }),
    );
  } catch {
    // the peer left
  }
  closeQuietly(conn);
}
