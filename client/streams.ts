// Client data connections: keeps `--pool` multiplexed WebSockets open and bridges each stream locally.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../shared/address.ts";
import { Mux } from "../shared/mux.ts";
import type { MuxStream, WindowBudget } from "../shared/mux_stream.ts";
import {
  MUX_KERNEL_UNSENT_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  streamPath,
  SUBPROTOCOL,
} from "../shared/protocol.ts";
import { limitUnsentBytes } from "../shared/tcp_reset.ts";
import type { ClientConfig, TunnelSpec } from "./config.ts";
import { DialError, dialWebSocket } from "./ws_dial.ts";

/** Counters the client keeps about its streams. */
export interface StreamCounters {
  opened: number;
  active: number;
  localDialFailures: number;
  bytesToLocal: number;
  bytesFromLocal: number;
}

/** Bytes all receive windows of the client may grow by beyond the initial one. */
const CLIENT_BUDGET_BYTES = 64 * 1024 * 1024;

/** A process-wide budget for grown receive windows. */
export class SimpleBudget implements WindowBudget {
  #left: number;
  constructor(bytes: number) {
    this.#left = bytes;
  }
  take(bytes: number): boolean {
    if (bytes > this.#left) return false;
    this.#left -= bytes;
    return true;
  }
  give(bytes: number): void {
    this.#left += bytes;
  }
}

const budget = new SimpleBudget(CLIENT_BUDGET_BYTES);

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

/** The data connections of one control session. */
export class DataPool {
  readonly #config: ClientConfig;
  readonly #credential: string;
  readonly #log: Logger;
  readonly #counters: StreamCounters;
  readonly #tunnels: Map<string, TunnelSpec>;
  /** Open data connections. */
  readonly muxes = new Set<Mux>();
  #dialing = 0;
  #closed = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;

  constructor(
    config: ClientConfig,
    sessionId: string,
    sessionSecret: string,
    tunnels: Map<string, TunnelSpec>,
    counters: StreamCounters,
    log: Logger,
  ) {
    this.#config = config;
    this.#credential = `${sessionId}.${sessionSecret}`;
    this.#tunnels = tunnels;
    this.#counters = counters;
    this.#log = log;
  }

  /** Streams open on every data connection. */
  get streams(): number {
    let n = 0;
    for (const m of this.muxes) n += m.size;
    return n;
  }

  /** Opens data connections until `config.pool` are open or being opened. */
  fill(): void {
    while (!this.#closed && this.muxes.size + this.#dialing < this.#config.pool) {
      this.#dialing++;
      this.#open().finally(() => this.#dialing--);
    }
  }

  /**
   * Stops opening data connections. Connections without streams close now; the others close as
   * soon as their last stream ends (up to `close()`), so a reconnect loses no transfer.
   */
  stop(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    for (const m of this.muxes) if (m.size === 0) m.close(1000, "session closed");
  }

  /** Closes every data connection now (their streams are reset). */
  close(): void {
    this.stop();
    for (const m of [...this.muxes]) m.close(1000, "client stopped");
  }

  async #open(): Promise<void> {
    const url = new URL(streamPath(this.#config.pathPrefix), this.#config.server);
    let ws;
    try {
      ({ ws } = await dialWebSocket({
        url,
        headers: { authorization: `Bearer ${this.#credential}` },
        protocols: [SUBPROTOCOL],
        caCert: this.#config.caCert,
        proxy: this.#config.proxy,
        timeoutMs: this.#config.dialTimeoutMs,
        maxMessageBytes: MUX_MAX_MESSAGE_BYTES,
      }));
    } catch (e) {
      const message = e instanceof DialError || e instanceof Error ? e.message : String(e);
      this.#log.warn("cannot open a data connection: {message}", { message });
      this.#retryLater();
      return;
    }
    if (this.#closed) {
      ws.close(1000, "session closed").catch(() => {});
      return;
    }
    this.#failures = 0;
    limitUnsentBytes(ws.conn, MUX_KERNEL_UNSENT_BYTES);
    const mux: Mux = new Mux(ws, {
      role: "client",
      budget,
      onOpen: (stream, tunnel, remote) => this.#bridge(mux, stream, tunnel, remote),
      onClose: (reason) => {
        this.muxes.delete(mux);
        if (!this.#closed) {
          this.#log.info("data connection closed ({reason}); opening another", { reason });
          this.#retryLater();
        }
      },
    });
    this.muxes.add(mux);
  }

  /** Re-dials after a failure, backing off so a refusing server is not hammered. */
  #retryLater(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    const wait = Math.min(30_000, 250 * 2 ** Math.min(this.#failures++, 7));
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.fill();
    }, wait * (0.5 + Math.random() / 2));
  }

  async #bridge(mux: Mux, stream: MuxStream, tunnelName: string, remote: string): Promise<void> {
    const counters = this.#counters;
    counters.opened++;
    counters.active++;
    stream.setHooks({
      onSent: (n) => (counters.bytesFromLocal += n),
      onReceived: (n) => (counters.bytesToLocal += n),
      onEnd: (end) => {
        counters.active--;
        if (!end.clean && end.kind !== "closed" && end.reason) {
          this.#log.debug("stream for {remote} ended: {reason}", { remote, reason: end.reason });
        }
        // A data connection of an ended session closes once its last stream is done.
        if (this.#closed && mux.size === 0) mux.close(1000, "session closed");
      },
    });
    const spec = this.#tunnels.get(tunnelName);
    if (!spec) {
      stream.reset("bad_message", `this client has no tunnel named "${tunnelName}"`);
      return;
    }
    let conn: Deno.TcpConn;
    try {
      conn = await dialLocal(spec, this.#config.dialTimeoutMs);
    } catch (e) {
      counters.localDialFailures++;
      const message = (e as Error).message;
      this.#log.warn("{name}: {message} (user {remote})", { name: spec.name, message, remote });
      stream.reset("local_dial_failed", message, "local_dial");
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
