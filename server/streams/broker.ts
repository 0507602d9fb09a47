// Pairs public connections with the client: each becomes a stream on one of its data connections.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../../shared/address.ts";
import { formatSize } from "../../shared/units.ts";
import type { Mux } from "../../shared/mux.ts";
import type { MuxStream, StreamHooks } from "../../shared/mux_stream.ts";
import type { OpenExtra } from "../../shared/protocol.ts";
import { resetConn } from "../../shared/tcp_reset.ts";
import { answerAndClose, type ErrorPage } from "../../shared/http_pages.ts";
import type { ServerConfig } from "../config.ts";
import type { UsageMeter } from "../accounts/usage.ts";
import type { Stats } from "../stats.ts";
import type { PendingConn, Tunnel } from "../tunnels.ts";

/** What the broker needs from a control session. */
export interface BrokerSession {
  readonly id: string;
  readonly owner: string;
  /** Tunnels this session serves. */
  tunnels(): Iterable<Tunnel>;
  /** The open data connection with the fewest streams, or null while there is none. */
  pickMux(): Mux | null;
  /** Tells the client something it should show its user (e.g. quota reached). */
  notice(code: "quota_exceeded", message: string): void;
}

/** Pairs public connections with client streams and counts what flows. */
export class Broker {
  readonly #config: ServerConfig;
  readonly #stats: Stats;
  readonly #log: Logger;
  readonly #perOwner = new Map<string, number>();
  readonly #now: () => number;
  readonly #usage: UsageMeter;
  /** Every bridged public connection, for shutdown. */
  readonly bridges = new Set<MuxStream>();

  constructor(
    config: ServerConfig,
    stats: Stats,
    usage: UsageMeter,
    log: Logger,
    now: () => number = Date.now,
  ) {
    this.#config = config;
    this.#stats = stats;
    this.#usage = usage;
    this.#log = log;
    this.#now = now;
  }

  /**
   * A user connected to a public port, or a visitor to an HTTP tunnel's host (`visitor` says who
   * it is and how it came; refusals then answer with an error page instead of a reset).
   */
  onPublicConn(tunnel: Tunnel, conn: Deno.Conn, visitor?: HttpVisitor): void {
    const addr = conn.remoteAddr as Deno.NetAddr;
    const remote = visitor?.remote ?? formatHostPort(addr.hostname, addr.port);
    const count = this.#perOwner.get(tunnel.owner) ?? 0;
    if (count >= (tunnel.limits.maxConnections ?? this.#config.maxConnectionsPerClient)) {
      this.#refuseConn(conn, "connection_limit", tunnel, remote, visitor);
      return;
    }
    const quota = tunnel.limits.monthlyQuotaBytes ?? this.#config.monthlyQuotaBytes;
    if (quota !== null) {
      const used = this.#usage.monthBytesCached(tunnel.userId);
      if (used >= quota) {
        this.#refuseConn(conn, "quota_exceeded", tunnel, remote, visitor);
        tunnel.session?.notice(
          "quota_exceeded",
          `monthly transfer quota reached for user ${tunnel.userName}: ${formatSize(used)} of ${
            formatSize(quota)
          } used; new connections to ${tunnel.name} are refused until next month`,
        );
        return;
      }
    }
    if (tunnel.pending.length >= this.#config.maxPending) {
      this.#refuseConn(conn, "pending_limit", tunnel, remote, visitor);
      return;
    }
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
      // Dead peers (a phone that left the Wi-Fi) are noticed by the kernel, not held forever.
      (conn as Deno.TcpConn).setKeepAlive(true);
    } catch {
      // the peer may already be gone
    }
    this.#perOwner.set(tunnel.owner, count + 1);
    this.#stats.connectionOpened();
    this.#usage.connection(tunnel.userId, tunnel.name);
    let released = false;
    const releaseCount = () => {
      if (released) return;
      released = true;
      visitor?.onClosed();
      const n = (this.#perOwner.get(tunnel.owner) ?? 1) - 1;
      if (n <= 0) this.#perOwner.delete(tunnel.owner);
      else this.#perOwner.set(tunnel.owner, n);
      this.#stats.connectionClosed();
    };
    const pending: PendingConn = {
      conn,
      remote,
      extra: visitor?.extra,
      since: this.#now(),
      timer: undefined,
      release: releaseCount,
      drop: (reason: string, status?: 502 | 504) => {
        const i = tunnel.pending.indexOf(pending);
        if (i < 0) return;
        tunnel.pending.splice(i, 1);
        clearTimeout(pending.timer);
        if (visitor && status) {
          answerAndClose(conn, offlinePage(tunnel, status, reason), { accept: visitor.accept });
        } else {
          resetConn(conn);
        }
        releaseCount();
        this.#log.info("user connection {remote} on {name} closed: {reason}", {
          remote,
          name: tunnel.name,
          reason,
        });
      },
    };
    const mux = tunnel.session?.pickMux() ?? null;
    if (mux) {
      // The usual case: bridged at once, no hold timer to set and clear.
      this.#bridge(mux, tunnel, pending);
      return;
    }
    tunnel.pending.push(pending);
    pending.timer = setTimeout(() => {
      this.#stats.refusal("hold_timeout");
      pending.drop(
        `no stream from the client within ${this.#config.holdTimeoutMs / 1000} s`,
        504,
      );
    }, this.#config.holdTimeoutMs);
    this.#log.debug("holding {remote} on {name} until the client has a data connection", {
      remote,
      name: tunnel.name,
    });
  }

  /** A session (re)attached or opened a data connection: bridge every connection waiting for it. */
  serveWaiting(session: BrokerSession): void {
    for (const tunnel of session.tunnels()) {
      if (tunnel.session !== session) continue;
      while (tunnel.pending.length > 0) {
        const mux = session.pickMux();
        if (!mux) return;
        this.#bridge(mux, tunnel, tunnel.pending[0]!);
      }
    }
  }

  #bridge(mux: Mux, tunnel: Tunnel, pending: PendingConn): void {
    const i = tunnel.pending.indexOf(pending);
    if (i >= 0) tunnel.pending.splice(i, 1);
    clearTimeout(pending.timer);
    const stats = this.#stats;
    const log = this.#log;
    const usage = this.#usage;
    const { userId, name } = tunnel;
    const meter = usage.meter(userId, tunnel.userName, name);
    let stream: MuxStream | null = null;
    const hooks = {
      onSent: (n) => {
        stats.bytesIn += n;
        tunnel.bytesIn += n;
        meter.bytesIn(n);
      },
      onReceived: (n) => {
        stats.bytesOut += n;
        tunnel.bytesOut += n;
        meter.bytesOut(n);
      },
      onEnd: (end) => {
        if (stream) {
          tunnel.active.delete(stream);
          this.bridges.delete(stream);
        }
        pending.release();
        if (!end.clean && end.kind) {
          stats.error(end.kind);
          usage.error(userId, name);
          log.info("stream for {remote} on {name} ended: {reason}", {
            remote: pending.remote,
            name: tunnel.name,
            reason: end.reason ?? "",
          });
        }
      },
    } satisfies StreamHooks;
    try {
      stream = mux.open(tunnel.name, pending.remote, pending.conn, hooks, pending.extra);
    } catch (e) {
      // The data connection closed between the pick and the open: the user gets a reset, and
      // its slot is given back.
      resetConn(pending.conn);
      pending.release();
      stats.error("internal");
      log.warn("cannot open a stream for {remote} on {name}: {error}", {
        remote: pending.remote,
        name: tunnel.name,
        error: String(e),
      });
      return;
    }
    if (stream.ended) return;
    stats.streamsOpened++;
    tunnel.active.add(stream);
    this.bridges.add(stream);
  }

  #refuseConn(
    conn: Deno.Conn,
    reason: string,
    tunnel: Tunnel,
    remote: string,
    visitor: HttpVisitor | undefined,
  ): void {
    this.#stats.refusal(reason);
    this.#log.warn("refused {remote} on {name}: {reason}", { remote, name: tunnel.name, reason });
    if (visitor) {
      answerAndClose(conn, refusalPage(tunnel, reason), { accept: visitor.accept });
      visitor.onClosed();
      return;
    }
    // A reset, not a FIN: the user's program must not mistake a refusal for an empty answer.
    resetConn(conn);
  }
}

/** Who an HTTP tunnel's visitor is, for the stream and for error pages. */
export interface HttpVisitor {
  /** The visitor's address (behind a trusted proxy, the one it names). */
  readonly remote: string;
  readonly extra: OpenExtra;
  /** The request's `Accept` header: error pages come as JSON to API clients. */
  readonly accept: string | null;
  /** Called once when the broker is done with the connection (refused, dropped or ended). */
  onClosed(): void;
}

function offlinePage(tunnel: Tunnel, status: 502 | 504, reason: string): ErrorPage {
  return status === 504
    ? {
      status,
      code: "tunnel_offline",
      title: "Tunnel offline",
      message:
        `The mport client serving ${tunnel.host} is not connected right now (${reason}). Try again in a moment.`,
    }
    : {
      status,
      code: "tunnel_closed",
      title: "Tunnel closed",
      message: `The tunnel serving ${tunnel.host} was closed (${reason}).`,
    };
}

function refusalPage(tunnel: Tunnel, reason: string): ErrorPage {
  switch (reason) {
    case "connection_limit":
      return {
        status: 429,
        code: "connection_limit",
        title: "Too many connections",
        message: `${tunnel.host} has reached its limit of open connections. Try again shortly.`,
        headers: [["retry-after", "5"]],
      };
    case "quota_exceeded":
      return {
        status: 503,
        code: "quota_exceeded",
        title: "Transfer quota reached",
        message: `The owner of ${tunnel.host} has used this month's transfer quota.`,
      };
    default:
      return {
        status: 503,
        code: "busy",
        title: "Tunnel busy",
        message: `Too many visitors are waiting for ${tunnel.host}. Try again shortly.`,
        headers: [["retry-after", "5"]],
      };
  }
}
