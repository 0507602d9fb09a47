// Composition root of the client: transport, reconnect loop with backoff, shutdown.
import { Backoff } from "../shared/backoff.ts";
import { log } from "../shared/log.ts";
import { printable } from "../shared/sanitize.ts";
import { formatHostPort } from "../shared/address.ts";
import type { TunnelGrant, TunnelRefusal } from "../shared/protocol.ts";
import type { ClientConfig, TunnelSpec } from "./config.ts";
import { ClientSession } from "./session.ts";
import type { StreamCounters } from "./streams.ts";
import { TunnelGates } from "./tunnel_gate.ts";
import { HttpTunnels } from "./http/http_tunnels.ts";
import { Capture } from "./inspector/capture.ts";
import { launchInspector } from "./inspector/launch.ts";
import { MuxDialer } from "./egress/mux_dialer.ts";
import type { EgressStatus } from "./egress/egress_types.ts";
import { type SocksServer, startSocksServer } from "./egress/socks_server.ts";
import { VpnClient } from "./vpn/vpn_client.ts";

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
  /** The inspector (HTTP tunnels) or status page (`mport socks`) is listening. */
  inspector?(url: string): void;
  /** `mport socks`: the local proxy listens and the server accepted egress. */
  egress?(addr: Deno.NetAddr): void;
  /** `mport vpn`: the tunnel is up (the line says address, device, routes, DNS). */
  vpn?(line: string): void;
}

/** A running client. */
export interface RunningClient {
  /** Resolves when the client stops: `fatal` carries the message when retrying cannot help. */
  readonly done: Promise<{ fatal: string | null }>;
  readonly counters: StreamCounters;
  /** `mport socks`: the local proxy's address once it listens. */
  socksAddr(): Deno.NetAddr | null;
  /** The inspector's (or status page's) address once it listens (null: off, failed or not yet). */
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
  // For the status page: whether a session is welcomed, since when, and why the last one ended.
  let link: { connected: boolean; since: number | null; problem: string | null } = {
    connected: false,
    since: null,
    problem: null,
  };
  const egressStatus = (): EgressStatus | null => {
    if (!config.egress) return null;
    const s = socks as SocksServer | null;
    const c = dialer.counters;
    return {
      kind: "socks",
      server: config.server.origin,
      ...link,
      bytesUp: c.bytesUp,
      bytesDown: c.bytesDown,
      listen: s
        ? formatHostPort(s.addr.hostname, s.addr.port)
        : formatHostPort(config.egress.host, config.egress.port),
      connections: { active: c.active, opened: c.opened, refused: c.refused },
    };
  };
  // mport vpn: the TUN device and the host's changes outlive sessions; each session carries packets.
  const vpn = config.vpn
    ? new VpnClient(config.vpn, {
      url: config.server.origin,
      host: config.proxy?.host ?? config.server.hostname,
      port: config.proxy?.port ??
        (Number(config.server.port) || (config.server.protocol === "wss:" ? 443 : 80)),
    }, log("vpn"))
    : null;
  const inspector = launchInspector(
    capture || config.egress || vpn ? config.inspect : null,
    {
      capture,
      replay: (entry, edits) => http.replay(entry, edits),
      status: () => ({ tunnels: http.status(urls) }),
      egress: config.egress ? egressStatus : vpn ? () => vpn.status() : undefined,
      disconnect: config.egress || vpn ? () => void close() : undefined,
    },
    events,
  );
  const done = (async (): Promise<{ fatal: string | null }> => {
    await socksStarted;
    if (socksFailed) return { fatal: socksFailed };
    if (vpn) {
      const cleaned = await vpn.recover();
      if (cleaned.length > 0) {
        events.problem(
          `cleaned up after an earlier mport vpn that did not exit cleanly: ${cleaned.join(", ")}`,
        );
      }
    }
    try {
      while (!stopping) {
        // The session has made every server text it passes on printable.
        // With the VPN up, dial the address kept outside it (its name may not resolve now).
        const pinned = vpn?.pinnedAddress();
        const session = new ClientSession(
          pinned ? { ...config, connectAddress: pinned } : config,
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
            onVpn: vpn
              ? async (lease, pickMux, lost) => {
                const line = await vpn.onLease(lease, pickMux, lost);
                if (line) events.vpn?.(line);
              }
              : undefined,
            onEgress: () => {
              // Sent on every welcome: the session is up.
              link = { connected: true, since: Date.now(), problem: null };
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
        link = { connected: false, since: null, problem: printable(end.message) };
        vpn?.onSessionEnd(printable(end.message));
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
      await vpn?.close();
      await inspector.close();
    }
  })();

  async function close(): Promise<void> {
    stopping = true;
    current?.close();
    wake?.();
    await done;
  }

  return {
    done,
    counters,
    inspectorAddr: () => inspector.addr(),
    socksAddr: () => (socks as SocksServer | null)?.addr ?? null,
    close,
  };
}
