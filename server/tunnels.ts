// Tunnels (a public listener owned by a token and a name) and the registry that grants and releases them.
import type { Logger } from "@logtape/logtape";
import { formatHostPort, type PortRange } from "../shared/address.ts";
import type { OpenExtra, TunnelGrant, TunnelKind, TunnelRequest } from "../shared/protocol.ts";
import type { MuxStream } from "../shared/mux_stream.ts";
import { closeQuietly } from "../shared/net.ts";
import type { ServerConfig } from "./config.ts";
import { type PortAllocator, TunnelRefused } from "./listeners/port_allocator.ts";
import { bindPicked, justReservedMessage, type PortBook } from "./accounts/port_book.ts";
import type { HostBook } from "./accounts/host_book.ts";
import type { Stats } from "./stats.ts";
import type { BrokerSession } from "./streams/broker.ts";
import type { ReserveResult, UserLimits } from "./store/store.ts";

/** A control session as tunnels (and the broker, through them) know it. */
export interface TunnelOwnerSession extends BrokerSession {
  readonly id: string;
  readonly owner: string;
  /** The client installation's persistent id: only the same id may take over a live tunnel. */
  readonly clientId: string;
  /** The client's address, named when another client is refused the tunnel. */
  readonly remote: string;
  /** True once the control channel is gone (a closed holder no longer defends its tunnels). */
  readonly closed: boolean;
  readonly userId: number;
  readonly userName: string;
  /** The user's limits (null fields: server defaults). */
  readonly limits: UserLimits;
  /** Tells the session that it no longer has this tunnel (taken over by another session). */
  lostTunnel(tunnel: Tunnel, reason: string): void;
}

/** A public connection waiting for a data stream. */
export interface PendingConn {
  readonly conn: Deno.Conn;
  readonly remote: string;
  /** HTTP visitors: how they came (scheme, the proxy between). */
  readonly extra?: OpenExtra;
  readonly since: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Closes the connection and forgets it; idempotent. `status` (HTTP tunnels) is the error page
   * the visitor gets instead of a reset: 502 when the tunnel closed, 504 after the hold timeout.
   */
  drop(reason: string, status?: 502 | 504): void;
  /** Gives back the connection's slot in the counters once its stream ends; idempotent. */
  release(): void;
}

/** Where a tunnel is published: a listening port, or an HTTP host name. */
export type TunnelPlace =
  | { readonly kind: "tcp"; readonly listener: Deno.TcpListener; readonly publicHost: string }
  | { readonly kind: "udp"; readonly socket: Deno.DatagramConn; readonly publicHost: string }
  | { readonly kind: "http"; readonly host: string; readonly url: string };

/** One published port or HTTP host name. */
export class Tunnel {
  /** Random id the REST API names the tunnel by (names repeat across users). */
  readonly id: string = crypto.randomUUID();
  readonly kind: TunnelKind;
  /** HTTP tunnels: the host name they are served on (lower case); null for tcp. */
  readonly host: string | null;
  readonly owner: string;
  readonly userId: number;
  readonly userName: string;
  /** The owning user's limits, refreshed whenever a session takes the tunnel or re-checks. */
  limits: UserLimits;
  readonly name: string;
  /** The public port (0 for http). */
  readonly port: number;
  readonly url: string;
  readonly local: string;
  session: TunnelOwnerSession | null = null;
  /** When the current holder got the tunnel (opened or taken over), for refusals. */
  heldSince = 0;
  /** When the tunnel was opened, and the bytes to the client (in) and back (out) since then. */
  openedAt = 0;
  bytesIn = 0;
  bytesOut = 0;
  readonly pending: PendingConn[] = [];
  readonly active = new Set<MuxStream>();
  graceTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #listener: Deno.TcpListener | null;
  /** UDP tunnels: the public socket. */
  readonly socket: Deno.DatagramConn | null;
  #closed = false;

  constructor(session: TunnelOwnerSession, req: TunnelRequest, place: TunnelPlace) {
    this.owner = session.owner;
    this.userId = session.userId;
    this.userName = session.userName;
    this.limits = session.limits;
    this.name = req.name;
    this.local = req.local;
    this.kind = place.kind;
    this.socket = null;
    if (place.kind === "tcp") {
      this.#listener = place.listener;
      this.port = (place.listener.addr as Deno.NetAddr).port;
      this.url = `tcp://${formatHostPort(place.publicHost, this.port)}`;
      this.host = null;
    } else if (place.kind === "udp") {
      this.#listener = null;
      this.socket = place.socket;
      this.port = (place.socket.addr as Deno.NetAddr).port;
      this.url = `udp://${formatHostPort(place.publicHost, this.port)}`;
      this.host = null;
    } else {
      this.#listener = null;
      this.port = 0;
      this.url = place.url;
      this.host = place.host;
    }
  }

  /** True once the listener is closed for good. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Accepts public connections until closed, handing each to `onConn`. */
  async acceptLoop(
    onConn: (tunnel: Tunnel, conn: Deno.TcpConn) => void,
    log: Logger,
  ): Promise<void> {
    const listener = this.#listener;
    if (!listener) return;
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (this.#closed || e instanceof Deno.errors.BadResource) return;
        // Transient accept errors (e.g. EMFILE) must not end the listener.
        log.warn("accept on port {port} failed: {error}", { port: this.port, error: String(e) });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#closed) {
        conn.close();
        return;
      }
      try {
        onConn(this, conn);
      } catch (e) {
        // One bad connection must never end the listener.
        log.error("public connection on port {port} failed: {error}", {
          port: this.port,
          error: String(e),
        });
        closeQuietly(conn);
      }
    }
  }

  /** Closes the listener and every pending connection; active streams are left to finish. */
  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.graceTimer);
    if (this.#listener) closeQuietly(this.#listener);
    if (this.socket) closeQuietly(this.socket);
    for (const p of [...this.pending]) p.drop(reason, 502);
  }

  /** The grant reported to the client. */
  grant(): TunnelGrant {
    return { name: this.name, kind: this.kind, remotePort: this.port, url: this.url };
  }
}

/** Audit hook for tunnel lifecycle events. */
export type TunnelEvents = (
  kind: "tunnel_opened" | "tunnel_closed",
  tunnel: Tunnel,
  detail: Record<string, unknown>,
) => void;

/** All tunnels of the server, keyed by owner and name. */
export class TunnelRegistry {
  readonly #tunnels = new Map<string, Tunnel>();
  readonly #createdAt = new Map<string, number[]>();
  /** Per owner, the tail of its queue of `acquire` calls (see `acquire`). */
  readonly #queues = new Map<string, Promise<void>>();
  readonly #ports: PortAllocator;
  readonly #config: ServerConfig;
  readonly #stats: Stats;
  readonly #log: Logger;
  readonly #onConn: (tunnel: Tunnel, conn: Deno.TcpConn) => void;
  readonly #now: () => number;
  readonly #book: PortBook;
  readonly #events: TunnelEvents | undefined;
  readonly #hostBook: HostBook | null;
  /** HTTP tunnels by host name. */
  readonly #hosts = new Map<string, Tunnel>();

  constructor(
    ports: PortAllocator,
    book: PortBook,
    config: ServerConfig,
    stats: Stats,
    log: Logger,
    onConn: (tunnel: Tunnel, conn: Deno.TcpConn) => void,
    now: () => number = Date.now,
    events?: TunnelEvents,
    hostBook: HostBook | null = null,
  ) {
    this.#hostBook = hostBook;
    this.#ports = ports;
    this.#book = book;
    this.#events = events;
    this.#config = config;
    this.#stats = stats;
    this.#log = log;
    this.#onConn = onConn;
    this.#now = now;
  }

  /** Every tunnel, for shutdown and the API. */
  all(): Tunnel[] {
    return [...this.#tunnels.values()];
  }

  /** Starts relaying a new UDP tunnel's datagrams (set by the server). */
  #onUdp: ((tunnel: Tunnel) => void) | null = null;

  /** Who relays UDP tunnels' datagrams. */
  onUdpTunnel(relay: (tunnel: Tunnel) => void): void {
    this.#onUdp = relay;
  }

  /** The ports actually bound (the config may say 0), for HTTP tunnels' URLs. */
  #ports_: { main: number | null; sites: number | null } = { main: null, sites: null };

  /** Tells the registry which ports the server's HTTP listeners bound. */
  boundPorts(main: number, sites: number | null): void {
    this.#ports_ = { main, sites };
  }

  /** The HTTP tunnel served on `host` (lower case, no port), if any. */
  byHost(host: string): Tunnel | undefined {
    return this.#hosts.get(host);
  }

  /**
   * Gives `session` the tunnel it asks for: the one its owner already holds under that name (taken
   * over from a detached session or an older session of the same client id, keeping its port), or
   * a new one on the port reserved for the user's tunnel, the requested port, or a free one.
   * Throws `TunnelRefused`, with `name_in_use` while another client id holds the name.
   *
   * One owner's calls run one at a time: the limit checks and the registration are separated by
   * store lookups, and concurrent sessions of one user must not all pass the checks first.
   */
  async acquire(
    session: TunnelOwnerSession,
    req: TunnelRequest,
    publicHost: string,
    viaHttpsProxy = false,
  ): Promise<Tunnel> {
    const owner = session.owner;
    const before = this.#queues.get(owner) ?? Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    const tail = before.then(() => mine);
    this.#queues.set(owner, tail);
    await before;
    try {
      return await this.#acquire(session, req, publicHost, viaHttpsProxy);
    } finally {
      done();
      if (this.#queues.get(owner) === tail) this.#queues.delete(owner);
    }
  }

  async #acquire(
    session: TunnelOwnerSession,
    req: TunnelRequest,
    publicHost: string,
    viaHttpsProxy: boolean,
  ): Promise<Tunnel> {
    if (req.kind === "http") return await this.#acquireHttp(session, req, viaHttpsProxy);
    const key = `${session.owner}\0${req.name}`;
    const existing = this.#tunnels.get(key);
    if (existing) this.#checkHolder(existing, session);
    if (existing && existing.kind !== req.kind) {
      throw new TunnelRefused(
        "name_in_use",
        `tunnel ${req.name} is a${
          existing.kind === "http" ? "n HTTP" : ` ${existing.kind.toUpperCase()}`
        } tunnel of yours; pick another --name for this one`,
      );
    }
    if (existing && (req.remotePort === 0 || req.remotePort === existing.port)) {
      // Record the port again: an operator may have released it while the tunnel stayed up.
      if (!(await this.#book.record(session.userId, req.name, existing.port, session.limits)).ok) {
        this.#log.warn("tunnel {name} keeps port {port}, which is now reserved for another user", {
          name: existing.name,
          port: existing.port,
        });
      }
      const current = this.#tunnels.get(key);
      // Only this owner's acquire (which waits for ours) can give the name to another holder.
      if (current) return this.#takeOver(current, session);
    }
    const limits = session.limits;
    const now = this.#now();
    const recent = this.#checkNewTunnel(session, existing);
    // Which port: the one reserved for this tunnel, else the requested one, else any free one.
    let port = req.remotePort;
    let reserved = false;
    let record = true;
    if (port === 0) {
      const mine = await this.#book.portFor(session.userId, req.name);
      if (mine !== null && this.#ports.held(mine)) {
        // Another owner of the same user (each static token is one) has this name on that port:
        // take any port and leave the reservation with the tunnel that holds it.
        record = false;
      } else if (mine !== null) {
        port = mine;
        reserved = true;
      }
    } else {
      const holder = await this.#book.holder(port);
      if (holder && holder.userId !== session.userId) {
        throw new TunnelRefused(
          "port_taken",
          `port ${port} is reserved for another user (choose another --remote-port)`,
        );
      }
      if (holder && holder.tunnel !== null && holder.tunnel !== req.name) {
        throw new TunnelRefused(
          "port_taken",
          `port ${port} is reserved for your tunnel "${holder.tunnel}" (use that name, or ask the operator to release the port)`,
        );
      }
      reserved = holder !== null;
    }
    const userRange = limits.portLow !== null && limits.portHigh !== null
      ? { low: limits.portLow, high: limits.portHigh }
      : null;
    const range = reserved ? { low: port, high: port } : userRange ?? undefined;
    // A free port avoids live reservations, the user's own other tunnels' included (or it would be
    // refused at the record, again and again); only a full range recycles one of those.
    const pick = port === 0 ? await this.#book.pick(session.userId, req.name) : undefined;
    if (existing) {
      // A live session that had the name loses its port too: tell it, as for a takeover.
      if (existing.session && existing.session !== session) {
        existing.session.lostTunnel(
          existing,
          "taken over by a newer connection of the same client",
        );
      }
      this.release(existing, "the client asked for a different port");
    }
    let listener: Deno.TcpListener | Deno.DatagramConn;
    const udp = req.kind === "udp";
    const binder = (
      p: number,
      r: PortRange | undefined,
      ex: ReadonlySet<number> | undefined,
      o: string,
    ): Deno.TcpListener | Deno.DatagramConn =>
      udp ? this.#ports.bindUdp(p, r, ex, o) : this.#ports.bind(p, r, ex, o);
    for (let attempt = 1;; attempt++) {
      try {
        const owner = userRange ? "your" : "the server's";
        listener = pick
          ? bindPicked(this.#ports, pick, range, owner, binder)
          : binder(port, range, undefined, owner);
        break;
      } catch (e) {
        // A listener closed a moment ago frees its port only on a later turn of the event loop,
        // so a reserved port coming back right after its release is retried briefly.
        if (!(reserved && e instanceof TunnelRefused && e.code === "port_taken") || attempt >= 10) {
          throw e;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const bound = (listener.addr as Deno.NetAddr).port;
    let recorded: ReserveResult | null = null;
    try {
      if (record) recorded = await this.#book.record(session.userId, req.name, bound, limits);
    } catch (e) {
      listener.close();
      this.#ports.release(bound);
      throw e;
    }
    if (recorded && !recorded.ok) {
      listener.close();
      this.#ports.release(bound);
      throw new TunnelRefused(
        "port_taken",
        justReservedMessage(bound, session.userId, recorded.heldBy),
      );
    }
    recent.push(now);
    this.#createdAt.set(session.owner, recent);
    const tunnel = new Tunnel(
      session,
      req,
      udp
        ? { kind: "udp", socket: listener as Deno.DatagramConn, publicHost }
        : { kind: "tcp", listener: listener as Deno.TcpListener, publicHost },
    );
    tunnel.session = session;
    tunnel.heldSince = now;
    tunnel.openedAt = now;
    this.#tunnels.set(key, tunnel);
    this.#stats.tunnelsCreated++;
    this.#stats.tunnelsActive++;
    if (udp) this.#onUdp?.(tunnel);
    else tunnel.acceptLoop(this.#onConn, this.#log);
    this.#log.info("tunnel {name} opened on {url} for {local}", {
      name: tunnel.name,
      url: tunnel.url,
      local: tunnel.local,
    });
    this.#events?.("tunnel_opened", tunnel, { port: tunnel.port, local: tunnel.local });
    return tunnel;
  }

  /** Throws unless the session's owner may open one more tunnel now; returns its recent opens. */
  #checkNewTunnel(session: TunnelOwnerSession, replacing: Tunnel | undefined): number[] {
    const maxTunnels = session.limits.maxTunnels ?? this.#config.maxTunnelsPerClient;
    const owned = this.all().filter((t) => t.owner === session.owner && t !== replacing).length;
    if (owned >= maxTunnels) {
      throw new TunnelRefused(
        "tunnel_limit",
        `tunnel limit reached: at most ${maxTunnels} tunnels per user`,
      );
    }
    const now = this.#now();
    const recent = (this.#createdAt.get(session.owner) ?? []).filter((t) => now - t < 60_000);
    if (recent.length >= this.#config.tunnelsPerMinute) {
      throw new TunnelRefused(
        "rate_limited",
        `too many new tunnels: at most ${this.#config.tunnelsPerMinute} per minute, try again shortly`,
      );
    }
    return recent;
  }

  /** An HTTP tunnel: the host asked for (or the user's stable subdomain), no port. */
  async #acquireHttp(
    session: TunnelOwnerSession,
    req: TunnelRequest,
    viaHttpsProxy: boolean,
  ): Promise<Tunnel> {
    const book = this.#hostBook;
    const domain = book?.domain ?? null;
    if (!book || domain === null) {
      throw new TunnelRefused(
        "host_not_allowed",
        "this server does not serve HTTP tunnels (its operator starts mport-server with --http-domain)",
      );
    }
    const key = `${session.owner}\0${req.name}`;
    const existing = this.#tunnels.get(key);
    if (existing) this.#checkHolder(existing, session);
    if (existing && existing.kind !== "http") {
      throw new TunnelRefused(
        "name_in_use",
        `tunnel ${req.name} is a TCP tunnel of yours; pick another --name for this one`,
      );
    }
    const wanted = req.domain?.toLowerCase() ??
      (req.subdomain !== undefined ? `${req.subdomain.toLowerCase()}.${domain}` : null);
    if (existing && (wanted === null || wanted === existing.host)) {
      return this.#takeOver(existing, session);
    }
    const recent = this.#checkNewTunnel(session, existing);
    const host = req.domain !== undefined
      ? await book.domainFor(session.userId, req.domain, req.name)
      : await book.subdomainFor(session.userId, req.name, req.subdomain);
    const live = this.#hosts.get(host);
    if (live && live !== existing) {
      if (live.userId !== session.userId) {
        throw new TunnelRefused("host_taken", `${host} is in use by another user`);
      }
      this.#checkHolder(live, session);
      throw new TunnelRefused(
        "host_taken",
        `${host} is in use by your tunnel ${live.name}; stop it or choose another --subdomain`,
      );
    }
    if (existing) {
      if (existing.session && existing.session !== session) {
        existing.session.lostTunnel(
          existing,
          "taken over by a newer connection of the same client",
        );
      }
      this.release(existing, "the client asked for a different host name");
    }
    const now = this.#now();
    recent.push(now);
    this.#createdAt.set(session.owner, recent);
    const tunnel = new Tunnel(session, req, {
      kind: "http",
      host,
      url: this.#httpUrl(host, viaHttpsProxy),
    });
    tunnel.session = session;
    tunnel.heldSince = now;
    tunnel.openedAt = now;
    this.#tunnels.set(key, tunnel);
    this.#hosts.set(host, tunnel);
    this.#stats.tunnelsCreated++;
    this.#stats.tunnelsActive++;
    this.#log.info("tunnel {name} opened on {url} for {local}", {
      name: tunnel.name,
      url: tunnel.url,
      local: tunnel.local,
    });
    this.#events?.("tunnel_opened", tunnel, { host, local: tunnel.local });
    return tunnel;
  }

  /** The public URL of an HTTP tunnel's host. */
  #httpUrl(host: string, viaHttpsProxy: boolean): string {
    const c = this.#config;
    const scheme = c.publicHttpScheme ?? (c.tlsCert || viaHttpsProxy ? "https" : "http");
    // Behind a proxy (--public-http-url-scheme or --public-url given, or a trusted proxy on
    // https) the default port is used; otherwise the port the server listens on is in the URL.
    const behindProxy = c.publicHttpScheme !== null || c.publicUrl !== null || viaHttpsProxy;
    // Plain http is served on --http-listen when there is one; https only on the main port.
    const sites = this.#ports_.sites ?? c.httpListen?.port ?? null;
    const main = this.#ports_.main ?? c.listenPort;
    const port = behindProxy ? null : scheme === "http" && sites !== null ? sites : main;
    const standard = port === null || (scheme === "https" ? port === 443 : port === 80);
    return `${scheme}://${host}${standard ? "" : `:${port}`}`;
  }

  /** Throws `name_in_use` unless `session` may take `tunnel` from its holder. */
  #checkHolder(tunnel: Tunnel, session: TunnelOwnerSession): void {
    const holder = tunnel.session;
    if (!holder || holder === session || holder.closed || holder.clientId === session.clientId) {
      return;
    }
    const since = new Date(tunnel.heldSince).toISOString().replace(/\.\d{3}Z$/, "Z");
    throw new TunnelRefused(
      "name_in_use",
      `tunnel ${tunnel.name} is in use by another client (${holder.remote}, since ${since}); ` +
        "pick another --name or stop that client",
    );
  }

  #takeOver(existing: Tunnel, session: TunnelOwnerSession): Tunnel {
    if (existing.session && existing.session !== session) {
      existing.session.lostTunnel(existing, "taken over by a newer connection of the same client");
    }
    clearTimeout(existing.graceTimer);
    existing.graceTimer = undefined;
    if (existing.session !== session) existing.heldSince = this.#now();
    existing.session = session;
    existing.limits = session.limits;
    this.#log.info("tunnel {name} ({url}) resumed by session {session}", {
      name: existing.name,
      url: existing.url,
      session: session.id,
    });
    return existing;
  }

  /** The session is gone: keep its tunnels for the grace period, then release them. */
  detach(session: TunnelOwnerSession, graceMs: number): void {
    for (const t of this.#tunnels.values()) {
      if (t.session !== session) continue;
      t.session = null;
      clearTimeout(t.graceTimer);
      t.graceTimer = setTimeout(() => {
        this.release(t, `client did not come back within ${graceMs / 1000} s`);
      }, graceMs);
    }
  }

  /** Closes a tunnel's port for good. */
  release(tunnel: Tunnel, reason: string): void {
    const key = `${tunnel.owner}\0${tunnel.name}`;
    if (this.#tunnels.get(key) !== tunnel) return;
    this.#tunnels.delete(key);
    tunnel.close(reason);
    if (tunnel.host !== null) {
      this.#hosts.delete(tunnel.host);
    } else {
      this.#ports.release(tunnel.port);
      this.#book.released({ userId: tunnel.userId, port: tunnel.port });
    }
    this.#stats.tunnelsActive--;
    this.#stats.tunnelsReleased++;
    this.#log.info("tunnel {name} released {where}: {reason}", {
      name: tunnel.name,
      where: tunnel.host ?? `port ${tunnel.port}`,
      reason,
    });
    this.#events?.(
      "tunnel_closed",
      tunnel,
      tunnel.host !== null ? { host: tunnel.host, reason } : { port: tunnel.port, reason },
    );
  }
}
