// Opens the client's WebSockets: TCP (TCP_NODELAY), optional HTTP CONNECT proxy, optional TLS, upgrade.
import { formatHostPort, unbracket } from "../shared/address.ts";
import { isFieldValue, isToken } from "../shared/http_head.ts";
import { closeQuietly, writeAll } from "../shared/net.ts";
import { WsConn } from "../shared/ws_conn.ts";
import { clientHandshake } from "../shared/ws_handshake.ts";
import { SUBPROTOCOL } from "../shared/protocol.ts";
import type { ClientConfig, ProxySpec } from "./config.ts";
import { describeDialFailure, DialError, type DialPhase, quoted } from "./dial_errors.ts";

export { DialError, type DialErrorKind } from "./dial_errors.ts";

/** Longest proxy answer to CONNECT (status line and headers) that is read. */
export const MAX_PROXY_RESPONSE_BYTES = 16 * 1024;
/**
 * The upgrade's own timer gets this much longer than what is left of the dial, so that the
 * dial's deadline always fires first and every timeout reads the same way.
 */
const HANDSHAKE_GRACE_MS = 250;

/** What `dialWebSocket` needs. */
export interface DialOptions {
  /** `ws://` or `wss://` URL: the server's origin plus the endpoint path (and query, if any). */
  readonly url: URL;
  /** Extra request headers, e.g. `authorization`; their values never appear in messages. */
  readonly headers?: Record<string, string>;
  /** WebSocket subprotocols to offer. */
  readonly protocols?: string[];
  /**
   * PEM of a private CA (or a self-signed leaf with `CA:FALSE`) to trust for `wss://`. It is
   * trusted *in addition to* the default roots (Deno's `caCerts` semantics: Mozilla's roots, or the
   * system store with `DENO_TLS_CA_STORE=system`, plus `DENO_CERT`), never instead of them.
   */
  readonly caCert: string | null;
  /** HTTP CONNECT proxy, used for both `ws://` and `wss://`. */
  readonly proxy: ProxySpec | null;
  /** Budget for the whole dial: DNS + TCP, proxy CONNECT, TLS and the WebSocket upgrade. */
  readonly timeoutMs: number;
  /** Largest message the returned `WsConn` accepts. */
  readonly maxMessageBytes: number;
  /**
   * The address to open TCP to instead of resolving the first hop's name (the proxy's, else the
   * server's); TLS and the Host header still name the server.
   */
  readonly address?: string | null;
}

/** An open WebSocket and what the server answered to the upgrade. */
export interface DialResult {
  readonly ws: WsConn;
  /** The subprotocol the server chose, or null. */
  readonly protocol: string | null;
  /** Headers of the server's 101 response. */
  readonly headers: Headers;
}

/** Where a dial goes, taken from its URL. */
interface Target {
  readonly secure: boolean;
  /** Host name or IP literal without brackets (for DNS, SNI and certificate checks). */
  readonly host: string;
  readonly port: number;
  /** `host:port` with IPv6 brackets, for messages and CONNECT. */
  readonly where: string;
  /** Host header: brackets for IPv6, port only when not the scheme's default. */
  readonly hostHeader: string;
  /** Path and query. */
  readonly path: string;
}

function targetOf(url: URL): Target {
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`cannot dial ${url.href}: the scheme must be ws:// or wss://`);
  }
  const secure = url.protocol === "wss:";
  const host = unbracket(url.hostname);
  // ws: and wss: are special schemes, so URL drops a default port (80/443) from `port` and `host`.
  const port = url.port ? Number(url.port) : secure ? 443 : 80;
  return {
    secure,
    host,
    port,
    where: formatHostPort(host, port),
    hostHeader: url.host,
    path: (url.pathname || "/") + url.search,
  };
}

/**
 * Time left for a dial. When it runs out it aborts a pending `Deno.connect` and closes the
 * connection being held, which interrupts whatever read or handshake is waiting on it.
 */
class Deadline {
  readonly #controller = new AbortController();
  readonly #timer: ReturnType<typeof setTimeout>;
  readonly #end: number;
  #conn: Deno.Conn | null = null;
  #expired = false;

  constructor(ms: number) {
    this.#end = Date.now() + ms;
    this.#timer = setTimeout(() => {
      this.#expired = true;
      this.#controller.abort(new Deno.errors.TimedOut("dial timed out"));
      if (this.#conn) closeQuietly(this.#conn);
    }, ms);
  }

  get expired(): boolean {
    return this.#expired;
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  remaining(): number {
    return Math.max(0, this.#end - Date.now());
  }

  /** Makes `conn` the one to close on expiry (TLS replaces the TCP connection it consumed). */
  hold(conn: Deno.Conn): void {
    this.#conn = conn;
    if (this.#expired) closeQuietly(conn);
  }

  clear(): void {
    clearTimeout(this.#timer);
  }
}

/**
 * Opens a WebSocket to one of the configured server's endpoints (`path` under its origin), with
 * its CA, its proxy and its dial timeout, authenticated with `bearer`.
 */
export async function dialServer(
  config: ClientConfig,
  path: string,
  bearer: string,
  maxMessageBytes: number,
): Promise<WsConn> {
  const { ws } = await dialWebSocket({
    url: new URL(path, config.server),
    headers: { authorization: `Bearer ${bearer}` },
    protocols: [SUBPROTOCOL],
    caCert: config.caCert,
    proxy: config.proxy,
    timeoutMs: config.dialTimeoutMs,
    maxMessageBytes,
    address: config.connectAddress ?? null,
  });
  return ws;
}

/**
 * Opens a WebSocket to `opts.url`: TCP with TCP_NODELAY (to the proxy, then `CONNECT`, when there
 * is one), TLS for `wss://` over that same socket, then the RFC 6455 upgrade. Every failure is a
 * {@link DialError}, and leaves nothing open.
 */
export async function dialWebSocket(opts: DialOptions): Promise<DialResult> {
  const target = targetOf(opts.url);
  checkHeaders(opts.headers);
  const secrets = secretsOf(opts);
  const caCerts = opts.caCert === null ? undefined : [checkedCaCert(opts.caCert)];
  const deadline = new Deadline(opts.timeoutMs);
  const sniffed: Sniffed = { head: new Uint8Array(0) };
  let phase: DialPhase = opts.proxy ? "proxy-connect" : "connect";
  let conn: Deno.Conn | null = null;
  try {
    const tcp = opts.proxy
      ? await connectTcp(opts.address ?? opts.proxy.host, opts.proxy.port, deadline.signal)
      : await connectTcp(opts.address ?? target.host, target.port, deadline.signal);
    conn = tcp;
    deadline.hold(tcp);
    if (opts.proxy) {
      phase = "proxy";
      const { leftover } = await proxyConnect(tcp, opts.proxy, target.host, target.port);
      if (leftover.byteLength > 0) {
        throw new DialError(
          "protocol",
          `${target.where} sent ${leftover.byteLength} bytes through proxy ${opts.proxy.url} ` +
            `before the request: is it an mport server?`,
        );
      }
    }
    if (target.secure) {
      phase = "tls";
      // TlsConn has no setNoDelay in Deno 2.9 and connectTls leaves Nagle on; startTls keeps the
      // option set on the TCP socket above.
      const tls = await Deno.startTls(tcp, { hostname: target.host, caCerts });
      conn = tls;
      deadline.hold(tls);
      await tls.handshake();
    }
    phase = "upgrade";
    const open = conn;
    const answer = await clientHandshake(sniffing(open, sniffed), {
      host: target.hostHeader,
      path: target.path,
      ...(opts.headers ? { headers: opts.headers } : {}),
      ...(opts.protocols ? { protocols: opts.protocols } : {}),
      timeoutMs: deadline.remaining() + HANDSHAKE_GRACE_MS,
    });
    if (deadline.expired) throw new Deno.errors.TimedOut("dial timed out");
    deadline.clear();
    const ws = new WsConn(open, {
      role: "client",
      maxMessageBytes: opts.maxMessageBytes,
      leftover: answer.leftover,
    });
    return { ws, protocol: answer.protocol, headers: answer.headers };
  } catch (e) {
    if (conn) closeQuietly(conn);
    throw describeDialFailure(e, phase, {
      secure: target.secure,
      host: target.host,
      where: target.where,
      timeoutMs: opts.timeoutMs,
      proxy: opts.proxy,
      withCa: opts.caCert !== null,
      secrets,
      sniffed: sniffed.head,
    }, deadline.expired);
  } finally {
    deadline.clear();
  }
}

/** Rejects, before dialling, header fields that cannot go into an HTTP/1.1 head. */
function checkHeaders(headers: Record<string, string> | undefined): void {
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (!isToken(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
    // The value is not quoted: it may be a token.
    if (!isFieldValue(value)) {
      throw new TypeError(`the value of header ${name} has characters HTTP cannot carry`);
    }
  }
}

/** `Deno.connect` with TCP_NODELAY on (Deno leaves it off). */
async function connectTcp(
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname, port, signal });
  try {
    conn.setNoDelay(true);
  } catch (e) {
    conn.close();
    throw e;
  }
  return conn;
}

/** What a successful `CONNECT` left behind. */
interface ProxyTunnel {
  /** Bytes read past the proxy's answer (none from a well-behaved proxy and server). */
  readonly leftover: Uint8Array;
}

/**
 * Asks the proxy on `conn` for a tunnel to `targetHost:targetPort` (with `Proxy-Authorization`
 * when the spec has credentials) and reads its answer up to the blank line. Throws a
 * {@link DialError} of kind "proxy" with the proxy's status line when it refuses. Replaces
 * the v1 client's `connectViaProxy`.
 */
async function proxyConnect(
  conn: Deno.Conn,
  proxy: ProxySpec,
  targetHost: string,
  targetPort: number,
): Promise<ProxyTunnel> {
  const target = formatHostPort(targetHost, targetPort);
  const auth = basicAuth(proxy);
  const head = `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n` +
    (auth ? `Proxy-Authorization: ${auth}\r\n` : "") + "\r\n";
  await writeAll(conn, new TextEncoder().encode(head));
  // Chunked reads are safe: neither proxy nor server may send tunnelled bytes before our request,
  // and whatever follows the blank line is handed back, not dropped.
  const buf = new Uint8Array(MAX_PROXY_RESPONSE_BYTES);
  let n = 0;
  let end = -1;
  while (end < 0) {
    if (n === buf.byteLength) {
      throw new DialError(
        "proxy",
        `proxy ${proxy.url} answered CONNECT to ${target} with more than ` +
          `${MAX_PROXY_RESPONSE_BYTES} bytes of headers: is it an HTTP proxy?`,
      );
    }
    const r = await conn.read(buf.subarray(n));
    if (r === null) {
      throw new DialError(
        "proxy",
        `proxy ${proxy.url} closed the connection before answering CONNECT to ${target}: ` +
          `is it an HTTP proxy, and does it allow this destination?`,
      );
    }
    end = headEnd(buf, Math.max(0, n - 3), n + r);
    n += r;
  }
  const text = new TextDecoder().decode(buf.subarray(0, end));
  const statusLine = quoted(text.split("\r\n")[0] ?? "", []);
  const m = /^HTTP\/1\.[01] (\d{3})\b/.exec(statusLine);
  if (!m) {
    throw new DialError(
      "proxy",
      `proxy ${proxy.url} sent a malformed answer to CONNECT to ${target} ("${statusLine}"): ` +
        `is it an HTTP proxy?`,
    );
  }
  const status = Number(m[1]);
  if (status < 200 || status > 299) {
    // tinyproxy 1.11 answers 407 without credentials but 401 to wrong ones.
    const badAuth = status === 407 || status === 401;
    const hint = badAuth
      ? proxy.username === null
        ? "it wants credentials: put them in the proxy URL, http://USER:PASS@HOST:PORT"
        : "check the proxy user name and password"
      : status === 403
      ? "the proxy does not allow this destination or port"
      : status >= 500
      ? "the proxy could not reach the server"
      : "check --proxy";
    throw new DialError(
      "proxy",
      `proxy ${proxy.url} refused CONNECT to ${target} with "${statusLine}": ${hint}`,
      { status, permanent: badAuth },
    );
  }
  return { leftover: buf.slice(end, n) };
}

/** Index just past the first `\r\n\r\n` whose last byte lies in [from, to), or -1. */
function headEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(from, 3); i < to; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

function basicAuth(proxy: ProxySpec): string | null {
  if (proxy.username === null) return null;
  const raw = new TextEncoder().encode(`${proxy.username}:${proxy.password?.reveal() ?? ""}`);
  return "Basic " + btoa(Array.from(raw, (b) => String.fromCharCode(b)).join(""));
}

function checkedCaCert(pem: string): string {
  // Deno silently ignores text without a PEM block, and reports a broken one as the *server's*
  // certificate being badly encoded: say what is really wrong instead.
  if (!/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.test(pem)) {
    throw new DialError(
      "tls",
      "the --ca file holds no PEM certificate (-----BEGIN CERTIFICATE-----): " +
        "pass the CA certificate in PEM form",
      { permanent: true },
    );
  }
  return pem;
}

/** Header values and proxy credentials, to be masked wherever peer-supplied text is quoted. */
function secretsOf(opts: DialOptions): string[] {
  const out: string[] = [];
  for (const value of Object.values(opts.headers ?? {})) {
    out.push(value);
    // "Bearer abc…": the credential alone may be echoed too.
    for (const part of value.split(/\s+/)) if (part.length >= 8) out.push(part);
  }
  const password = opts.proxy?.password?.reveal();
  if (password) out.push(password);
  if (opts.proxy) {
    const auth = basicAuth(opts.proxy);
    if (auth) out.push(auth.slice("Basic ".length));
  }
  return out.filter((s) => s.length >= 4).sort((a, b) => b.length - a.length);
}

/** The first bytes the server sent during the upgrade, for messages about non-HTTP answers. */
interface Sniffed {
  head: Uint8Array;
}

const SNIFF_BYTES = 48;

/** `conn` with its reads recorded into `sniffed` (only while the upgrade runs). */
function sniffing(conn: Deno.Conn, sniffed: Sniffed): Deno.Conn {
  return new Proxy(conn, {
    get(target, prop) {
      if (prop === "read") {
        return async (p: Uint8Array): Promise<number | null> => {
          const n = await target.read(p);
          if (n !== null && sniffed.head.byteLength < SNIFF_BYTES) {
            const more = p.subarray(0, Math.min(n, SNIFF_BYTES - sniffed.head.byteLength));
            const head = new Uint8Array(sniffed.head.byteLength + more.byteLength);
            head.set(sniffed.head);
            head.set(more, sniffed.head.byteLength);
            sniffed.head = head;
          }
          return n;
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
