// The client's side of an HTTP tunnel: serves one visitor connection (a stream from the server)
// request by request — access rules, header rules, a keep-alive local connection, streaming both
// ways, WebSocket pass-through — and shows each exchange to the inspector.
import type { Logger } from "@logtape/logtape";
import { formatHostPort, unbracket } from "../../shared/address.ts";
import { errorText } from "../../shared/error_text.ts";
import {
  type BodyFraming,
  BodyTracker,
  HttpFramingError,
  requestFraming,
  responseFraming,
} from "../../shared/http_framing.ts";
import {
  hasToken,
  HttpHeadError,
  parseRequestHead,
  parseResponseHead,
  readHead,
  type RequestHead,
  requestHost,
  type ResponseHead,
} from "../../shared/http_head.ts";
import { Fields } from "../../shared/http_fields.ts";
import { type ErrorPage, errorResponse } from "../../shared/http_pages.ts";
import type { IpRules } from "../../shared/ip_cidr.ts";
import { closeQuietly, concatBytes, writeAll } from "../../shared/net.ts";
import type { OpenExtra } from "../../shared/protocol.ts";
import type { Capture, CaptureHandle } from "../inspector/capture.ts";
import { LocalDialError, type LocalPool, targetUrl } from "./local_pool.ts";
import type { Watchdog } from "./watchdog.ts";
import {
  basicAuthMatches,
  type BasicCredential,
  type HostHeaderMode,
  securityHeaders,
  serializeRequestHead,
  serializeResponseHead,
  stripHopByHop,
} from "./rules.ts";

/** Longest request or response head. */
export const MAX_HTTP_HEAD_BYTES = 64 * 1024;
/** A visitor connection with no new request for this long is closed. */
export const KEEP_ALIVE_IDLE_MS = 75_000;
/** The local service has this long to start its response (long polls included). */
export const RESPONSE_HEAD_TIMEOUT_MS = 10 * 60_000;
const READ_BYTES = 64 * 1024;

/** An HTTP tunnel's rules, as the user gave them. */
export interface HttpRules {
  readonly hostHeader: HostHeaderMode;
  readonly basicAuth: readonly BasicCredential[];
  readonly ipRules: IpRules | null;
  readonly requestHeaderAdd: readonly (readonly [string, string])[];
  readonly requestHeaderRemove: readonly string[];
  readonly responseHeaderAdd: readonly (readonly [string, string])[];
  readonly securityHeaders: boolean;
  /** Request bodies above this many bytes are refused with 413; null: no limit. */
  readonly maxBodyBytes: number | null;
}

/** One HTTP tunnel as the engine serves it. */
export interface HttpTunnel {
  readonly name: string;
  readonly rules: HttpRules;
  readonly pool: LocalPool;
  /** Host names the server publishes the tunnel on (from its URL), lower case. */
  hosts: readonly string[];
  readonly capture: Capture | null;
  readonly log: Logger;
  /** Times the waits of every connection of the tunnel (idle keep-alive, response heads). */
  readonly watchdog: Watchdog;
  /** Waits, by default {@link KEEP_ALIVE_IDLE_MS} and {@link RESPONSE_HEAD_TIMEOUT_MS}. */
  readonly timeouts?: { readonly idleMs: number; readonly responseMs: number };
}

/** Who the visitor is, as the server told it. */
export interface Visitor {
  /** `ip:port`, or an ip alone when a trusted proxy named it. */
  readonly remote: string;
  readonly extra: OpenExtra | undefined;
  /** A replay from the inspector: the id of the exchange it repeats (IP rules do not apply). */
  readonly replayOf?: string;
  /** Told the id of each exchange captured for this connection (the inspector's Replay). */
  readonly captured?: (id: string) => void;
}

/** A connection with bytes already read from it (`pending`) served first. */
class Source {
  readonly conn: Deno.Conn;
  pending: Uint8Array = new Uint8Array(0);

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  async head(timeoutMs: number): Promise<string> {
    const got = await readHead(this.conn, {
      maxBytes: MAX_HTTP_HEAD_BYTES,
      timeoutMs,
      prefix: this.pending,
    });
    this.pending = got.leftover;
    return got.head;
  }

  /**
   * Bytes: the pending ones first, then one read; null at EOF. The bytes are valid until the next
   * call (one buffer is reused: callers write or copy a chunk before reading on).
   */
  async read(): Promise<Uint8Array | null> {
    if (this.pending.byteLength > 0) {
      const p = this.pending;
      this.pending = new Uint8Array(0);
      return p;
    }
    this.#buf ??= new Uint8Array(READ_BYTES);
    const n = await this.conn.read(this.#buf);
    return n === null ? null : this.#buf.subarray(0, n);
  }

  #buf: Uint8Array | null = null;

  /** Takes the pending bytes (null when there are none). */
  takePending(): Uint8Array | null {
    if (this.pending.byteLength === 0) return null;
    const p = this.pending;
    this.pending = new Uint8Array(0);
    return p;
  }

  /** Puts back bytes read past a message (copied: the read buffer is reused). */
  unread(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return;
    this.pending = this.pending.byteLength === 0 ? bytes.slice() : concatBytes(bytes, this.pending);
  }
}

/** The visitor went away or the stream was reset: stop quietly. */
class Gone extends Error {}

/** Serves every request of one visitor connection; never throws. */
export async function serveVisitor(
  conn: Deno.Conn,
  visitor: Visitor,
  tunnel: HttpTunnel,
): Promise<void> {
  const src = new Source(conn);
  let clean = false;
  try {
    clean = await new Exchanges(src, visitor, tunnel).run();
  } catch (e) {
    if (!(e instanceof Gone)) {
      tunnel.log.warn("{name}: visitor {remote}: {error}", {
        name: tunnel.name,
        remote: visitor.remote,
        error: errorText(e),
      });
    }
  }
  if (clean) {
    try {
      await (conn as Deno.TcpConn).closeWrite();
    } catch {
      // already gone
    }
  }
  // A clean end after closeWrite delivers everything; otherwise closing aborts the stream (reset).
  closeQuietly(conn);
}

/** The request loop of one visitor connection. */
class Exchanges {
  readonly #src: Source;
  readonly #visitor: Visitor;
  readonly #t: HttpTunnel;
  readonly #ip: string;
  readonly #proto: "http" | "https";

  constructor(src: Source, visitor: Visitor, tunnel: HttpTunnel) {
    this.#src = src;
    this.#visitor = visitor;
    this.#t = tunnel;
    this.#ip = visitor.replayOf !== undefined ? "127.0.0.1" : ipOf(visitor.remote);
    this.#proto = visitor.extra?.proto ?? "http";
  }

  /**
   * True when the connection ends cleanly: the visitor closed between requests, or the last
   * exchange was complete and the connection closes after it (`Connection: close`, a body that
   * runs to the close, a refusal page). A reset there could drop the end of that response.
   */
  async run(): Promise<boolean> {
    for (;;) {
      let text: string;
      let idle = false;
      const conn = this.#src.conn;
      const disarm = this.#t.watchdog.arm(this.#t.timeouts?.idleMs ?? KEEP_ALIVE_IDLE_MS, () => {
        // Idle between requests too long: a FIN to the visitor, then this end stops reading.
        idle = true;
        (conn as Deno.TcpConn).closeWrite().catch(() => {});
        closeQuietly(conn);
      });
      try {
        text = await this.#src.head(Infinity);
      } catch (e) {
        if (idle) return true;
        if (e instanceof HttpHeadError) {
          if (e.kind === "eof" && this.#src.pending.byteLength === 0) return true;
          if (e.kind === "too_large") {
            await this.#page(null, false, {
              status: 431,
              code: "head_too_large",
              title: "Request header too large",
              message: `The request's head is larger than ${MAX_HTTP_HEAD_BYTES} bytes.`,
            });
          } else if (e.kind === "malformed") {
            await this.#page(null, false, badRequest(e.message));
          }
          // The page (or, idle too long, nothing) is the last thing sent: a clean close delivers
          // it. A head cut off by the visitor is a broken connection.
          return e.kind !== "eof";
        }
        throw new Gone();
      } finally {
        disarm();
      }
      let req: RequestHead;
      let framing: BodyFraming;
      try {
        req = parseRequestHead(text);
        framing = requestFraming(req.headers);
      } catch (e) {
        const status = e instanceof HttpFramingError ? e.status : 400;
        await this.#page(null, false, { ...badRequest(errorText(e)), status });
        return true;
      }
      const keep = await this.#one(req, framing);
      if (!keep) return true;
    }
  }

  /** Serves one request; returns whether the connection may carry another. */
  async #one(req: RequestHead, framing: BodyFraming): Promise<boolean> {
    const t = this.#t;
    const rules = t.rules;
    const accept = req.headers.get("accept");
    const head = req.method === "HEAD";
    const noBody = framing.kind === "none";
    const refuse = async (page: ErrorPage) => {
      // A refused request's body is not read: the connection goes unless there is none.
      await this.#page(accept, head, page, !noBody);
      return noBody;
    };
    const hostHeader = req.headers.get("host");
    const host = requestHost(req.headers);
    if (hostHeader !== null && t.hosts.length > 0 && (host === null || !t.hosts.includes(host))) {
      return await refuse({
        status: 421,
        code: "misdirected_request",
        title: "Misdirected request",
        message: `This connection serves ${t.hosts.join(", ")}, not ${host ?? hostHeader}.`,
      });
    }
    if (rules.ipRules && this.#visitor.replayOf === undefined && !rules.ipRules.allows(this.#ip)) {
      return await refuse({
        status: 403,
        code: "ip_denied",
        title: "Forbidden",
        message: `Your address ${this.#ip} may not use this tunnel.`,
      });
    }
    if (rules.basicAuth.length > 0) {
      if (!basicAuthMatches(req.headers.get("authorization"), rules.basicAuth)) {
        return await refuse({
          status: 401,
          code: "unauthorized",
          title: "Authentication required",
          message: "This tunnel asks for a user name and password.",
          headers: [["www-authenticate", 'Basic realm="mport", charset="UTF-8"']],
        });
      }
    }
    const max = rules.maxBodyBytes;
    if (max !== null && framing.kind === "length" && framing.length > max) {
      return await refuse(tooLarge(max));
    }
    const upgrade = isUpgrade(req.headers);
    const outHead = this.#forwardHead(req, upgrade);
    const capture = this.#begin(req);
    const visitorWantsClose = wantsClose(req.version, req.headers);
    let local: Deno.Conn;
    let reused = false;
    try {
      if (upgrade) {
        local = await t.pool.dial();
      } else {
        ({ conn: local, reused } = await t.pool.acquire());
      }
    } catch (e) {
      const message = e instanceof LocalDialError ? e.message : errorText(e);
      capture?.end(message);
      t.log.warn("{name}: {message}", { name: t.name, message });
      return await refuse({
        status: 502,
        code: "local_unreachable",
        title: "Local service unreachable",
        message: message.replace(/^cannot connect/, "The mport client cannot connect"),
      });
    }
    for (let attempt = 0;; attempt++) {
      const result = await this.#exchange(req, framing, outHead, local, upgrade, capture);
      if (result === "stale" && attempt === 0 && reused) {
        // The pooled connection had been closed by the local service: once more on a new one.
        try {
          local = await t.pool.dial();
        } catch (e) {
          const message = errorText(e);
          capture?.end(message);
          return await refuse({
            status: 502,
            code: "local_unreachable",
            title: "Local service unreachable",
            message,
          });
        }
        reused = false;
        continue;
      }
      if (result === "stale") {
        const message = `the local service ${
          targetUrl(t.pool.target)
        } closed the connection without answering`;
        capture?.end(message);
        return await refuse({
          status: 502,
          code: "local_no_response",
          title: "No response from the local service",
          message: `The local service ${
            targetUrl(t.pool.target)
          } closed the connection without answering.`,
        });
      }
      return result === "keep" && !visitorWantsClose;
    }
  }

  /**
   * Sends one request to `local` and its response back. "keep": done, the visitor connection
   * may go on; "close": done, close it; "stale": nothing was answered and nothing of the body
   * was consumed (retry allowed). Throws Gone when the visitor connection broke.
   */
  async #exchange(
    req: RequestHead,
    framing: BodyFraming,
    outHead: Uint8Array,
    local: Deno.Conn,
    upgrade: boolean,
    capture: CaptureHandle | null,
  ): Promise<"keep" | "close" | "stale"> {
    const t = this.#t;
    const localSrc = new Source(local);
    // A small body that came with the head goes out in the same write (one syscall, one packet).
    const whole = framing.kind === "none" || upgrade ? null : this.#wholeBody(framing, capture);
    try {
      await writeAll(local, whole ? concatBytes(outHead, whole) : outHead);
    } catch {
      closeQuietly(local);
      if (framing.kind === "none") return "stale";
      throw new LocalBroke("the local service closed the connection");
    }
    // The request body flows while the response is awaited (100-continue, early answers).
    const body = framing.kind === "none" || upgrade || whole
      ? Promise.resolve<BodyEnd>("done")
      : this.#pumpBody(framing, local, capture);
    let res: ResponseHead;
    let resText: string;
    let late = false;
    const responseMs = t.timeouts?.responseMs ?? RESPONSE_HEAD_TIMEOUT_MS;
    const disarm = t.watchdog.arm(responseMs, () => {
      late = true;
      closeQuietly(local);
    });
    try {
      for (;;) {
        resText = await localSrc.head(Infinity);
        res = parseResponseHead(resText);
        if (res.status >= 200 || res.status === 101) break;
        // 100 Continue, 103 Early Hints: passed on, the final response follows.
        await this.#toVisitor(serializeResponseHead(res.status, res.statusText, res.headers));
      }
    } catch (e) {
      closeQuietly(local);
      const aborted = await body;
      if (e instanceof Gone) throw e;
      if (
        e instanceof HttpHeadError && e.kind === "eof" && localSrc.pending.byteLength === 0 &&
        framing.kind === "none"
      ) {
        return "stale";
      }
      if (aborted === "too_large") {
        // Nothing was answered yet: the visitor learns why rather than seeing a reset.
        const max = t.rules.maxBodyBytes;
        capture?.end(`the request body is larger than ${max} bytes`);
        await this.#page(req.headers.get("accept"), req.method === "HEAD", tooLarge(max), true);
        return "close";
      }
      if (aborted === "aborted") return "close";
      const message = late
        ? `the local service sent no response within ${responseMs / 1000} s`
        : `the local service sent a broken response: ${errorText(e)}`;
      capture?.end(message);
      await this.#page(req.headers.get("accept"), req.method === "HEAD", {
        status: late ? 504 : 502,
        code: "bad_local_response",
        title: "Bad response from the local service",
        message: message[0]!.toUpperCase() + message.slice(1) + ".",
      }, true);
      return "close";
    } finally {
      disarm();
    }
    capture?.response({
      status: res.status,
      statusText: res.statusText,
      headers: [...res.headers],
    });
    if (res.status === 101 && upgrade) {
      await this.#toVisitor(this.#responseHead(res, false));
      capture?.end();
      await this.#splice(localSrc, local);
      return "close";
    }
    let resFraming: BodyFraming;
    try {
      resFraming = responseFraming(req.method, res.status, res.headers);
    } catch (e) {
      closeQuietly(local);
      capture?.end(errorText(e));
      await this.#page(req.headers.get("accept"), req.method === "HEAD", {
        status: 502,
        code: "bad_local_response",
        title: "Bad response from the local service",
        message: `The local service sent a broken response: ${errorText(e)}.`,
      }, true);
      return "close";
    }
    const localClose = resFraming.kind === "close" || wantsClose(res.version, res.headers);
    // A body that runs to the close cannot be told apart from the next response: close after.
    const closeAfter = resFraming.kind === "close";
    const resHead = this.#responseHead(res, closeAfter);
    const tracker = new BodyTracker(resFraming);
    const early = tracker.done ? null : localSrc.takePending();
    if (early) {
      // Body bytes that came with the head go out in the same write.
      const used = this.#feedResponse(tracker, early, local, capture);
      await this.#toVisitor(used > 0 ? concatBytes(resHead, early.subarray(0, used)) : resHead);
      if (used < early.byteLength) localSrc.unread(early.subarray(used));
    } else {
      await this.#toVisitor(resHead);
    }
    while (!tracker.done) {
      let chunk: Uint8Array | null;
      try {
        chunk = await localSrc.read();
      } catch {
        chunk = null;
      }
      if (chunk === null) {
        if (tracker.end()) break;
        closeQuietly(local);
        capture?.end("the local service closed the connection in the middle of the response");
        // The visitor must not take a cut-off body for a whole one: reset, not FIN.
        throw new LocalBroke("response cut off by the local service");
      }
      const used = this.#feedResponse(tracker, chunk, local, capture);
      if (used > 0) await this.#toVisitor(chunk.subarray(0, used));
      if (used < chunk.byteLength) localSrc.unread(chunk.subarray(used));
    }
    const sent = await body;
    capture?.end();
    if (sent !== "done" || localClose || localSrc.pending.byteLength > 0) {
      closeQuietly(local);
    } else {
      t.pool.release(local);
    }
    return sent !== "done" || closeAfter ? "close" : "keep";
  }

  /**
   * Copies the request body from the visitor to `local`; "too_large" once it passes --max-body,
   * "aborted" when it could not be finished otherwise (the local service stopped reading, a
   * framing error, the visitor went away).
   */
  /** Feeds response bytes to `tracker`; a malformed body breaks the exchange (LocalBroke). */
  #feedResponse(
    tracker: BodyTracker,
    chunk: Uint8Array,
    local: Deno.Conn,
    capture: CaptureHandle | null,
  ): number {
    try {
      return tracker.feed(chunk, capture ? (d) => capture.responseBody(d) : undefined);
    } catch (e) {
      closeQuietly(local);
      capture?.end(errorText(e));
      throw new LocalBroke(`bad response body from the local service: ${errorText(e)}`);
    }
  }

  /**
   * The whole request body when it already arrived with the head (and is within --max-body),
   * taken from the visitor's pending bytes; null otherwise (then it is pumped as it comes).
   */
  #wholeBody(framing: BodyFraming, capture: CaptureHandle | null): Uint8Array | null {
    const pending = this.#src.pending;
    if (pending.byteLength === 0) return null;
    if (framing.kind === "length" && pending.byteLength < framing.length) return null;
    const tracker = new BodyTracker(framing);
    const decoded: Uint8Array[] = [];
    let used: number;
    try {
      used = tracker.feed(pending, capture ? (d) => decoded.push(d.slice()) : undefined);
    } catch {
      return null; // the pump meets the same error and handles it
    }
    const max = this.#t.rules.maxBodyBytes;
    if (!tracker.done || (max !== null && tracker.decodedBytes > max)) return null;
    for (const d of decoded) capture?.requestBody(d);
    const body = pending.subarray(0, used);
    this.#src.pending = pending.subarray(used);
    return body;
  }

  async #pumpBody(
    framing: BodyFraming,
    local: Deno.Conn,
    capture: CaptureHandle | null,
  ): Promise<BodyEnd> {
    const max = this.#t.rules.maxBodyBytes;
    const tracker = new BodyTracker(framing);
    while (!tracker.done) {
      let chunk: Uint8Array | null;
      try {
        chunk = await this.#src.read();
      } catch {
        closeQuietly(local);
        return "aborted";
      }
      if (chunk === null) {
        // The visitor half-closed inside its body: the local service gets what came.
        closeQuietly(local);
        return "aborted";
      }
      let used: number;
      try {
        used = tracker.feed(chunk, capture ? (d) => capture.requestBody(d) : undefined);
      } catch {
        closeQuietly(local);
        return "aborted";
      }
      if (max !== null && tracker.decodedBytes > max) {
        closeQuietly(local);
        return "too_large";
      }
      try {
        if (used > 0) await writeAll(local, chunk.subarray(0, used));
      } catch {
        return "aborted";
      }
      if (used < chunk.byteLength) this.#src.unread(chunk.subarray(used));
    }
    return "done";
  }

  /** After a 101: bytes both ways until either side is done. */
  async #splice(localSrc: Source, local: Deno.Conn): Promise<void> {
    const up = (async () => {
      for (;;) {
        const chunk = await this.#src.read().catch(() => null);
        if (chunk === null) break;
        try {
          await writeAll(local, chunk);
        } catch {
          break;
        }
      }
      await (local as Deno.TcpConn).closeWrite().catch(() => {});
    })();
    const down = (async () => {
      for (;;) {
        const chunk = await localSrc.read().catch(() => null);
        if (chunk === null) break;
        await this.#toVisitor(chunk);
      }
    })();
    try {
      await down;
    } finally {
      closeQuietly(local);
      await up.catch(() => {});
    }
  }

  /** The head sent to the local service: rules applied, forwarding headers added. */
  #forwardHead(req: RequestHead, upgrade: boolean): Uint8Array {
    const rules = this.#t.rules;
    const h = copyFields(req.headers);
    const visitorHost = req.headers.get("host") ?? this.#t.hosts[0] ?? "";
    stripHopByHop(h, upgrade ? ["upgrade"] : []);
    if (upgrade) h.set("connection", "upgrade");
    if (rules.basicAuth.length > 0) h.delete("authorization");
    for (const name of rules.requestHeaderRemove) h.delete(name);
    for (const [k, v] of rules.requestHeaderAdd) h.append(k, v);
    const peerIp = this.#visitor.extra?.peer ? ipOf(this.#visitor.extra.peer) : this.#ip;
    const xff = req.headers.get("x-forwarded-for");
    h.set("x-forwarded-for", xff ? `${xff}, ${peerIp}` : peerIp);
    h.set("x-forwarded-proto", this.#proto);
    h.set("x-forwarded-host", visitorHost);
    const forwarded = `for=${forwardedNode(this.#ip)};host="${visitorHost}";proto=${this.#proto}`;
    const prior = req.headers.get("forwarded");
    h.set("forwarded", prior ? `${prior}, ${forwarded}` : forwarded);
    const target = this.#t.pool.target;
    const mode = rules.hostHeader;
    h.set(
      "host",
      mode.kind === "preserve"
        ? visitorHost
        : mode.kind === "value"
        ? mode.value
        : defaultPortHost(target.host, target.port, target.scheme),
    );
    return serializeRequestHead(req.method, req.target, h);
  }

  /** The head sent to the visitor: hop-by-hop headers replaced, response rules applied. */
  #responseHead(res: ResponseHead, close: boolean): Uint8Array {
    const rules = this.#t.rules;
    const h = copyFields(res.headers);
    const upgraded = res.status === 101;
    stripHopByHop(h, upgraded ? ["upgrade"] : []);
    if (upgraded) h.set("connection", "upgrade");
    else if (close) h.set("connection", "close");
    for (const [k, v] of rules.responseHeaderAdd) h.append(k, v);
    if (rules.securityHeaders) {
      for (const [k, v] of securityHeaders(this.#proto === "https")) {
        if (!h.has(k)) h.set(k, v);
      }
    }
    return serializeResponseHead(res.status, res.statusText, h);
  }

  #begin(req: RequestHead): CaptureHandle | null {
    const capture = this.#t.capture;
    if (!capture) return null;
    const handle = capture.begin({
      tunnel: this.#t.name,
      remote: this.#visitor.remote,
      local: targetUrl(this.#t.pool.target),
      ...(this.#visitor.replayOf !== undefined ? { replayOf: this.#visitor.replayOf } : {}),
      request: {
        method: req.method,
        target: req.target,
        version: req.version,
        headers: [...req.headers],
      },
    });
    this.#visitor.captured?.(handle.id);
    return handle;
  }

  async #toVisitor(bytes: Uint8Array): Promise<void> {
    try {
      await writeAll(this.#src.conn, bytes);
    } catch {
      throw new Gone();
    }
  }

  /** An error page; `close` (or a request whose body was not read) ends the connection after. */
  async #page(accept: string | null, head: boolean, page: ErrorPage, close = true): Promise<void> {
    await this.#toVisitor(errorResponse(page, { accept, close, head }));
  }
}

/** The local service broke off mid-exchange: the visitor's connection is reset. */
class LocalBroke extends Error {}

/** How copying a request body ended. */
type BodyEnd = "done" | "aborted" | "too_large";

function tooLarge(max: number | null): ErrorPage {
  return {
    status: 413,
    code: "body_too_large",
    title: "Request body too large",
    message: `This tunnel accepts request bodies up to ${max} bytes.`,
  };
}

/** A head's fields to change for forwarding (parsed heads are `Fields`: copied cheaply). */
function copyFields(h: Headers): Fields {
  return h instanceof Fields ? h.clone() : new Fields(h);
}

function badRequest(message: string): ErrorPage {
  return { status: 400, code: "bad_request", title: "Bad request", message };
}

function isUpgrade(h: Headers): boolean {
  return h.has("upgrade") && hasToken(h.get("connection"), "upgrade");
}

function wantsClose(version: string, h: Headers): boolean {
  const c = h.get("connection");
  if (hasToken(c, "close")) return true;
  return version === "HTTP/1.0" && !hasToken(c, "keep-alive");
}

/** `1.2.3.4:5` → `1.2.3.4`, `[::1]:5` → `::1`, a bare address as it is. */
function ipOf(remote: string): string {
  if (remote.startsWith("[")) return unbracket(remote.slice(0, remote.indexOf("]") + 1));
  const colon = remote.lastIndexOf(":");
  if (colon > 0 && remote.indexOf(":") === colon) return remote.slice(0, colon);
  return remote;
}

function forwardedNode(ip: string): string {
  return ip.includes(":") ? `"[${ip}]"` : ip;
}

function defaultPortHost(host: string, port: number, scheme: "http" | "https"): string {
  const standard = scheme === "https" ? port === 443 : port === 80;
  return standard ? formatHostPort(host, port).replace(/:\d+$/, "") : formatHostPort(host, port);
}
