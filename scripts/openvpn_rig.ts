// OpenVPN 2.6 in the benchmark's namespaces: TCP, tun, AES-256-GCM, TLS with a throwaway PKI; the
// server (203.0.113.2:1194) masquerades its 10.9.0.0/24 pool, the client routes everything through it.
import { NET, type Topology } from "./netns.ts";
import type { Pki } from "./bench_vpn_pki.ts";
import { ready, spawnIn, type VpnRig } from "./bench_vpn_ns.ts";
import type { Proc } from "./mport_procs.ts";

/** OpenVPN's port on the server namespace's address. */
export const OPENVPN_PORT = 1194;
/** The pool OpenVPN hands out (not mport's 10.8.0.0/24). */
export const OPENVPN_POOL = "10.9.0.0/24";
/** The nftables table of the masquerade rule, removed by stop(). */
const NFT_TABLE = "openvpn_bench";
const READY_MS = 30_000;
const INIT_DONE = /Initialization Sequence Completed/;

/** Whether openvpn is installed, as its version line, or null. */
export async function openvpnVersion(): Promise<string | null> {
  try {
    const out = await new Deno.Command("openvpn", { args: ["--version"], stdout: "piped" })
      .output();
    return new TextDecoder().decode(out.stdout).split(" ").slice(0, 2).join(" ") || null;
  } catch {
    return null;
  }
}

function serverConfig(pki: Pki): string {
  return [
    "proto tcp-server",
    `local ${NET.server}`,
    `port ${OPENVPN_PORT}`,
    "dev tun",
    "topology subnet",
    "server 10.9.0.0 255.255.255.0",
    `ca ${pki.caCert}`,
    `cert ${pki.openvpnServerCert}`,
    `key ${pki.openvpnServerKey}`,
    "dh none",
    "cipher AES-256-GCM",
    "data-ciphers AES-256-GCM",
    // Userspace tun like mport (Debian's kernel has no ovpn-dco module unless installed by hand).
    "disable-dco",
    "keepalive 10 60",
    // TCP_NODELAY on both ends (pushed to the client), as mport sets it: with Nagle on the outer
    // TCP, pings 5 ms apart settle at ~10 ms each, which would flatter mport's RTT ratio.
    "tcp-nodelay",
    "verb 3",
    "",
  ].join("\n");
}

function clientConfig(pki: Pki): string {
  return [
    "client",
    "proto tcp-client",
    `remote ${NET.server} ${OPENVPN_PORT}`,
    "nobind",
    "dev tun",
    `ca ${pki.caCert}`,
    `cert ${pki.openvpnClientCert}`,
    `key ${pki.openvpnClientKey}`,
    "remote-cert-tls server",
    "cipher AES-256-GCM",
    "data-ciphers AES-256-GCM",
    "disable-dco",
    // 0.0.0.0/1 and 128.0.0.0/1 through the tunnel; 203.0.113.2 itself stays on c0.
    "redirect-gateway def1",
    "connect-retry 1",
    "verb 3",
    "",
  ].join("\n");
}

/** Starts the OpenVPN server and client in `topo`; resolves once the client's routes are up. */
export async function startOpenVpn(topo: Topology, pki: Pki, dir: string): Promise<VpnRig> {
  const procs: Proc[] = [];
  const undo: (() => Promise<unknown>)[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const p of procs.reverse()) await p.stop();
    for (const u of undo.reverse()) await u().catch(() => {});
  };
  try {
    const forward = (await topo.run(topo.server, "cat", ["/proc/sys/net/ipv4/ip_forward"])).trim();
    await topo.run(topo.server, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
    undo.push(() => topo.run(topo.server, "sysctl", ["-qw", `net.ipv4.ip_forward=${forward}`]));
    const nftFile = `${dir}/openvpn.nft`;
    await Deno.writeTextFile(
      nftFile,
      `table ip ${NFT_TABLE} {\n  chain post {\n    type nat hook postrouting priority srcnat;\n` +
        `    ip saddr ${OPENVPN_POOL} oifname "s0" masquerade\n  }\n}\n`,
    );
    await topo.run(topo.server, "nft", ["-f", nftFile]);
    undo.push(() => topo.run(topo.server, "nft", ["delete", "table", "ip", NFT_TABLE]));

    await Deno.writeTextFile(`${dir}/server.conf`, serverConfig(pki));
    await Deno.writeTextFile(`${dir}/client.conf`, clientConfig(pki));
    const server = spawnIn(topo.server, "openvpn server", "openvpn", [
      "--config",
      `${dir}/server.conf`,
    ], { cwd: dir });
    procs.push(server);
    await ready(server, INIT_DONE, READY_MS);
    const client = spawnIn(topo.client, "openvpn client", "openvpn", [
      "--config",
      `${dir}/client.conf`,
    ], { cwd: dir });
    procs.push(client);
    await ready(client, INIT_DONE, READY_MS);
    return { pids: [server.pid, client.pid], stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
