// Composition root of mport-server: wires auth, tunnels, broker, sessions and the HTTP app.
import { formatHostPort } from "../shared/address.ts";
import { log } from "../shared/log.ts";
import { closeQuietly } from "../shared/net.ts";
import { CloseCode, DEFAULT_PATH_PREFIX } from "../shared/protocol.ts";
import { buildApp } from "./app.ts";
import { buildApi } from "./api/api.ts";
import { EventBus } from "./api/events_bus.ts";
import { ManagementService } from "./api/service.ts";
import { WebSessions } from "./api/web_sessions.ts";
import { authorizeAdmin, liveClients, liveTunnels } from "./admin/live.ts";
import { Accounts } from "./accounts/accounts.ts";
import { PortBook } from "./accounts/port_book.ts";
import { UsageMeter } from "./accounts/usage.ts";
import { AuthFailureAudit, AuthLimiter } from "./auth.ts";
import { normalizeIp, TrustedProxies } from "./client_address.ts";
import { StoreTimeout } from "./store/deadline_store.ts";
import type { Store } from "./store/store.ts";
import type { ServerConfig } from "./config.ts";
import type { ControlSession } from "./control/session.ts";
import { type EndpointDeps, handleUpgrade, upgradeEndpoint } from "./endpoints.ts";
import { startFront } from "./listeners/http_front.ts";
import { raiseNofileLimit } from "./listeners/fd_limits.ts";
import type { Mux } from "../shared/mux.ts";
import { OwnerBudgets } from "./streams/budgets.ts";
import { PortAllocator } from "./listeners/port_allocator.ts";
import { Stats } from "./stats.ts";
import { MetricsAccess } from "./metrics_access.ts";
import { Broker } from "./streams/broker.ts";
import { type Tunnel, TunnelRegistry } from "./tunnels.ts";
import { HostBook } from "./accounts/host_book.ts";
import { HttpStats } from "./http/http_stats.ts";
import { Vhosts } from "./http/vhosts.ts";
import { Egress } from "./egress/egress.ts";
import { UdpRelay, UdpStats } from "./udp/udp_relay.ts";
import { EgressPolicy } from "./egress/policy.ts";
import { VpnGateway } from "./vpn/vpn_gateway.ts";
import { parseVpnPool, VpnPool } from "./vpn/vpn_pool.ts";
import type { FrontSlot, HttpFront, RequestHead } from "./listeners/http_front.ts";

/** A running server. */
export interface RunningServer {
  /** The HTTP address actually bound (port resolved when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** `http://host:port` or `https://…` of the HTTP endpoint. */
  readonly url: string;
  /** The `--http-listen` address (tunnels' sites only), when there is one. */
  readonly sitesAddr: Deno.NetAddr | null;
  readonly stats: Stats;
  readonly usage: UsageMeter;
  /**
   * Graceful shutdown: stop accepting, tell clients, drain streams (up to `drainMs`), flush usage
   * (up to `storeTimeoutMs`), close the HTTP front.
   */
  close(): Promise<void>;
}

/** Optional steps of `startServer`. */
export interface StartOptions {
  /**
   * Runs once the HTTP port is bound and before any tunnel connection is handled (those that
   * arrive meanwhile wait for it), e.g. the first start's bootstrap, so that a port that cannot
   * be bound leaves the store untouched. If it throws, the port is closed again and
   * `startServer` rejects with its error.
   */
  afterBind?(addr: Deno.NetAddr): Promise<void>;
}

/**
 * Starts mport-server with a validated config and an open store. The store stays the caller's:
 * `close()` flushes usage into it but does not close it.
 */
export async function startServer(
  config: ServerConfig,
  store: Store,
  opts: StartOptions = {},
): Promise<RunningServer> {
  const logger = log("server");
  const now = Date.now;
  const usage = new UsageMeter(store, now);
  const sessions = new Map<string, ControlSession>();
  const muxes = new Set<Mux>();
  const httpStats = new HttpStats();
  const udpStats = new UdpStats();
  const stats = new Stats(now, {
    dataConns: () => muxes.size,
    extra: () => [
      ...userMetrics(usage),
      ...httpStats.prometheus(),
      ...udpStats.prometheus(),
      ...(vpn?.stats.prometheus() ?? []),
    ],
  });
  const accounts = new Accounts(store, config.tokens, now);
  const writeEvent = (
    at: number,
    kind: string,
    userId: number | null,
    detail: Record<string, unknown>,
  ): Promise<void> =>
    store.addEvent({ at, kind, userId, detail }).catch((e) => {
      stats.error("store");
      logger.error("cannot record audit event {kind}: {error}", { kind, error: String(e) });
    });
  const audit = (kind: string, userId: number | null, detail: Record<string, unknown>) => {
    writeEvent(now(), kind, userId, detail);
  };
  // Failed logins come in floods: one row per address per minute, with a count.
  const authFailures = new AuthFailureAudit(
    (row) => writeEvent(row.at, "auth_failed", null, { ...row.detail }),
    now,
  );
  let shuttingDown = false;
  // Live events for the API's event stream.
  // A copy of the counters: the bus keeps the previous reading to compute rates from.
  const bus = new EventBus(() => ({
    bytesIn: stats.bytesIn,
    bytesOut: stats.bytesOut,
    connectionsTotal: stats.connectionsTotal,
    connectionsActive: stats.connectionsActive,
    clientsConnected: stats.clientsConnected,
    tunnelsActive: stats.tunnelsActive,
  }));
  const tunnelEvent = (kind: "tunnel.opened" | "tunnel.closed", t: Tunnel, reason?: string) =>
    bus.publish({
      type: kind,
      data: {
        id: t.id,
        name: t.name,
        user: t.userName,
        userId: t.userId,
        url: t.url,
        port: t.port,
        ...(reason === undefined ? {} : { reason }),
      },
    });
  const broker = new Broker(config, stats, usage, logger, now);
  const ports = new PortAllocator(config.portRange, config.bindHost);
  const book = new PortBook(store, now, {
    ttlMs: config.reservationTtlMs,
    defaultMaxTunnels: config.maxTunnelsPerClient,
    onError: (e) => {
      stats.error("store");
      logger.error("cannot record a port reservation's last use: {error}", { error: String(e) });
    },
    onDropped: (r, reason) => {
      logger.info("port {port} no longer reserved for tunnel {tunnel} of user {user}: {reason}", {
        port: r.port,
        tunnel: r.tunnel ?? "-",
        user: r.userId,
        reason,
      });
      audit("port_released", r.userId, { port: r.port, tunnel: r.tunnel, reason });
    },
  });
  const registry = new TunnelRegistry(
    ports,
    book,
    config,
    stats,
    logger,
    (tunnel, conn) => broker.onPublicConn(tunnel, conn),
    now,
    (kind, tunnel, detail) => {
      audit(kind, tunnel.userId, { tunnel: tunnel.name, ...detail });
      tunnelEvent(
        kind === "tunnel_opened" ? "tunnel.opened" : "tunnel.closed",
        tunnel,
        typeof detail.reason === "string" ? detail.reason : undefined,
      );
    },
    new HostBook(store, { domain: config.httpDomain, now }),
  );
  registry.onUdpTunnel((tunnel) => {
    new UdpRelay(tunnel, {
      stats,
      udp: udpStats,
      usage,
      log: log("udp"),
      idleMs: config.udpIdleMs,
    }).run().catch((e) => {
      logger.error("UDP tunnel {name} stopped relaying: {error}", {
        name: tunnel.name,
        error: String(e),
      });
    });
  });
  const proxies = new TrustedProxies(config.trustedProxies);
  /** A trusted proxy says the browser reached it over https (session cookies get Secure). */
  const forwardedHttps = (headers: Headers, peer: string): boolean => {
    const ip = normalizeIp(peer);
    const proto = (headers.get("x-forwarded-proto") ?? "").split(",")[0]!.trim().toLowerCase();
    return ip !== null && proxies.trusts(ip) && proto === "https";
  };
  const vhosts = new Vhosts({
    domain: config.httpDomain,
    registry,
    broker,
    proxies,
    stats,
    httpStats,
    log: log("http"),
  });
  /** Requests the front routed to a tunnel (decided once, when the head arrived). */
  const forTunnel = new WeakSet<RequestHead>();
  const serveVisitor = (
    head: RequestHead,
    conn: Deno.Conn,
    leftover: Uint8Array,
    slot: FrontSlot,
  ) => {
    const handle = () => vhosts.serve(head, conn, leftover, slot);
    // Tunnels are restored by sessions, which wait for `afterBind` as well.
    if (binding) binding.then(handle, () => closeQuietly(conn));
    else handle();
  };
  const policy = new EgressPolicy(config.egressAllow, config.egressDeny);
  // --vpn-pool: the TUN device and the host's rules come first, so a server that cannot set them
  // up says so and does not start.
  const vpn = config.vpnPool
    ? await VpnGateway.start({
      pool: new VpnPool(parseVpnPool(config.vpnPool)),
      device: config.vpnDevice,
      mtu: config.vpnMtu,
      dns: config.vpnDns,
      policy,
      usage,
      monthlyQuotaBytes: config.monthlyQuotaBytes,
      log: log("vpn"),
      audit,
      stateFile: config.vpnStateFile,
    })
    : undefined;
  const deps: EndpointDeps = {
    config,
    registry,
    broker,
    stats,
    log: logger,
    sessions,
    shuttingDown: () => shuttingDown,
    now,
    accounts,
    usage,
    audit,
    onClientEvent: (kind, s) =>
      bus.publish({
        type: kind,
        data: { session: s.id, user: s.userName, userId: s.userId, address: s.remote },
      }),
    limiter: new AuthLimiter(config.authFailuresPerMinute, config.authBlockMs, now),
    authFailures,
    proxies,
    budgets: new OwnerBudgets(config.bufferBudgetBytes),
    muxes,
    egress: new Egress({
      enabled: config.egress,
      policy,
      maxConnectionsPerClient: config.maxConnectionsPerClient,
      monthlyQuotaBytes: config.monthlyQuotaBytes,
      usage,
      stats,
      log: log("egress"),
      audit,
    }),
    vpn,
  };
  // The management operations and browser sessions, shared by the API and the dashboard.
  const service = new ManagementService(store, config, now);
  const webSessions = new WebSessions(now);
  const api = buildApi({
    endpoint: deps,
    service,
    webSessions,
    // Dashboard logins fail apart from tunnel logins: a blocked browser never blocks a client.
    loginLimiter: new AuthLimiter(config.authFailuresPerMinute, config.authBlockMs, now),
    bus,
    now,
  });
  const app = buildApp({
    api,
    pathPrefix: config.pathPrefix,
    stats,
    metricsAccess: new MetricsAccess(config.metricsAllow, config.metricsToken),
    dashboard: {
      serverUrl: config.publicUrl,
      pathPrefix: config.pathPrefix === DEFAULT_PATH_PREFIX ? "" : config.pathPrefix,
    },
    health: () => ({
      ok: !shuttingDown,
      detail: { uptimeSeconds: Math.round(stats.uptimeSeconds()), clients: stats.clientsConnected },
    }),
    admin: {
      authorize: (req, ip) => authorizeAdmin(req, ip, deps),
      clients: () => liveClients(sessions.values()),
      tunnels: () => liveTunnels(registry.all()),
    },
  });

  const limit = raiseNofileLimit();
  if (typeof limit === "string") {
    logger.debug("open-file limit left as it is: {reason}", { reason: limit });
  } else if (limit.after.soft > limit.before.soft) {
    logger.debug("open-file limit raised from {before} to {after}", {
      before: limit.before.soft,
      after: limit.after.soft,
    });
  }
  /** While `afterBind` runs: upgrades wait for it. */
  let binding: Promise<void> | null = null;
  let front;
  const common = {
    limits: {
      maxConnections: config.maxHttpConnections,
      maxConnectionsPerIp: config.maxHttpConnectionsPerIp,
      maxUnauthenticatedPerIp: config.maxUnauthenticatedPerIp,
      headerTimeoutMs: config.headerTimeoutMs,
      maxHeadBytes: 16 * 1024,
      fdReserve: 16,
    },
    fetch: (req: Request, remote: Deno.NetAddr) =>
      app.fetch(req, {
        ip: proxies.clientIp(req.headers, remote.hostname),
        secure: config.tlsCert !== null || forwardedHttps(req.headers, remote.hostname),
      }),
    sharedPeer: (host: string) => {
      const ip = normalizeIp(host);
      return ip !== null && proxies.trusts(ip);
    },
    log: logger,
    counters: {
      refusal: (kind: string) => stats.refusal(kind),
      listenerRestart: () => stats.error("listener_restart"),
    },
  };
  const inUse = (host: string, port: number, flag: string) =>
    new Error(
      `cannot listen on ${
        formatHostPort(host, port)
      }: address already in use (choose another ${flag})`,
    );
  try {
    front = await startFront({
      ...common,
      hostname: config.listenHost,
      port: config.listenPort,
      tls: config.tlsCert && config.tlsKey
        ? { cert: config.tlsCert, key: config.tlsKey.reveal() }
        : undefined,
      route: (head) => {
        if (vhosts.claims(head)) {
          forTunnel.add(head);
          return "upgrade";
        }
        return upgradeEndpoint(config.pathPrefix, head.path) !== null &&
            (head.headers.get("upgrade") ?? "").toLowerCase() === "websocket"
          ? "upgrade"
          : "http";
      },
      onUpgrade: (head, conn, leftover, slot) => {
        if (forTunnel.has(head)) return serveVisitor(head, conn, leftover, slot);
        const handle = () => handleUpgrade(head, conn, leftover, slot, deps);
        (binding ? binding.then(handle) : handle()).catch((e) => {
          stats.error("http");
          logger.warn("upgrade from {remote} failed: {error}", {
            remote: head.remote.hostname,
            error: String(e),
          });
          closeQuietly(conn);
          slot.release();
        });
      },
    });
  } catch (e) {
    await vpn?.close();
    if (e instanceof Deno.errors.AddrInUse) {
      throw inUse(config.listenHost, config.listenPort, "--listen");
    }
    throw e;
  }
  // --http-listen: a plain-HTTP port for the tunnels' sites only (e.g. :80 next to nginx's 443).
  let sitesFront: HttpFront | null = null;
  if (config.httpListen) {
    const { host, port } = config.httpListen;
    try {
      sitesFront = await startFront({
        ...common,
        hostname: host,
        port,
        route: () => "upgrade",
        onUpgrade: (head, conn, leftover, slot) => {
          if (vhosts.claims(head)) serveVisitor(head, conn, leftover, slot);
          else vhosts.notFound(head, conn, slot);
        },
      });
    } catch (e) {
      await front.close();
      await vpn?.close();
      if (e instanceof Deno.errors.AddrInUse) throw inUse(host, port, "--http-listen");
      throw e;
    }
  }
  registry.boundPorts(front.addr.port, sitesFront?.addr.port ?? null);
  if (opts.afterBind) {
    binding = opts.afterBind(front.addr);
    try {
      await binding;
    } catch (e) {
      await front.close();
      await sitesFront?.close();
      await vpn?.close();
      throw e;
    } finally {
      binding = null;
    }
  }
  // Learn the user static tokens act as now, so their logins work if the store fails later.
  if (config.tokens.length > 0) accounts.staticAdmin().catch(() => {});
  const flush = () =>
    usage.flush().catch((e) => {
      stats.error("store");
      logger.error("cannot write usage to the store (kept for the next try): {error}", {
        error: String(e),
      });
    });
  const flushTimer = setInterval(flush, config.usageFlushMs);
  const finalWrites = async () => {
    const t0 = Date.now();
    // A periodic flush in flight took only the rows of its time: flush again for the rest.
    const usageDone = usage.flush().catch(() => {}).then(() => usage.flush());
    const others = Promise.allSettled([sweeping, book.settled(), authFailures.flush(true)]);
    const outcome = await settleWithin(usageDone, config.storeTimeoutMs);
    if (outcome === "timeout" || outcome instanceof StoreTimeout) {
      stats.error("store");
      logger.error(
        "final usage flush timed out after {ms} ms: usage counted since the last flush is lost",
        { ms: Date.now() - t0 },
      );
    } else if (outcome !== "done") {
      stats.error("store");
      logger.error("final usage flush failed: {error}", { error: String(outcome) });
    }
    await settleWithin(others, Math.max(0, config.storeTimeoutMs - (Date.now() - t0)));
  };
  // Reservations: refresh the live tunnels' last use, drop expired ones, trim users to their cap;
  // at start (a restart must not keep a full range blocked) and then periodically.
  let sweeping: Promise<unknown> | null = null;
  const sweep = () => {
    sweeping ??= book.sweep(
      registry.all().filter((t) => t.kind !== "http").map((t) => ({
        userId: t.userId,
        port: t.port,
      })),
    )
      .catch((e) => {
        stats.error("store");
        logger.error("cannot sweep port reservations: {error}", { error: String(e) });
      })
      .finally(() => (sweeping = null));
    return sweeping;
  };
  sweep();
  const sweepTimer = setInterval(sweep, book.sweepIntervalMs);
  // Writes a minute's auth_failed rows a few seconds after the minute is over.
  const authAuditTimer = setInterval(() => authFailures.flush(), 5_000);
  const statsTimer = config.statsIntervalMs > 0
    ? setInterval(
      () => logger.info("stats {stats}", { stats: stats.snapshot() }),
      config.statsIntervalMs,
    )
    : undefined;
  const idleTimer = config.idleTimeoutMs > 0
    ? setInterval(() => {
      const t = now();
      for (const s of [...broker.bridges]) {
        if (s.quietFor(t) >= config.idleTimeoutMs) {
          stats.refusal("idle_timeout");
          s.reset("internal", `idle for ${config.idleTimeoutMs / 1000} s`, "idle_timeout");
        }
      }
    }, Math.min(config.idleTimeoutMs / 2, 5_000))
    : undefined;
  const addr = front.addr;
  const scheme = config.tlsCert ? "https" : "http";
  let closing: Promise<void> | null = null;
  const running = front;
  return {
    addr,
    url: `${scheme}://${formatHostPort(addr.hostname, addr.port)}`,
    sitesAddr: sitesFront?.addr ?? null,
    stats,
    usage,
    close() {
      closing ??= (async () => {
        shuttingDown = true;
        clearInterval(statsTimer);
        clearInterval(flushTimer);
        clearInterval(sweepTimer);
        clearInterval(authAuditTimer);
        clearInterval(idleTimer);
        bus.close();
        running.stopAccepting();
        sitesFront?.stopAccepting();
        for (const t of registry.all()) registry.release(t, "server shutting down");
        for (const s of [...sessions.values()]) s.shutdown();
        const deadline = Date.now() + config.drainMs;
        while (broker.bridges.size > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
        }
        if (broker.bridges.size > 0) {
          logger.warn("drain deadline reached: resetting {n} open stream(s)", {
            n: broker.bridges.size,
          });
        }
        for (const b of [...broker.bridges]) b.reset("shutting_down", "server shutting down");
        for (const m of [...muxes]) m.close(CloseCode.goingAway, "server shutting down");
        // The last usage goes to the store before the front closes, within one store deadline:
        // a stalled database costs at most that, and SIGTERM still ends the process.
        await finalWrites();
        await vpn?.close();
        await running.close();
        await sitesFront?.close();
      })();
      return closing;
    },
  };
}

/** Waits for `p` at most `ms`: "done", its rejection reason, or "timeout". */
async function settleWithin(p: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), ms)));
  try {
    return await Promise.race([p.then(() => "done", (e) => e ?? "failed"), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function userMetrics(usage: UsageMeter): string[] {
  const lines = [
    "# HELP mport_user_bytes_total Bytes through each user's tunnels since the server started.",
    "# TYPE mport_user_bytes_total counter",
  ];
  for (const t of usage.totals.values()) {
    const user = t.name.replace(/["\\\n]/g, "_");
    lines.push(`mport_user_bytes_total{user="${user}",direction="in"} ${t.bytesIn}`);
    lines.push(`mport_user_bytes_total{user="${user}",direction="out"} ${t.bytesOut}`);
  }
  return lines;
}
