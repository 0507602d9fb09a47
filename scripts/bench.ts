// Loopback benchmark: direct vs mport vs ssh -R in the same run, with ratios and targets, as Markdown.
import { parseArgs } from "node:util";
import { type BenchService, startBenchService } from "./bench_service.ts";
import { type BenchInfo, renderMarkdown, type RunResult } from "./bench_report.ts";
import { findSsh, startSshd } from "./bench_ssh.ts";
import { openFilesSoftLimit } from "./bench_sys.ts";
import { MPORT_BENCH } from "./bench_tunnels.ts";
import { ACKED, CONCURRENCY, log, type Plan, QuietWait, runOnce, type Setup } from "./bench_run.ts";
import { spawnDeno } from "./mport_procs.ts";
import { guardRun, parseRuns } from "./bench_guard.ts";
import { HTTP_CONCURRENCY } from "./bench_http.ts";
import {
  runVpnBench,
  VPN_FULL,
  VPN_QUICK,
  vpnBenchLimitMs,
  vpnBenchUnavailable,
} from "./bench_vpn.ts";
import { renderVpnMarkdown, VPN_PATHS, type VpnReport } from "./bench_vpn_report.ts";
import { openvpnVersion } from "./openvpn_rig.ts";

const USAGE = `Usage: deno task bench [--quick] [--runs N] [--idle N] [--no-ssh] [--no-vpn]
                        [--json FILE] [--service process|inproc] [--deno-flags F]

Runs the real mport-server and mport client on 127.0.0.1 and, when sshd is installed, a private
sshd with an "ssh -tt -R" session, and measures both against a direct connection to the same local
service: single-stream throughput each way, 32-byte round trips on 1 and 50 connections (rate and
RTT p50/p99), new connections per second, CPU per GiB and per request, idle memory per connection
with N connections open, and a 16 MiB transfer in 256 KiB writes with one outstanding at a time
(adb-style); and HTTP tunnels: 13-byte responses on 1 and 10 keep-alive connections (rate, p50,
p99) and 1 MiB responses (MiB/s), direct to a local Deno.serve service and through mport-server's
Host routing and \`mport http\`. Then, as root with network namespaces and iperf3, the VPN
section (scripts/bench_vpn.ts): the direct path, OpenVPN and mport vpn (wss and ws) between
namespaces, iperf3 each way and RTT. Prints medians of the runs as Markdown tables with ratios and
PASS/FAIL per target.

  --quick            a short smoke run: 128 MiB each way, 1 s per rate test, 2,000 idle
                     connections, 1 run (default 1 GiB, 4-5 s per rate test, 8,000, 3 runs)
  --runs N           repeat everything N times with fresh tunnel processes; report medians
                     (default 3, or 1 with --quick)
  --idle N           idle connections for the memory test (default 8000, 2000 with --quick;
                     lowered to fit the open files limit)
  --no-ssh           leave out the ssh -R column even when sshd is installed
  --no-vpn           leave out the VPN section (it needs root, ip netns and iperf3; with
                     --quick it also needs openvpn, and runs 2 s per iperf3 direction)
  --json FILE        also write every run's results as JSON
  --service MODE     where the sink/source/echo service runs: its own process (process, default),
                     as a real local service would, or inside this process (inproc)
  --deno-flags F     extra deno flags for the server and client processes, e.g.
                     "--cpu-prof --cpu-prof-dir=/tmp/prof" (the server runs in a temporary directory)
  -h, --help         show this help
`;

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const FULL: Plan = {
  bytes: 1 * GiB,
  roundTrips1: { maxOps: 20_000, maxMs: 20_000 },
  roundTrips50: { maxOps: 2_000_000, maxMs: 5_000 },
  connections: { maxOps: 40_000, maxMs: 4_000 },
  setups: 1_000,
  ackedRepeats: 5,
  idle: 8_000,
  quietBudgetMs: 40_000,
  http: {
    small1: { maxOps: 20_000, maxMs: 5_000 },
    small10: { maxOps: 1_000_000, maxMs: 5_000 },
    big: { maxOps: 5_000, maxMs: 5_000 },
  },
};
const QUICK: Plan = {
  bytes: 128 * MiB,
  roundTrips1: { maxOps: 2_000, maxMs: 5_000 },
  roundTrips50: { maxOps: 400_000, maxMs: 1_000 },
  connections: { maxOps: 10_000, maxMs: 1_000 },
  setups: 200,
  ackedRepeats: 3,
  // ssh -R slows down as its channels grow (about 30 s for 8,000 here): the smoke run stays short.
  idle: 2_000,
  quietBudgetMs: 10_000,
  http: {
    small1: { maxOps: 2_000, maxMs: 1_000 },
    small10: { maxOps: 200_000, maxMs: 1_000 },
    big: { maxOps: 500, maxMs: 1_000 },
  },
};

/** Descriptors each process keeps for itself beyond those the idle connections need. */
const FD_HEADROOM = 500;

/** Each run may take this long before the whole benchmark is stopped. */
const RUN_LIMIT_MS = 6 * 60_000;

/** The service under test, in this process or as a child. */
async function startService(
  mode: "process" | "inproc",
): Promise<{ port: number; pid: number | null; close(): Promise<void> }> {
  if (mode === "inproc") {
    const svc: BenchService = startBenchService();
    return { port: svc.port, pid: null, close: () => svc.close() };
  }
  const main = new URL("./bench_service.ts", import.meta.url).pathname;
  const proc = spawnDeno("service", main, []);
  try {
    const m = await proc.stdout.wait(/bench service on 127\.0\.0\.1:(\d+)/, 60_000);
    return { port: Number(m[1]), pid: proc.pid, close: async () => void await proc.stop() };
  } catch (e) {
    await proc.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${proc.output()}`);
  }
}

/** The local HTTP service, always in its own process (as a real web app would be). */
async function startHttpService(): Promise<{ port: number; close(): Promise<void> }> {
  const main = new URL("./bench_http_service.ts", import.meta.url).pathname;
  const proc = spawnDeno("http service", main, []);
  try {
    const m = await proc.stdout.wait(/bench http service on 127\.0\.0\.1:(\d+)/, 60_000);
    return { port: Number(m[1]), close: async () => void await proc.stop() };
  } catch (e) {
    await proc.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${proc.output()}`);
  }
}

async function sshVersion(ssh: string): Promise<string | null> {
  try {
    const out = await new Deno.Command(ssh, { args: ["-V"], stdout: "piped", stderr: "piped" })
      .output();
    return new TextDecoder().decode(out.stderr).trim().split(",")[0] ?? null;
  } catch {
    return null;
  }
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
        idle: { type: "string" },
        "no-ssh": { type: "boolean" },
        "no-vpn": { type: "boolean" },
        json: { type: "string" },
        service: { type: "string" },
        "deno-flags": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`bench: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const serviceMode = values.service ?? "process";
  if (serviceMode !== "process" && serviceMode !== "inproc") {
    console.error(`bench: --service must be "process" or "inproc", not "${serviceMode}"`);
    return 2;
  }
  const quick = values.quick ?? false;
  const runs = parseRuns("bench", values.runs, quick);
  if (runs === null) return 2;
  let plan = quick ? QUICK : FULL;
  if (values.idle !== undefined) {
    const n = Number(values.idle);
    if (!Number.isSafeInteger(n) || n < 1) {
      console.error(`bench: --idle must be a whole number >= 1, not "${values.idle}"`);
      return 2;
    }
    plan = { ...plan, idle: n };
  }
  // Each tunnel process holds two descriptors per idle connection (the user's side and its
  // stream); so does this process with the service inside it. Children inherit our limit.
  let idleNote: string | null = null;
  const fdLimit = openFilesSoftLimit();
  if (fdLimit !== null) {
    const fit = Math.floor((fdLimit - FD_HEADROOM) / 2);
    if (plan.idle > fit) {
      idleNote = `Idle connections lowered from ${plan.idle} to ${fit} to fit the open files ` +
        `limit of ${fdLimit} per process.`;
      plan = { ...plan, idle: fit };
    }
  }
  const denoFlags = values["deno-flags"]?.split(/\s+/).filter(Boolean) ?? [];

  let sshSkipped: string | null = null;
  const found = values["no-ssh"] ? { missing: "--no-ssh" } : findSsh();
  if ("missing" in found) {
    sshSkipped = found.missing;
    log(`no ssh column: ${sshSkipped}`);
  }

  // The VPN section: skipped, with the reason printed, where it cannot run. The smoke run (CI)
  // leaves it out unless OpenVPN is there to compare against.
  let vpnSkipped: string | null = values["no-vpn"] ? "--no-vpn" : await vpnBenchUnavailable();
  if (vpnSkipped === null && quick && (await openvpnVersion()) === null) {
    vpnSkipped = "openvpn is not installed (apt-get install openvpn)";
  }
  if (vpnSkipped !== null) log(`no VPN section: ${vpnSkipped}`);

  // Ctrl-C or a kill must not leave the server, client, sshd or ssh running.
  const runLimitMs = RUN_LIMIT_MS * runs + 60_000 + (vpnSkipped ? 0 : vpnBenchLimitMs(runs));
  const guard = guardRun("bench", "stopping the processes under test", runLimitMs);
  const started = performance.now();
  const startedAt = new Date();
  try {
    log(`starting the service (${serviceMode})`);
    const service = await startService(serviceMode);
    guard.register(() => service.close());
    let ssh: Setup["ssh"] = null;
    if (!("missing" in found)) {
      try {
        const sshd = await startSshd(found);
        guard.register(() => sshd.stop());
        ssh = { bin: found.ssh, sshd };
      } catch (e) {
        sshSkipped = `sshd did not start: ${(e as Error).message.split("\n")[0]}`;
        log(`no ssh column: ${sshSkipped}`);
      }
    }
    const httpService = await startHttpService();
    guard.register(() => httpService.close());
    const setup: Setup = {
      plan,
      service,
      httpService,
      denoFlags,
      ssh,
      register: guard.register,
      quiet: new QuietWait(plan.quietBudgetMs * runs),
    };
    const results: RunResult[] = [];
    for (let i = 0; i < runs; i++) results.push(await runOnce(setup, i, runs));
    await guard.cleanup();
    const info: BenchInfo = {
      date: startedAt.toISOString(),
      deno: Deno.version.deno,
      cpus: navigator.hardwareConcurrency,
      service: serviceMode,
      runs,
      quick,
      mport: MPORT_BENCH.describe(),
      sshSkipped,
      sshVersion: ssh ? await sshVersion(ssh.bin) : null,
      bytes: plan.bytes,
      roundTrips: plan.roundTrips1.maxOps,
      concurrency: CONCURRENCY,
      setups: plan.setups,
      ackedTotal: ACKED.total,
      ackedChunk: ACKED.chunk,
      idleConnections: plan.idle,
      idleNote,
      httpConcurrency: HTTP_CONCURRENCY,
      wallS: (performance.now() - started) / 1000,
    };
    console.log(renderMarkdown(info, results));
    let vpn: VpnReport | null = null;
    if (vpnSkipped === null) {
      vpn = await runVpnBench({
        plan: quick ? VPN_QUICK : VPN_FULL,
        runs,
        paths: VPN_PATHS,
        denoFlags,
        register: guard.register,
        log: (line) => log(line),
      });
      console.log(renderVpnMarkdown(vpn));
    } else {
      console.log(`## VPN (network namespaces)\n\nSkipped: ${vpnSkipped}.\n`);
    }
    if (values.json) {
      await Deno.writeTextFile(
        values.json,
        JSON.stringify({ info, plan, runs: results, vpn }, null, 2) + "\n",
      );
      log(`results written to ${values.json}`);
    }
    log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
    return 0;
  } catch (e) {
    console.error(`bench: ${(e as Error).stack ?? e}`);
    await guard.cleanup();
    return 1;
  } finally {
    guard.disarm();
  }
}

if (import.meta.main) Deno.exit(await main());
