// Composition root of mport-server: wires auth, tunnels, broker, sessions and the HTTP app.
import { formatHostPort } from "../shared/address.ts";
import { log } from "../shared/log.ts";
import { buildApp } from "./app.ts";
import { AuthLimiter, TokenAuth } from "./auth.ts";
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
  /** Graceful shutdown: stop accepting, tell clients, drain streams up to the deadline. */
  close(): Promise<void>;
}

/** Starts mport-server with a validated config. */
export function startServer(config: ServerConfig): Promise<RunningServer> {
  const logger = log("server");
  const stats = new Stats();
  const now = Date.now;
  const sessions = new Map<string, ControlSession>();
  let shuttingDown = false;
  const broker = new Broker(config, stats, logger, now);
  const ports = new PortAllocator(config.portRange, config.bindHost);
  const registry = new TunnelRegistry(
    ports,
    config,
    stats,
    logger,
    (tunnel, conn) => broker.onPublicConn(tunnel, conn),
    now,
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
    auth: new TokenAuth(config.tokens),
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
      close() {
        closing ??= (async () => {
          shuttingDown = true;
          clearInterval(statsTimer);
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
        })();
        return closing;
      },
    });
  });
}
