// Egress: connections a client asks the server to make (its local SOCKS5 / HTTP proxy), checked
// against the user's permission, limits and the operator's rules, dialled, and bridged.
import { lookup } from "node:dns/promises";
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../../shared/address.ts";
import { errorText } from "../../shared/error_text.ts";
import { parseIp } from "../../shared/ip_cidr.ts";
import type { Mux } from "../../shared/mux.ts";
import type { MuxStream } from "../../shared/mux_stream.ts";
import type { ErrorCode } from "../../shared/protocol.ts";
import { closeQuietly, connectWithin, TimedOut, within } from "../../shared/net.ts";
import { formatSize } from "../../shared/units.ts";
import type { UsageMeter } from "../accounts/usage.ts";
import type { Stats } from "../stats.ts";
import type { UserLimits } from "../store/store.ts";
import type { EgressPolicy } from "./policy.ts";
import { UdpAssociation } from "./egress_udp.ts";

/** Time to resolve a destination's name and to connect to it. */
export const EGRESS_DIAL_TIMEOUT_MS = 10_000;
/** Name used for egress in usage rows and metrics (it is no tunnel). */
export const EGRESS_USAGE_NAME = "egress";
/**
 * Audit rows a user's egress writes per minute at most: a client opening connections in a loop
 * must not fill the store. Past it, one `egress_audit_suppressed` row per minute says how many
 * were left out.
 */
export const EGRESS_AUDIT_ROWS_PER_MINUTE = 600;

/** Who asks: the session's user. */
export interface EgressUser {
  readonly owner: string;
  readonly userId: number;
  readonly userName: string;
  readonly limits: UserLimits;
  /** The user may use egress (`user set NAME --egress`; static tokens always may). */
  readonly mayEgress: boolean;
  /** The client's address, for the audit log. */
  readonly remote: string;
}

/** What egress needs from the server. */
export interface EgressDeps {
  /** `--egress`: off means every egress stream is refused. */
  readonly enabled: boolean;
  readonly policy: EgressPolicy;
  readonly maxConnectionsPerClient: number;
  readonly monthlyQuotaBytes: number | null;
  readonly usage: UsageMeter;
  readonly stats: Stats;
  readonly log: Logger;
  readonly audit: (kind: string, userId: number | null, detail: Record<string, unknown>) => void;
  /** Name resolution (default: the system resolver, /etc/hosts included). */
  readonly resolve?: (host: string) => Promise<string[]>;
  readonly dialTimeoutMs?: number;
  /** Clock for the audit budget (tests). */
  readonly now?: () => number;
}

class Refusal extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

/** Handles the `CONNECT`s of every data connection. */
export class Egress {
  readonly #d: EgressDeps;
  readonly #perOwner = new Map<string, number>();
  /** Audit rows written this minute, and left out, per user. */
  readonly #audited = new Map<number, { minute: number; rows: number; suppressed: number }>();

  constructor(deps: EgressDeps) {
    this.#d = deps;
  }

  /** Writes an audit row unless the user is past this minute's budget (then counts it). */
  #audit(kind: string, userId: number, detail: Record<string, unknown>): void {
    const now = this.#d.now?.() ?? Date.now();
    const minute = Math.floor(now / 60_000);
    let a = this.#audited.get(userId);
    if (!a || a.minute !== minute) {
      if (a && a.suppressed > 0) {
        this.#d.audit("egress_audit_suppressed", userId, {
          rows: a.suppressed,
          minute: new Date(a.minute * 60_000).toISOString(),
        });
      }
      a = { minute, rows: 0, suppressed: 0 };
      this.#audited.set(userId, a);
      // Other users' earlier minutes end too: their summaries go out, and they are forgotten.
      for (const [id, other] of this.#audited) {
        if (other.minute >= minute) continue;
        if (other.suppressed > 0) {
          this.#d.audit("egress_audit_suppressed", id, {
            rows: other.suppressed,
            minute: new Date(other.minute * 60_000).toISOString(),
          });
        }
        this.#audited.delete(id);
      }
    }
    if (a.rows >= EGRESS_AUDIT_ROWS_PER_MINUTE) {
      a.suppressed++;
      return;
    }
    a.rows++;
    this.#d.audit(kind, userId, detail);
  }

  /** Why a user cannot use egress at all, or null when they can (told to clients at hello). */
  unavailable(user: EgressUser): string | null {
    if (!this.#d.enabled) {
      return "this server does not offer egress (its operator starts mport-server with --egress)";
    }
    if (!user.mayEgress) {
      return `user ${user.userName} may not use egress (an admin runs: mport-server user set ${user.userName} --egress)`;
    }
    return null;
  }

  /** A client asked for host:port on `stream` of `mux`. */
  handle(mux: Mux, stream: MuxStream, host: string, port: number, user: EgressUser): void {
    this.#connect(mux, stream, host, port, user).catch((e) => {
      this.#d.log.error("egress to {dest} failed: {error}", {
        dest: formatHostPort(host, port),
        error: errorText(e),
      });
      stream.reset("internal", "egress failed on the server");
    });
  }

  /**
   * A client opened a UDP association (SOCKS5 UDP ASSOCIATE) on `stream`: checked like a
   * connection, then each datagram is checked on its own. `idleMs` ends a quiet association.
   */
  handleUdp(mux: Mux, stream: MuxStream, user: EgressUser, idleMs: number): void {
    const d = this.#d;
    const refuse = (code: ErrorCode, message: string) =>
      this.#refuse(stream, user, "udp", code, message);
    const release = this.#admit(user, refuse);
    if (!release) return;
    const opened = Date.now();
    let association: UdpAssociation;
    try {
      association = new UdpAssociation({
        policy: d.policy,
        resolve: d.resolve ?? systemResolve,
        resolveTimeoutMs: d.dialTimeoutMs ?? EGRESS_DIAL_TIMEOUT_MS,
        idleMs,
        log: d.log,
        audit: (kind, detail) => this.#audit(kind, user.userId, detail),
        finished: (totals, reason) => {
          release();
          d.stats.connectionClosed();
          this.#audit("egress_udp", user.userId, {
            ...totals,
            seconds: Math.round((Date.now() - opened) / 1000),
            ended: reason,
            client: user.remote,
          });
        },
        now: d.now,
      });
    } catch (e) {
      release();
      return refuse("egress_failed", `cannot open a UDP socket on the server: ${errorText(e)}`);
    }
    const meter = d.usage.meter(user.userId, user.userName, EGRESS_USAGE_NAME);
    d.usage.connection(user.userId, EGRESS_USAGE_NAME);
    d.stats.connectionOpened();
    stream.setHooks({
      onSent: (n) => {
        d.stats.bytesOut += n;
        meter.bytesOut(n);
      },
      onReceived: (n) => {
        d.stats.bytesIn += n;
        meter.bytesIn(n);
      },
      onEnd: () => association.end("the stream ended"),
    });
    mux.sendConnected(stream.id, association.address);
    association.start(stream);
    d.log.debug("UDP egress association for {user} on {address}", {
      user: user.userName,
      address: association.address,
    });
  }

  #refuse(
    stream: MuxStream,
    user: EgressUser,
    dest: string,
    code: ErrorCode,
    message: string,
  ): void {
    this.#d.stats.refusal(code);
    this.#audit("egress_refused", user.userId, { destination: dest, code, message });
    this.#d.log.info("egress for {user} to {dest} refused: {message}", {
      user: user.userName,
      dest,
      message,
    });
    stream.reset(code, message);
  }

  /**
   * Checks the permission, the connection limit and the quota; refuses (and returns null) or
   * takes one of the user's connections and returns how to give it back (idempotent).
   */
  #admit(
    user: EgressUser,
    refuse: (code: ErrorCode, message: string) => void,
  ): (() => void) | null {
    const d = this.#d;
    const off = this.unavailable(user);
    if (off) {
      refuse("egress_denied", off);
      return null;
    }
    const count = this.#perOwner.get(user.owner) ?? 0;
    const max = user.limits.maxConnections ?? d.maxConnectionsPerClient;
    if (count >= max) {
      refuse("rate_limited", `connection limit reached: at most ${max} at once per user`);
      return null;
    }
    const quota = user.limits.monthlyQuotaBytes ?? d.monthlyQuotaBytes;
    if (quota !== null && d.usage.monthBytesCached(user.userId) >= quota) {
      refuse(
        "quota_exceeded",
        `monthly transfer quota of ${formatSize(quota)} reached for user ${user.userName}`,
      );
      return null;
    }
    this.#perOwner.set(user.owner, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#perOwner.get(user.owner) ?? 1) - 1;
      if (n <= 0) this.#perOwner.delete(user.owner);
      else this.#perOwner.set(user.owner, n);
    };
  }

  async #connect(
    mux: Mux,
    stream: MuxStream,
    host: string,
    port: number,
    user: EgressUser,
  ): Promise<void> {
    const d = this.#d;
    const dest = formatHostPort(host, port);
    const refuse = (code: ErrorCode, message: string) =>
      this.#refuse(stream, user, dest, code, message);
    const release = this.#admit(user, refuse);
    if (!release) return;
    let conn: Deno.TcpConn;
    let address: string;
    try {
      const ip = await this.#pick(host, port);
      address = formatHostPort(ip, port);
      conn = await this.#dial(ip, port, dest);
    } catch (e) {
      release();
      if (e instanceof Refusal) return refuse(e.code, e.message);
      throw e;
    }
    if (stream.ended) {
      // The client gave up meanwhile.
      release();
      closeQuietly(conn);
      return;
    }
    try {
      conn.setNoDelay(true);
      conn.setKeepAlive(true);
    } catch {
      // the destination may already be gone
    }
    const meter = d.usage.meter(user.userId, user.userName, EGRESS_USAGE_NAME);
    d.usage.connection(user.userId, EGRESS_USAGE_NAME);
    d.stats.connectionOpened();
    let bytesOut = 0; // to the destination
    let bytesIn = 0; // from the destination
    const opened = Date.now();
    stream.setHooks({
      // Read from the destination, sent to the client.
      onSent: (n) => {
        bytesIn += n;
        d.stats.bytesOut += n;
        meter.bytesOut(n);
      },
      // From the client, written to the destination.
      onReceived: (n) => {
        bytesOut += n;
        d.stats.bytesIn += n;
        meter.bytesIn(n);
      },
      onEnd: (end) => {
        release();
        d.stats.connectionClosed();
        this.#audit("egress", user.userId, {
          destination: dest,
          address,
          bytesToDestination: bytesOut,
          bytesFromDestination: bytesIn,
          seconds: Math.round((Date.now() - opened) / 1000),
          clean: end.clean,
          client: user.remote,
        });
      },
    });
    mux.sendConnected(stream.id, address);
    stream.attach(conn);
    d.log.debug("egress for {user} to {dest} ({address})", {
      user: user.userName,
      dest,
      address,
    });
  }

  /** The address to connect to: the first one the rules allow (the checked one is dialled). */
  async #pick(host: string, port: number): Promise<string> {
    const d = this.#d;
    const literal = parseIp(host) !== null;
    let nameAllowed = false;
    if (!literal) {
      const v = d.policy.checkName(host, port);
      if (v !== "allowed" && !v.ok) throw new Refusal("egress_denied", v.reason);
      nameAllowed = v === "allowed";
    }
    let addresses: string[];
    if (literal) {
      addresses = [host.replace(/^\[|\]$/g, "")];
    } else {
      try {
        addresses = await within(
          (d.resolve ?? systemResolve)(host),
          d.dialTimeoutMs ?? EGRESS_DIAL_TIMEOUT_MS,
        );
      } catch (e) {
        throw new Refusal("egress_unreachable", `cannot resolve ${host}: ${errorText(e)}`);
      }
      if (addresses.length === 0) {
        throw new Refusal("egress_unreachable", `cannot resolve ${host}: no addresses`);
      }
    }
    let first: string | null = null;
    for (const ip of addresses) {
      const v = d.policy.checkAddress(ip, port, nameAllowed);
      if (v.ok) return ip;
      first ??= v.reason;
    }
    throw new Refusal("egress_denied", first ?? `${host} is not allowed`);
  }

  async #dial(ip: string, port: number, dest: string): Promise<Deno.TcpConn> {
    try {
      return await connectWithin(
        Deno.connect({ hostname: ip, port }),
        this.#d.dialTimeoutMs ?? EGRESS_DIAL_TIMEOUT_MS,
      );
    } catch (e) {
      if (e instanceof TimedOut) {
        throw new Refusal("egress_timeout", `${dest} did not answer within ${e.ms / 1000} s`);
      }
      if (e instanceof Deno.errors.ConnectionRefused) {
        throw new Refusal("egress_refused", `${dest} refused the connection`);
      }
      const text = errorText(e);
      if (/unreachable|no route/i.test(text)) {
        throw new Refusal("egress_unreachable", `${dest} is unreachable: ${text}`);
      }
      throw new Refusal("egress_failed", `cannot connect to ${dest}: ${text}`);
    }
  }
}

async function systemResolve(host: string): Promise<string[]> {
  const found = await lookup(host, { all: true, verbatim: true });
  return found.map((a) => a.address);
}
