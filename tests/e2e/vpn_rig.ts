// The VPN tests' rig: mport-server, `mport vpn` and the targets as processes inside the
// namespaces of scripts/netns.ts, curl and the REST API from inside them, and snapshots of what
// the VPN changes on a host (routes, devices, nftables, resolv.conf, forwarding).
import { CLIENT_MAIN, SERVER_MAIN } from "../../scripts/mport_procs.ts";
import { NET, type Topology } from "../../scripts/netns.ts";
import { Proc } from "./harness.ts";

/** The VPN server's port on 203.0.113.2. */
export const VPN_PORT = 8080;
export const VPN_TOKEN = "vpn-test-token-0123456789";
export const SERVER_URL = `ws://${NET.server}:${VPN_PORT}`;
const TARGETS_MAIN = new URL("./netns_targets.ts", import.meta.url).pathname;

/** A Deno program run inside `ns`, its output read line by line. */
export function denoIn(topo: Topology, ns: string, main: string, args: string[]): Proc {
  return new Proc(
    topo.command(ns, Deno.execPath(), ["run", "-A", "--unstable-net", main, ...args]).spawn(),
  );
}

async function waitLine(p: Proc, re: RegExp, what: string, ms = 30_000): Promise<RegExpMatchArray> {
  try {
    return await p.stdout.wait(re, ms);
  } catch (e) {
    await p.stop("SIGKILL");
    throw new Error(`${what}: ${(e as Error).message}\n${p.output()}`);
  }
}

/** The targets in the internet namespace (HTTP :8000, echo :7007, DNS :53), ready. */
export async function startTargets(topo: Topology): Promise<Proc> {
  const p = denoIn(topo, topo.internet, TARGETS_MAIN, []);
  await waitLine(p, /^ready$/, "targets");
  return p;
}

/** mport-server in the server namespace on 0.0.0.0:8080, with `args` (e.g. `--vpn-pool`). */
export async function startVpnServer(topo: Topology, dir: string, args: string[]): Promise<Proc> {
  const p = denoIn(topo, topo.server, SERVER_MAIN, [
    "--listen",
    `0.0.0.0:${VPN_PORT}`,
    "--token",
    VPN_TOKEN,
    "--data-dir",
    `${dir}/server`,
    "--stats-interval",
    "0",
    ...args,
  ]);
  await waitLine(p, /listening on http:\/\//, "mport-server");
  return p;
}

/** `mport vpn` in the client namespace (not waited for: see {@link vpnReady}). */
export function startVpnClient(
  topo: Topology,
  dir: string,
  args: string[],
  server = SERVER_URL,
): Proc {
  return denoIn(topo, topo.client, CLIENT_MAIN, [
    "vpn",
    "--server",
    server,
    "--client-id-file",
    `${dir}/client/client-id`,
    ...(args.includes("--token") ? [] : ["--token", VPN_TOKEN]),
    ...args,
  ]);
}

/** Waits for the `vpn …` line of `mport vpn`. */
export async function vpnReady(p: Proc): Promise<string> {
  return (await waitLine(p, /^vpn \S+ dev \S+ -> .*$/, "mport vpn"))[0];
}

/** curl in `ns`: the body, or the error text (curl's exit code and message) when it failed. */
export async function curlIn(
  topo: Topology,
  ns: string,
  url: string,
  extra: string[] = [],
): Promise<{ ok: boolean; text: string }> {
  const out = await topo.command(ns, "curl", ["-sS", "--max-time", "4", ...extra, url]).output();
  const dec = new TextDecoder();
  return { ok: out.success, text: out.success ? dec.decode(out.stdout) : dec.decode(out.stderr) };
}

/** The server's REST API, called with the admin token from inside the server namespace. */
export async function serverApi(
  topo: Topology,
  path: string,
  method = "GET",
  body?: unknown,
): Promise<unknown> {
  const args = [
    "-sS",
    "--max-time",
    "5",
    "-X",
    method,
    "-H",
    `authorization: Bearer ${VPN_TOKEN}`,
    "-H",
    "content-type: application/json",
    ...(body === undefined ? [] : ["--data", JSON.stringify(body)]),
    `http://127.0.0.1:${VPN_PORT}/api/v1${path}`,
  ];
  return JSON.parse(await topo.run(topo.server, "curl", args));
}

/** What a VPN may change on a namespace's host, as text to compare before and after. */
export async function hostState(topo: Topology, ns: string): Promise<string> {
  const routes = await topo.run(ns, "ip", ["route", "show", "table", "all"]);
  const links = (await topo.run(ns, "ip", ["-o", "link"])).split("\n")
    .map((l) => l.split(":")[1]?.trim().split("@")[0]).filter(Boolean).join(" ");
  const nft = await topo.run(ns, "nft", ["list", "ruleset"]);
  const forward = await topo.run(ns, "cat", ["/proc/sys/net/ipv4/ip_forward"]);
  const resolv = await topo.run(ns, "cat", ["/etc/resolv.conf"]).catch(() => "(none)");
  // Local and broadcast routes of the kernel's own table change with nothing we do.
  const kept = routes.split("\n").filter((l) => !/^(local|broadcast) /.test(l)).join("\n");
  return `links: ${links}\nroutes:\n${kept}\nnft:\n${nft}\nip_forward: ${forward}resolv:\n${resolv}`;
}

/** Polls `check` every 100 ms until it returns true; throws `what` after `ms`. */
export async function until(check: () => Promise<boolean>, what: string, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
