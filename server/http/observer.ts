// Watches the bytes of one visitor's HTTP/1.1 connection, both ways, and reports each exchange
// (method, path, status, sizes, duration) without changing a byte: the access log and metrics.
import { BodyTracker, requestFraming, responseFraming } from "../../shared/http_framing.ts";
import { latin1, parseRequestHead, parseResponseHead } from "../../shared/http_head.ts";
import { concatBytes } from "../../shared/net.ts";

/** Longest head the observer reads; past it, it stops watching the connection. */
export const MAX_OBSERVED_HEAD_BYTES = 64 * 1024;
/** Requests read ahead of their responses (pipelining) that are remembered. */
const MAX_IN_FLIGHT = 64;

/** One request and its response, as a visitor saw them. */
export interface HttpExchange {
  readonly method: string;
  readonly host: string;
  /** The request target (path and query). */
  readonly target: string;
  /** 0 when the connection ended before a response head. */
  readonly status: number;
  /** Request bytes (head and body) from the visitor. */
  readonly bytesIn: number;
  /** Response bytes (head and body) to the visitor. */
  readonly bytesOut: number;
  readonly durationMs: number;
  /** The response switched protocols (WebSocket): the rest of the connection is not HTTP. */
  readonly upgraded: boolean;
}

interface Pending {
  readonly method: string;
  readonly host: string;
  readonly target: string;
  readonly start: number;
  bytesIn: number;
  /** Bytes of interim (1xx) response heads sent before the final one. */
  interimOut: number;
}

/** Scans one direction for heads and skips bodies. */
class HeadScanner {
  #head: Uint8Array = new Uint8Array(0);
  #body: BodyTracker | null = null;

  /** Whether a body is being skipped now. */
  get inBody(): boolean {
    return this.#body !== null;
  }

  /**
   * Feeds bytes; calls `onHead(text)` for each complete head, which returns the body tracker to
   * skip its body with (or null for no body). Returns false when the stream cannot be followed.
   */
  feed(
    bytes: Uint8Array,
    onHead: (text: string) => BodyTracker | null,
    onBody: (n: number) => void,
  ): boolean {
    let off = 0;
    while (off < bytes.byteLength) {
      if (this.#body) {
        const used = this.#body.feed(bytes.subarray(off));
        onBody(used);
        off += used;
        if (this.#body.done) this.#body = null;
        continue;
      }
      const rest = bytes.subarray(off);
      const joined = this.#head.byteLength === 0 ? rest : concatBytes(this.#head, rest);
      const from = Math.max(0, this.#head.byteLength - 3);
      const end = findHeadEnd(joined, from);
      if (end < 0) {
        if (joined.byteLength > MAX_OBSERVED_HEAD_BYTES) return false;
        this.#head = joined === rest ? rest.slice() : joined;
        return true;
      }
      const consumedHere = end - this.#head.byteLength;
      const text = latin1(joined.subarray(0, end));
      this.#head = new Uint8Array(0);
      off += consumedHere;
      const tracker = onHead(text);
      if (tracker && !tracker.done) this.#body = tracker;
    }
    return true;
  }
}

/** Follows a connection's exchanges; a confusing stream ends the watching, never the connection. */
export class HttpObserver {
  readonly #onExchange: (e: HttpExchange) => void;
  readonly #now: () => number;
  readonly #requests = new HeadScanner();
  readonly #responses = new HeadScanner();
  readonly #inFlight: Pending[] = [];
  /** The response being sent now (its head seen), and its byte count so far. */
  #current: { pending: Pending; status: number; bytesOut: number } | null = null;
  #lost = false;

  constructor(onExchange: (e: HttpExchange) => void, now: () => number = Date.now) {
    this.#onExchange = onExchange;
    this.#now = now;
  }

  /** Bytes the visitor sent. */
  request(bytes: Uint8Array): void {
    if (this.#lost) return;
    const ok = this.#requests.feed(bytes, (text) => {
      let head;
      try {
        head = parseRequestHead(text);
      } catch {
        this.#lost = true;
        return null;
      }
      if (this.#inFlight.length >= MAX_IN_FLIGHT) {
        this.#lost = true;
        return null;
      }
      const pending: Pending = {
        method: head.method,
        host: head.headers.get("host") ?? "",
        target: head.target,
        start: this.#now(),
        bytesIn: text.length,
        interimOut: 0,
      };
      this.#inFlight.push(pending);
      try {
        const framing = requestFraming(head.headers);
        return framing.kind === "none" ? null : new BodyTracker(framing);
      } catch {
        this.#lost = true;
        return null;
      }
    }, (n) => {
      const last = this.#inFlight[this.#inFlight.length - 1];
      if (last) last.bytesIn += n;
    });
    if (!ok) this.#lost = true;
  }

  /** Bytes sent to the visitor. */
  response(bytes: Uint8Array): void {
    if (this.#lost) return;
    const ok = this.#responses.feed(bytes, (text) => {
      let head;
      try {
        head = parseResponseHead(text);
      } catch {
        this.#lost = true;
        return null;
      }
      const pending = this.#inFlight[0];
      if (!pending) {
        this.#lost = true;
        return null;
      }
      if (head.status === 101) {
        this.#inFlight.shift();
        this.#report(pending, 101, text.length, true);
        this.#lost = true;
        return null;
      }
      if (head.status < 200) {
        // 100 Continue, 103 Early Hints: the final one follows; their bytes count with it.
        pending.interimOut += text.length;
        return null;
      }
      this.#inFlight.shift();
      this.#current = {
        pending,
        status: head.status,
        bytesOut: pending.interimOut + text.length,
      };
      let tracker: BodyTracker | null = null;
      try {
        const framing = responseFraming(pending.method, head.status, head.headers);
        tracker = framing.kind === "none" ? null : new BodyTracker(framing);
      } catch {
        this.#lost = true;
      }
      if (!tracker || tracker.done) this.#finish();
      else this.#body = tracker;
      return tracker;
    }, (n) => {
      if (!this.#current) return;
      this.#current.bytesOut += n;
      if (this.#body?.done) this.#finish();
    });
    if (!ok) this.#lost = true;
  }

  /** The body tracker of the response being sent (to report it when it completes). */
  #body: BodyTracker | null = null;

  /** The connection ended: a response that ran until the close is reported now. */
  end(): void {
    if (this.#current) {
      const c = this.#current;
      this.#current = null;
      this.#report(c.pending, c.status, c.bytesOut, false);
    }
    for (const p of this.#inFlight.splice(0)) this.#report(p, 0, 0, false);
    this.#lost = true;
  }

  #finish(): void {
    const c = this.#current;
    if (!c) return;
    this.#current = null;
    this.#body = null;
    this.#report(c.pending, c.status, c.bytesOut, false);
  }

  #report(p: Pending, status: number, bytesOut: number, upgraded: boolean): void {
    this.#onExchange({
      method: p.method,
      host: p.host,
      target: p.target,
      status,
      bytesIn: p.bytesIn,
      bytesOut,
      durationMs: this.#now() - p.start,
      upgraded,
    });
  }
}

/** Index just past the blank line ending a head in `buf` (searching from `from`), or -1. */
function findHeadEnd(buf: Uint8Array, from: number): number {
  const n = buf.byteLength;
  for (let i = buf.indexOf(13, from); i >= 0 && i + 3 < n; i = buf.indexOf(13, i + 1)) {
    if (buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i + 4;
  }
  return -1;
}
