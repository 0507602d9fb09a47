// Composition root of the client: transport, reconnect loop with backoff, shutdown.
import { Backoff } from "../shared/backoff.ts";
import { log } from "../shared/log.ts";
import { printable } from "../shared/sanitize.ts";
import type { TunnelGrant, TunnelRefusal } from "../shared/protocol.ts";
import type { ClientConfig, TunnelSpec } from "./config.ts";
import { ClientSession } from "./session.ts";
import type { StreamCounters } from "./streams.ts";
import { TunnelGates } from "./tunnel_gate.ts";
import { HttpTunnels } from "./http/http_tunnels.ts";
import { Capture } from "./inspector/capture.ts";
import { type RunningInspector, startInspector } from "./inspector/server.ts";
import { MuxDialer } from "./egress/mux_dialer.ts";
import { type SocksServer, startSocksServer } from "./egress/socks_server.ts";

/**
 * What the client prints when a session ended and it will try again: the reason, then
 * `; reconnecting in 0.4 s`. An older server's "; reconnect later" is dropped (it would repeat).
 */
export function retryMessage(reason: string, waitMs: number): string {
  const why = reason.replace(/;?\s*reconnect later\.?$/i, "");
  return `${why}; reconnecting in ${(waitMs / 1000).toFixed(1)} s`;
}

/** What the client tells its user. */
export interface ClientEvents {
  /** A tunnel is ready (again, after every reconnect). */
  ready(grant: TunnelGrant, spec: TunnelSpec): void;
  /** A problem the user should read: a refusal, a lost connection, a retry. */
  problem(message: string): void;
  /** The request inspector is listening (HTTP tunnels only). */
  inspector?(url: string): void;
  /** `mport socks`: the local proxy listens and the server accepted egress. */
  egress?(addr: Deno.NetAddr): void;
}

/** A running client. */
export interface RunningClient {
  /** Resolves when the client stops: `fatal` carries the message when retrying cannot help. */
  readonly done: Promise<{ fatal: string | null }>;
  readonly counters: StreamCounters;
  /** `mport socks`: the local proxy's address once it listens. */
  socksAddr(): Deno.NetAddr | null;
  /** The request inspector's address once it listens (null: off, failed or not yet). */
  inspectorAddr(): Deno.NetAddr | null;
  /**
   * Stops reconnecting, says `bye` and closes the control channel (the server frees the ports at
   * once), lets open streams drain, then resolves.
   */
  close(): Promise<void>;
}

/**
 * Starts the client's reconnect loop. `clientId` is this installation's persistent id (see
 * `client_id.ts`): with it the server lets this client, and no other, resume its tunnels.
 */
export function runClient(
  config: ClientConfig,
  events: ClientEvents,
  clientId: string,
): RunningClient {
  const logger = log("client");
  const counters: StreamCounters = {
    opened: 0,
    active: 0,
    localDialFailures: 0,
    refused: 0,
    bytesToLocal: 0,
    bytesFromLocal: 0,
  };
  const ports = new Map<string, number>();
  // One set of caps for every session, so reconnecting gives a server no more streams.
  const gates = new TunnelGates(config.tunnels.map((t) => t.name), config.maxConnections);
  const backoff = new Backoff({ baseMs: config.backoffBaseMs, capMs: config.backoffCapMs });
  const anyHttp = config.tunnels.some((t) => t.http !== null);
  const capture = anyHttp && config.inspect ? new Capture() : null;
  const http = new HttpTunnels(config.tunnels, config.dialTimeoutMs, capture, log("http"));
  /** Public URL of each granted tunnel, for the inspector. */
  const urls = new Map<string, string>();
  let inspector: RunningInspector | null = null;
  const inspectorStarted = capture && config.inspect
    ? startInspector({
      hostname: config.inspect.host,
      port: config.inspect.port,
      capture,
      replay: (entry, edits) => http.replay(entry, edits),
      status: () => ({ tunnels: http.status(urls) }),
    }).then((running) => {
      inspector = running;
      const a = running.addr;
      events.inspector?.(
        `http://${a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname}:${a.port}`,
      );
    }, (e) => {
      events.problem(`request inspector not started: ${(e as Error).message}`);
    })
    : Promise.resolve();
  let stopping = false;
  let current: ClientSession | null = null;
  const sessions = new Set<ClientSession>();
  let wake: (() => void) | null = null;

  // mport socks: the local proxy carries its connections on the current session's data connections.
  const dialer = new MuxDialer(() => current?.pool?.pickMux() ?? null);
  let socks: SocksServer | null = null;
  let socksFailed: string | null = null;
  let egressAnnounced = false;
  const socksStarted = config.egress
    ? startSocksServer({
      hostname: config.egress.host,
      port: config.egress.port,
      auth: config.egress.auth
        ? { username: config.egress.auth.username, password: config.egress.auth.password.reveal() }
        : null,
      dialer,
      log: log("socks"),
    }).then((s) => {
      socks = s;
    }, (e) => {
      socksFailed = (e as Error).message;
    })
    : Promise.resolve();
  const done = (async (): Promise<{ fatal: string | null }> => {
    await socksStarted;
    if (socksFailed) return { fatal: socksFailed };
    try {
      while (!stopping) {
        // The session has made every server text it passes on printable.
        const session = new ClientSession(
          config,
          clientId,
          ports,
          counters,
          gates,
          {
            onReady: (grant, spec) => {
              urls.set(grant.name, grant.url);
              events.ready(grant, spec);
            },
            onRefused: (r: TunnelRefusal) =>
              events.problem(`tunnel ${r.name} refused: ${r.message}`),
            onNotice: (message) => events.problem(message),
            onTunnelClosed: (name, reason) =>
              events.problem(`tunnel ${name} closed by the server: ${reason}`),
            onEgress: () => {
              const s = socks as SocksServer | null;
              if (s && !egressAnnounced) {
                egressAnnounced = true;
                events.egress?.(s.addr);
              }
            },
          },
          logger,
          http,
        );
        current = session;
        sessions.add(session);
        const started = Date.now();
        const end = await session.run();
        current = null;
        const pool = session.pool;
        if (!pool || pool.muxes.size === 0) sessions.delete(session);
        else {
          // Keep draining streams of the old session; forget it when they are done.
          const check = setInterval(() => {
            if (pool.muxes.size === 0) {
              clearInterval(check);
              sessions.delete(session);
            }
          }, 1000);
        }
        if (stopping) break;
        if (end.fatal) return { fatal: printable(end.message) };
        if (end.welcomed && Date.now() - started > 10_000) backoff.reset();
        const wait = backoff.next();
        events.problem(retryMessage(printable(end.message), wait));
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, wait);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        wake = null;
      }
      return { fatal: null };
    } finally {
      const deadline = Date.now() + config.drainMs;
      const open = () => [...sessions].reduce((n, s) => n + (s.pool?.streams ?? 0), 0);
      while (open() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const s of sessions) s.pool?.close();
      http.close();
      await (socks as SocksServer | null)?.close();
      await inspectorStarted;
      await (inspector as RunningInspector | null)?.close();
    }
  })();

  return {
    done,
    counters,
    inspectorAddr: () => (inspector as RunningInspector | null)?.addr ?? null,
    socksAddr: () => (socks as SocksServer | null)?.addr ?? null,
    async close() {
      stopping = true;
      current?.close();
      wake?.();
      await done;
    },
  };
}
