// The request inspector's store: a ring buffer of HTTP exchanges, bounded by count and kept bytes.

/** A request or response head as received: header pairs in order, with their original case. */
export interface CapturedMessageHead {
  readonly headers: readonly (readonly [string, string])[];
}

/** A request line and its headers. */
export interface CapturedRequest extends CapturedMessageHead {
  readonly method: string;
  readonly target: string;
  readonly version: string;
}

/** A status line and its headers. */
export interface CapturedResponse extends CapturedMessageHead {
  readonly status: number;
  readonly statusText: string;
}

/** A kept body: at most `maxBodyBytes` of it; `bodyBytes` counts every byte seen. */
export interface CapturedBody {
  readonly body: Uint8Array;
  readonly bodyBytes: number;
  readonly truncated: boolean;
}

/** One request through a tunnel and what the local service answered (a snapshot). */
export interface CapturedExchange {
  /** Short unique id. */
  readonly id: string;
  /** Increasing with every captured exchange (also across `clear()`). */
  readonly seq: number;
  /** Tunnel name. */
  readonly tunnel: string;
  /** Visitor address "ip:port" ("replay" for replays). */
  readonly remote: string;
  /** Epoch ms. */
  readonly startedAt: number;
  /** Null while in flight. */
  readonly durationMs: number | null;
  readonly request: CapturedRequest & CapturedBody;
  readonly response: (CapturedResponse & CapturedBody) | null;
  /** Why the exchange failed, e.g. "local service refused the connection". */
  readonly error: string | null;
  /** The id of the exchange this one replays. */
  readonly replayOf: string | null;
  /** The local target URL, e.g. "http://127.0.0.1:3000". */
  readonly local: string;
}

/** What the forwarding engine reports about one exchange as it happens. */
export interface CaptureHandle {
  /** The new exchange's id. */
  readonly id: string;
  /** Decoded request body bytes; may be called many times. The bytes are copied. */
  requestBody(chunk: Uint8Array): void;
  /** The response head, once. */
  response(head: CapturedResponse): void;
  /** Decoded response body bytes; may be called many times. The bytes are copied. */
  responseBody(chunk: Uint8Array): void;
  /** Ends the exchange (with an error message when it failed); idempotent; sets `durationMs`. */
  end(error?: string): void;
}

/** Bounds of the store. */
export interface InspectorLimits {
  /** Most exchanges kept (default 200). */
  readonly maxEntries: number;
  /** Most body bytes kept over all exchanges (default 32 MiB). */
  readonly maxBytes: number;
  /** Most bytes kept of one body (default 256 KiB); the rest is counted, not kept. */
  readonly maxBodyBytes: number;
}

/** The default bounds. */
export const DEFAULT_INSPECTOR_LIMITS: InspectorLimits = Object.freeze({
  maxEntries: 200,
  maxBytes: 32 * 1024 * 1024,
  maxBodyBytes: 256 * 1024,
});

/** What `Capture.begin()` needs to know about a new exchange. */
export interface BeginInfo {
  readonly tunnel: string;
  readonly remote: string;
  readonly local: string;
  readonly request: CapturedRequest;
  readonly replayOf?: string;
}

/** A body as it arrives: copied chunks up to the cap, joined when read. */
class BodyBuffer {
  #chunks: Uint8Array[] = [];
  #kept = 0;
  #seen = 0;

  /** Keeps what fits under `cap`; returns how many bytes were kept now. */
  append(chunk: Uint8Array, cap: number): number {
    this.#seen += chunk.byteLength;
    const room = cap - this.#kept;
    if (room <= 0 || chunk.byteLength === 0) return 0;
    const part = chunk.byteLength <= room ? chunk.slice() : chunk.slice(0, room);
    this.#chunks.push(part);
    this.#kept += part.byteLength;
    return part.byteLength;
  }

  get kept(): number {
    return this.#kept;
  }

  /** The kept bytes as one array (joined once, then reused). */
  snapshot(): CapturedBody {
    if (this.#chunks.length > 1) {
      const all = new Uint8Array(this.#kept);
      let at = 0;
      for (const c of this.#chunks) {
        all.set(c, at);
        at += c.byteLength;
      }
      this.#chunks = [all];
    }
    return {
      body: this.#chunks[0] ?? new Uint8Array(0),
      bodyBytes: this.#seen,
      truncated: this.#seen > this.#kept,
    };
  }
}

/** The store's own, mutable record of an exchange. */
interface Entry {
  readonly id: string;
  readonly seq: number;
  readonly info: BeginInfo;
  readonly startedAt: number;
  durationMs: number | null;
  readonly requestBody: BodyBuffer;
  response: CapturedResponse | null;
  readonly responseBody: BodyBuffer;
  error: string | null;
  /** Cleared when the entry leaves the store: later reports about it are ignored. */
  live: boolean;
}

/**
 * The captured exchanges, newest last inside, newest first out. Adding an exchange or body bytes
 * evicts the oldest exchanges (in flight or not) until both bounds hold again.
 */
export class Capture {
  readonly limits: InspectorLimits;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>(); // insertion order: oldest first
  readonly #subscribers = new Set<(e: CapturedExchange) => void>();
  #bytes = 0;
  #seq = 0;

  /** `now` is the clock for `startedAt` and `durationMs` (injectable for tests). */
  constructor(limits: Partial<InspectorLimits> = {}, now: () => number = Date.now) {
    const l = { ...DEFAULT_INSPECTOR_LIMITS, ...limits };
    for (const [name, value] of Object.entries(l)) {
      if (!Number.isSafeInteger(value) || value < (name === "maxEntries" ? 1 : 0)) {
        throw new RangeError(`invalid inspector limit ${name}: ${value}`);
      }
    }
    this.limits = Object.freeze(l);
    this.#now = now;
  }

  /** Starts capturing an exchange; the engine reports the rest through the returned handle. */
  begin(info: BeginInfo): CaptureHandle {
    const entry: Entry = {
      id: this.#newId(),
      seq: ++this.#seq,
      info: {
        tunnel: info.tunnel,
        remote: info.remote,
        local: info.local,
        request: copyRequest(info.request),
        replayOf: info.replayOf,
      },
      startedAt: this.#now(),
      durationMs: null,
      requestBody: new BodyBuffer(),
      response: null,
      responseBody: new BodyBuffer(),
      error: null,
      live: true,
    };
    this.#entries.set(entry.id, entry);
    this.#evict();
    this.#changed(entry);
    const ended = () => entry.durationMs !== null || !entry.live;
    return {
      id: entry.id,
      requestBody: (chunk) => {
        if (!ended()) this.#addBytes(entry.requestBody.append(chunk, this.limits.maxBodyBytes));
      },
      response: (head) => {
        if (ended() || entry.response) return;
        entry.response = {
          status: head.status,
          statusText: head.statusText,
          headers: copyHeaders(head.headers),
        };
        this.#changed(entry);
      },
      responseBody: (chunk) => {
        if (!ended()) this.#addBytes(entry.responseBody.append(chunk, this.limits.maxBodyBytes));
      },
      end: (error) => {
        if (ended()) return;
        entry.durationMs = Math.max(0, this.#now() - entry.startedAt);
        entry.error = error ?? null;
        this.#changed(entry);
      },
    };
  }

  /** Every kept exchange, newest first. */
  list(): CapturedExchange[] {
    return [...this.#entries.values()].reverse().map(snapshot);
  }

  /** One exchange by id, or null when it is unknown or was evicted. */
  get(id: string): CapturedExchange | null {
    const e = this.#entries.get(id);
    return e ? snapshot(e) : null;
  }

  /** Forgets every exchange; reports about in-flight ones are ignored from now on. */
  clear(): void {
    for (const e of this.#entries.values()) e.live = false;
    this.#entries.clear();
    this.#bytes = 0;
  }

  /** How many exchanges and body bytes are kept now. */
  get usage(): { entries: number; bytes: number } {
    return { entries: this.#entries.size, bytes: this.#bytes };
  }

  /**
   * Calls `fn` on every change (new entry, response, end) with a snapshot of the exchange; body
   * bytes alone do not notify. Returns an unsubscribe function.
   */
  subscribe(fn: (e: CapturedExchange) => void): () => void {
    // A wrapper, so the same function subscribed twice is also called (and removed) twice.
    const wrapped = (e: CapturedExchange) => fn(e);
    this.#subscribers.add(wrapped);
    return () => void this.#subscribers.delete(wrapped);
  }

  #addBytes(n: number): void {
    if (n === 0) return;
    this.#bytes += n;
    this.#evict();
  }

  #evict(): void {
    for (const [id, e] of this.#entries) {
      if (this.#entries.size <= this.limits.maxEntries && this.#bytes <= this.limits.maxBytes) {
        return;
      }
      this.#entries.delete(id);
      e.live = false;
      this.#bytes -= e.requestBody.kept + e.responseBody.kept;
    }
  }

  #changed(entry: Entry): void {
    if (!entry.live || this.#subscribers.size === 0) return;
    const snap = snapshot(entry);
    for (const fn of [...this.#subscribers]) {
      try {
        fn(snap);
      } catch {
        // A failing subscriber (e.g. a closed page) must not break the engine's request.
      }
    }
  }

  #newId(): string {
    const bytes = new Uint8Array(5);
    for (;;) {
      crypto.getRandomValues(bytes);
      const id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      if (!this.#entries.has(id)) return id;
    }
  }
}

function copyHeaders(
  headers: readonly (readonly [string, string])[],
): readonly (readonly [string, string])[] {
  return headers.map(([k, v]) => [k, v] as const);
}

function copyRequest(r: CapturedRequest): CapturedRequest {
  return {
    method: r.method,
    target: r.target,
    version: r.version,
    headers: copyHeaders(r.headers),
  };
}

function snapshot(e: Entry): CapturedExchange {
  return {
    id: e.id,
    seq: e.seq,
    tunnel: e.info.tunnel,
    remote: e.info.remote,
    startedAt: e.startedAt,
    durationMs: e.durationMs,
    request: { ...e.info.request, ...e.requestBody.snapshot() },
    response: e.response ? { ...e.response, ...e.responseBody.snapshot() } : null,
    error: e.error,
    replayOf: e.info.replayOf ?? null,
    local: e.info.local,
  };
}
