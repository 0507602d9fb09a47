// VPN benchmark: the direct path, OpenVPN and mport's VPN (wss and ws) in network namespaces, in
// the same run: iperf3 throughput each way, ping and 1-byte TCP echo RTT, as a Markdown section.
import { parseArgs } from "node:util";
import { makeTopology, NET, netnsUnavailable, type Topology } from "./netns.ts";
import { makePki, type Pki } from "./bench_vpn_pki.ts";
import { echoRtt, iperf, ping, startEcho, type VpnRig } from "./bench_vpn_ns.ts";
import { openvpnVersion, startOpenVpn } from "./openvpn_rig.ts";
import { mportVpnUnavailable, startMportVpn } from "./mport_vpn_rig.ts";
import {
  renderVpnMarkdown,
  TITLES,
  VPN_PATHS,
  type VpnMetrics,
  type VpnPath,
  type VpnPlan,
  type VpnReport,
  type VpnRun,
} from "./bench_vpn_report.ts";
import { treeCpuSeconds } from "./bench_sys.ts";
import { guardRun, parseRuns } from "./bench_guard.ts";

/** The full run's measurements (3 runs by default). */
export const VPN_FULL: VpnPlan = { seconds: 5, pings: 200, pingIntervalS: 0.005, echoes: 2000 };
/** The smoke run's: about 25 s for the four paths. */
export const VPN_QUICK: VpnPlan = { seconds: 2, pings: 100, pingIntervalS: 0.005, echoes: 500 };

/** Options of {@link runVpnBench}. */
export interface VpnBenchOptions {
  readonly plan: VpnPlan;
  readonly runs: number;
  readonly paths: readonly VpnPath[];
  /** Extra deno flags for mport-server and `mport vpn`. */
  readonly denoFlags: readonly string[];
  /** Registers a cleanup that a signal handler or watchdog runs. */
  readonly register?: (stop: () => Promise<void>) => void;
  readonly log: (line: string) => void;
}

/** Why the VPN section cannot run here (no namespaces, no iperf3), or null. */
export async function vpnBenchUnavailable(): Promise<string | null> {
  const netns = netnsUnavailable();
  if (netns) return netns;
  try {
    await new Deno.Command("iperf3", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
  } catch {
    return "iperf3 is not installed (apt-get install iperf3)";
  }
  return null;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

const GiB = 1024 ** 3;

/** Measures one path whose tunnel (if any) is up; each failed measurement is noted, not fatal. */
async function measure(
  topo: Topology,
  plan: VpnPlan,
  pids: readonly number[],
  note: (what: string, e: unknown) => void,
): Promise<VpnMetrics> {
  const m: VpnMetrics = {};
  // Warm-up: ARP, the tunnel's first packets, the JIT of a Deno tunnel.
  await ping(topo, 50, 0.01).catch(() => {});
  const cpu0 = pids.length > 0 ? treeCpuSeconds(pids) : null;
  let bytes = 0;
  try {
    const up = await iperf(topo, plan.seconds, false);
    // A tunnel that is up but not routing would measure the direct path.
    if (pids.length > 0 && up.local === NET.client) {
      throw new Error(`iperf3 went around the tunnel (from ${up.local})`);
    }
    m.uploadMbps = up.mbps;
    bytes += up.bytes;
  } catch (e) {
    note("upload", e);
  }
  try {
    const down = await iperf(topo, plan.seconds, true);
    m.downloadMbps = down.mbps;
    bytes += down.bytes;
  } catch (e) {
    note("download", e);
  }
  const cpu1 = pids.length > 0 ? treeCpuSeconds(pids) : null;
  if (cpu0 !== null && cpu1 !== null && bytes > 0) m.cpuSPerGiB = (cpu1 - cpu0) / (bytes / GiB);
  try {
    const r = await echoRtt(topo, plan.echoes);
    m.echoP50Us = r.p50Us;
    m.echoP99Us = r.p99Us;
  } catch (e) {
    note("TCP echo", e);
  }
  try {
    const r = await ping(topo, plan.pings, plan.pingIntervalS);
    m.pingP50Us = r.p50Us;
    m.pingP99Us = r.p99Us;
  } catch (e) {
    note("ping", e);
  }
  return m;
}

async function startRig(
  path: VpnPath,
  topo: Topology,
  pki: Pki,
  dir: string,
  denoFlags: readonly string[],
): Promise<VpnRig | null> {
  switch (path) {
    case "direct":
      return null;
    case "openvpn":
      return await startOpenVpn(topo, pki, dir);
    case "mport-wss":
    case "mport-ws":
      return await startMportVpn(topo, { tls: path === "mport-wss", pki, dir, denoFlags });
    default: {
      const never: never = path;
      throw new Error(`unknown path ${never}`);
    }
  }
}

/** Per path and run: rig start, measurements and stop must end within this. */
const PATH_LIMIT_MS = 3 * 60_000;

/** An upper bound on {@link runVpnBench}'s wall time, for watchdogs. */
export function vpnBenchLimitMs(runs: number): number {
  return runs * VPN_PATHS.length * PATH_LIMIT_MS + 60_000;
}

/** Makes the namespaces, measures every path `runs` times, removes everything. */
export async function runVpnBench(opts: VpnBenchOptions): Promise<VpnReport> {
  const started = performance.now();
  const skipped: Partial<Record<VpnPath, string>> = {};
  const ovpn = await openvpnVersion();
  if (ovpn === null) skipped.openvpn = "openvpn is not installed (apt-get install openvpn)";
  const mportMissing = await mportVpnUnavailable();
  if (mportMissing) skipped["mport-wss"] = skipped["mport-ws"] = mportMissing;
  for (const p of VPN_PATHS) if (!opts.paths.includes(p)) skipped[p] ??= "not selected";
  const paths = opts.paths.filter((p) => skipped[p] === undefined);

  const topo = await makeTopology();
  const dir = await Deno.makeTempDir({ prefix: "mport-bench-vpn-" });
  let rig: VpnRig | null = null;
  let echo: { stop(): Promise<void> } | null = null;
  const cleanup = async () => {
    await rig?.stop().catch(() => {});
    await echo?.stop().catch(() => {});
    await topo.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  opts.register?.(cleanup);
  const runs: VpnRun[] = [];
  try {
    const pki = await makePki(dir, NET.server);
    echo = await startEcho(topo);
    for (let i = 0; i < opts.runs; i++) {
      const run: VpnRun = { paths: {}, errors: [] };
      for (const path of paths) {
        opts.log(`VPN run ${i + 1}/${opts.runs}: ${TITLES[path]}`);
        const note = (what: string, e: unknown) => {
          const msg = `run ${i + 1}, ${TITLES[path]}, ${what}: ${(e as Error).message ?? e}`;
          run.errors.push(msg);
          opts.log(msg);
        };
        try {
          await withTimeout(
            (async () => {
              rig = await startRig(path, topo, pki, dir, opts.denoFlags);
              run.paths[path] = await measure(topo, opts.plan, rig?.pids ?? [], note);
            })(),
            PATH_LIMIT_MS,
            `${TITLES[path]} (run ${i + 1})`,
          );
        } catch (e) {
          // Starting the tunnel failed, or the path ran past its time limit.
          note("tunnel", e);
        } finally {
          const r = rig as VpnRig | null;
          rig = null;
          await r?.stop();
        }
      }
      runs.push(run);
    }
  } finally {
    await cleanup();
  }
  return {
    plan: opts.plan,
    runs,
    skipped,
    openvpn: ovpn,
    cpus: navigator.hardwareConcurrency,
    wallS: (performance.now() - started) / 1000,
  };
}

const USAGE =
  `Usage: deno run -A scripts/bench_vpn.ts [--quick] [--runs N] [--paths LIST] [--json FILE]
                                        [--deno-flags F]

Makes three network namespaces (client, internet, server; root needed) and measures, from the
client namespace to ${NET.internet} in the internet one: the direct path, OpenVPN (TCP, AES-256-GCM)
and mport vpn (wss:// and ws://) through the server namespace. Per path: iperf3 single-stream
throughput each way, 1-byte TCP echo RTT and ping RTT (p50, p99), CPU of the tunnel processes.
Prints medians with ratios against OpenVPN as Markdown.

  --quick          1 run, 2 s per iperf3 direction (default 3 runs, 5 s)
  --runs N         runs, each with fresh tunnel processes (default 3, 1 with --quick)
  --paths LIST     comma-separated subset of ${VPN_PATHS.join(",")}
  --json FILE      also write every run's figures as JSON
  --deno-flags F   extra deno flags for mport-server and mport vpn, e.g.
                   "--cpu-prof --cpu-prof-dir=/tmp/prof"
  -h, --help       show this help
`;

function log(line: string): void {
  console.error(`[bench-vpn] ${line}`);
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: "boolean" },
        runs: { type: "string" },
        paths: { type: "string" },
        json: { type: "string" },
        "deno-flags": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`bench_vpn: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const quick = values.quick ?? false;
  const runs = parseRuns("bench_vpn", values.runs, quick);
  if (runs === null) return 2;
  const paths = (values.paths ?? VPN_PATHS.join(",")).split(",").map((p) => p.trim());
  const unknown = paths.filter((p) => !(VPN_PATHS as readonly string[]).includes(p));
  if (unknown.length > 0) {
    console.error(`bench_vpn: unknown path "${unknown[0]}"; choose from ${VPN_PATHS.join(", ")}`);
    return 2;
  }
  const why = await vpnBenchUnavailable();
  if (why) {
    console.error(`bench_vpn: cannot run here: ${why}`);
    return 1;
  }
  const guard = guardRun(
    "bench_vpn",
    "stopping the tunnels and removing the namespaces",
    vpnBenchLimitMs(runs),
  );
  try {
    const report = await runVpnBench({
      plan: quick ? VPN_QUICK : VPN_FULL,
      runs,
      paths: paths as VpnPath[],
      denoFlags: values["deno-flags"]?.split(/\s+/).filter(Boolean) ?? [],
      register: guard.register,
      log,
    });
    console.log(renderVpnMarkdown(report));
    if (values.json) {
      await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
      log(`results written to ${values.json}`);
    }
    return 0;
  } catch (e) {
    console.error(`bench_vpn: ${(e as Error).stack ?? e}`);
    await guard.cleanup();
    return 1;
  } finally {
    guard.disarm();
  }
}

if (import.meta.main) Deno.exit(await main());
