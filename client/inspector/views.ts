// The inspector API's JSON shapes: list summaries, full details with readable bodies, list filters.
import type { CapturedBody, CapturedExchange } from "./capture.ts";

/** How many bytes of a binary body the detail view shows as a hexdump. */
export const HEX_PREVIEW_BYTES = 4096;

/** One row of `GET /api/requests`: everything but headers and bodies. */
export interface ExchangeSummary {
  readonly id: string;
  readonly seq: number;
  readonly tunnel: string;
  readonly remote: string;
  readonly local: string;
  readonly startedAt: number;
  readonly durationMs: number | null;
  readonly method: string;
  readonly target: string;
  /** Null while no response arrived. */
  readonly status: number | null;
  readonly statusText: string | null;
  readonly error: string | null;
  readonly replayOf: string | null;
  readonly requestBytes: number;
  readonly responseBytes: number | null;
  /** The response's content type, if any. */
  readonly contentType: string | null;
}

/** A body as the page shows it: text (JSON pretty-printed, forms also as pairs) or a hexdump. */
export interface BodyView {
  /** Every byte seen. */
  readonly bytes: number;
  /** Bytes kept (at most the store's `maxBodyBytes`). */
  readonly kept: number;
  readonly truncated: boolean;
  readonly contentType: string | null;
  readonly kind: "empty" | "text" | "json" | "form" | "binary";
  /** For text, JSON and forms. */
  readonly text?: string;
  /** For forms: the decoded name/value pairs. */
  readonly form?: readonly (readonly [string, string])[];
  /** For binary bodies: a hexdump of the first `hexBytes` bytes. */
  readonly hex?: string;
  readonly hexBytes?: number;
}

/** A message head and its body view. */
interface MessageDetail {
  readonly headers: readonly (readonly [string, string])[];
  readonly body: BodyView;
}

/** `GET /api/requests/:id`. */
export interface ExchangeDetail extends ExchangeSummary {
  readonly request: MessageDetail & { method: string; target: string; version: string };
  readonly response: (MessageDetail & { status: number; statusText: string }) | null;
}

/** A list filter, from `?tunnel=&method=&status=&q=`. */
export interface ExchangeFilter {
  readonly tunnel?: string;
  readonly method?: string;
  /** "404", "4xx", "error" (failed) or "pending" (in flight). */
  readonly status?: string;
  /** Case-insensitive text in the method, target, status, remote address or a header. */
  readonly q?: string;
}

/** The value of the first header named `name` (case-insensitive). */
export function headerValue(
  headers: readonly (readonly [string, string])[],
  name: string,
): string | null {
  const lower = name.toLowerCase();
  return headers.find(([k]) => k.toLowerCase() === lower)?.[1] ?? null;
}

/** The list row of an exchange. */
export function summarize(e: CapturedExchange): ExchangeSummary {
  return {
    id: e.id,
    seq: e.seq,
    tunnel: e.tunnel,
    remote: e.remote,
    local: e.local,
    startedAt: e.startedAt,
    durationMs: e.durationMs,
    method: e.request.method,
    target: e.request.target,
    status: e.response?.status ?? null,
    statusText: e.response?.statusText ?? null,
    error: e.error,
    replayOf: e.replayOf,
    requestBytes: e.request.bodyBytes,
    responseBytes: e.response?.bodyBytes ?? null,
    contentType: e.response ? headerValue(e.response.headers, "content-type") : null,
  };
}

/** The full view of an exchange. */
export function detail(e: CapturedExchange): ExchangeDetail {
  const rq = e.request;
  const rs = e.response;
  return {
    ...summarize(e),
    request: {
      method: rq.method,
      target: rq.target,
      version: rq.version,
      headers: rq.headers,
      body: bodyView(rq, headerValue(rq.headers, "content-type")),
    },
    response: rs
      ? {
        status: rs.status,
        statusText: rs.statusText,
        headers: rs.headers,
        body: bodyView(rs, headerValue(rs.headers, "content-type")),
      }
      : null,
  };
}

/** Reads a filter from query parameters; throws a `RangeError` for an unknown status filter. */
export function parseFilter(params: URLSearchParams): ExchangeFilter {
  const pick = (name: string) => params.get(name)?.trim() || undefined;
  const status = pick("status")?.toLowerCase();
  if (status !== undefined && !/^([1-5]xx|[1-5]\d\d|error|pending)$/.test(status)) {
    throw new RangeError(
      `invalid status filter "${status}": use a code (404), a class (4xx), error or pending`,
    );
  }
  return { tunnel: pick("tunnel"), method: pick("method"), status, q: pick("q") };
}

/** Whether an exchange passes a filter. */
export function matches(e: CapturedExchange, f: ExchangeFilter): boolean {
  if (f.tunnel !== undefined && e.tunnel !== f.tunnel) return false;
  if (f.method !== undefined && e.request.method.toUpperCase() !== f.method.toUpperCase()) {
    return false;
  }
  if (f.status !== undefined) {
    const code = e.response?.status;
    if (f.status === "error") {
      if (e.error === null) return false;
    } else if (f.status === "pending") {
      if (e.durationMs !== null) return false;
    } else if (f.status.endsWith("xx")) {
      if (code === undefined || Math.floor(code / 100) !== Number(f.status[0])) return false;
    } else if (code !== Number(f.status)) {
      return false;
    }
  }
  if (f.q !== undefined) {
    const q = f.q.toLowerCase();
    const hay = [
      `${e.request.method} ${e.request.target}`,
      String(e.response?.status ?? ""),
      e.remote,
      e.error ?? "",
      ...e.request.headers.map(([k, v]) => `${k}: ${v}`),
      ...(e.response?.headers ?? []).map(([k, v]) => `${k}: ${v}`),
    ];
    if (!hay.some((s) => s.toLowerCase().includes(q))) return false;
  }
  return true;
}

const TEXT_TYPES =
  /^(text\/|application\/(json|xml|javascript|ecmascript|x-www-form-urlencoded|graphql|x-ndjson)\b)|[+/](json|xml)\b/;

/** Renders a body for the page, choosing by content type (or, without one, by its bytes). */
export function bodyView(b: CapturedBody, contentType: string | null): BodyView {
  const base = {
    bytes: b.bodyBytes,
    kept: b.body.byteLength,
    truncated: b.truncated,
    contentType,
  };
  if (b.body.byteLength === 0) return { ...base, kind: "empty" };
  const type = contentType?.split(";")[0]?.trim().toLowerCase() ?? "";
  let text: string | null = null;
  if (type !== "" && TEXT_TYPES.test(type)) {
    text = new TextDecoder().decode(b.body);
  } else if (type === "") {
    text = sniffText(b.body, b.truncated);
  }
  if (text === null) {
    const shown = b.body.subarray(0, HEX_PREVIEW_BYTES);
    return { ...base, kind: "binary", hex: hexdump(shown), hexBytes: shown.byteLength };
  }
  if (type === "application/x-www-form-urlencoded") {
    return { ...base, kind: "form", text, form: [...new URLSearchParams(text)] };
  }
  if (type === "application/json" || type.endsWith("+json") || type === "") {
    try {
      return { ...base, kind: "json", text: JSON.stringify(JSON.parse(text), null, 2) };
    } catch {
      // Not (or not all of) a JSON document, e.g. truncated: shown as it is.
    }
  }
  return { ...base, kind: "text", text };
}

/** The body as text when it is valid UTF-8 without control characters (other than whitespace). */
function sniffText(bytes: Uint8Array, truncated: boolean): string | null {
  // A body cut at the size cap may end inside a character: ignore up to 3 trailing bytes.
  for (let cut = 0; cut <= (truncated ? 3 : 0) && cut < bytes.byteLength; cut++) {
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(
        bytes.subarray(0, bytes.byteLength - cut),
      );
      // deno-lint-ignore no-control-regex
      return /[\x00-\x08\x0e-\x1f\x7f]/.test(text) ? null : text;
    } catch {
      // try a shorter prefix
    }
  }
  return null;
}

/** A classic hexdump: offset, 16 bytes in hex, the printable ASCII. */
export function hexdump(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let at = 0; at < bytes.byteLength; at += 16) {
    const row = bytes.subarray(at, at + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0"));
    const left = hex.slice(0, 8).join(" ");
    const right = hex.slice(8).join(" ");
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "."))
      .join("");
    lines.push(
      `${at.toString(16).padStart(8, "0")}  ${left.padEnd(23)}  ${right.padEnd(23)}  |${ascii}|`,
    );
  }
  return lines.join("\n");
}
