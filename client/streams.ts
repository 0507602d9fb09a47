// Client data connections: keeps `--pool` multiplexed WebSockets open and bridges each stream locally.
// What the server asks for is capped per tunnel (see tunnel_gate.ts) and its text is never printed raw.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../shared/address.ts";
import { connectWithin } from "../shared/net.ts";
import { Mux } from "../shared/mux.ts";
import type { MuxStream, WindowBudget } from "../shared/mux_stream.ts";
import {
  MUX_KERNEL_UNSENT_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  type OpenExtra,
  streamPath,
} from "../shared/protocol.ts";
import type { HttpTunnels } from "./http/http_tunnels.ts";
import { serveUdpFlow, type UdpCounters } from "./udp_flow.ts";
import { printable } from "../shared/sanitize.ts";
import { limitUnsentBytes } from "../shared/tcp_reset.ts";
import type { ClientConfig, TunnelSpec } from "./config.ts";
import type { TunnelGates } from "./tunnel_gate.ts";
import { dialServer } from "./ws_dial.ts";
import { Backoff } from "../shared/backoff.ts";
import { errorText } from "../shared/error_text.ts";

/** Counters the client keeps about its streams. */
export interface StreamCounters {
  opened: number;
  active: number;
  localDialFailures: number;
  /** Streams refused because their tunnel had `--max-connections` open. */
  refused: number;
  bytesToLocal: number;
  bytesFromLocal: number;
}

/** Bytes all receive windows of the client may grow by beyond the initial one. */
const CLIENT_BUDGET_BYTES = 64 * 1024 * 1024;

/** A process-wide budget for grown receive windows. */
class SimpleBudget implements WindowBudget {
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
async function dialLocal(spec: TunnelSpec, timeoutMs: number): Promise<Deno.TcpConn> {
  const addr = formatHostPort(spec.localHost, spec.localPort);
  try {
    const conn = await connectWithin(
      Deno.connect({ hostname: spec.localHost, port: spec.localPort }),
      timeoutMs,
    );
    conn.setNoDelay(true);
    return conn;
  } catch (e) {
    throw new Error(`cannot connect to local service ${addr}: ${(e as Error).message}`);
  }
}

/** The data connections of one control session. */
export class DataPool {
  readonly #config: ClientConfig;
  readonly #credential: string;
  readonly #log: Logger;
  readonly #counters: StreamCounters;
  readonly #tunnels: Map<string, TunnelSpec>;
  readonly #gates: TunnelGates;
  readonly #http: HttpTunnels;
  /** What this client's UDP flows carried and dropped. */
  readonly #udp: UdpCounters = { datagramsToLocal: 0, datagramsFromLocal: 0, dropped: 0 };
  /** Open data connections. */
  readonly muxes = new Set<Mux>();
  #dialing = 0;
  #closed = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Re-dials after a failure back off, never at once, so a refusing server is not hammered. */
  readonly #retries = new Backoff({ baseMs: 250, capMs: 30_000, minFraction: 0.5 });

  constructor(
    config: ClientConfig,
    sessionId: string,
    sessionSecret: string,
    tunnels: Map<string, TunnelSpec>,
    gates: TunnelGates,
    counters: StreamCounters,
    log: Logger,
    http: HttpTunnels,
  ) {
    this.#http = http;
    this.#config = config;
    this.#credential = `${sessionId}.${sessionSecret}`;
    this.#tunnels = tunnels;
    this.#gates = gates;
    this.#counters = counters;
    this.#log = log;
  }

  /** The open data connection with the fewest streams (for egress streams), or null. */
  pickMux(): Mux | null {
    let best: Mux | null = null;
    for (const m of this.muxes) {
      if (!m.closed && (best === null || m.size < best.size)) best = m;
    }
    return best;
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
    let ws;
    try {
      ws = await dialServer(
        this.#config,
        streamPath(this.#config.pathPrefix),
        this.#credential,
        MUX_MAX_MESSAGE_BYTES,
      );
    } catch (e) {
      const message = printable(errorText(e));
      this.#log.warn("cannot open a data connection: {message}", { message });
      this.#retryLater();
      return;
    }
    if (this.#closed) {
      ws.close(1000, "session closed").catch(() => {});
      return;
    }
    this.#retries.reset();
    limitUnsentBytes(ws.conn, MUX_KERNEL_UNSENT_BYTES);
    const mux: Mux = new Mux(ws, {
      role: "client",
      budget,
      onOpen: (stream, tunnel, remote, extra) => this.#bridge(mux, stream, tunnel, remote, extra),
      onClose: (why) => {
        this.muxes.delete(mux);
        if (!this.#closed) {
          // The reason may quote the server's close frame.
          const reason = printable(why);
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
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.fill();
    }, this.#retries.next());
  }

  /**
   * Bridges a stream the server opened to the tunnel's local service. A tunnel with
   * `--max-connections` streams open refuses the stream at once; otherwise it waits for one of the
   * tunnel's `LOCAL_DIALS_PER_TUNNEL` dial slots (queueing rather than refusing, so a burst, such
   * as the user connections a server held during a reconnect, is served in order, not dropped).
   */
  async #bridge(
    mux: Mux,
    stream: MuxStream,
    tunnelName: string,
    remoteText: string,
    extra: OpenExtra | undefined,
  ): Promise<void> {
    const counters = this.#counters;
    const spec = this.#tunnels.get(tunnelName);
    const gate = this.#gates.get(tunnelName);
    if (!spec || !gate) {
      stream.reset("bad_message", `this client has no tunnel named "${printable(tunnelName, 64)}"`);
      return;
    }
    if (!gate.enter()) {
      counters.refused++;
      stream.reset(
        "rate_limited",
        `the client has too many connections to ${spec.name} open (--max-connections ${gate.maxStreams})`,
      );
      if (gate.refused === 1 || gate.refused % 1000 === 0) {
        this.#log.warn(
          "{name}: {n} connections open, the --max-connections limit; refused {refused} so far",
          { name: spec.name, n: gate.streams, refused: gate.refused },
        );
      }
      return;
    }
    // The server's description of the user's address, shown only in logs.
    const remote = printable(remoteText, 128);
    /** Ends this stream's dial, or withdraws it from the queue. */
    let endDial = () => {};
    /** Wakes the wait for a dial slot when the stream ends while queued. */
    let wake = () => {};
    /**
     * A local connect is under way. A stream that ends meanwhile keeps its slots until the
     * connect settles, so the server cannot have more connects (or local connections) under
     * way by resetting streams than the caps allow.
     */
    let connecting = false;
    counters.opened++;
    counters.active++;
    stream.setHooks({
      onSent: (n) => (counters.bytesFromLocal += n),
      onReceived: (n) => (counters.bytesToLocal += n),
      onEnd: (end) => {
        counters.active--;
        if (!connecting) {
          endDial();
          gate.leave();
        }
        wake();
        if (!end.clean && end.kind !== "closed" && end.reason) {
          this.#log.debug("stream for {remote} ended: {reason}", {
            remote,
            reason: printable(end.reason),
          });
        }
        // A data connection of an ended session closes once its last stream is done.
        if (this.#closed && mux.size === 0) mux.close(1000, "session closed");
      },
    });
    if (spec.http) {
      // An HTTP visitor: the tunnel's engine answers it and keeps its own local connections.
      this.#http.serve(stream, spec.name, remote, extra);
      return;
    }
    if (spec.udp) {
      // One public source's datagrams: relayed from a UDP socket of this flow's own.
      serveUdpFlow(stream, { host: spec.localHost, port: spec.localPort }, this.#udp, this.#log);
      return;
    }
    await new Promise<void>((resolve) => {
      wake = resolve;
      endDial = gate.dial(resolve);
    });
    if (stream.ended) return;
    let conn: Deno.TcpConn;
    connecting = true;
    try {
      conn = await dialLocal(spec, this.#config.dialTimeoutMs);
    } catch (e) {
      connecting = false;
      endDial();
      if (stream.ended) {
        gate.leave();
        return;
      }
      counters.localDialFailures++;
      const message = (e as Error).message;
      this.#log.warn("{name}: {message} (user {remote})", { name: spec.name, message, remote });
      stream.reset("local_dial_failed", message, "local_dial");
      return;
    }
    connecting = false;
    endDial();
    if (stream.ended) {
      conn.close();
      gate.leave();
      return;
    }
    this.#log.debug("{name}: bridging {remote}", { name: spec.name, remote });
    stream.attach(conn);
  }
}
