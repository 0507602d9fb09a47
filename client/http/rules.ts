// An HTTP tunnel's user options (headers, basic auth, Host) parsed, and the head helpers applying them.
import { Fields } from "../../shared/http_fields.ts";
import { createHash, timingSafeEqual } from "node:crypto";
import { isFieldValue, isToken, latin1Bytes } from "../../shared/http_head.ts";
import { parseIp } from "../../shared/ip_cidr.ts";

/** Longest `user:password` accepted by `parseBasicAuth`. */
export const MAX_BASIC_AUTH_BYTES = 1024;
/** Longest Authorization header `basicAuthMatches` looks at; longer ones do not match. */
export const MAX_AUTHORIZATION_BYTES = 4096;
/** Longest host name in a --host-header value (RFC 1035). */
export const MAX_HOST_LENGTH = 253;

/**
 * Headers that frame the message or the connection: a user flag may not add or remove them,
 * since the body is passed through as is and a wrong one desynchronizes the stream.
 */
export const MANAGED_HEADERS: ReadonlySet<string> = new Set([
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "host",
]);

/** Hop-by-hop headers a proxy drops (RFC 9110 §7.6.1), besides those listed in Connection. */
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];
/** Never removed by `stripHopByHop`: the body passes through with the framing it came with. */
const FRAMING_HEADERS = new Set(["transfer-encoding", "content-length"]);

function checkName(name: string, text: string, flag: string): string {
  const bad = (why: string) => new TypeError(`${flag} ${JSON.stringify(text)}: ${why}`);
  if (name === "") throw bad("the header name is empty");
  if (!isToken(name)) {
    throw bad(
      `${JSON.stringify(name)} is not a valid header name (letters, digits and !#$%&'*+-.^_\`|~)`,
    );
  }
  const lower = name.toLowerCase();
  if (lower === "host") throw bad("the Host header is set with --host-header");
  if (MANAGED_HEADERS.has(lower)) throw bad(`${lower} is managed by mport and cannot be changed`);
  return lower;
}

/**
 * "X-Foo: bar" → ["x-foo", "bar"]; invalid name/value → TypeError("--request-header-add
 * \"…\": …") (the flag name is passed in). Whitespace around the value is dropped; headers
 * that frame the message (content-length, transfer-encoding, connection, host …) are refused.
 */
export function parseHeaderLine(text: string, flag: string): readonly [string, string] {
  const colon = text.indexOf(":");
  if (colon < 0) {
    throw new TypeError(
      `${flag} ${JSON.stringify(text)}: expected NAME: VALUE, e.g. "X-Env: staging"`,
    );
  }
  const name = checkName(text.slice(0, colon).trimStart(), text, flag);
  const value = text.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
  if (!isFieldValue(value)) {
    throw new TypeError(
      `${flag} ${
        JSON.stringify(text)
      }: the value has control characters or characters beyond Latin-1`,
    );
  }
  return [name, value];
}

/** A header name for --request-header-remove (validated token, lower-cased). */
export function parseHeaderName(text: string, flag: string): string {
  return checkName(text.trim(), text, flag);
}

/** One user and password for --basic-auth. */
export interface BasicCredential {
  readonly user: string;
  readonly password: string;
}

/**
 * "user:pass" (user non-empty, no ':' in user; password ≥ 1 char, may hold ':') → TypeError
 * otherwise. The message never shows the password.
 */
export function parseBasicAuth(text: string): BasicCredential {
  const colon = text.indexOf(":");
  const bad = (why: string) => new TypeError(`invalid --basic-auth: ${why}`);
  if (colon < 0) throw bad("expected USER:PASSWORD");
  const user = text.slice(0, colon);
  const password = text.slice(colon + 1);
  if (user === "") throw bad("the user name is empty (expected USER:PASSWORD)");
  if (password === "") throw bad(`the password for user ${JSON.stringify(user)} is empty`);
  if (new TextEncoder().encode(text).length > MAX_BASIC_AUTH_BYTES) {
    throw bad(`USER:PASSWORD is longer than ${MAX_BASIC_AUTH_BYTES} bytes`);
  }
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(text)) throw bad("control characters are not allowed");
  return { user, password };
}

function sha256(s: string): Uint8Array {
  return createHash("sha256").update(s, "utf8").digest();
}

/**
 * Checks an Authorization header against the list in constant time per credential (SHA-256
 * digests compared with timingSafeEqual, every credential tried); null/garbage → false.
 */
export function basicAuthMatches(
  header: string | null,
  creds: readonly BasicCredential[],
): boolean {
  if (header === null || header.length > MAX_AUTHORIZATION_BYTES) return false;
  const m = /^[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+={0,2}) *$/.exec(header);
  if (!m) return false;
  let given: string;
  try {
    const binary = atob(m[1]!);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    given = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return false;
  }
  if (!given.includes(":")) return false;
  const digest = sha256(given);
  let ok = false;
  for (const c of creds) {
    // No early return: the time taken does not say which credential matched.
    if (timingSafeEqual(digest, sha256(`${c.user}:${c.password}`))) ok = true;
  }
  return ok;
}

/** What the client does with the Host header of requests it forwards. */
export type HostHeaderMode =
  | { readonly kind: "preserve" }
  | { readonly kind: "rewrite" }
  | { readonly kind: "value"; readonly value: string };

const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

function validHost(host: string): boolean {
  if (host.startsWith("[") && host.endsWith("]")) {
    const ip = parseIp(host);
    return ip !== null && ip.length === 16 && !host.includes("%");
  }
  if (/^[0-9.]+$/.test(host)) return parseIp(host) !== null;
  return host.length <= MAX_HOST_LENGTH && HOST_NAME.test(host);
}

/**
 * Parses --host-header: "preserve" (send the visitor's Host), "rewrite" (the local target's
 * host:port) or a host[:port] value sent as is (a name, an IPv4 address or a bracketed IPv6
 * address; port 1-65535). Throws TypeError otherwise.
 */
export function parseHostHeaderMode(text: string): HostHeaderMode {
  if (text === "preserve") return { kind: "preserve" };
  if (text === "rewrite") return { kind: "rewrite" };
  const m = /^(\[[^\]]*\]|[^:]*)(?::([0-9]{1,5}))?$/.exec(text);
  const port = m?.[2] === undefined ? null : Number(m[2]);
  if (!m || !validHost(m[1]!) || (port !== null && (port < 1 || port > 65535))) {
    throw new TypeError(
      `invalid --host-header ${JSON.stringify(text)}: expected preserve, rewrite or HOST[:PORT], ` +
        `e.g. app.local or localhost:8080`,
    );
  }
  return { kind: "value", value: text };
}

/**
 * The --security-headers set: x-frame-options DENY, x-content-type-options nosniff,
 * referrer-policy no-referrer, content-security-policy "default-src 'self'; frame-ancestors
 * 'none'", strict-transport-security "max-age=31536000" only when https. The caller adds each
 * only when the response lacks it.
 */
export function securityHeaders(https: boolean): readonly (readonly [string, string])[] {
  const list: (readonly [string, string])[] = [
    ["x-frame-options", "DENY"],
    ["x-content-type-options", "nosniff"],
    ["referrer-policy", "no-referrer"],
    ["content-security-policy", "default-src 'self'; frame-ancestors 'none'"],
  ];
  if (https) list.push(["strict-transport-security", "max-age=31536000"]);
  return list;
}

/**
 * RFC 9110 §7.6.1 hop-by-hop handling for a proxy: removes connection, keep-alive,
 * proxy-connection, te, trailer, upgrade and every header named in Connection. `keep` lists
 * names to keep anyway (e.g. "upgrade" and "connection" for a WebSocket handshake).
 * transfer-encoding and content-length are never removed, even when Connection names them: the
 * body is passed through as is. Mutates and returns headers.
 */
export function stripHopByHop(headers: Headers, keep: readonly string[] = []): Headers {
  const kept = new Set(keep.map((k) => k.toLowerCase()));
  const names = new Set(HOP_BY_HOP);
  for (const token of (headers.get("connection") ?? "").split(",")) {
    const name = token.trim().toLowerCase();
    if (name !== "" && isToken(name)) names.add(name);
  }
  for (const name of names) {
    if (!kept.has(name) && !FRAMING_HEADERS.has(name)) headers.delete(name);
  }
  return headers;
}

/** Header lines of `headers` as iterated, each Set-Cookie on its own line. */
function headerLines(headers: Headers): string {
  // Parsed heads keep every field line apart already (Set-Cookie included).
  if (headers instanceof Fields) return headers.lines();
  let out = "";
  let cookiesDone = false;
  for (const [name, value] of headers) {
    if (name === "set-cookie") {
      // Set-Cookie values may hold commas: never joined (RFC 9110 §5.3).
      if (!cookiesDone) {
        for (const c of headers.getSetCookie()) out += `set-cookie: ${c}\r\n`;
        cookiesDone = true;
      }
      continue;
    }
    out += `${name}: ${value}\r\n`;
  }
  return out;
}

/**
 * Serializes a request head: `METHOD target HTTP/1.1\r\n` + headers + `\r\n` as Latin-1
 * bytes. Header order: as iterated. TypeError for a method that is not a token or a target
 * with spaces or control characters.
 */
export function serializeRequestHead(method: string, target: string, headers: Headers): Uint8Array {
  if (!isToken(method)) throw new TypeError(`invalid HTTP method ${JSON.stringify(method)}`);
  if (!/^[\x21-\x7e]+$/.test(target)) {
    throw new TypeError(`invalid request target ${JSON.stringify(target)}`);
  }
  return latin1Bytes(`${method} ${target} HTTP/1.1\r\n${headerLines(headers)}\r\n`);
}

/**
 * Same for a response: `HTTP/1.1 status reason\r\n` + headers + `\r\n`, each Set-Cookie on
 * its own line. TypeError for a status outside 100-999 or a reason with control characters.
 */
export function serializeResponseHead(
  status: number,
  statusText: string,
  headers: Headers,
): Uint8Array {
  if (!Number.isInteger(status) || status < 100 || status > 999) {
    throw new TypeError(`invalid HTTP status ${status}: expected 100-999`);
  }
  if (!isFieldValue(statusText)) {
    throw new TypeError(`invalid HTTP reason phrase ${JSON.stringify(statusText)}`);
  }
  return latin1Bytes(`HTTP/1.1 ${status} ${statusText}\r\n${headerLines(headers)}\r\n`);
}
