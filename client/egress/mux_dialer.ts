// The local egress proxy's streams, carried on the client's data connections: `CONNECT` to the
// server, which dials the destination (or opens a UDP association) and answers `CONNECTED` or
// `RESET`.
import { ConnectRefused, type Mux } from "../../shared/mux.ts";
import type { MuxStream, StreamHooks } from "../../shared/mux_stream.ts";
import { type EgressService, type ErrorCode, MAX_DATAGRAM_BYTES } from "../../shared/protocol.ts";
import { DatagramReader, frameDatagram } from "../../shared/datagrams.ts";
import { memoryPipe } from "../../shared/mem_pipe.ts";
import { closeQuietly } from "../../shared/net.ts";
import { PrefixedConn } from "../../shared/prefixed_conn.ts";
import { printable } from "../../shared/sanitize.ts";
import {
  type EgressDatagrams,
  type EgressDialer,
  type EgressFailure,
  EgressRefused,
  type EgressStream,
} from "./egress_types.ts";

/** Longest wait for the server's answer to a `CONNECT` (it dials within 10 s itself). */
export const EGRESS_ANSWER_TIMEOUT_MS = 30_000;
/** Longest wait for a data connection while the client (re)connects. */
export const EGRESS_DATA_WAIT_MS = 15_000;

/** Where the dialer finds a data connection (the current session's pool), or null for none yet. */
export type MuxSource = () => Mux | null;

/** Counters of the egress proxy (for the status page). */
export interface EgressCounters {
  opened: number;
  active: number;
  refused: number;
  bytesUp: number;
  bytesDown: number;
}

const FAILURES: Partial<Record<ErrorCode, EgressFailure>> = {
  egress_denied: "denied",
  egress_unreachable: "unreachable",
  egress_refused: "refused",
  egress_timeout: "timeout",
  rate_limited: "denied",
  quota_exceeded: "denied",
  unauthorized: "denied",
};

/** Opens egress streams on whatever data connection the session has. */
export class MuxDialer implements EgressDialer {
  readonly #source: MuxSource;
  readonly counters: EgressCounters = {
    opened: 0,
    active: 0,
    refused: 0,
    bytesUp: 0,
    bytesDown: 0,
  };

  constructor(source: MuxSource) {
    this.#source = source;
  }

  async open(host: string, port: number): Promise<EgressStream> {
    const { stream, address } = await this.#connect(host, port, "tcp");
    return {
      address: printable(address, 128),
      attach(conn: Deno.Conn, initial?: Uint8Array) {
        stream.attach(
          initial && initial.byteLength > 0 ? new PrefixedConn(conn, initial).asConn() : conn,
        );
      },
      abandon() {
        stream.reset("internal", "the local client went away");
      },
    };
  }

  /**
   * A UDP association on the server: one stream whose datagrams (each framed with its length)
   * are `ATYP ADDR PORT DATA`. Datagrams wait in bounded queues; past them they are dropped.
   */
  async openUdp(): Promise<EgressDatagrams> {
    const { stream } = await this.#connect("", 0, "udp");
    const [streamSide, ours] = memoryPipe();
    stream.attach(streamSide.asConn());
    const reader = new DatagramReader(ours.asConn());
    let closed = false;
    return {
      send(datagram: Uint8Array): boolean {
        if (datagram.byteLength > MAX_DATAGRAM_BYTES) return false;
        return ours.offer(frameDatagram(datagram));
      },
      async receive(): Promise<Uint8Array | null> {
        try {
          return await reader.next();
        } catch {
          return null; // reset, or broken framing: the association is over either way
        }
      },
      close() {
        if (closed) return;
        closed = true;
        ours.closeWrite().catch(() => {});
        closeQuietly(ours);
      },
    };
  }

  /** Opens a stream and waits for the server's answer: the address it reached, or a refusal. */
  async #connect(
    host: string,
    port: number,
    service: EgressService,
  ): Promise<{ stream: MuxStream; address: string }> {
    const mux = await this.#waitForMux();
    const counters = this.counters;
    const hooks: StreamHooks = {
      onSent: (n) => (counters.bytesUp += n),
      onReceived: (n) => (counters.bytesDown += n),
      onEnd: () => counters.active--,
    };
    let opened;
    try {
      opened = mux.connect(host, port, hooks, service);
    } catch (e) {
      throw new EgressRefused("failed", `cannot open a stream: ${(e as Error).message}`);
    }
    counters.opened++;
    counters.active++;
    const { stream, connected } = opened;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new EgressRefused("timeout", "the mport server did not answer in time")),
        EGRESS_ANSWER_TIMEOUT_MS,
      );
    });
    let address: string;
    try {
      address = await Promise.race([connected, late]);
    } catch (e) {
      counters.refused++;
      if (!stream.ended) stream.reset("internal", "gave up waiting for the server");
      if (e instanceof EgressRefused) throw e;
      const r = e as ConnectRefused;
      const message = printable(r.message ?? String(e), 300);
      throw new EgressRefused(
        r instanceof ConnectRefused ? FAILURES[r.code] ?? "failed" : "failed",
        message,
      );
    } finally {
      clearTimeout(timer);
    }
    return { stream, address };
  }

  /** The current data connection; waits a while for one when the client is reconnecting. */
  async #waitForMux(): Promise<Mux> {
    const deadline = Date.now() + EGRESS_DATA_WAIT_MS;
    for (;;) {
      const mux = this.#source();
      if (mux && !mux.closed) return mux;
      if (Date.now() >= deadline) {
        throw new EgressRefused("failed", "not connected to the mport server (it is reconnecting)");
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
