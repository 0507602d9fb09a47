// How the HTTP front says no: the refusal table, a minimal HTTP answer, bounded lingering close,
// counters and rate-limited log lines.
import type { Logger } from "@logtape/logtape";
import { closeQuietly, writeAll } from "../../shared/net.ts";

/** Every way the front refuses a connection on the wire: status and the body's message. */
export const FRONT_REFUSALS = {
  max_connections: {
    status: 503,
    message: "the server has too many open connections; try again later",
  },
  max_connections_per_ip: {
    status: 503,
    message: "too many open connections from your address; close some and try again",
  },
  max_unauthenticated_per_ip: {
    status: 429,
    message: "too many connections from your address have not finished their request; " +
      "try again later",
  },
  fd_exhausted: {
    status: 503,
    message: "the server is out of file descriptors; try again later",
  },
  header_timeout: { status: 408, message: "the request head did not arrive in time" },
  head_too_large: { status: 431, message: "the request head is too large" },
  bad_request: { status: 400, message: "malformed request head" },
  inner_unavailable: {
    status: 503,
    message: "the server's HTTP handler is restarting; try again shortly",
  },
} as const satisfies Record<string, { status: number; message: string }>;

/** A refusal answered on the wire: a key of `FRONT_REFUSALS`. */
export type FrontRefusalKind = keyof typeof FRONT_REFUSALS;

/**
 * Every kind passed to `counters.refusal`: the answered ones, plus `idle_timeout` (a spliced
 * connection idle for `idleTimeoutMs`, closed without an answer).
 */
export type FrontRefusalCounter = FrontRefusalKind | "idle_timeout";

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  408: "Request Timeout",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};

/** An answer is written, and the refused client may send (up to LINGER_BYTES), this long. */
const LINGER_MS = 1000;
const LINGER_BYTES = 64 * 1024;
/**
 * Refusals in progress at once: each holds a descriptor, so a flood of refused connections must
 * not be accepted faster than they are answered (`room()` holds the accept loop back).
 */
const REFUSING_MAX = 32;
/** Of those, at most this many linger; the rest close straight after the answer. */
const LINGER_MAX = 16;
/** Each kind of refusal is logged at most once per window (with a count of the rest). */
const LOG_WINDOW_MS = 10_000;

/** Answers and closes refused connections; counts and logs each kind. */
export class Refuser {
  readonly #log: Logger;
  readonly #count: (kind: FrontRefusalCounter) => void;
  readonly #open = new Set<Deno.Conn>();
  readonly #logWindows = new Map<string, { since: number; suppressed: number }>();
  #lingering = 0;
  #refusing = 0;
  #roomWaiters: (() => void)[] = [];

  constructor(log: Logger, count: (kind: FrontRefusalCounter) => void) {
    this.#log = log;
    this.#count = count;
  }

  /**
   * Null while another refusal can start; otherwise a promise that settles when one has ended.
   * The accept loop waits on it, so refused connections queue in the kernel's backlog (which
   * costs no descriptor) instead of all being accepted at once.
   */
  room(): Promise<void> | null {
    if (this.#refusing < REFUSING_MAX) return null;
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  /** Counts a connection cut without an answer (e.g. idle). */
  cut(kind: FrontRefusalCounter): void {
    this.#count(kind);
  }

  /** Refuses without an answer (a TLS client cannot read a plain-text one): count, log, close. */
  drop(conn: Deno.Conn, ip: string, kind: FrontRefusalKind): void {
    this.#count(kind);
    this.#note(kind, ip);
    closeQuietly(conn);
  }

  /**
   * Answers `conn` with the refusal's status and message and closes it. With `linger`, the write
   * side is shut first and what the client still sends is read (bounded), so the close does not
   * reset the connection before the client has read the answer. Settles once closed; never throws.
   */
  async refuse(
    conn: Deno.Conn,
    ip: string,
    kind: FrontRefusalKind,
    detail?: string,
    linger = true,
  ): Promise<void> {
    this.#count(kind);
    this.#note(kind, ip, detail);
    const { status, message } = FRONT_REFUSALS[kind];
    this.#open.add(conn);
    this.#refusing++;
    // Bounds the whole answer, the write included: a TLS client that never finished its
    // handshake would otherwise hold the write (and the descriptor) forever.
    const timer = setTimeout(() => closeQuietly(conn), LINGER_MS);
    let lingering = false;
    try {
      await writeAll(conn, httpResponse(status, detail ? `${message} (${detail})` : message));
      if (linger && this.#lingering < LINGER_MAX) {
        lingering = true;
        this.#lingering++;
        await conn.closeWrite();
        await drain(conn, LINGER_BYTES);
      }
    } catch {
      // the peer is gone, or the time ran out
    } finally {
      clearTimeout(timer);
      if (lingering) this.#lingering--;
      this.#open.delete(conn);
      closeQuietly(conn);
      this.#refusing--;
      this.#roomWaiters.shift()?.();
    }
  }

  /** Closes every connection still being answered, and lets waiters for room go. */
  closeAll(): void {
    for (const c of this.#open) closeQuietly(c);
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  #note(kind: FrontRefusalKind, ip: string, detail?: string): void {
    const now = Date.now();
    const w = this.#logWindows.get(kind);
    if (w && now - w.since < LOG_WINDOW_MS) {
      w.suppressed++;
      return;
    }
    // A header timeout is also what an idle browser preconnect looks like: not worth a warning.
    const level = kind === "header_timeout" ? "debug" : "warn";
    this.#log[level]("refused a connection from {ip}: {kind}{detail}{more}", {
      ip,
      kind,
      detail: detail ? ` (${detail})` : "",
      more: w && w.suppressed > 0
        ? `; ${w.suppressed} more refusal(s) of this kind were not logged`
        : "",
    });
    this.#logWindows.set(kind, { since: now, suppressed: 0 });
  }
}

/**
 * A complete `Connection: close` response with a one-line text body; `extraHeaders` are whole
 * header lines, each ending in CRLF.
 */
export function httpResponse(status: number, message: string, extraHeaders = ""): Uint8Array {
  const body = message + "\n";
  const head = `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n` +
    "content-type: text/plain; charset=utf-8\r\n" + extraHeaders +
    `content-length: ${new TextEncoder().encode(body).byteLength}\r\n` +
    "connection: close\r\n\r\n";
  return new TextEncoder().encode(head + body);
}

/** Reads and discards until EOF or `maxBytes`. */
async function drain(conn: Deno.Conn, maxBytes: number): Promise<void> {
  const buf = new Uint8Array(4096);
  for (let total = 0; total < maxBytes;) {
    const n = await conn.read(buf);
    if (n === null) return;
    total += n;
  }
}
