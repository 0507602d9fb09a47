// Composition root of mport-server: wires auth, tunnels, broker, sessions and the HTTP app.
import { formatHostPort } from "../shared/address.ts";
import { log } from "../shared/log.ts";
import { buildApp } from "./app.ts";
import { Accounts } from "./accounts/accounts.ts";
import { PortBook } from "./accounts/port_book.ts";
import { UsageMeter } from "./accounts/usage.ts";
import { AuthLimiter } from "./auth.ts";
import type { Store } from "./store/store.ts";
import type { ServerConfig } from "./config.ts";
import type { ControlSession } from "./control/session.ts";
import { type EndpointDeps, handleControl, handleStream } from "./endpoints.ts";
import { PortAllocator } from "./listeners/port_allocator.ts";
import { Stats } from "./stats.ts";
import { Broker } from "./streams/broker.ts";
import { TunnelRegistry } from "./tunnels.ts";

/** A running server. */
export interface RunningServer {
  /** The HTTP address actually bound (port resolved when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** `http://host:port` or `https://…` of the HTTP endpoint. */
  readonly url: string;
  readonly stats: Stats;
  readonly usage: UsageMeter;
  /** Graceful shutdown: stop accepting, tell clients, drain streams up to the deadline. */
  close(): Promise<void>;
}

/**
 * Starts mport-server with a validated config and an open store. The store stays the caller's:
 * `close()` flushes usage into it but does not close it.
 */
export function startServer(config: ServerConfig, store: Store): Promise<RunningServer> {
  const logger = log("server");
  const now = Date.now;
  const usage = new UsageMeter(store, now);
  const sessions = new Map<string, ControlSession>();
  const stats = new Stats(now, {
    streamsPooled: () => [...sessions.values()].reduce((n, s) => n + s.idle.length, 0),
    extra: () => userMetrics(usage),
  });
  const accounts = new Accounts(store, config.tokens, now);
  const audit = (kind: string, userId: number | null, detail: Record<string, unknown>) => {
    store.addEvent({ at: now(), kind, userId, detail }).catch((e) => {
      stats.error("store");
      logger.error("cannot record audit event {kind}: {error}", { kind, error: String(e) });
    });
  };
  let shuttingDown = false;
  const broker = new Broker(config, stats, usage, logger, now);
  const ports = new PortAllocator(config.portRange, config.bindHost);
  const registry = new TunnelRegistry(
    ports,
    new PortBook(store, now),
    config,
    stats,
    logger,
    (tunnel, conn) => broker.onPublicConn(tunnel, conn),
    now,
    (kind, tunnel, detail) => audit(kind, tunnel.userId, { tunnel: tunnel.name, ...detail }),
  );
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
    limiter: new AuthLimiter(config.authFailuresPerMinute, config.authBlockMs, now),
  };
  const app = buildApp({
    pathPrefix: config.pathPrefix,
    stats,
    control: (req, ip) => handleControl(req, ip, deps),
    stream: (req, ip) => handleStream(req, ip, deps),
    health: () => ({
      ok: !shuttingDown,
      detail: { uptimeSeconds: Math.round(stats.uptimeSeconds()), clients: stats.clientsConnected },
    }),
  });

  return new Promise((resolve, reject) => {
    let httpServer: Deno.HttpServer<Deno.NetAddr>;
    const tls = config.tlsCert && config.tlsKey
      ? { cert: config.tlsCert, key: config.tlsKey.reveal() }
      : {};
    try {
      httpServer = Deno.serve({
        hostname: config.listenHost,
        port: config.listenPort,
        ...tls,
        onListen: () => {},
        onError: (e) => {
          stats.error("http");
          logger.error("HTTP handler failed: {error}", { error: String(e) });
          return new Response("internal error\n", { status: 500 });
        },
      }, app.fetch);
    } catch (e) {
      if (e instanceof Deno.errors.AddrInUse) {
        reject(
          new Error(
            `cannot listen on ${
              formatHostPort(config.listenHost, config.listenPort)
            }: address already in use (choose another --listen)`,
          ),
        );
        return;
      }
      reject(e);
      return;
    }
    const flush = () =>
      usage.flush().catch((e) => {
        stats.error("store");
        logger.error("cannot write usage to the store (kept for the next try): {error}", {
          error: String(e),
        });
      });
    const flushTimer = setInterval(flush, config.usageFlushMs);
    const statsTimer = config.statsIntervalMs > 0
      ? setInterval(
        () => logger.info("stats {stats}", { stats: stats.snapshot() }),
        config.statsIntervalMs,
      )
      : undefined;
    const addr = httpServer.addr;
    const scheme = config.tlsCert ? "https" : "http";
    let closing: Promise<void> | null = null;
    resolve({
      addr,
      url: `${scheme}://${formatHostPort(addr.hostname, addr.port)}`,
      stats,
      usage,
      close() {
        closing ??= (async () => {
          shuttingDown = true;
          clearInterval(statsTimer);
          clearInterval(flushTimer);
          for (const t of registry.all()) registry.release(t, "server shutting down");
          for (const s of [...sessions.values()]) s.shutdown();
          const deadline = Date.now() + config.drainMs;
          while (broker.bridges.size > 0 && Date.now() < deadline) {
            await new Promise((r) => setTimeout(r, 50));
          }
          if (broker.bridges.size > 0) {
            logger.warn("drain deadline reached: closing {n} open stream(s)", {
              n: broker.bridges.size,
            });
          }
          for (const b of [...broker.bridges]) b.abort("server shutting down");
          await httpServer.shutdown();
          clearInterval(flushTimer);
          await flush();
        })();
        return closing;
      },
    });
  });
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
