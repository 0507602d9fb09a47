// The VPN tests' rig, on the namespace rig of netns_rig.ts: mport-server with the VPN's token,
// `mport vpn` and the targets as processes inside the namespaces, the REST API as the VPN's admin,
// and snapshots of what the VPN changes on a host (routes, devices, nftables, resolv.conf,
// forwarding).
import type { Topology } from "../../scripts/netns.ts";
import type { Proc } from "./harness.ts";
import {
  clientIn,
  denoIn,
  SERVER_PORT,
  SERVER_URL,
  serverApiIn,
  startServerIn,
  waitLine,
} from "./netns_rig.ts";

/** The VPN server's port on 203.0.113.2. */
export const VPN_PORT = SERVER_PORT;
export const VPN_TOKEN = "vpn-test-token-0123456789";
const TARGETS_MAIN = new URL("./netns_targets.ts", import.meta.url).pathname;

/** The targets in the internet namespace (HTTP :8000, echo :7007, DNS :53), ready. */
export async function startTargets(topo: Topology): Promise<Proc> {
  const p = denoIn(topo, topo.internet, TARGETS_MAIN, []);
  await waitLine(p, /^ready$/, "targets");
  return p;
}

/** mport-server in the server namespace on 0.0.0.0:8080, with `args` (e.g. `--vpn-pool`). */
export async function startVpnServer(topo: Topology, dir: string, args: string[]): Promise<Proc> {
  return await startServerIn(topo, VPN_TOKEN, ["--data-dir", `${dir}/server`, ...args]);
}

/** `mport vpn` in the client namespace (not waited for: see {@link vpnReady}). */
export function startVpnClient(
  topo: Topology,
  dir: string,
  args: string[],
  server = SERVER_URL,
): Proc {
  return clientIn(topo, [
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

/** The server's REST API, called with the admin token from inside the server namespace. */
export async function serverApi(
  topo: Topology,
  path: string,
  method = "GET",
  body?: unknown,
): Promise<unknown> {
  return await serverApiIn(topo, VPN_TOKEN, path, method, body);
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
