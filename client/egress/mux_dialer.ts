// The local egress proxy's streams, carried on the client's data connections: `CONNECT` to the
// server, which dials the destination and answers `CONNECTED` or `RESET`.
import { ConnectRefused, type Mux } from "../../shared/mux.ts";
import type { StreamHooks } from "../../shared/mux_stream.ts";
import type { ErrorCode } from "../../shared/protocol.ts";
import { PrefixedConn } from "../../shared/prefixed_conn.ts";
import { printable } from "../../shared/sanitize.ts";
import {
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
    const mux = await this.#waitForMux();
    const counters = this.counters;
    const hooks: StreamHooks = {
      onSent: (n) => (counters.bytesUp += n),
      onReceived: (n) => (counters.bytesDown += n),
      onEnd: () => counters.active--,
    };
    let opened;
    try {
      opened = mux.connect(host, port, hooks);
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
