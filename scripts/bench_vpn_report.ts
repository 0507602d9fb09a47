// The VPN benchmark's results (per run, as medians, against OpenVPN) and their Markdown rendering.
import { NET } from "./netns.ts";
import { median } from "./bench_report.ts";

/** The paths measured, in table order. */
export const VPN_PATHS = ["direct", "openvpn", "mport-wss", "mport-ws"] as const;
export type VpnPath = typeof VPN_PATHS[number];

export const TITLES: Record<VpnPath, string> = {
  direct: "direct",
  openvpn: "OpenVPN",
  "mport-wss": "mport wss",
  "mport-ws": "mport ws",
};

/** One path in one run; a missing key was not measured (its error is in `errors`). */
export interface VpnMetrics {
  uploadMbps?: number;
  downloadMbps?: number;
  echoP50Us?: number;
  echoP99Us?: number;
  pingP50Us?: number;
  pingP99Us?: number;
  /** CPU seconds of the tunnel's processes (server and client side) per GiB moved by iperf3. */
  cpuSPerGiB?: number;
}

/** One run: fresh tunnel processes on every path. */
export interface VpnRun {
  readonly paths: Partial<Record<VpnPath, VpnMetrics>>;
  readonly errors: string[];
}

/** How much each measurement does. */
export interface VpnPlan {
  /** iperf3 -t, each direction. */
  readonly seconds: number;
  readonly pings: number;
  readonly pingIntervalS: number;
  readonly echoes: number;
}

/** Everything the section reports. */
export interface VpnReport {
  readonly plan: VpnPlan;
  readonly runs: readonly VpnRun[];
  /** Paths not measured at all, and why. */
  readonly skipped: Partial<Record<VpnPath, string>>;
  readonly openvpn: string | null;
  readonly cpus: number;
  readonly wallS: number;
}

interface VpnRow {
  readonly label: string;
  readonly key: keyof VpnMetrics;
  readonly digits: number;
  /** mport against OpenVPN: higher is better (>=) or lower is better (<=). */
  readonly target?: ">=" | "<=";
}

function vpnRows(plan: VpnPlan): VpnRow[] {
  const s = plan.seconds;
  return [
    {
      label: `Upload, iperf3 1 stream (${s} s), Mbit/s`,
      key: "uploadMbps",
      digits: 0,
      target: ">=",
    },
    { label: `Download, iperf3 -R (${s} s), Mbit/s`, key: "downloadMbps", digits: 0, target: ">=" },
    {
      label: `TCP echo RTT p50, µs (1 byte, ${plan.echoes} round trips)`,
      key: "echoP50Us",
      digits: 0,
      target: "<=",
    },
    { label: "TCP echo RTT p99, µs", key: "echoP99Us", digits: 0 },
    {
      label: `ping RTT p50, µs (${plan.pings} × ${plan.pingIntervalS * 1000} ms)`,
      key: "pingP50Us",
      digits: 0,
      target: "<=",
    },
    { label: "ping RTT p99, µs", key: "pingP99Us", digits: 0 },
    { label: "CPU s per GiB, tunnel processes", key: "cpuSPerGiB", digits: 2 },
  ];
}

function fmt(v: number | null, digits: number): string {
  return v === null || !Number.isFinite(v) ? "—" : v.toFixed(digits);
}

function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : a / b;
}

/** The section as Markdown: medians, ratios to OpenVPN, per-run ratios, verdicts, notes. */
export function renderVpnMarkdown(report: VpnReport): string {
  const { runs, plan } = report;
  const val = (r: VpnRun, p: VpnPath, k: keyof VpnMetrics) => r.paths[p]?.[k] ?? null;
  const med = (p: VpnPath, k: keyof VpnMetrics) => median(runs.map((r) => val(r, p, k)));
  const header = [
    "Metric",
    ...VPN_PATHS.map((p) => TITLES[p]),
    "wss/OpenVPN",
    "ws/OpenVPN",
    "wss/OpenVPN per run",
    "Target",
    "Result",
  ];
  const lines = [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (i === 0 || i >= header.length - 3 ? "---" : "---:")).join(" | ")} |`,
  ];
  for (const row of vpnRows(plan)) {
    const o = med("openvpn", row.key);
    const wss = ratio(med("mport-wss", row.key), o);
    const ws = ratio(med("mport-ws", row.key), o);
    const perRun = runs.map((r) =>
      fmt(ratio(val(r, "mport-wss", row.key), val(r, "openvpn", row.key)), 2)
    ).join(", ");
    let target = "";
    let result = "";
    if (row.target) {
      target = `${row.target === ">=" ? "≥" : "≤"} 1.0× OpenVPN`;
      // The median of the per-run ratios: each run's two tunnels saw the same machine state.
      const r = median(
        runs.map((x) => ratio(val(x, "mport-wss", row.key), val(x, "openvpn", row.key))),
      );
      result = r === null ? "n/a" : (row.target === ">=" ? r >= 1 : r <= 1) ? "PASS" : "**FAIL**";
    }
    lines.push(
      `| ${
        [
          row.label,
          ...VPN_PATHS.map((p) => fmt(med(p, row.key), row.digits)),
          wss === null ? "—" : `${wss.toFixed(2)}×`,
          ws === null ? "—" : `${ws.toFixed(2)}×`,
          perRun,
          target,
          result,
        ].join(" | ")
      } |`,
    );
  }
  const notes: string[] = [];
  for (const p of VPN_PATHS) {
    const why = report.skipped[p];
    if (why && why !== "not selected") notes.push(`${TITLES[p]}: not measured: ${why}.`);
  }
  for (const r of runs) for (const e of r.errors) notes.push(e.split("\n")[0]!);
  return [
    "## VPN (network namespaces)",
    "",
    `client ns (198.51.100.2) → internet ns → targets on ${NET.internet}; tunnels end in the server ` +
    `ns (${NET.server}). ${runs.length} run${runs.length === 1 ? "" : "s"}, medians; ` +
    `${report.cpus} CPUs; ${report.openvpn ?? "OpenVPN not installed"} (TCP, tun, AES-256-GCM, ` +
    `TLS, tcp-nodelay, no DCO); mport vpn --routes default over wss:// (TLS) and ws://. ` +
    `${report.wallS.toFixed(0)} s.`,
    "",
    ...lines,
    ...(notes.length > 0 ? ["", ...notes.map((n) => `- ${n}`)] : []),
    "",
  ].join("\n");
}
