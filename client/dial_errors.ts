// DialError and the one-sentence messages for every way a dial can fail.
import { printable } from "../shared/sanitize.ts";
import { HttpHeadError, WsHandshakeError } from "../shared/ws_handshake.ts";
import type { ProxySpec } from "./config.ts";
import { errorText } from "../shared/error_text.ts";

/** Longest server- or proxy-supplied text quoted in a message. */
const MAX_QUOTED_CHARS = 160;
/** Longest response body kept in a DialError. */
const MAX_BODY_CHARS = 2048;

/** Which part of a dial failed. */
export type DialErrorKind = "dns" | "refused" | "timeout" | "tls" | "proxy" | "http" | "protocol";

/** A failed dial; `message` is one sentence for the user that names host:port and a likely fix. */
export class DialError extends Error {
  readonly kind: DialErrorKind;
  /** HTTP status of the server's (kind "http") or the proxy's (kind "proxy") refusal. */
  readonly status?: number;
  /**
   * The server's response body (kind "http"): each line made `printable` (no escape sequences or
   * control characters), secrets masked.
   */
  readonly body?: string;
  /** Retrying cannot help (401/403/404, a proxy's 407, an unusable CA certificate). */
  readonly permanent: boolean;

  constructor(
    kind: DialErrorKind,
    message: string,
    opts: { status?: number; body?: string; permanent?: boolean; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "DialError";
    this.kind = kind;
    if (opts.status !== undefined) this.status = opts.status;
    if (opts.body !== undefined) this.body = opts.body;
    this.permanent = opts.permanent ?? false;
  }
}

/** The step a dial was in when it failed. */
export type DialPhase = "connect" | "proxy-connect" | "proxy" | "tls" | "upgrade";

/** What the messages need to know about a failed dial. */
export interface DialContext {
  readonly secure: boolean;
  /** Host name or IP literal without brackets. */
  readonly host: string;
  /** `host:port`, IPv6 in brackets. */
  readonly where: string;
  readonly timeoutMs: number;
  readonly proxy: ProxySpec | null;
  /** A `--ca` certificate was given. */
  readonly withCa: boolean;
  /** Texts to mask wherever peer-supplied text is quoted (header values, proxy credentials). */
  readonly secrets: readonly string[];
  /** The first bytes the server sent during the upgrade. */
  readonly sniffed: Uint8Array;
}

/**
 * Turns whatever a dial step threw into a DialError. `expired` says the dial's deadline fired
 * (which is what made a pending step fail, unless a real HTTP answer had already arrived).
 */
export function describeDialFailure(
  e: unknown,
  phase: DialPhase,
  ctx: DialContext,
  expired: boolean,
): DialError {
  // A refusal stays a refusal even when the deadline cut its body short.
  if (isRefusal(e)) return httpFailure(e, ctx);
  const osTimeout = e instanceof Deno.errors.TimedOut &&
    (phase === "connect" || phase === "proxy-connect");
  if (expired || osTimeout) return timeoutError(phase, ctx, e);
  if (e instanceof DialError) return e;
  const detail = quoted(errorText(e), ctx.secrets);
  switch (phase) {
    case "connect":
      return connectFailure(e, detail, null, ctx);
    case "proxy-connect":
      return connectFailure(e, detail, ctx.proxy, ctx);
    case "proxy":
      return new DialError(
        "proxy",
        `proxy ${ctx.proxy?.url} failed during CONNECT to ${ctx.where} (${detail}): check --proxy`,
        { cause: e },
      );
    case "tls":
      return tlsFailure(e, detail, ctx);
    case "upgrade":
      return upgradeFailure(e, detail, ctx);
    default: {
      const never: never = phase;
      throw new Error(`unknown phase ${String(never)}`);
    }
  }
}

/**
 * One line of peer-supplied text: made `printable` (escape sequences and controls gone), then
 * secrets masked (after, so an escape sequence cannot split one to slip it past), length capped.
 */
export function quoted(text: string, secrets: readonly string[]): string {
  let s = printable(text, MAX_BODY_CHARS);
  for (const secret of secrets) s = s.replaceAll(secret, "***");
  return printable(s, MAX_QUOTED_CHARS);
}

/** The first line of a response body worth showing: an HTML page's title or first text line. */
function firstBodyLine(body: string, secrets: readonly string[]): string {
  let text = body;
  if (/^\s*</.test(body)) {
    const title = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(body)?.[1];
    text = (title ?? body.replace(/<(script|style)[\s\S]*?<\/\1>/gi, "").replace(/<[^>]*>/g, "\n"))
      .replace(
        /&(lt|gt|amp|quot|#39|nbsp);/g,
        (_, e: string) =>
          ({ lt: "<", gt: ">", amp: "&", quot: '"', "#39": "'", nbsp: " " })[e] ?? "",
      );
  }
  for (const line of text.split(/\r?\n/)) {
    const q = quoted(line, secrets);
    if (q) return q;
  }
  return "";
}

function seconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

function timeoutError(phase: DialPhase, target: DialContext, cause: unknown): DialError {
  const after = `timed out after ${seconds(target.timeoutMs)}`;
  const proxy = target.proxy?.url ?? "";
  const message = {
    "connect": `${after} connecting to ${target.where}: check the address and any firewall`,
    "proxy-connect": `${after} connecting to proxy ${proxy}: check --proxy (or HTTPS_PROXY)`,
    "proxy":
      `${after} waiting for proxy ${proxy} to open a tunnel to ${target.where}: is it an HTTP proxy?`,
    "tls": `${after} in the TLS handshake with ${target.where}: is it a plain ws:// server?`,
    "upgrade": `${after} waiting for ${target.where} to answer the WebSocket upgrade: ` +
      `is it an mport server${target.secure ? "" : " (a TLS port needs wss://)"}?`,
  }[phase];
  return new DialError("timeout", message, { cause });
}

function connectFailure(
  e: unknown,
  detail: string,
  proxy: ProxySpec | null,
  target: DialContext,
): DialError {
  const fix = "check --proxy (or HTTPS_PROXY / HTTP_PROXY)";
  const dns =
    /failed to lookup address|name or service not known|no such host|nodename nor servname|getaddrinfo/i
      .test(detail);
  if (dns) {
    const host = proxy ? proxy.host : target.host;
    const temporary = /temporary failure|try again/i.test(detail);
    if (proxy) {
      return new DialError("proxy", `cannot resolve proxy host ${host}: ${fix}`, { cause: e });
    }
    return new DialError(
      "dns",
      temporary
        ? `cannot resolve ${host} right now (the DNS lookup failed): is this machine online?`
        : `cannot resolve ${host}: check the host name in --server`,
      { cause: e },
    );
  }
  if (proxy) {
    const why = e instanceof Deno.errors.ConnectionRefused ? "connection refused" : detail;
    return new DialError("proxy", `cannot connect to proxy ${proxy.url} (${why}): ${fix}`, {
      cause: e,
    });
  }
  if (e instanceof Deno.errors.ConnectionRefused) {
    return new DialError(
      "refused",
      `connection refused by ${target.where}: is the mport server running and listening there?`,
      { cause: e },
    );
  }
  return new DialError(
    "refused",
    `cannot connect to ${target.where} (${detail}): check the address and your network`,
    { cause: e },
  );
}

function tlsFailure(e: unknown, detail: string, target: DialContext): DialError {
  const lead = `TLS handshake with ${target.where} failed`;
  let message: string;
  if (
    /InvalidContentType|corrupt message|wrong version number|not a TLS|HandshakeFailure.*plain/i
      .test(detail)
  ) {
    message =
      `${lead}: the server does not speak TLS; is it a plain ws:// server (then use ws://)?`;
  } else if (/UnknownIssuer|BadSignature|UnknownCA|self.signed/i.test(detail)) {
    const code = /UnknownIssuer|BadSignature/.exec(detail)?.[0] ?? "unknown issuer";
    message = target.withCa
      ? `${lead}: its certificate is not signed by the --ca certificate or a trusted root (${code}): check --ca`
      : `${lead}: its certificate is not trusted (${code}); if the server uses a private CA or a self-signed certificate, pass --ca FILE`;
  } else if (/not valid for name|NotValidForName/i.test(detail)) {
    message = `${lead}: ${detail.replace(/^invalid peer certificate: /, "")}; ` +
      `connect with a name the certificate covers`;
  } else if (/Expired|NotValidYet/i.test(detail)) {
    message = `${lead}: the certificate is expired or not yet valid (${detail}): ` +
      `check the server's certificate and this machine's clock`;
  } else {
    message =
      `${lead} (${detail}): is the server plain ws://? If it uses a private CA, pass --ca FILE`;
  }
  return new DialError("tls", message, { cause: e });
}

/** A real HTTP answer other than 101 (status 0 means no valid head, 101 a bad upgrade). */
function isRefusal(e: unknown): e is WsHandshakeError {
  return e instanceof WsHandshakeError && e.status >= 100 && e.status !== 101;
}

const HTTP_HINTS: Readonly<Record<number, string>> = {
  400: "check --server",
  401: "check the token (--token or MPORT_TOKEN)",
  403: "this token (or this address) may not connect",
  404: "there is no mport endpoint at this path: check --server and its path",
  426: "is --server the mport server, and do client and server run the same version?",
  429: "too many attempts from this address: wait before retrying",
};

function httpFailure(e: WsHandshakeError, target: DialContext): DialError {
  const secrets = target.secrets;
  const status = e.status;
  let body = e.body.split(/\r?\n/).map((line) => printable(line, MAX_BODY_CHARS)).join("\n");
  for (const secret of secrets) body = body.replaceAll(secret, "***");
  if (body.length > MAX_BODY_CHARS) body = body.slice(0, MAX_BODY_CHARS - 1) + "…";
  const line = firstBodyLine(e.body, secrets);
  const reason = quoted(e.statusText, secrets);
  let hint = HTTP_HINTS[status] ??
    (status >= 500
      ? "the server (or a proxy in front of it) is failing"
      : "is --server the mport server (and its path)?");
  if (status === 400 && /plain HTTP request was sent to HTTPS port/i.test(e.body)) {
    hint = "that port expects TLS: use wss:// instead of ws://";
  }
  const location = e.headers.get("location");
  if (status >= 300 && status < 400 && location) {
    hint = `it redirects to ${quoted(location, secrets)}: use that address as --server`;
  }
  const quote = line && line !== `${status} ${reason}` ? ` ("${line}")` : "";
  return new DialError(
    "http",
    `${target.where} answered HTTP ${status}${reason ? ` ${reason}` : ""}${quote} ` +
      `instead of a WebSocket upgrade: ${hint}`,
    {
      status,
      body,
      permanent: status === 401 || status === 403 || status === 404,
      cause: e,
    },
  );
}

function upgradeFailure(e: unknown, detail: string, target: DialContext): DialError {
  const head = target.sniffed;
  // A TLS record (alert 0x15 or handshake 0x16, version 3.x): a TLS server got plain HTTP.
  if (head.byteLength >= 2 && (head[0] === 0x15 || head[0] === 0x16) && head[1] === 0x03) {
    return new DialError(
      "protocol",
      `${target.where} answered in TLS: use wss:// instead of ws://`,
      { cause: e },
    );
  }
  if (head.byteLength > 0 && !startsWithHttp(head)) {
    const text = quoted(new TextDecoder().decode(head).split(/[\r\n]/)[0] ?? "", target.secrets);
    return new DialError(
      "protocol",
      `${target.where} did not answer in HTTP (it sent "${text}"): is it an mport server?`,
      { cause: e },
    );
  }
  const eof = e instanceof WsHandshakeError && e.cause instanceof HttpHeadError &&
    e.cause.kind === "eof";
  if (
    head.byteLength === 0 &&
    (eof || e instanceof Deno.errors.UnexpectedEof || e instanceof Deno.errors.ConnectionReset)
  ) {
    return new DialError(
      "protocol",
      `${target.where} closed the connection without answering the WebSocket upgrade: ` +
        `is it an mport server${target.secure ? "" : " (a TLS port needs wss://)"}?`,
      { cause: e },
    );
  }
  return new DialError(
    "protocol",
    `the WebSocket upgrade with ${target.where} failed (${detail}): is it an mport server?`,
    { cause: e },
  );
}

function startsWithHttp(head: Uint8Array): boolean {
  const prefix = "HTTP/";
  for (let i = 0; i < Math.min(head.byteLength, prefix.length); i++) {
    if (head[i] !== prefix.charCodeAt(i)) return false;
  }
  return true;
}
