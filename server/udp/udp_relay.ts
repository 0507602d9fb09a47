// UDP tunnels' public side: datagrams from each source address become one flow, carried as a
// stream to the client (each datagram framed by its length), and the replies go back to it.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../../shared/address.ts";
import { errorText } from "../../shared/error_text.ts";
import { memoryPipe, type PipeEnd } from "../../shared/mem_pipe.ts";
import type { MuxStream } from "../../shared/mux_stream.ts";
import { closeQuietly } from "../../shared/net.ts";
import { DatagramReader, frameDatagram } from "../../shared/datagrams.ts";
import type { UsageMeter } from "../accounts/usage.ts";
import type { Stats } from "../stats.ts";
import type { Tunnel } from "../tunnels.ts";

/** Flows (source addresses) a UDP tunnel keeps at once; datagrams from more are dropped. */
export const MAX_UDP_FLOWS = 1024;
/**
 * A new flow waits this long for the client's data connection (it is reconnecting, or just
 * started), its datagrams queued (up to the flow's queue), before it is given up.
 */
export const UDP_HOLD_MS = 10_000;
/** Biggest datagram received (IPv4's UDP limit): one buffer of it is reused for every receive. */
const RECEIVE_BYTES = 65_536;

/** Counters of every UDP tunnel, for /metrics. */
export class UdpStats {
  datagramsIn = 0;
  datagramsOut = 0;
  dropped = 0;
  flowsActive = 0;
  flowsOpened = 0;

  prometheus(): string[] {
    return [
      "# HELP mport_udp_datagrams_total Datagrams through UDP tunnels (in: from the public side).",
      "# TYPE mport_udp_datagrams_total counter",
      `mport_udp_datagrams_total{direction="in"} ${this.datagramsIn}`,
      `mport_udp_datagrams_total{direction="out"} ${this.datagramsOut}`,
      "# HELP mport_udp_datagrams_dropped_total Datagrams dropped: a flow's queue was full, too many flows, or no client.",
      "# TYPE mport_udp_datagrams_dropped_total counter",
      `mport_udp_datagrams_dropped_total ${this.dropped}`,
      "# HELP mport_udp_flows_active Source addresses with a flow open now.",
      "# TYPE mport_udp_flows_active gauge",
      `mport_udp_flows_active ${this.flowsActive}`,
      "# HELP mport_udp_flows_opened_total Flows opened.",
      "# TYPE mport_udp_flows_opened_total counter",
      `mport_udp_flows_opened_total ${this.flowsOpened}`,
    ];
  }
}

/** What the relay needs. */
export interface UdpRelayDeps {
  readonly stats: Stats;
  readonly udp: UdpStats;
  readonly usage: UsageMeter;
  readonly log: Logger;
  /** A flow with no datagram either way for this long ends. */
  readonly idleMs: number;
  readonly now?: () => number;
}

interface Flow {
  readonly key: string;
  readonly addr: Deno.NetAddr;
  readonly pipe: PipeEnd;
  /** The pipe's other end, which the stream reads once there is one. */
  readonly streamSide: PipeEnd;
  stream: MuxStream | null;
  readonly created: number;
  last: number;
  ended: boolean;
}

/** Relays one UDP tunnel until its socket closes. */
export class UdpRelay {
  readonly #tunnel: Tunnel;
  readonly #socket: Deno.DatagramConn;
  readonly #d: UdpRelayDeps;
  readonly #flows = new Map<string, Flow>();
  readonly #now: () => number;
  #sweep: ReturnType<typeof setInterval> | undefined;
  /** Flows waiting for a data connection. */
  readonly #waiting = new Set<Flow>();
  #retry: ReturnType<typeof setTimeout> | undefined;

  constructor(tunnel: Tunnel, deps: UdpRelayDeps) {
    if (!tunnel.socket) throw new TypeError("not a UDP tunnel");
    this.#tunnel = tunnel;
    this.#socket = tunnel.socket;
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
  }

  /** Receives until the tunnel's socket closes; ends every flow then. */
  async run(): Promise<void> {
    this.#sweep = setInterval(
      () => this.#expire(),
      Math.max(100, Math.min(5_000, this.#d.idleMs / 2)),
    );
    // One buffer for every receive: without one Deno allocates 64 KiB per datagram.
    const buf = new Uint8Array(RECEIVE_BYTES);
    try {
      for (;;) {
        let got: [Uint8Array, Deno.Addr];
        try {
          got = await this.#socket.receive(buf);
        } catch (e) {
          if (this.#tunnel.closed || e instanceof Deno.errors.BadResource) return;
          this.#d.log.warn("UDP receive on port {port} failed: {error}", {
            port: this.#tunnel.port,
            error: errorText(e),
          });
          continue;
        }
        this.#onDatagram(got[0], got[1] as Deno.NetAddr);
      }
    } finally {
      clearInterval(this.#sweep);
      clearTimeout(this.#retry);
      for (const f of [...this.#flows.values()]) this.#end(f);
    }
  }

  #onDatagram(data: Uint8Array, addr: Deno.NetAddr): void {
    const d = this.#d;
    d.udp.datagramsIn++;
    const key = formatHostPort(addr.hostname, addr.port);
    let flow = this.#flows.get(key);
    if (!flow) {
      const opened = this.#open(key, addr);
      if (!opened) {
        d.udp.dropped++;
        return;
      }
      flow = opened;
    }
    flow.last = this.#now();
    if (!flow.pipe.offer(frameDatagram(data))) d.udp.dropped++;
  }

  /** A new flow: a stream on the client's data connection now, or as soon as there is one. */
  #open(key: string, addr: Deno.NetAddr): Flow | null {
    if (this.#flows.size >= MAX_UDP_FLOWS) return null;
    const [streamSide, flowSide] = memoryPipe();
    const now = this.#now();
    const flow: Flow = {
      key,
      addr,
      pipe: flowSide,
      streamSide,
      stream: null,
      created: now,
      last: now,
      ended: false,
    };
    this.#flows.set(key, flow);
    this.#d.udp.flowsActive++;
    this.#d.udp.flowsOpened++;
    this.#replies(flow);
    if (!this.#attach(flow)) {
      // No data connection yet (the client starts or reconnects): the datagrams wait in the
      // flow's queue, as TCP tunnels hold their connections.
      this.#waiting.add(flow);
      this.#retry ??= setTimeout(() => this.#attachWaiting(), 50);
    }
    return flow;
  }

  /** Opens the flow's stream on the client's current data connection; false when it has none. */
  #attach(flow: Flow): boolean {
    const t = this.#tunnel;
    const mux = t.session?.pickMux() ?? null;
    if (!mux) return false;
    const d = this.#d;
    const meter = d.usage.meter(t.userId, t.userName, t.name);
    try {
      flow.stream = mux.open(t.name, flow.key, flow.streamSide.asConn(), {
        onSent: (n) => {
          d.stats.bytesIn += n;
          t.bytesIn += n;
          meter.bytesIn(n);
        },
        onReceived: (n) => {
          d.stats.bytesOut += n;
          t.bytesOut += n;
          meter.bytesOut(n);
        },
        onEnd: () => this.#end(flow),
      });
    } catch (e) {
      d.log.warn("cannot open a stream for UDP source {src} on {name}: {error}", {
        src: flow.key,
        name: t.name,
        error: errorText(e),
      });
      return false;
    }
    t.active.add(flow.stream);
    d.usage.connection(t.userId, t.name);
    return true;
  }

  #attachWaiting(): void {
    this.#retry = undefined;
    const now = this.#now();
    for (const f of [...this.#waiting]) {
      if (f.ended) {
        this.#waiting.delete(f);
      } else if (this.#attach(f)) {
        this.#waiting.delete(f);
      } else if (now - f.created > UDP_HOLD_MS) {
        this.#waiting.delete(f);
        this.#end(f);
      }
    }
    if (this.#waiting.size > 0) this.#retry = setTimeout(() => this.#attachWaiting(), 50);
  }

  /** Sends the client's datagrams back to the flow's source. */
  async #replies(flow: Flow): Promise<void> {
    const reader = new DatagramReader(flow.pipe.asConn());
    try {
      for (;;) {
        const datagram = await reader.next();
        if (datagram === null) break;
        flow.last = this.#now();
        try {
          await this.#socket.send(datagram, flow.addr);
          this.#d.udp.datagramsOut++;
        } catch {
          this.#d.udp.dropped++;
        }
      }
    } catch {
      // the flow was reset or the client broke the framing: it ends below
    }
    this.#end(flow);
  }

  #expire(): void {
    const cutoff = this.#now() - this.#d.idleMs;
    for (const f of [...this.#flows.values()]) if (f.last < cutoff) this.#end(f);
  }

  /** Ends a flow: a clean EOF to the client, then this side is closed. */
  #end(flow: Flow): void {
    if (flow.ended) return;
    flow.ended = true;
    this.#flows.delete(flow.key);
    this.#waiting.delete(flow);
    this.#d.udp.flowsActive--;
    if (flow.stream) this.#tunnel.active.delete(flow.stream);
    flow.pipe.closeWrite().catch(() => {});
    closeQuietly(flow.pipe);
    // A flow that never got its stream: nothing reads the other end.
    if (!flow.stream) closeQuietly(flow.streamSide);
  }
}
