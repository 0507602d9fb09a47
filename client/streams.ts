// Client data streams: the pool of idle streams, claimed streams, dialing the local service.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../shared/address.ts";
import {
  CLAIM_HEADER,
  CloseCode,
  MAX_POOL_PER_SESSION,
  streamPath,
  SUBPROTOCOL,
} from "../shared/protocol.ts";
import { StreamBridge } from "../shared/stream_bridge.ts";
import type { ClientConfig, TunnelSpec } from "./config.ts";

/** Counters the client keeps about its streams. */
export interface StreamCounters {
  opened: number;
  active: number;
  localDialFailures: number;
  bytesToLocal: number;
  bytesFromLocal: number;
}

/** Connects to a local service, giving up after `timeoutMs`. */
export async function dialLocal(spec: TunnelSpec, timeoutMs: number): Promise<Deno.TcpConn> {
  const addr = formatHostPort(spec.localHost, spec.localPort);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = Deno.connect({ hostname: spec.localHost, port: spec.localPort });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    const conn = await Promise.race([attempt, timeout]);
    conn.setNoDelay(true);
    return conn;
  } catch (e) {
    attempt.then((c) => c.close(), () => {});
    throw new Error(`cannot connect to local service ${addr}: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** The streams of one control session. */
export class StreamPool {
  readonly #config: ClientConfig;
  readonly #client: Deno.HttpClient | undefined;
  readonly #credential: string;
  readonly #log: Logger;
  readonly #counters: StreamCounters;
  readonly #tunnels: Map<string, TunnelSpec>;
  /** Every stream not yet ended (idle or bridged), for shutdown. */
  readonly all = new Set<StreamBridge>();
  #idle = 0;
  #closed = false;
  #refillTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    config: ClientConfig,
    client: Deno.HttpClient | undefined,
    sessionId: string,
    sessionSecret: string,
    tunnels: Map<string, TunnelSpec>,
    counters: StreamCounters,
    log: Logger,
  ) {
    this.#config = config;
    this.#client = client;
    this.#credential = `${sessionId}.${sessionSecret}`;
    this.#tunnels = tunnels;
    this.#counters = counters;
    this.#log = log;
  }

  /** Opens idle streams until the pool holds `config.pool`. */
  fill(): void {
    while (!this.#closed && this.#idle < this.#config.pool) this.#open(null);
  }

  /** Opens a stream for a connection the server announced with `open`. */
  claim(claimId: string): void {
    if (!this.#closed) this.#open(claimId);
  }

  /** Stops opening streams; closes idle ones. Bridged streams keep running. */
  stop(): void {
    this.#closed = true;
    clearTimeout(this.#refillTimer);
    for (const s of this.all) if (s.idle) s.abort("session closed");
  }

  #open(claimId: string | null): void {
    const url = new URL(streamPath(this.#config.pathPrefix), this.#config.server);
    const headers: Record<string, string> = { authorization: `Bearer ${this.#credential}` };
    if (claimId !== null) headers[CLAIM_HEADER] = claimId;
    const ws = new WebSocket(url, { protocols: [SUBPROTOCOL], headers, client: this.#client });
    ws.binaryType = "arraybuffer";
    /** Counted in `#idle`: waiting for an `open`. */
    let pooled = claimId === null;
    if (pooled) this.#idle++;
    /** Carrying a connection (counted in `active`). */
    let assigned = false;
    /** The server offered stream reuse in this connection's `open`. */
    let reusable = false;
    const counters = this.#counters;
    const stream = new StreamBridge(ws, {
      onOpen: (msg) => {
        if (assigned) return;
        assigned = true;
        reusable = msg.reuse === true;
        if (pooled) {
          pooled = false;
          this.#idle--;
          this.fill();
        }
        this.#bridge(stream, msg.tunnel, msg.remote).catch((e) => {
          this.#log.error("bridging a stream failed: {error}", { error: String(e) });
          stream.abort(String(e));
        });
      },
      onSent: (n) => (counters.bytesFromLocal += n),
      onReceived: (n) => (counters.bytesToLocal += n),
      onEnd: (end) => {
        if (assigned) {
          assigned = false;
          counters.active--;
        }
        // Reused: `offerReuse` already counted it as idle again.
        if (end.reused) return;
        this.all.delete(stream);
        if (pooled) {
          pooled = false;
          this.#idle--;
          // A pooled stream died before use (server restart, pool full): refill later, not in a loop.
          if (!this.#closed && this.#refillTimer === undefined) {
            this.#refillTimer = setTimeout(() => {
              this.#refillTimer = undefined;
              this.fill();
            }, 1000);
          }
        }
        if (!end.clean && end.kind !== "closed" && end.reason) {
          this.#log.debug("stream ended: {reason}", { reason: end.reason });
        }
      },
    });
    // A stream whose connection ended cleanly goes back to the pool (the server sees `idle`) if
    // the server offered it (`reuse` in `open`) and the pool is not full. The limit is one above
    // `--pool`: the pool was refilled when this stream was assigned, so with `--pool` itself as
    // the limit the pool would always be full by now and no stream would ever be reused. With
    // `--pool 0` nothing is kept, as before.
    stream.offerReuse = () => {
      const pool = this.#config.pool;
      if (
        !reusable || this.#closed || pool === 0 || this.#idle > pool ||
        this.#idle >= MAX_POOL_PER_SESSION
      ) {
        return false;
      }
      pooled = true;
      this.#idle++;
      return true;
    };
    this.all.add(stream);
  }

  async #bridge(stream: StreamBridge, tunnelName: string, remote: string): Promise<void> {
    this.#counters.opened++;
    this.#counters.active++;
    const spec = this.#tunnels.get(tunnelName);
    if (!spec) {
      stream.fail(
        "bad_message",
        `this client has no tunnel named "${tunnelName}"`,
        CloseCode.protocolError,
      );
      return;
    }
    let conn: Deno.TcpConn;
    try {
      conn = await dialLocal(spec, this.#config.dialTimeoutMs);
    } catch (e) {
      this.#counters.localDialFailures++;
      const message = (e as Error).message;
      this.#log.warn("{name}: {message} (user {remote})", { name: spec.name, message, remote });
      stream.fail("local_dial_failed", message, CloseCode.localDialFailed);
      return;
    }
    if (stream.ended) {
      conn.close();
      return;
    }
    this.#log.debug("{name}: bridging {remote}", { name: spec.name, remote });
    stream.attach(conn);
  }
}
