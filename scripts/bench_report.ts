// The benchmark's results (per run and as medians), its targets, and their Markdown rendering.

/** The paths every measurement runs through. */
export const PATHS = ["direct", "mport", "ssh"] as const;
export type PathName = typeof PATHS[number];

/** Everything measured on one path in one run; a missing key was not measured there. */
export interface Metrics {
  uploadMBps?: number;
  downloadMBps?: number;
  roundTrips1PerS?: number;
  rttP50Us?: number;
  rttP99Us?: number;
  roundTrips50PerS?: number;
  connectionsPerS?: number;
  setupP50Ms?: number;
  setupP99Ms?: number;
  /** CPU seconds of the tunnel's processes per GiB moved (upload + download). */
  cpuSPerGiB?: number;
  /** The same for every process on the machine (load generator and service included). */
  machineCpuSPerGiB?: number;
  /** CPU µs of the tunnel's processes per round trip at 50 connections. */
  cpuUsPerRequest?: number;
  machineCpuUsPerRequest?: number;
  /** CPU µs of the tunnel's processes per new connection. */
  cpuUsPerConnection?: number;
  ackedTransferMs?: number;
  idleServerKiB?: number;
  idleClientKiB?: number;
  /** Idle connections that were open and answered one more round trip afterwards. */
  idleEchoing?: number;
  peakServerMiB?: number;
  peakClientMiB?: number;
  /** HTTP: 13-byte responses per second, one keep-alive connection, and latency (µs). */
  httpRps1?: number;
  httpP50Us1?: number;
  httpP99Us1?: number;
  /** The same on `httpConcurrency` keep-alive connections. */
  httpRps10?: number;
  httpP50Us10?: number;
  httpP99Us10?: number;
  /** HTTP: 1 MiB responses one after another on one connection, MiB/s of body. */
  httpBigMiBps?: number;
}

/** CPU seconds during one phase on one path. */
export interface PhaseCpu {
  readonly wallS: number;
  readonly tunnel: number | null;
  readonly bench: number | null;
  readonly service: number | null;
  /** Every other process on the machine meanwhile. */
  readonly other: number | null;
}

/** One run: fresh tunnel processes, every measurement on every path. */
export interface RunResult {
  readonly paths: Record<PathName, Metrics | null>;
  /** Keyed `phase/path`. */
  readonly cpu: Record<string, PhaseCpu>;
  readonly notes: string[];
}

/** What a report says about the run as a whole. */
export interface BenchInfo {
  readonly date: string;
  readonly deno: string;
  readonly cpus: number;
  readonly service: "process" | "inproc";
  readonly runs: number;
  readonly quick: boolean;
  readonly mport: string;
  /** Why the ssh column is empty, or null when it ran. */
  readonly sshSkipped: string | null;
  readonly sshVersion: string | null;
  readonly bytes: number;
  readonly roundTrips: number;
  readonly concurrency: number;
  readonly setups: number;
  readonly ackedTotal: number;
  readonly ackedChunk: number;
  readonly idleConnections: number;
  readonly idleNote: string | null;
  /** Keep-alive connections of the concurrent HTTP test. */
  readonly httpConcurrency: number;
  readonly wallS: number;
}

type Key = keyof Metrics;

/** A target: a ratio to another path in the same run, or a bound on mport's own value. */
type Target =
  | { readonly vs: "ssh" | "direct"; readonly op: ">=" | "<="; readonly ratio: number }
  | { readonly op: "<=" | "="; readonly value: number | "N" };

interface Row {
  readonly label: string;
  readonly key: Key;
  readonly digits: number;
  readonly target?: Target;
  /** Paths the metric does not apply to. */
  readonly skip?: readonly PathName[];
  /** A count, not a measure: ratios would mean nothing. */
  readonly noRatio?: boolean;
}

const TUNNELS_ONLY: readonly PathName[] = ["direct"];
/** Measured on every path (ssh -R forwards a port to the same HTTP service). */
const HTTP_ONLY: readonly PathName[] = [];

function rows(info: BenchInfo): Row[] {
  const size = info.bytes >= 1024 ** 3
    ? `${info.bytes / 1024 ** 3} GiB`
    : `${info.bytes / 1024 ** 2} MiB`;
  const c = info.concurrency;
  const n = info.idleConnections;
  return [
    {
      label: `Upload, 1 stream (${size}), MB/s`,
      key: "uploadMBps",
      digits: 0,
      target: { vs: "ssh", op: ">=", ratio: 1 },
    },
    {
      label: `Download, 1 stream (${size}), MB/s`,
      key: "downloadMBps",
      digits: 0,
      target: { vs: "ssh", op: ">=", ratio: 1 },
    },
    {
      label: "Round trips/s, 1 connection",
      key: "roundTrips1PerS",
      digits: 0,
      target: { vs: "ssh", op: ">=", ratio: 1 },
    },
    {
      label: `Round trips/s, ${c} connections`,
      key: "roundTrips50PerS",
      digits: 0,
      target: { vs: "ssh", op: ">=", ratio: 0.7 },
    },
    {
      label: `New connections/s, ${c} at a time`,
      key: "connectionsPerS",
      digits: 0,
      target: { vs: "ssh", op: ">=", ratio: 1 },
    },
    {
      label: "RTT p50, µs (1 connection)",
      key: "rttP50Us",
      digits: 0,
      target: { vs: "ssh", op: "<=", ratio: 1.2 },
    },
    { label: "RTT p99, µs", key: "rttP99Us", digits: 0 },
    {
      label: `New connection p50, ms (${info.setups} one at a time)`,
      key: "setupP50Ms",
      digits: 3,
    },
    { label: "New connection p99, ms", key: "setupP99Ms", digits: 3 },
    { label: "CPU s per GiB, tunnel processes", key: "cpuSPerGiB", digits: 2, skip: TUNNELS_ONLY },
    { label: "CPU s per GiB, whole machine", key: "machineCpuSPerGiB", digits: 2 },
    {
      label: `CPU µs per request (${c} conns), tunnel processes`,
      key: "cpuUsPerRequest",
      digits: 1,
      skip: TUNNELS_ONLY,
    },
    { label: "CPU µs per request, whole machine", key: "machineCpuUsPerRequest", digits: 1 },
    {
      label: "CPU µs per new connection, tunnel processes",
      key: "cpuUsPerConnection",
      digits: 0,
      skip: TUNNELS_ONLY,
    },
    {
      label: `Idle KiB per connection, server side (N=${n})`,
      key: "idleServerKiB",
      digits: 1,
      skip: TUNNELS_ONLY,
      target: { op: "<=", value: 32 },
    },
    {
      label: `Idle KiB per connection, client side (N=${n})`,
      key: "idleClientKiB",
      digits: 1,
      skip: TUNNELS_ONLY,
      target: { op: "<=", value: 32 },
    },
    {
      label: "Idle connections still echoing afterwards",
      key: "idleEchoing",
      digits: 0,
      skip: TUNNELS_ONLY,
      noRatio: true,
      target: { op: "=", value: "N" },
    },
    {
      label: `${info.ackedTotal / 1024 ** 2} MiB in ${
        info.ackedChunk / 1024
      } KiB writes, 1 outstanding, ms`,
      key: "ackedTransferMs",
      digits: 1,
      target: { vs: "direct", op: "<=", ratio: 1.5 },
    },
    { label: "Peak RSS server side, MiB", key: "peakServerMiB", digits: 1, skip: TUNNELS_ONLY },
    { label: "Peak RSS client side, MiB", key: "peakClientMiB", digits: 1, skip: TUNNELS_ONLY },
    {
      label: "HTTP requests/s, 13-byte responses, 1 connection",
      key: "httpRps1",
      digits: 0,
      skip: HTTP_ONLY,
      target: { vs: "direct", op: ">=", ratio: 0.5 },
    },
    { label: "HTTP p50, µs (1 connection)", key: "httpP50Us1", digits: 0, skip: HTTP_ONLY },
    { label: "HTTP p99, µs (1 connection)", key: "httpP99Us1", digits: 0, skip: HTTP_ONLY },
    {
      label: `HTTP requests/s, 13-byte responses, ${info.httpConcurrency} connections`,
      key: "httpRps10",
      digits: 0,
      skip: HTTP_ONLY,
      target: { vs: "direct", op: ">=", ratio: 0.15 },
    },
    {
      label: `HTTP p50, µs (${info.httpConcurrency} connections)`,
      key: "httpP50Us10",
      digits: 0,
      skip: HTTP_ONLY,
    },
    {
      label: `HTTP p99, µs (${info.httpConcurrency} connections)`,
      key: "httpP99Us10",
      digits: 0,
      skip: HTTP_ONLY,
    },
    {
      label: "HTTP 1 MiB responses, MiB/s (1 connection)",
      key: "httpBigMiBps",
      digits: 0,
      skip: HTTP_ONLY,
      target: { vs: "direct", op: ">=", ratio: 0.2 },
    },
  ];
}

/** Median of the finite values; null if there are none. */
export function median(values: readonly (number | null | undefined)[]): number | null {
  const v = values.filter((x): x is number => typeof x === "number" && Number.isFinite(x))
    .sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

function value(run: RunResult, path: PathName, key: Key): number | null {
  const v = run.paths[path]?.[key];
  return v === undefined || !Number.isFinite(v) ? null : v;
}

/** mport's value over `other`'s in each run (null where either is missing). */
function runRatios(runs: readonly RunResult[], key: Key, other: PathName): (number | null)[] {
  return runs.map((r) => {
    const a = value(r, "mport", key);
    const b = value(r, other, key);
    return a === null || b === null || b === 0 ? null : a / b;
  });
}

function fmt(v: number | null, digits: number): string {
  return v === null || !Number.isFinite(v) ? "—" : v.toFixed(digits);
}

/** The verdict of one row: PASS, **FAIL**, SKIP or empty, with the target's wording. */
function judge(
  row: Row,
  runs: readonly RunResult[],
  info: BenchInfo,
): { target: string; result: string } {
  const t = row.target;
  if (!t) return { target: "", result: "" };
  const verdict = (ok: boolean) => (ok ? "PASS" : "**FAIL**");
  if ("vs" in t) {
    const target = `${t.op === ">=" ? "≥" : "≤"} ${ratioText(t.ratio)}× ${
      t.vs === "ssh" ? "ssh" : "direct"
    }`;
    if (t.vs === "ssh" && info.sshSkipped !== null) return { target, result: "SKIP" };
    const r = median(runRatios(runs, row.key, t.vs));
    if (r === null) return { target, result: "n/a" };
    return { target, result: verdict(t.op === ">=" ? r >= t.ratio : r <= t.ratio) };
  }
  const bound = t.value === "N" ? info.idleConnections : t.value;
  const target = t.op === "=" ? `all ${bound}` : `≤ ${bound}`;
  // Every run must meet an absolute bound; the median alone would hide a run that lost some.
  const vals = runs.map((r) => value(r, "mport", row.key));
  if (vals.some((v) => v === null)) return { target, result: "n/a" };
  const ok = vals.every((v) => (t.op === "=" ? v === bound : v! <= bound));
  return { target, result: verdict(ok) };
}

/** Renders the medians of `runs` as Markdown tables with ratios and verdicts. */
export function renderMarkdown(info: BenchInfo, runs: readonly RunResult[]): string {
  const ssh = info.sshSkipped === null;
  const header = [
    "Metric",
    "direct",
    "mport",
    "ssh -R",
    "mport/direct",
    "mport/ssh",
    "mport/ssh per run",
    "Target",
    "Result",
  ];
  const out: string[][] = [header];
  for (const row of rows(info)) {
    const med = (p: PathName) =>
      row.skip?.includes(p) ? null : median(runs.map((r) => value(r, p, row.key)));
    const ratio = (other: PathName) => {
      const r = median(runRatios(runs, row.key, other));
      // Two decimals, or three where two would round onto the target and hide the verdict.
      const t = row.target && "vs" in row.target && row.target.vs === other ? row.target : null;
      const digits = t && r !== null && r.toFixed(2) === t.ratio.toFixed(2) ? 3 : 2;
      return `${fmt(r, digits)}×`;
    };
    const perRun = runRatios(runs, row.key, "ssh").map((r) => fmt(r, 2)).join(", ");
    const vsSsh = ssh && !row.noRatio && !row.skip?.includes("ssh");
    const { target, result } = judge(row, runs, info);
    out.push([
      row.label,
      fmt(med("direct"), row.digits),
      fmt(med("mport"), row.digits),
      ssh ? fmt(med("ssh"), row.digits) : "—",
      row.skip?.includes("direct") || row.noRatio ? "" : ratio("direct"),
      vsSsh ? ratio("ssh") : "",
      vsSsh && runs.length > 1 ? perRun : "",
      target,
      result,
    ]);
  }
  const phases = new Map<string, PhaseCpu[]>();
  for (const r of runs) {
    for (const [k, v] of Object.entries(r.cpu)) {
      const list = phases.get(k);
      if (list) list.push(v);
      else phases.set(k, [v]);
    }
  }
  const cpuRows: string[][] = [[
    "Phase / path",
    "Wall s",
    "tunnel CPU s",
    "bench CPU s",
    "service CPU s",
    "other processes",
  ]];
  const busy: string[] = [];
  for (const [k, list] of phases) {
    const m = (f: (p: PhaseCpu) => number | null) => median(list.map(f));
    const wall = m((p) => p.wallS);
    const otherShare = m((p) => (p.other === null ? null : p.other / (p.wallS * info.cpus)));
    if (otherShare !== null && otherShare > OTHER_LOAD_WARNING) busy.push(k);
    cpuRows.push([
      k,
      fmt(wall, 2),
      fmt(m((p) => p.tunnel), 2),
      fmt(m((p) => p.bench), 2),
      fmt(m((p) => p.service), 2),
      otherShare === null ? "—" : `${fmt(100 * otherShare, 0)} % of machine`,
    ]);
  }
  const notes = [...new Set(runs.flatMap((r) => r.notes))];
  return [
    `mport loopback benchmark, ${
      info.date.slice(0, 16).replace("T", " ")
    } UTC, Deno ${info.deno}, ` +
    `${info.cpus} CPUs, service ${
      info.service === "process" ? "in its own process" : "in-process"
    }, ` +
    `${info.runs} run${info.runs === 1 ? "" : "s"} (medians)${info.quick ? ", --quick" : ""}`,
    `mport: ${info.mport}. ssh: ${
      ssh ? `${info.sshVersion ?? "ssh"}, -R with ${SSH_NOTE}` : `skipped: ${info.sshSkipped}`
    }`,
    "",
    table(out),
    "",
    "MB = 10^6 bytes. Throughput is one connection, timed from connect to the last byte delivered.",
    `Round trips: ${MESSAGE_NOTE}. New connection = connect, one byte echoed, close.`,
    "Ratios are medians of the per-run ratios. CPU counts the tunnel's own processes (mport: server",
    "and client; ssh: the session's sshd and ssh) or, for whole machine, everything busy meanwhile.",
    `Idle memory: RSS growth of each side with ${info.idleConnections} connections open through a`,
    "fresh tunnel (one round trip each, then idle), per connection; every run must meet it.",
    ...(info.idleNote ? [info.idleNote] : []),
    `HTTP: GET on keep-alive connections, one request outstanding per connection; mport = ${HTTP_NOTE}.`,
    "",
    table(cpuRows),
    ...(busy.length === 0 ? [] : [
      "",
      `Note: other processes used more than ${100 * OTHER_LOAD_WARNING} % of the machine ` +
      `(median of the runs) during ${busy.join(", ")}; those numbers are pessimistic.`,
    ]),
    ...(notes.length === 0 ? [] : ["", ...notes.map((n) => `Note: ${n}`)]),
    "",
    `Wall time ${fmt(info.wallS, 0)} s.`,
  ].join("\n");
}

const HTTP_NOTE =
  "mport-server's own port with Host: bench.t.test, then `mport http` to the same " +
  "Deno.serve service that direct reaches; ssh -R forwards a port to that service";
const SSH_NOTE = "aes128-gcm@openssh.com, a -tt login session, private sshd on loopback";
const MESSAGE_NOTE = "32-byte messages echoed, one outstanding per connection";
/** Share of the machine other processes may use before the report warns about it. */
const OTHER_LOAD_WARNING = 0.1;

/** A target ratio with one decimal, or two where one would round it (0.15). */
function ratioText(r: number): string {
  return r.toFixed(Number.isInteger(Math.round(r * 100) / 10) ? 1 : 2);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  const sep = `|${
    widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|")
  }|`;
  return [line(rows[0]!), sep, ...rows.slice(1).map(line)].join("\n");
}
