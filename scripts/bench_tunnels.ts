// The tunnels the benchmark compares, behind one interface; how mport is started lives here only.
import {
  CLIENT_MAIN,
  type ClientProc,
  procCpuSeconds,
  randomToken,
  type ServerProc,
  spawnDeno,
  startClientProc,
  startServerProc,
} from "./mport_procs.ts";
import { peakRssKiB, treeRssKiB } from "./bench_sys.ts";

/** A running tunnel in front of the benchmark service. */
export interface Tunnel {
  /** Port on 127.0.0.1 that users connect to. */
  readonly port: number;
  /** CPU seconds used so far by every process of the tunnel (server and client side). */
  cpuSeconds(): number | null;
  /** Resident memory now of the server side and the client side, in KiB. */
  rssKiB(): { server: number | null; client: number | null };
  /** Peak resident memory of the server side and the client side, in KiB. */
  peakRssKiB(): { server: number | null; client: number | null };
  stop(): Promise<void>;
}

/**
 * How the benchmark runs mport: the one place to adjust when flags change. The server takes up to
 * 8,000 idle connections of one client (the idle-memory phase), far past its defaults of 256.
 */
export const MPORT_BENCH = {
  /** `--pool` of the client: the default, 1. */
  pool: 1,
  /** Extra mport-server arguments. */
  serverArgs: ["--max-connections-per-client", "100000", "--max-pending", "100000"],
  /** Extra mport client arguments. */
  // The idle-memory test holds 8,000 connections through one tunnel: above the client's default cap.
  clientArgs: ["--max-connections", "16384"] as string[],
  /** One-line description for the report. */
  describe(): string {
    return `mport-server ${this.serverArgs.join(" ")}; mport tcp --pool ${this.pool}${
      this.clientArgs.length ? " " + this.clientArgs.join(" ") : ""
    }`;
  },
};

/** Starts mport-server and an mport client publishing `127.0.0.1:servicePort`. */
export async function startMportTunnel(
  servicePort: number,
  denoFlags: readonly string[],
): Promise<Tunnel> {
  const token = randomToken();
  const server: ServerProc = await startServerProc({
    token,
    denoFlags,
    extraArgs: MPORT_BENCH.serverArgs,
  });
  let client: ClientProc;
  try {
    client = await startClientProc({
      serverUrl: server.wsUrl,
      token,
      local: `127.0.0.1:${servicePort}`,
      pool: MPORT_BENCH.pool,
      extraArgs: MPORT_BENCH.clientArgs,
      denoFlags,
    });
  } catch (e) {
    await server.proc.stop();
    throw e;
  }
  const s = server.proc.pid;
  const c = client.proc.pid;
  return {
    port: client.publicPort,
    cpuSeconds() {
      const a = procCpuSeconds(s);
      const b = procCpuSeconds(c);
      return a === null || b === null ? null : a + b;
    },
    rssKiB: () => ({ server: treeRssKiB([s]), client: treeRssKiB([c]) }),
    peakRssKiB: () => ({ server: peakRssKiB(s), client: peakRssKiB(c) }),
    async stop() {
      await client.proc.stop();
      await server.proc.stop();
    },
  };
}

/** The HTTP domain the benchmark's mport-server serves tunnels under (never resolved). */
export const BENCH_HTTP_DOMAIN = "t.test";

/** A running mport HTTP tunnel: visitors connect to `port` with `Host: host`. */
export interface HttpTunnel extends Tunnel {
  readonly host: string;
}

/**
 * Starts mport-server with `--http-domain t.test` and `mport http 127.0.0.1:servicePort
 * --subdomain bench` (no inspector), and waits for the tunnel's URL.
 */
export async function startMportHttpTunnel(
  servicePort: number,
  denoFlags: readonly string[],
): Promise<HttpTunnel> {
  const token = randomToken();
  const server = await startServerProc({
    token,
    denoFlags,
    extraArgs: ["--http-domain", BENCH_HTTP_DOMAIN],
  });
  const client = spawnDeno("client", CLIENT_MAIN, [
    "http",
    `127.0.0.1:${servicePort}`,
    "--subdomain",
    "bench",
    "--no-inspect",
    "--server",
    server.wsUrl,
    "--token",
    token,
    "--log-level",
    "warning",
  ], denoFlags);
  let host: string;
  try {
    const m = await Promise.race([
      client.stdout.wait(/^\S+ https?:\/\/([^\s:/]+)(?::\d+)? -> \S+$/, 60_000),
      client.status().then((s) => {
        throw new Error(`mport http exited with code ${s.code} before its tunnel was up`);
      }),
    ]);
    host = m[1]!;
  } catch (e) {
    await client.stop("SIGKILL");
    await server.proc.stop();
    throw new Error(`${(e as Error).message}\n${client.output()}`);
  }
  const s = server.proc.pid;
  const c = client.pid;
  return {
    port: server.port,
    host,
    cpuSeconds() {
      const a = procCpuSeconds(s);
      const b = procCpuSeconds(c);
      return a === null || b === null ? null : a + b;
    },
    rssKiB: () => ({ server: treeRssKiB([s]), client: treeRssKiB([c]) }),
    peakRssKiB: () => ({ server: peakRssKiB(s), client: peakRssKiB(c) }),
    async stop() {
      await client.stop();
      await server.proc.stop();
    },
  };
}
