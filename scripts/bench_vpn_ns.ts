// Processes in the VPN benchmark's namespaces, and its measurements from the client namespace:
// iperf3 throughput, ping RTT and 1-byte TCP echo RTT to targets in the internet namespace.
import { NET, type Topology } from "./netns.ts";
import { denoRunArgs, Proc, ROOT } from "./mport_procs.ts";
import { percentile, type RttResult } from "./bench_vpn_probe.ts";

/** Ports of the targets on 203.0.113.1 in the internet namespace. */
export const IPERF_PORT = 5201;
export const ECHO_PORT = 7007;

const PROBE_MAIN = new URL("./bench_vpn_probe.ts", import.meta.url).pathname;

/** Options of {@link spawnIn}. */
export interface SpawnInOptions {
  readonly cwd?: string;
  readonly env?: Record<string, string>;
  readonly afterExit?: () => Promise<void>;
}

/** Starts `program args…` inside namespace `ns` (ip netns exec execs it: the pid is the program). */
export function spawnIn(
  ns: string,
  name: string,
  program: string,
  args: readonly string[],
  opts: SpawnInOptions = {},
): Proc {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, program, ...args],
    cwd: opts.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...opts.env },
  }).spawn();
  return new Proc(name, child, opts.afterExit);
}

/** `deno run [denoFlags] -A --unstable-net main args…` inside namespace `ns`. */
export function denoIn(
  ns: string,
  name: string,
  main: string,
  args: readonly string[],
  denoFlags: readonly string[] = [],
  opts: SpawnInOptions = {},
): Proc {
  return spawnIn(ns, name, Deno.execPath(), denoRunArgs(main, args, denoFlags), {
    cwd: ROOT.pathname,
    ...opts,
  });
}

/** Waits for a line matching `re` on stdout; stops the process and throws with its output if not. */
export async function ready(proc: Proc, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  try {
    return await Promise.race([
      proc.stdout.wait(re, timeoutMs),
      proc.status().then((s) => {
        throw new Error(`${proc.name} exited with code ${s.code} before it was ready`);
      }),
    ]);
  } catch (e) {
    await proc.stop("SIGKILL");
    throw new Error(`${(e as Error).message.split("\n")[0]}\n${tail(proc.output(), 40)}`);
  }
}

/** The last `n` lines of `text`. */
export function tail(text: string, n: number): string {
  return text.split("\n").slice(-n).join("\n");
}

/** The echo service on 203.0.113.1 (iperf3 servers are started per test). */
export async function startEcho(topo: Topology): Promise<{ stop(): Promise<void> }> {
  const echo = denoIn(topo.internet, "echo", PROBE_MAIN, ["serve", `${NET.internet}:${ECHO_PORT}`]);
  await ready(echo, /^echo on /, 60_000);
  return { stop: async () => void await echo.stop() };
}

/** Runs a program in the client namespace, killed after `timeoutMs`. */
async function clientRun(
  topo: Topology,
  program: string,
  args: string[],
  timeoutMs: number,
): Promise<string> {
  const proc = spawnIn(topo.client, program, program, args);
  const timer = setTimeout(() => void proc.stop("SIGKILL", 0), timeoutMs);
  try {
    const s = await proc.status();
    if (!s.success) {
      const why = s.signal === "SIGKILL" ? `timed out after ${timeoutMs} ms` : `code ${s.code}`;
      throw new Error(
        `${program} ${args.join(" ")} failed (${why}): ${
          tail(proc.stderr.lines.join("\n") || proc.stdout.lines.join("\n"), 5).trim()
        }`,
      );
    }
    return proc.stdout.lines.join("\n");
  } finally {
    clearTimeout(timer);
  }
}
/**
 * One iperf3 TCP test from the client namespace to 203.0.113.1: Mbit/s, bytes received and the
 * client's source address (a tunnel's, or 198.51.100.2 on the direct path). A fresh
 * one-shot server each time: a server still draining the last test through a tunnel's buffers
 * refuses the next client ("unable to receive control message").
 */
export async function iperf(
  topo: Topology,
  seconds: number,
  reverse: boolean,
): Promise<{ mbps: number; bytes: number; local: string }> {
  const server = spawnIn(topo.internet, "iperf3 -s", "iperf3", [
    "-s",
    "-1",
    "-B",
    NET.internet,
    "-p",
    String(IPERF_PORT),
    // Its output is a pipe here: without this the ready line would sit in a buffer.
    "--forceflush",
  ]);
  try {
    await ready(server, /Server listening/, 10_000);
    const args = [
      "-c",
      NET.internet,
      "-p",
      String(IPERF_PORT),
      "-t",
      String(seconds),
      "-J",
      "--connect-timeout",
      "5000",
      ...(reverse ? ["-R"] : []),
    ];
    const text = await clientRun(topo, "iperf3", args, (seconds + 20) * 1000);
    const json = JSON.parse(text);
    if (json.error) throw new Error(`iperf3: ${json.error}`);
    const sum = json.end?.sum_received;
    if (typeof sum?.bits_per_second !== "number") throw new Error("iperf3 printed no sum_received");
    const local = String(json.start?.connected?.[0]?.local_host ?? "?");
    return { mbps: sum.bits_per_second / 1e6, bytes: sum.bytes, local };
  } finally {
    // A one-shot server exits by itself once the test is done; give it the chance.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([server.status(), new Promise((r) => (timer = setTimeout(r, 5_000)))]);
    clearTimeout(timer);
    await server.stop();
  }
}

/** ICMP echo RTT from the client namespace, µs (p50, p99) of `count` pings `intervalS` apart. */
export async function ping(topo: Topology, count: number, intervalS: number): Promise<RttResult> {
  const args = ["-n", "-c", String(count), "-i", String(intervalS), "-W", "1", NET.internet];
  const text = await clientRun(topo, "ping", args, count * intervalS * 1000 + 15_000);
  const samples = [...text.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000)
    .sort((a, b) => a - b);
  if (samples.length < count * 0.9) {
    throw new Error(`ping: ${samples.length} of ${count} answered`);
  }
  return {
    count: samples.length,
    p50Us: percentile(samples, 0.5),
    p99Us: percentile(samples, 0.99),
  };
}

/** 1-byte TCP echo round trips from the client namespace to 203.0.113.1, µs (p50, p99). */
export async function echoRtt(topo: Topology, count: number): Promise<RttResult> {
  const proc = denoIn(topo.client, "echo rtt", PROBE_MAIN, [
    "rtt",
    `${NET.internet}:${ECHO_PORT}`,
    String(count),
  ]);
  const timer = setTimeout(() => void proc.stop("SIGKILL", 0), 60_000 + count * 10);
  try {
    const s = await proc.status();
    const last = proc.stdout.lines.at(-1);
    if (!s.success || !last) {
      throw new Error(`echo rtt failed: ${tail(proc.stderr.lines.join("\n"), 5).trim()}`);
    }
    return JSON.parse(last) as RttResult;
  } finally {
    clearTimeout(timer);
  }
}

/** A VPN under test, up and routing the client namespace's traffic. */
export interface VpnRig {
  /** Pids of the tunnel's own processes (server and client side), for CPU readings. */
  readonly pids: readonly number[];
  /** Stops the processes and undoes what the rig set up; safe to call twice. */
  stop(): Promise<void>;
}
