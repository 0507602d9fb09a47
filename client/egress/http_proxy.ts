// The HTTP side of the local proxy: CONNECT host:port tunnels and absolute-form requests
// (`GET http://host/path`), forwarded as one origin-form request per connection.
import { writeAll } from "../../shared/net.ts";
import { parseIp } from "../../shared/ip_cidr.ts";
import { Fields } from "../../shared/http_fields.ts";
import {
  clip,
  HttpHeadError,
  latin1Bytes,
  parseRequestHead,
  readHead,
  type RequestHead,
} from "../../shared/http_head.ts";
import type { EgressFailure, EgressRefused } from "./egress_types.ts";
import {
  type Credentials,
  type EgressRequest,
  HandshakeEof,
  type HandshakeReader,
  HandshakeRefused,
} from "./handshake.ts";
import { MAX_DOMAIN_BYTES } from "./socks5.ts";

/** A proxy request head (request line and headers) may not be longer than this. */
export const MAX_HTTP_HEAD_BYTES = 16 * 1024;

const REG_NAME = /^[A-Za-z0-9._~!$&'()*+,;=%-]+$/;
const HOP_BY_HOP = ["connection", "proxy-connection", "proxy-authorization", "keep-alive"];

/** What to do with a proxy request head. */
export type ProxyDecision =
  | { readonly kind: "connect"; readonly host: string; readonly port: number }
  | {
    readonly kind: "forward";
    readonly host: string;
    readonly port: number;
    /** The rewritten head (origin-form, blank line included). */
    readonly head: string;
  }
  | {
    readonly kind: "reject";
    readonly status: number;
    /** One line for the body and the log. */
    readonly reason: string;
    readonly headers?: Readonly<Record<string, string>>;
  };

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
  504: "Gateway Timeout",
};

/** A complete `Connection: close` response with a one-line text body. */
export function textResponse(
  status: number,
  body: string,
  headers: Readonly<Record<string, string>> = {},
): Uint8Array {
  const bytes = new TextEncoder().encode(body + "\n");
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  head += "Content-Type: text/plain; charset=utf-8\r\n" +
    `Content-Length: ${bytes.length}\r\nConnection: close\r\n\r\n`;
  const out = new Uint8Array(head.length + bytes.length);
  out.set(latin1Bytes(head));
  out.set(bytes, head.length);
  return out;
}

/** The HTTP status for a destination the server could not open. */
export function statusFor(kind: EgressFailure): number {
  switch (kind) {
    case "denied":
      return 403;
    case "unreachable":
    case "refused":
    case "failed":
      return 502;
    case "timeout":
      return 504;
    default: {
      const never: never = kind;
      return never;
    }
  }
}

/** `host:port` (IPv6 in brackets) for a body or a log line. */
export function targetText(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Splits an authority (`host:port`, `[v6]:port`, `host` when `defaultPort` is given) into a host
 * (IPv6 without brackets) and port; null when malformed.
 */
export function parseAuthority(
  authority: string,
  defaultPort: number | null,
): { host: string; port: number } | { error: string } {
  const m = /^\[([^\]]*)\](?::([0-9]*))?$/.exec(authority) ??
    /^([^:\[\]]*)(?::([0-9]*))?$/.exec(authority);
  if (!m) return { error: `bad host:port ${JSON.stringify(clip(authority))}` };
  const bracketed = authority.startsWith("[");
  const host = m[1]!;
  const portText = m[2];
  if (host === "") return { error: `no host in ${JSON.stringify(clip(authority))}` };
  if (host.length > MAX_DOMAIN_BYTES) {
    return { error: `host name longer than ${MAX_DOMAIN_BYTES} bytes` };
  }
  if (bracketed ? parseIp(host)?.length !== 16 : !REG_NAME.test(host)) {
    return { error: `bad host ${JSON.stringify(clip(host))}` };
  }
  let port: number;
  if (portText === undefined || portText === "") {
    if (defaultPort === null) return { error: `no port in ${JSON.stringify(clip(authority))}` };
    port = defaultPort;
  } else {
    port = portText.length <= 5 ? Number(portText) : 0;
    if (port < 1 || port > 65535) return { error: `bad port ${JSON.stringify(clip(portText))}` };
  }
  return { host, port };
}

/** True when `Proxy-Authorization` carries Basic credentials that match. */
function authorized(headers: Headers, credentials: Credentials): boolean {
  const value = headers.get("proxy-authorization");
  if (value === null) return false;
  const m = /^basic +([A-Za-z0-9+/]+=*) *$/i.exec(value);
  if (!m) return false;
  let decoded: Uint8Array;
  try {
    decoded = Uint8Array.from(atob(m[1]!), (c) => c.charCodeAt(0));
  } catch {
    return false;
  }
  const colon = decoded.indexOf(0x3a);
  if (colon < 0) return false;
  return credentials.matches(decoded.subarray(0, colon), decoded.subarray(colon + 1));
}

/** Decides what to do with a parsed proxy request head. */
export function decideProxyRequest(
  req: RequestHead,
  credentials: Credentials | null,
): ProxyDecision {
  if (credentials && !authorized(req.headers, credentials)) {
    return {
      kind: "reject",
      status: 407,
      reason: req.headers.has("proxy-authorization")
        ? "wrong proxy credentials"
        : "this proxy needs credentials (Proxy-Authorization: Basic)",
      headers: { "Proxy-Authenticate": 'Basic realm="mport"' },
    };
  }
  const bad = (reason: string): ProxyDecision => ({ kind: "reject", status: 400, reason });
  if (req.method === "CONNECT") {
    const target = parseAuthority(req.target, null);
    if ("error" in target) return bad(`CONNECT needs host:port: ${target.error}`);
    return { kind: "connect", ...target };
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(req.target)?.[1]?.toLowerCase();
  if (scheme === "https") {
    return bad("https:// URLs go through CONNECT (set this proxy as the https proxy too)");
  }
  if (scheme !== "http") {
    return bad(
      `this is a proxy: send CONNECT host:port or an absolute http:// URL, not ${
        JSON.stringify(clip(req.target))
      }`,
    );
  }
  const rest = req.target.slice("http://".length);
  const cut = rest.search(/[/?#]/);
  const authority = cut < 0 ? rest : rest.slice(0, cut);
  let path = cut < 0 ? "/" : rest.slice(cut).replace(/#.*$/, "");
  if (path.startsWith("?")) path = "/" + path;
  if (path === "") path = "/";
  if (authority.includes("@")) return bad("user information in the URL is not forwarded");
  const target = parseAuthority(authority, 80);
  if ("error" in target) return bad(`bad URL: ${target.error}`);
  const fields = req.headers instanceof Fields ? req.headers.clone() : new Fields(req.headers);
  // Hop-by-hop fields end here (RFC 9110 §7.6.1), including those Connection names.
  const named = (fields.get("connection") ?? "").split(",").map((t) => t.trim().toLowerCase());
  for (const name of [...HOP_BY_HOP, ...named]) if (name !== "") fields.delete(name);
  // A proxy replaces Host with the URL's authority (RFC 9112 §3.2.2).
  fields.delete("host");
  const head = `${req.method} ${path} ${req.version}\r\nHost: ${authority}\r\n${fields.lines()}` +
    "Connection: close\r\n\r\n";
  return { kind: "forward", host: target.host, port: target.port, head };
}

/**
 * Reads and answers an HTTP proxy head (its first bytes are in `reader`). Returns the request
 * to carry; throws HandshakeRefused with the response to send, or HandshakeEof.
 */
export async function httpHandshake(
  conn: Deno.Conn,
  reader: HandshakeReader,
  credentials: Credentials | null,
): Promise<EgressRequest> {
  let head: RequestHead;
  let leftover: Uint8Array;
  try {
    // No timer here: the caller's handshake deadline closes `conn`, which ends this read.
    const read = await readHead(conn, {
      maxBytes: MAX_HTTP_HEAD_BYTES,
      timeoutMs: Infinity,
      prefix: reader.rest(),
    });
    leftover = read.leftover;
    head = parseRequestHead(read.head);
  } catch (e) {
    if (!(e instanceof HttpHeadError)) throw e;
    if (e.kind === "eof") throw new HandshakeEof(0);
    const status = e.kind === "too_large" ? 431 : 400;
    const why = e.kind === "too_large"
      ? `proxy request head too large: ${e.message}`
      : `not an HTTP proxy request: ${e.message}`;
    throw new HandshakeRefused(why, textResponse(status, why));
  }
  const decision = decideProxyRequest(head, credentials);
  switch (decision.kind) {
    case "reject": {
      const level = decision.status === 407 ? "info" : "debug";
      throw new HandshakeRefused(
        `HTTP proxy request refused with ${decision.status}: ${decision.reason}`,
        textResponse(decision.status, decision.reason, decision.headers),
        level,
      );
    }
    case "connect":
      return {
        protocol: "http-connect",
        host: decision.host,
        port: decision.port,
        initial: leftover,
        accept: () => writeAll(conn, latin1Bytes("HTTP/1.1 200 Connection established\r\n\r\n")),
        refuse: (e) => refuse(conn, decision.host, decision.port, e),
      };
    case "forward": {
      const headBytes = latin1Bytes(decision.head);
      const initial = new Uint8Array(headBytes.length + leftover.length);
      initial.set(headBytes);
      initial.set(leftover, headBytes.length);
      return {
        protocol: "http-forward",
        host: decision.host,
        port: decision.port,
        initial,
        accept: () => Promise.resolve(),
        refuse: (e) => refuse(conn, decision.host, decision.port, e),
      };
    }
    default: {
      const never: never = decision;
      return never;
    }
  }
}

function refuse(conn: Deno.Conn, host: string, port: number, e: EgressRefused): Promise<void> {
  const reason = e.message.replace(/[\r\n]+/g, " ");
  const body = `mport: cannot open ${targetText(host, port)}: ${reason}`;
  return writeAll(conn, textResponse(statusFor(e.kind), body));
}
