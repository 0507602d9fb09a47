// mport's VPN in the benchmark's namespaces: mport-server with --vpn-pool on 203.0.113.2 (wss:// with
// a certificate from the throwaway CA, or ws://) and `mport vpn --routes default` in the client one.
import { NET, type Topology } from "./netns.ts";
import type { Pki } from "./bench_vpn_pki.ts";
import { denoIn, ready, type VpnRig } from "./bench_vpn_ns.ts";
import { CLIENT_MAIN, type Proc, randomToken, SERVER_MAIN } from "./mport_procs.ts";

/** mport-server's port on the server namespace's address. */
export const MPORT_VPN_PORT = 8443;
/** The pool mport-server hands out. */
export const MPORT_VPN_POOL = "10.8.0.0/24";
/** mport-server and `mport vpn` load, compile and set up TUN devices within this. */
const READY_MS = 60_000;

/**
 * Why `mport vpn` cannot be benchmarked here, or null when it can: the client has no `vpn` command
 * or the server no `--vpn-pool` (while the feature is being written).
 */
export async function mportVpnUnavailable(): Promise<string | null> {
  const read = (p: string) => Deno.readTextFile(new URL(p, import.meta.url)).catch(() => "");
  const client = await read("../client/config.ts");
  const server = await read("../server/config.ts");
  if (!client.includes('"vpn"')) return "mport vpn is not available (client has no vpn command)";
  if (!server.includes("--vpn-pool")) {
    return "mport vpn is not available (server has no --vpn-pool)";
  }
  return null;
}

/** Options of {@link startMportVpn}. */
export interface MportVpnOptions {
  /** wss:// (TLS, as OpenVPN encrypts too) or ws://. */
  readonly tls: boolean;
  readonly pki: Pki;
  /** A scratch directory the caller removes (the server's data dir and the client's config). */
  readonly dir: string;
  /** Extra deno flags for both processes, e.g. `--cpu-prof --cpu-prof-dir=/tmp/p`. */
  readonly denoFlags?: readonly string[];
}

/** Starts mport-server and `mport vpn`; resolves once the client printed its `vpn …` line. */
export async function startMportVpn(topo: Topology, opts: MportVpnOptions): Promise<VpnRig> {
  const token = randomToken();
  const procs: Proc[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // The client first: it restores its routes; then the server removes its table and device.
    for (const p of procs.reverse()) await p.stop("SIGTERM", 10_000);
  };
  const dataDir = `${opts.dir}/mport-server-${opts.tls ? "wss" : "ws"}`;
  const configHome = `${opts.dir}/mport-client-${opts.tls ? "wss" : "ws"}`;
  try {
    await Deno.mkdir(dataDir, { recursive: true });
    await Deno.mkdir(configHome, { recursive: true });
    const server = denoIn(
      topo.server,
      "mport-server",
      SERVER_MAIN,
      [
        "--listen",
        `0.0.0.0:${MPORT_VPN_PORT}`,
        "--token",
        token,
        "--data-dir",
        dataDir,
        "--vpn-pool",
        MPORT_VPN_POOL,
        "--egress",
        "--stats-interval",
        "0",
        "--log-level",
        "warning",
        ...(opts.tls ? ["--tls-cert", opts.pki.mportCert, "--tls-key", opts.pki.mportKey] : []),
      ],
      opts.denoFlags,
      { cwd: dataDir },
    );
    procs.push(server);
    await ready(server, /listening on https?:\/\/\S*:(\d+)/, READY_MS);
    const url = `${opts.tls ? "wss" : "ws"}://${NET.server}:${MPORT_VPN_PORT}`;
    const client = denoIn(
      topo.client,
      "mport vpn",
      CLIENT_MAIN,
      [
        "vpn",
        "--server",
        url,
        "--token",
        token,
        "--routes",
        "default",
        "--log-level",
        "warning",
        ...(opts.tls ? ["--ca", opts.pki.caCert] : []),
      ],
      opts.denoFlags,
      { cwd: configHome, env: { XDG_CONFIG_HOME: configHome } },
    );
    procs.push(client);
    await ready(client, /^vpn /, READY_MS);
    return { pids: [server.pid, client.pid], stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
