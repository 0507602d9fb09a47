// Loopback benchmark: the real server and client processes against a direct connection, as Markdown.
import { parseArgs } from "node:util";
import {
  type BenchService,
  IO_CHUNK_BYTES,
  MODE,
  payload,
  readExactly,
  startBenchService,
  writeAll,
} from "./bench_service.ts";
import {
  type ClientProc,
  machineBusySeconds,
  procCpuSeconds,
  procMemory,
  randomToken,
  type ServerProc,
  spawnDeno,
  startClientProc,
  startServerProc,
} from "./mport_procs.ts";

const USAGE = `Usage: deno task bench [--quick] [--json FILE] [--service process|inproc|both]

Runs the real mport-server and mport client on 127.0.0.1 and compares the tunnel with a direct
connection to the same local service: single-connection throughput each way, 32-byte round trips,
new-connection setup (client pool 4 and pool 0) and peak RSS. Prints a Markdown table.

  --quick            64 MiB each way, 2,000 round trips, 200 connections (default 1 GiB, 20,000, 1,000)
  --json FILE        also write the results as JSON
  --service MODE     where the sink/source/echo service runs: as its own process (process), as a
                     real local service would, so the direct path crosses processes too; in this
                     process (inproc: the direct path never leaves one process, but the service
                     takes no CPU from the processes under test); or both, one after the other
                     (both, the default; the first table is the process one)
  --deno-flags F     extra deno flags for the server and client processes, e.g.
                     "--cpu-prof --cpu-prof-dir=/tmp/prof" (the server runs in a temporary directory)
  -h, --help         show this help
`;

const MiB = 1024 * 1024;
const MB = 1e6;

/** Sizes of one run. */
interface Sizes {
  readonly bytes: number;
  readonly roundTrips: number;
  readonly connections: number;
}

const FULL: Sizes = { bytes: 1024 * MiB, roundTrips: 20_000, connections: 1_000 };
const QUICK: Sizes = { bytes: 64 * MiB, roundTrips: 2_000, connections: 200 };
const WARMUP: Sizes = { bytes: 32 * MiB, roundTrips: 500, connections: 50 };

/** Targets from the issue. */
const TARGET = {
  throughputRatio: 0.35,
  roundTripP50Ratio: 1.5,
  setupP50Ms: 1,
} as const;

/** Time limits that keep every step bounded. */
const LIMIT = {
  /** Per throughput transfer; 1 GiB at 20 MB/s still fits. */
  transferMs: 120_000,
  /** Per round-trip series. */
  roundTripsMs: 120_000,
  /** Per single new connection. */
  connectMs: 10_000,
  /** The whole run. */
  runMs: 10 * 60_000,
} as const;

const MESSAGE_BYTES = 32;
/** Share of the machine other processes may use before the report warns about it. */
const OTHER_LOAD_WARNING = 0.1;

/** Latency summary in milliseconds. */
interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly max: number;
}

/** CPU seconds each process used during one measurement, and its wall time. */
interface CpuSample {
  readonly wallS: number;
  readonly server: number | null;
  readonly client: number | null;
  readonly service: number | null;
  readonly bench: number | null;
  /** CPU seconds used by every other process on the machine meanwhile. */
  readonly other: number | null;
}

/** Everything one run measured. */
export interface BenchResults {
  readonly date: string;
  readonly deno: string;
  readonly cpus: number;
  readonly service: "process" | "inproc";
  readonly sizes: Sizes;
  readonly uploadMBps: { direct: number; tunnel: number };
  readonly downloadMBps: { direct: number; tunnel: number };
  readonly roundTripMs: { direct: Percentiles; tunnel: Percentiles };
  readonly setupMs: { direct: Percentiles; pool: Percentiles; noPool: Percentiles };
  readonly peakRssMiB: {
    server: number | null;
    client: number | null;
    clientNoPool: number | null;
  };
  readonly cpu: Record<string, CpuSample>;
  readonly pass: {
    upload: boolean;
    download: boolean;
    roundTrip: boolean;
    setup: boolean;
  };
}

/** Closes `conn` when `ms` pass, so a stuck read or write fails instead of hanging. */
async function bounded<T>(
  conn: Deno.Conn,
  ms: number,
  what: string,
  work: (conn: Deno.Conn) => Promise<T>,
): Promise<T> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch {
      // closed
    }
  }, ms);
  try {
    return await work(conn);
  } catch (e) {
    if (timedOut) throw new Error(`${what} did not finish within ${ms / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

async function connectTcp(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  return conn;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed
  }
}

/** Sends `total` bytes to the sink and waits for its count; returns MB/s. */
export async function upload(port: number, total: number, data: Uint8Array): Promise<number> {
  const t0 = performance.now();
  const conn = await connectTcp(port);
  try {
    return await bounded(conn, LIMIT.transferMs, "upload", async (c) => {
      await writeAll(c, new Uint8Array([MODE.upload]));
      for (let sent = 0; sent < total;) {
        const n = Math.min(data.byteLength, total - sent);
        await writeAll(c, data.subarray(0, n));
        sent += n;
      }
      await c.closeWrite();
      const reply = new Uint8Array(8);
      await readExactly(c, reply);
      const seconds = (performance.now() - t0) / 1000;
      const count = Number(new DataView(reply.buffer).getBigUint64(0));
      if (count !== total) throw new Error(`sink counted ${count} bytes, sent ${total}`);
      return total / MB / seconds;
    });
  } finally {
    closeQuietly(conn);
  }
}

/** Asks the source for `total` bytes and reads them to EOF; returns MB/s. */
export async function download(port: number, total: number): Promise<number> {
  const t0 = performance.now();
  const conn = await connectTcp(port);
  try {
    return await bounded(conn, LIMIT.transferMs, "download", async (c) => {
      const req = new Uint8Array(9);
      req[0] = MODE.download;
      new DataView(req.buffer).setBigUint64(1, BigInt(total));
      await writeAll(c, req);
      const buf = new Uint8Array(IO_CHUNK_BYTES);
      let got = 0;
      while (got <= total) {
        const n = await c.read(buf);
        if (n === null) break;
        got += n;
      }
      const seconds = (performance.now() - t0) / 1000;
      if (got !== total) throw new Error(`received ${got} bytes, asked for ${total}`);
      await c.closeWrite();
      return total / MB / seconds;
    });
  } finally {
    closeQuietly(conn);
  }
}

/** `count` round trips of a 32-byte message through the echo service; times in ms. */
export async function roundTrips(port: number, count: number): Promise<number[]> {
  const conn = await connectTcp(port);
  try {
    return await bounded(conn, LIMIT.roundTripsMs, "round trips", async (c) => {
      await writeAll(c, new Uint8Array([MODE.echo]));
      const msg = payload(MESSAGE_BYTES);
      const back = new Uint8Array(MESSAGE_BYTES);
      const times = new Array<number>(count);
      for (let i = 0; i < count; i++) {
        msg[0] = i & 0xff;
        const t0 = performance.now();
        await writeAll(c, msg);
        await readExactly(c, back);
        times[i] = performance.now() - t0;
        if (back[0] !== msg[0]) throw new Error(`round trip ${i}: echo out of order`);
      }
      await c.closeWrite();
      while ((await c.read(back)) !== null) {
        // drain to EOF
      }
      return times;
    });
  } finally {
    closeQuietly(conn);
  }
}

/** `count` sequential connections, each timed from connect to its first byte echoed; in ms. */
export async function connectionSetups(port: number, count: number): Promise<number[]> {
  const times = new Array<number>(count);
  const hello = new Uint8Array([MODE.echo, 0x2a]);
  const back = new Uint8Array(1);
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const conn = await connectTcp(port);
    try {
      await bounded(conn, LIMIT.connectMs, `connection ${i + 1}`, async (c) => {
        await writeAll(c, hello);
        await readExactly(c, back);
      });
    } finally {
      closeQuietly(conn);
    }
    times[i] = performance.now() - t0;
  }
  return times;
}

export function percentiles(ms: number[]): Percentiles {
  const s = [...ms].sort((a, b) => a - b);
  const at = (p: number) => s[Math.max(0, Math.ceil(p * s.length) - 1)] ?? NaN;
  return {
    p50: at(0.5),
    p99: at(0.99),
    mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
    max: s[s.length - 1] ?? NaN,
  };
}

/** Samples CPU time of the processes under test around `work`. */
class CpuMeter {
  readonly samples: Record<string, CpuSample> = {};
  pids: { server: number | null; client: number | null; service: number | null } = {
    server: null,
    client: null,
    service: null,
  };

  async measure<T>(label: string, work: () => Promise<T>): Promise<T> {
    const read = () => ({
      machine: machineBusySeconds(),
      server: this.pids.server === null ? null : procCpuSeconds(this.pids.server),
      client: this.pids.client === null ? null : procCpuSeconds(this.pids.client),
      service: this.pids.service === null ? null : procCpuSeconds(this.pids.service),
      bench: procCpuSeconds(Deno.pid),
    });
    const before = read();
    const t0 = performance.now();
    const result = await work();
    const wallS = (performance.now() - t0) / 1000;
    const after = read();
    const diff = (a: number | null, b: number | null) => (a === null || b === null ? null : b - a);
    const ours = [
      diff(before.server, after.server),
      diff(before.client, after.client),
      diff(before.service, after.service),
      diff(before.bench, after.bench),
    ] as const;
    const machine = diff(before.machine, after.machine);
    this.samples[label] = {
      wallS,
      server: ours[0],
      client: ours[1],
      service: ours[2],
      bench: ours[3],
      other: machine === null
        ? null
        : Math.max(0, machine - ours.reduce<number>((a, b) => a + (b ?? 0), 0)),
    };
    return result;
  }
}

function peakMiB(pid: number): number | null {
  const m = procMemory(pid);
  return m === null ? null : m.peakKiB / 1024;
}

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
    return {
      port: Number(m[1]),
      pid: proc.pid,
      close: async () => void await proc.stop(),
    };
  } catch (e) {
    await proc.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${proc.output()}`);
  }
}

function log(line: string): void {
  console.error(`[bench] ${line}`);
}

/** Runs the benchmark and returns its results. `register` learns of children to clean up. */
export async function runBench(
  sizes: Sizes,
  serviceMode: "process" | "inproc",
  denoFlags: readonly string[],
  register: (stop: () => Promise<void>) => void,
): Promise<BenchResults> {
  const cpu = new CpuMeter();
  const data = payload(IO_CHUNK_BYTES);
  const token = randomToken();

  log(`starting the service (${serviceMode}), mport-server and mport client (pool 4)`);
  const service = await startService(serviceMode);
  register(() => service.close());
  cpu.pids.service = service.pid;
  const server: ServerProc = await startServerProc({ token, denoFlags });
  register(async () => void await server.proc.stop());
  cpu.pids.server = server.proc.pid;
  const local = `127.0.0.1:${service.port}`;
  let client: ClientProc = await startClientProc({
    serverUrl: server.wsUrl,
    token,
    local,
    pool: 4,
    denoFlags,
  });
  register(async () => void await client.proc.stop());
  cpu.pids.client = client.proc.pid;
  const direct = service.port;
  const tunnel = client.publicPort;

  log("warming up both paths");
  for (const port of [direct, tunnel]) {
    await upload(port, WARMUP.bytes, data);
    await download(port, WARMUP.bytes);
    await roundTrips(port, WARMUP.roundTrips);
    await connectionSetups(port, WARMUP.connections);
  }

  const size = `${sizes.bytes / MiB} MiB`;
  log(`upload ${size}: direct, then tunnel`);
  const upDirect = await cpu.measure("upload direct", () => upload(direct, sizes.bytes, data));
  const upTunnel = await cpu.measure("upload tunnel", () => upload(tunnel, sizes.bytes, data));
  log(`download ${size}: direct, then tunnel`);
  const downDirect = await cpu.measure("download direct", () => download(direct, sizes.bytes));
  const downTunnel = await cpu.measure("download tunnel", () => download(tunnel, sizes.bytes));
  log(`${sizes.roundTrips} round trips of ${MESSAGE_BYTES} bytes: direct, then tunnel`);
  const rttDirect = await cpu.measure(
    "round trips direct",
    () => roundTrips(direct, sizes.roundTrips),
  );
  const rttTunnel = await cpu.measure(
    "round trips tunnel",
    () => roundTrips(tunnel, sizes.roundTrips),
  );
  log(`${sizes.connections} new connections: direct, then tunnel with pool 4`);
  const setupDirect = await cpu.measure(
    "connections direct",
    () => connectionSetups(direct, sizes.connections),
  );
  const setupPool = await cpu.measure(
    "connections pool 4",
    () => connectionSetups(tunnel, sizes.connections),
  );
  const serverPeak1 = peakMiB(server.proc.pid);
  const clientPeak = peakMiB(client.proc.pid);
  await client.proc.stop();

  log(`${sizes.connections} new connections through a client with --pool 0`);
  client = await startClientProc({
    serverUrl: server.wsUrl,
    token,
    local,
    pool: 0,
    denoFlags,
  });
  cpu.pids.client = client.proc.pid;
  await connectionSetups(client.publicPort, WARMUP.connections);
  const setupNoPool = await cpu.measure(
    "connections pool 0",
    () => connectionSetups(client.publicPort, sizes.connections),
  );
  const clientNoPoolPeak = peakMiB(client.proc.pid);
  const serverPeak2 = peakMiB(server.proc.pid);

  const rtt = { direct: percentiles(rttDirect), tunnel: percentiles(rttTunnel) };
  const setup = {
    direct: percentiles(setupDirect),
    pool: percentiles(setupPool),
    noPool: percentiles(setupNoPool),
  };
  return {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    cpus: navigator.hardwareConcurrency,
    service: serviceMode,
    sizes,
    uploadMBps: { direct: upDirect, tunnel: upTunnel },
    downloadMBps: { direct: downDirect, tunnel: downTunnel },
    roundTripMs: rtt,
    setupMs: setup,
    peakRssMiB: {
      server: serverPeak2 ?? serverPeak1,
      client: clientPeak,
      clientNoPool: clientNoPoolPeak,
    },
    cpu: cpu.samples,
    pass: {
      upload: upTunnel >= TARGET.throughputRatio * upDirect,
      download: downTunnel >= TARGET.throughputRatio * downDirect,
      roundTrip: rtt.tunnel.p50 <= TARGET.roundTripP50Ratio * rtt.direct.p50,
      setup: setup.pool.p50 <= TARGET.setupP50Ms,
    },
  };
}

function fmt(v: number | null, digits: number): string {
  return v === null || !Number.isFinite(v) ? "n/a" : v.toFixed(digits);
}

function verdict(ok: boolean): string {
  return ok ? "PASS" : "**FAIL**";
}

/** Renders results as Markdown tables. */
export function renderMarkdown(r: BenchResults): string {
  const us = (ms: number) => fmt(ms * 1000, 0);
  const ms = (v: number) => fmt(v, 3);
  const pct = (t: number, d: number) => `${fmt((100 * t) / d, 0)} %`;
  const x = (t: number, d: number) => `${fmt(t / d, 2)}×`;
  const size = r.sizes.bytes >= 1024 * MiB
    ? `${r.sizes.bytes / (1024 * MiB)} GiB`
    : `${r.sizes.bytes / MiB} MiB`;
  const rows: string[][] = [
    ["Metric", "Direct", "Tunnel", "Tunnel vs direct", "Target", "Result"],
    [
      `Upload ${size}, MB/s`,
      fmt(r.uploadMBps.direct, 0),
      fmt(r.uploadMBps.tunnel, 0),
      pct(r.uploadMBps.tunnel, r.uploadMBps.direct),
      "≥ 35 % of direct",
      verdict(r.pass.upload),
    ],
    [
      `Download ${size}, MB/s`,
      fmt(r.downloadMBps.direct, 0),
      fmt(r.downloadMBps.tunnel, 0),
      pct(r.downloadMBps.tunnel, r.downloadMBps.direct),
      "≥ 35 % of direct",
      verdict(r.pass.download),
    ],
    [
      `Round trip p50, µs (${r.sizes.roundTrips} × ${MESSAGE_BYTES} B)`,
      us(r.roundTripMs.direct.p50),
      us(r.roundTripMs.tunnel.p50),
      x(r.roundTripMs.tunnel.p50, r.roundTripMs.direct.p50),
      "≤ 1.5× direct",
      verdict(r.pass.roundTrip),
    ],
    [
      "Round trip p99, µs",
      us(r.roundTripMs.direct.p99),
      us(r.roundTripMs.tunnel.p99),
      x(r.roundTripMs.tunnel.p99, r.roundTripMs.direct.p99),
      "",
      "",
    ],
    [
      `New connection p50, ms, pool 4 (${r.sizes.connections} sequential)`,
      ms(r.setupMs.direct.p50),
      ms(r.setupMs.pool.p50),
      x(r.setupMs.pool.p50, r.setupMs.direct.p50),
      "≤ 1 ms",
      verdict(r.pass.setup),
    ],
    [
      "New connection p99, ms, pool 4",
      ms(r.setupMs.direct.p99),
      ms(r.setupMs.pool.p99),
      x(r.setupMs.pool.p99, r.setupMs.direct.p99),
      "",
      "",
    ],
    [
      "New connection p50, ms, pool 0",
      ms(r.setupMs.direct.p50),
      ms(r.setupMs.noPool.p50),
      x(r.setupMs.noPool.p50, r.setupMs.direct.p50),
      "",
      "",
    ],
    [
      "New connection p99, ms, pool 0",
      ms(r.setupMs.direct.p99),
      ms(r.setupMs.noPool.p99),
      x(r.setupMs.noPool.p99, r.setupMs.direct.p99),
      "",
      "",
    ],
    ["Peak RSS mport-server, MiB", "", fmt(r.peakRssMiB.server, 1), "", "", ""],
    ["Peak RSS mport client (pool 4), MiB", "", fmt(r.peakRssMiB.client, 1), "", "", ""],
    ["Peak RSS mport client (pool 0), MiB", "", fmt(r.peakRssMiB.clientNoPool, 1), "", "", ""],
  ];
  const cpuRows: string[][] = [[
    "Phase",
    "Wall s",
    "server CPU s",
    "client CPU s",
    "service CPU s",
    "bench CPU s",
    "other processes",
  ]];
  for (const [label, s] of Object.entries(r.cpu)) {
    cpuRows.push([
      label,
      fmt(s.wallS, 2),
      fmt(s.server, 2),
      fmt(s.client, 2),
      fmt(s.service, 2),
      fmt(s.bench, 2),
      s.other === null ? "n/a" : `${fmt((100 * s.other) / (s.wallS * r.cpus), 0)} % of machine`,
    ]);
  }
  const busy = Object.entries(r.cpu).filter(([, s]) =>
    s.other !== null && s.other / (s.wallS * r.cpus) > OTHER_LOAD_WARNING
  );
  const warning = busy.length === 0 ? [] : [
    "",
    `Note: other processes used more than ${100 * OTHER_LOAD_WARNING} % of the machine during ` +
    `${busy.map(([l]) => l).join(", ")}; those numbers are pessimistic.`,
  ];
  return [
    `mport loopback benchmark, ${r.date.slice(0, 16).replace("T", " ")} UTC, Deno ${r.deno}, ` +
    `${r.cpus} CPUs, service ${r.service === "process" ? "in its own process" : "in-process"}`,
    "",
    table(rows),
    "",
    "MB = 10^6 bytes. Throughput is one connection, timed from connect to the last byte delivered.",
    "New connection = connect until the first byte comes back from the echo service.",
    "",
    table(cpuRows),
    ...warning,
  ].join("\n");
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  const sep = `|${
    widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|")
  }|`;
  return [line(rows[0]!), sep, ...rows.slice(1).map(line)].join("\n");
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
  const serviceMode = values.service ?? "both";
  if (serviceMode !== "process" && serviceMode !== "inproc" && serviceMode !== "both") {
    console.error(`bench: --service must be "process", "inproc" or "both", not "${serviceMode}"`);
    return 2;
  }
  const modes: readonly ("process" | "inproc")[] = serviceMode === "both"
    ? ["process", "inproc"]
    : [serviceMode];
  const denoFlags = values["deno-flags"]?.split(/\s+/).filter(Boolean) ?? [];
  const sizes = values.quick ? QUICK : FULL;
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    cleanups.length = 0;
  };
  // Ctrl-C or a kill must not leave the server and client running.
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, async () => {
      console.error(`bench: ${sig}, stopping the processes under test`);
      await cleanup();
      Deno.exit(130);
    });
  }
  const watchdog = setTimeout(async () => {
    console.error(`bench: the run took longer than ${LIMIT.runMs / 60_000} minutes; stopping`);
    await cleanup();
    Deno.exit(1);
  }, LIMIT.runMs);
  const started = performance.now();
  try {
    const all: BenchResults[] = [];
    for (const mode of modes) {
      const results = await runBench(sizes, mode, denoFlags, (c) => cleanups.push(c));
      await cleanup();
      if (all.length > 0) console.log("");
      console.log(renderMarkdown(results));
      all.push(results);
    }
    if (values.json) {
      // One run: its results; both: an array, process first.
      const json = all.length === 1 ? all[0] : all;
      await Deno.writeTextFile(values.json, JSON.stringify(json, null, 2) + "\n");
      log(`results written to ${values.json}`);
    }
    log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
    return 0;
  } catch (e) {
    console.error(`bench: ${(e as Error).stack ?? e}`);
    await cleanup();
    return 1;
  } finally {
    clearTimeout(watchdog);
  }
}

if (import.meta.main) Deno.exit(await main());
