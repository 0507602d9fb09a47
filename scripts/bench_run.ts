// One benchmark run: fresh tunnels, every measurement on every path, then the idle-memory test.
import { IO_CHUNK_BYTES, payload } from "./bench_service.ts";
import {
  ackedTransfer,
  type Bound,
  closeQuietly,
  connectionRate,
  connectionSetups,
  download,
  echoEach,
  openIdle,
  parallelRoundTrips,
  percentiles,
  probeEcho,
  roundTrips,
  upload,
} from "./bench_load.ts";
import {
  median,
  type Metrics,
  type PathName,
  type PhaseCpu,
  type RunResult,
} from "./bench_report.ts";
import { type Sshd, startSshTunnel } from "./bench_ssh.ts";
import { startMportHttpTunnel, startMportTunnel, type Tunnel } from "./bench_tunnels.ts";
import { type HttpPlan, measureHttp } from "./bench_http.ts";
import { machineBusySeconds, procCpuSeconds } from "./mport_procs.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Sizes and bounds of one run. */
export interface Plan {
  readonly bytes: number;
  readonly roundTrips1: Bound;
  readonly roundTrips50: Bound;
  readonly connections: Bound;
  readonly setups: number;
  readonly ackedRepeats: number;
  readonly idle: number;
  /** Longest the run may wait in all for a quiet machine before its phases. */
  readonly quietBudgetMs: number;
  readonly http: HttpPlan;
}

const WARMUP = { bytes: 32 * MiB, roundTrips: 500, connections: 100 } as const;

/** Connections at a time for the parallel round trips and the new-connection rate. */
export const CONCURRENCY = 50;
/** The adb-style transfer: total bytes and the size of each acknowledged write. */
export const ACKED = { total: 16 * MiB, chunk: 256 * 1024 } as const;
/** Idle-memory test: connections opened at a time, and the settling time before RSS is read. */
const IDLE = { concurrency: 100, settleMs: 1_500, openMs: 120_000 } as const;
/** Before each measured phase: the machine's busy share to wait for, how to sample it, how long. */
const QUIET = { busyShare: 0.1, sampleMs: 200, maxWaitMs: 5_000 } as const;

/** Time limits that keep every step bounded. */
const LIMIT = {
  /** Per throughput transfer; 1 GiB at 20 MB/s still fits. */
  transferMs: 120_000,
  /** Per adb-style transfer. */
  ackedMs: 60_000,
} as const;

/** A path users connect through: direct to the service, or a tunnel in front of it. */
interface Path {
  readonly name: PathName;
  readonly port: number;
  readonly tunnel: Tunnel | null;
}

/** Progress goes to stderr; the report to stdout. */
export function log(line: string): void {
  console.error(`[bench] ${line}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Samples CPU time of the processes under test around `work`, keyed `phase/path`. */
class CpuMeter {
  readonly samples: Record<string, PhaseCpu> = {};
  constructor(readonly servicePid: number | null, readonly quiet: QuietWait) {}

  async measure<T>(phase: string, path: Path, work: () => Promise<T>): Promise<[T, PhaseCpu]> {
    await this.quiet.wait(`${phase}/${path.name}`);
    const read = () => ({
      machine: machineBusySeconds(),
      tunnel: path.tunnel?.cpuSeconds() ?? null,
      service: this.servicePid === null ? null : procCpuSeconds(this.servicePid),
      bench: procCpuSeconds(Deno.pid),
    });
    const before = read();
    const t0 = performance.now();
    const result = await work();
    const wallS = (performance.now() - t0) / 1000;
    const after = read();
    const diff = (a: number | null, b: number | null) => (a === null || b === null ? null : b - a);
    const tunnel = diff(before.tunnel, after.tunnel);
    const service = diff(before.service, after.service);
    const bench = diff(before.bench, after.bench);
    const machine = diff(before.machine, after.machine);
    const sample: PhaseCpu = {
      wallS,
      tunnel,
      service,
      bench,
      other: machine === null
        ? null
        : Math.max(0, machine - (tunnel ?? 0) - (service ?? 0) - (bench ?? 0)),
    };
    this.samples[`${phase}/${path.name}`] = sample;
    return [result, sample];
  }
}

/**
 * Waits until the machine is nearly idle, so that a measurement does not start while another
 * program, or a tunnel still cleaning up after the last phase, is busy. Bounded per phase and by
 * a budget for the whole benchmark.
 */
export class QuietWait {
  #budgetMs: number;
  constructor(budgetMs: number) {
    this.#budgetMs = budgetMs;
  }

  async wait(label: string): Promise<void> {
    const cpus = navigator.hardwareConcurrency;
    const limit = Math.min(QUIET.maxWaitMs, this.#budgetMs);
    const t0 = performance.now();
    do {
      const a = machineBusySeconds();
      await sleep(QUIET.sampleMs);
      const b = machineBusySeconds();
      if (a === null || b === null) return;
      if ((b - a) / ((QUIET.sampleMs / 1000) * cpus) <= QUIET.busyShare) break;
    } while (performance.now() - t0 < limit);
    const waited = performance.now() - t0 - QUIET.sampleMs;
    this.#budgetMs = Math.max(0, this.#budgetMs - waited);
    if (waited > QUIET.sampleMs) {
      log(`  waited ${(waited / 1000).toFixed(1)} s for a quiet machine before ${label}`);
    }
  }
}

/** CPU seconds of every process on the machine during `s`; null without /proc. */
function machineCpu(s: PhaseCpu): number | null {
  return s.other === null ? null : s.other + (s.tunnel ?? 0) + (s.service ?? 0) + (s.bench ?? 0);
}

/** Sum of the values, or null if any is null. */
function sum(values: readonly (number | null)[]): number | null {
  return values.some((v) => v === null) ? null : values.reduce<number>((a, v) => a + v!, 0);
}

/** What every run shares: the service, sshd, and how to start tunnels. */
export interface Setup {
  readonly plan: Plan;
  readonly service: { port: number; pid: number | null };
  /** The local HTTP service (bench_http_service.ts) both HTTP paths reach. */
  readonly httpService: { port: number };
  readonly denoFlags: readonly string[];
  readonly ssh: { bin: string; sshd: Sshd } | null;
  readonly register: (stop: () => Promise<void>) => void;
  readonly quiet: QuietWait;
}

async function startTunnel(setup: Setup, name: "mport" | "ssh"): Promise<Tunnel> {
  const tunnel = name === "mport"
    ? await startMportTunnel(setup.service.port, setup.denoFlags)
    : await startSshTunnel({
      ssh: setup.ssh!.bin,
      sshd: setup.ssh!.sshd,
      servicePort: setup.service.port,
      probe: probeEcho,
    });
  setup.register(() => tunnel.stop());
  return tunnel;
}

/** Resolves once a GET through `port` gets an HTTP answer (the ssh forward is up). */
async function probeHttp(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode("GET /small HTTP/1.1\r\nhost: probe\r\n\r\n"));
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    if (n === null || !new TextDecoder().decode(buf.subarray(0, n)).startsWith("HTTP/1.1")) {
      throw new Error("no HTTP answer through the forwarded port");
    }
  } finally {
    conn.close();
  }
}

/** Measures idle memory per connection through a fresh tunnel, then checks they all still echo. */
async function idleMemory(
  setup: Setup,
  name: "mport" | "ssh",
  notes: string[],
): Promise<Metrics> {
  const n = setup.plan.idle;
  const tunnel = await startTunnel(setup, name);
  try {
    // Lazily created state (first stream, JIT) belongs to the baseline, not to the connections.
    await connectionSetups(tunnel.port, WARMUP.connections);
    await sleep(IDLE.settleMs);
    const before = tunnel.rssKiB();
    const t0 = performance.now();
    const idle = await openIdle(tunnel.port, n, IDLE.concurrency, IDLE.openMs);
    const openS = (performance.now() - t0) / 1000;
    await sleep(IDLE.settleMs);
    const after = tunnel.rssKiB();
    const failures = await echoEach(idle.conns, IDLE.concurrency);
    for (const c of idle.conns) closeQuietly(c);
    const opened = idle.conns.length;
    log(
      `  ${name}: ${opened} of ${n} opened in ${openS.toFixed(1)} s, ${
        opened - failures
      } still echoing`,
    );
    if (idle.failed > 0) {
      notes.push(`${name}: ${idle.failed} idle connections failed to open: ${idle.firstError}`);
    }
    const perConn = (a: number | null, b: number | null) =>
      a === null || b === null || opened === 0 ? undefined : (b - a) / opened;
    const m: Metrics = { idleEchoing: opened - failures };
    const server = perConn(before.server, after.server);
    const client = perConn(before.client, after.client);
    if (server !== undefined) m.idleServerKiB = server;
    if (client !== undefined) m.idleClientKiB = client;
    return m;
  } finally {
    await tunnel.stop();
  }
}

/** One run: fresh tunnels, every measurement on every path, then the idle-memory test. */
export async function runOnce(setup: Setup, index: number, runs: number): Promise<RunResult> {
  const { plan } = setup;
  const cpu = new CpuMeter(setup.service.pid, setup.quiet);
  const notes: string[] = [];
  const data = payload(IO_CHUNK_BYTES);
  const tag = runs > 1 ? `run ${index + 1}/${runs}: ` : "";

  log(`${tag}starting mport${setup.ssh ? " and ssh -R" : ""}`);
  const paths: Path[] = [{ name: "direct", port: setup.service.port, tunnel: null }];
  const mport = await startTunnel(setup, "mport");
  paths.push({ name: "mport", port: mport.port, tunnel: mport });
  const ssh = setup.ssh ? await startTunnel(setup, "ssh") : null;
  if (ssh) paths.push({ name: "ssh", port: ssh.port, tunnel: ssh });
  const metrics = new Map<PathName, Metrics>(paths.map((p) => [p.name, {}]));
  const m = (p: Path) => metrics.get(p.name)!;

  log(`${tag}warming up`);
  for (const p of paths) {
    await upload(p.port, WARMUP.bytes, data, LIMIT.transferMs);
    await download(p.port, WARMUP.bytes, LIMIT.transferMs);
    await roundTrips(p.port, { maxOps: WARMUP.roundTrips, maxMs: 5_000 });
    await connectionSetups(p.port, WARMUP.connections);
    await ackedTransfer(p.port, ACKED.total, ACKED.chunk, LIMIT.ackedMs);
  }

  const size = plan.bytes >= GiB ? `${plan.bytes / GiB} GiB` : `${plan.bytes / MiB} MiB`;
  log(`${tag}upload and download ${size}`);
  for (const p of paths) {
    const [up, s1] = await cpu.measure(
      "upload",
      p,
      () => upload(p.port, plan.bytes, data, LIMIT.transferMs),
    );
    const [down, s2] = await cpu.measure(
      "download",
      p,
      () => download(p.port, plan.bytes, LIMIT.transferMs),
    );
    m(p).uploadMBps = up;
    m(p).downloadMBps = down;
    const gib = (2 * plan.bytes) / GiB;
    const tunnel = sum([s1.tunnel, s2.tunnel]);
    const machine = sum([machineCpu(s1), machineCpu(s2)]);
    if (tunnel !== null && p.tunnel) m(p).cpuSPerGiB = tunnel / gib;
    if (machine !== null) m(p).machineCpuSPerGiB = machine / gib;
  }

  log(`${tag}round trips on 1 connection (up to ${plan.roundTrips1.maxOps})`);
  for (const p of paths) {
    const [times, s] = await cpu.measure(
      "round trips x1",
      p,
      () => roundTrips(p.port, plan.roundTrips1),
    );
    const pc = percentiles(times);
    m(p).roundTrips1PerS = times.length / s.wallS;
    m(p).rttP50Us = pc.p50 * 1000;
    m(p).rttP99Us = pc.p99 * 1000;
  }

  log(`${tag}round trips on ${CONCURRENCY} connections (${plan.roundTrips50.maxMs / 1000} s)`);
  for (const p of paths) {
    const [rate, s] = await cpu.measure(
      `round trips x${CONCURRENCY}`,
      p,
      () => parallelRoundTrips(p.port, CONCURRENCY, plan.roundTrips50),
    );
    m(p).roundTrips50PerS = rate.ops / rate.seconds;
    const machine = machineCpu(s);
    if (s.tunnel !== null && p.tunnel) m(p).cpuUsPerRequest = (s.tunnel * 1e6) / rate.ops;
    if (machine !== null) m(p).machineCpuUsPerRequest = (machine * 1e6) / rate.ops;
  }

  log(`${tag}new connections, ${CONCURRENCY} at a time (${plan.connections.maxMs / 1000} s)`);
  for (const p of paths) {
    const [rate, s] = await cpu.measure(
      "new connections",
      p,
      () => connectionRate(p.port, CONCURRENCY, plan.connections),
    );
    m(p).connectionsPerS = rate.ops / rate.seconds;
    if (s.tunnel !== null && p.tunnel) m(p).cpuUsPerConnection = (s.tunnel * 1e6) / rate.ops;
  }

  log(`${tag}${plan.setups} new connections one at a time`);
  for (const p of paths) {
    const times = await connectionSetups(p.port, plan.setups);
    const pc = percentiles(times);
    m(p).setupP50Ms = pc.p50;
    m(p).setupP99Ms = pc.p99;
  }

  log(`${tag}${ACKED.total / MiB} MiB in ${ACKED.chunk / 1024} KiB acknowledged writes`);
  for (const p of paths) {
    const times: number[] = [];
    for (let i = 0; i < plan.ackedRepeats; i++) {
      times.push(await ackedTransfer(p.port, ACKED.total, ACKED.chunk, LIMIT.ackedMs));
    }
    m(p).ackedTransferMs = median(times) ?? undefined;
  }

  for (const p of paths) {
    if (!p.tunnel) continue;
    const peak = p.tunnel.peakRssKiB();
    if (peak.server !== null) m(p).peakServerMiB = peak.server / 1024;
    if (peak.client !== null) m(p).peakClientMiB = peak.client / 1024;
  }
  await mport.stop();
  await ssh?.stop();

  log(`${tag}HTTP: 13-byte responses on 1 and 10 connections, 1 MiB responses`);
  const http = await startMportHttpTunnel(setup.httpService.port, setup.denoFlags);
  setup.register(() => http.stop());
  // ssh -R forwards a port to the same HTTP service: the reference the HTTP targets are read
  // against (a byte tunnel, no HTTP processing).
  const sshHttp = setup.ssh
    ? await startSshTunnel({
      ssh: setup.ssh.bin,
      sshd: setup.ssh.sshd,
      servicePort: setup.httpService.port,
      probe: probeHttp,
    })
    : null;
  if (sshHttp) setup.register(() => sshHttp.stop());
  try {
    await setup.quiet.wait("HTTP/direct");
    const direct = await measureHttp(setup.httpService.port, "127.0.0.1", plan.http);
    await setup.quiet.wait("HTTP/mport");
    const viaMport = await measureHttp(http.port, http.host, plan.http);
    Object.assign(metrics.get("direct")!, direct);
    Object.assign(metrics.get("mport")!, viaMport);
    if (sshHttp) {
      await setup.quiet.wait("HTTP/ssh");
      Object.assign(metrics.get("ssh")!, await measureHttp(sshHttp.port, "127.0.0.1", plan.http));
    }
  } finally {
    await http.stop();
    await sshHttp?.stop();
  }

  for (const name of ["mport", "ssh"] as const) {
    if (name === "ssh" && !setup.ssh) continue;
    log(`${tag}idle memory with ${plan.idle} connections through a fresh ${name} tunnel`);
    Object.assign(metrics.get(name)!, await idleMemory(setup, name, notes));
  }

  return {
    paths: {
      direct: metrics.get("direct") ?? null,
      mport: metrics.get("mport") ?? null,
      ssh: metrics.get("ssh") ?? null,
    },
    cpu: cpu.samples,
    notes,
  };
}
