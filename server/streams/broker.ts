// Pairs public connections with data streams: pooled idle streams first, else claims over control.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../../shared/address.ts";
import { formatSize } from "../../shared/units.ts";
import { CLAIM_TIMEOUT_MS, MAX_POOL_PER_SESSION } from "../../shared/protocol.ts";
import { closeQuietly, type StreamBridge } from "../../shared/stream_bridge.ts";
import type { ServerConfig } from "../config.ts";
import type { UsageMeter } from "../accounts/usage.ts";
import type { Stats } from "../stats.ts";
import type { PendingConn, Tunnel } from "../tunnels.ts";

/** What the broker needs from a control session. */
export interface BrokerSession {
  readonly id: string;
  readonly owner: string;
  readonly idle: StreamBridge[];
  readonly claims: Map<string, Claim>;
  /** Tunnels this session serves. */
  tunnels(): Iterable<Tunnel>;
  /** Asks the client (over control) to open a stream for `tunnel`; returns the claim id. */
  requestStream(tunnel: Tunnel, pending: PendingConn): string | null;
  /** Tells the client something it should show its user (e.g. quota reached). */
  notice(code: "quota_exceeded", message: string): void;
}

/** A stream the server asked for and not yet received. */
export interface Claim {
  readonly tunnel: Tunnel;
  readonly pending: PendingConn;
  readonly expires: number;
}

/** Pairs public connections with client streams and counts what flows. */
export class Broker {
  readonly #config: ServerConfig;
  readonly #stats: Stats;
  readonly #log: Logger;
  readonly #perOwner = new Map<string, number>();
  readonly #now: () => number;
  readonly #usage: UsageMeter;
  /** Every open public connection, bridged or pending, for shutdown. */
  readonly bridges = new Set<StreamBridge>();

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

  /** A user connected to a public port. */
  onPublicConn(tunnel: Tunnel, conn: Deno.TcpConn): void {
    const addr = conn.remoteAddr as Deno.NetAddr;
    const remote = formatHostPort(addr.hostname, addr.port);
    const count = this.#perOwner.get(tunnel.owner) ?? 0;
    if (count >= (tunnel.limits.maxConnections ?? this.#config.maxConnectionsPerClient)) {
      this.#refuseConn(conn, "connection_limit", tunnel, remote);
      return;
    }
    const quota = tunnel.limits.monthlyQuotaBytes ?? this.#config.monthlyQuotaBytes;
    if (quota !== null) {
      const used = this.#usage.monthBytesCached(tunnel.userId);
      if (used >= quota) {
        this.#refuseConn(conn, "quota_exceeded", tunnel, remote);
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
      this.#refuseConn(conn, "pending_limit", tunnel, remote);
      return;
    }
    try {
      conn.setNoDelay(true);
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
      const n = (this.#perOwner.get(tunnel.owner) ?? 1) - 1;
      if (n <= 0) this.#perOwner.delete(tunnel.owner);
      else this.#perOwner.set(tunnel.owner, n);
      this.#stats.connectionClosed();
    };
    const pending: PendingConn = {
      conn,
      remote,
      since: this.#now(),
      timer: undefined,
      release: releaseCount,
      drop: (reason: string) => {
        const i = tunnel.pending.indexOf(pending);
        if (i < 0) return;
        tunnel.pending.splice(i, 1);
        clearTimeout(pending.timer);
        closeQuietly(conn);
        releaseCount();
        this.#log.info("user connection {remote} on {name} closed: {reason}", {
          remote,
          name: tunnel.name,
          reason,
        });
      },
    };
    tunnel.pending.push(pending);
    pending.timer = setTimeout(() => {
      this.#stats.refusal("hold_timeout");
      pending.drop(`no stream from the client within ${this.#config.holdTimeoutMs / 1000} s`);
    }, this.#config.holdTimeoutMs);

    const session = tunnel.session;
    if (!session) {
      this.#log.debug("holding {remote} on {name} until the client returns", {
        remote,
        name: tunnel.name,
      });
      return;
    }
    const stream = this.#takeIdle(session);
    if (stream) {
      this.#bridge(stream, tunnel, pending);
      return;
    }
    session.requestStream(tunnel, pending);
  }

  /** A session (re)attached: ask for streams for every connection waiting on its tunnels. */
  serveWaiting(session: BrokerSession): void {
    for (const tunnel of session.tunnels()) {
      for (const p of tunnel.pending) {
        if (![...session.claims.values()].some((c) => c.pending === p)) {
          session.requestStream(tunnel, p);
        }
      }
    }
  }

  /**
   * A data stream arrived from `session`. A claimed stream serves its own connection if still
   * waiting; any stream serves the oldest waiting connection; otherwise it joins the idle pool.
   * Returns an error message when the stream must be refused.
   */
  onStream(session: BrokerSession, stream: StreamBridge, claimId: string | null): string | null {
    let target: { tunnel: Tunnel; pending: PendingConn } | null = null;
    if (claimId !== null) {
      const claim = session.claims.get(claimId);
      if (!claim) {
        this.#stats.refusal("unknown_claim");
        return `unknown stream id "${
          claimId.slice(0, 64)
        }": it was never issued or was already used`;
      }
      session.claims.delete(claimId);
      if (this.#now() > claim.expires) {
        this.#stats.refusal("expired_claim");
        return `stream id "${claimId.slice(0, 64)}" expired before it was claimed`;
      }
      if (claim.tunnel.pending.includes(claim.pending)) target = claim;
    }
    if (!target) {
      for (const tunnel of session.tunnels()) {
        const p = tunnel.pending[0];
        if (p && (!target || p.since < target.pending.since)) target = { tunnel, pending: p };
      }
    }
    if (target) {
      this.#bridge(stream, target.tunnel, target.pending);
      return null;
    }
    if (session.idle.length >= MAX_POOL_PER_SESSION) {
      this.#stats.refusal("pool_full");
      return `too many idle streams: at most ${MAX_POOL_PER_SESSION} per session`;
    }
    session.idle.push(stream);
    stream.setHooks({
      onEnd: () => {
        const i = session.idle.indexOf(stream);
        if (i >= 0) session.idle.splice(i, 1);
      },
    });
    return null;
  }

  /** New claim record for `pending`, expiring after the claim timeout. */
  newClaim(tunnel: Tunnel, pending: PendingConn): Claim {
    return { tunnel, pending, expires: this.#now() + CLAIM_TIMEOUT_MS };
  }

  /** Drops expired claims so a client that never claims cannot grow memory. */
  sweepClaims(session: BrokerSession): void {
    const now = this.#now();
    for (const [id, c] of session.claims) if (now > c.expires) session.claims.delete(id);
  }

  #bridge(stream: StreamBridge, tunnel: Tunnel, pending: PendingConn): void {
    const i = tunnel.pending.indexOf(pending);
    if (i >= 0) tunnel.pending.splice(i, 1);
    clearTimeout(pending.timer);
    const open = { type: "open", tunnel: tunnel.name, remote: pending.remote } as const;
    // `reuse`: this server takes the stream back after a clean end if the client sends `idle`.
    if (!stream.sendControl(stream.onReused ? { ...open, reuse: true } : open)) {
      // The stream died while idle: put the user back in line and ask again.
      tunnel.pending.unshift(pending);
      pending.timer = setTimeout(() => pending.drop("timed out"), this.#config.holdTimeoutMs);
      tunnel.session?.requestStream(tunnel, pending);
      return;
    }
    tunnel.active.add(stream);
    this.bridges.add(stream);
    const stats = this.#stats;
    const log = this.#log;
    const usage = this.#usage;
    const { userId, userName, name } = tunnel;
    const meter = usage.meter(userId, userName, name);
    stream.setHooks({
      onSent: (n) => {
        stats.bytesIn += n;
        meter.bytesIn(n);
      },
      onReceived: (n) => {
        stats.bytesOut += n;
        meter.bytesOut(n);
      },
      onEnd: (end) => {
        tunnel.active.delete(stream);
        this.bridges.delete(stream);
        pending.release();
        if (!end.clean && end.kind && end.kind !== "closed") {
          stats.error(end.kind);
          usage.error(userId, name);
          log.info("stream for {remote} on {name} ended: {reason}", {
            remote: pending.remote,
            name: tunnel.name,
            reason: end.reason ?? "",
          });
        }
      },
    });
    stream.attach(pending.conn);
  }

  #takeIdle(session: BrokerSession): StreamBridge | null {
    while (session.idle.length > 0) {
      const s = session.idle.shift()!;
      if (s.idle) return s;
    }
    return null;
  }

  #refuseConn(conn: Deno.TcpConn, reason: string, tunnel: Tunnel, remote: string): void {
    this.#stats.refusal(reason);
    this.#log.warn("refused {remote} on {name}: {reason}", { remote, name: tunnel.name, reason });
    closeQuietly(conn);
  }
}
