// Linux network namespaces for VPN and egress tests and the VPN benchmark: a "client", a "server"
// and an "internet" namespace joined by veth pairs, made and removed here (and by .ci/run).
//
//   client ns                 internet ns (routes between the two)          server ns
//   c0 198.51.100.2/24 ── ic 198.51.100.1/24 | is 203.0.113.1/24 ── s0 203.0.113.2/24
//   default via .1                 ip_forward=1, targets listen here        default via .1
//                                                                            priv0 10.66.0.1/24 (LAN)
//
// The client reaches the internet directly (its own address shows) until a VPN routes it through
// the server (then the server's 203.0.113.2 shows). The server also has a private network
// (10.66.0.0/24 on a veth pair of its own) that egress must refuse by default.

/** Every namespace this module makes starts with this (.ci/run removes leftovers by it). */
export const NETNS_PREFIX = "mpt";

/** Addresses of the topology. */
export const NET = {
  client: "198.51.100.2",
  /** The internet namespace as the client's gateway. */
  internetClientSide: "198.51.100.1",
  server: "203.0.113.2",
  /** The internet namespace as the server's gateway; test targets listen here. */
  internet: "203.0.113.1",
  /** An address on the server's private network (its LAN, a veth pair inside the server namespace). */
  serverPrivate: "10.66.0.1",
} as const;

/** Three namespaces, ready; `close()` removes them and their /etc/netns files. */
export interface Topology {
  readonly client: string;
  readonly server: string;
  readonly internet: string;
  /** `ip netns exec NS program ...args` as a Deno.Command (stdout/stderr piped). */
  command(ns: string, program: string, args: string[], opts?: NsCommandOptions): Deno.Command;
  /** Runs to exit; throws with the output when it fails. */
  run(ns: string, program: string, args: string[]): Promise<string>;
  /** The client namespace's /etc/resolv.conf as processes in it see it. */
  readonly clientResolvConf: string;
  close(): Promise<void>;
}

export interface NsCommandOptions {
  env?: Record<string, string>;
  stdin?: "null" | "piped";
}

/** Why namespace tests cannot run here, or null when they can (root, `ip netns`, veth). */
export function netnsUnavailable(): string | null {
  if (Deno.build.os !== "linux") return "network namespaces are Linux only";
  if (Deno.uid() !== 0) return "network namespaces need root";
  const name = `${NETNS_PREFIX}probe${Deno.pid}`;
  try {
    const add = new Deno.Command("ip", { args: ["netns", "add", name], stderr: "piped" })
      .outputSync();
    if (!add.success) return `ip netns add failed: ${new TextDecoder().decode(add.stderr).trim()}`;
    new Deno.Command("ip", { args: ["netns", "del", name] }).outputSync();
    return null;
  } catch (e) {
    return `cannot run ip: ${(e as Error).message}`;
  }
}

let counter = 0;

async function ip(args: string[]): Promise<void> {
  const out = await new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** Makes the three namespaces and their links. */
export async function makeTopology(): Promise<Topology> {
  const tag = `${NETNS_PREFIX}${Deno.pid % 100_000}x${counter++}`;
  const client = `${tag}c`;
  const server = `${tag}s`;
  const internet = `${tag}i`;
  const made: string[] = [];
  const resolvDir = `/etc/netns/${client}`;
  const remove = async () => {
    for (const ns of made) {
      await new Deno.Command("ip", { args: ["netns", "del", ns], stderr: "null" }).output();
    }
    for (const ns of [client, server, internet]) {
      await Deno.remove(`/etc/netns/${ns}`, { recursive: true }).catch(() => {});
    }
  };
  try {
    for (const ns of [client, server, internet]) {
      await ip(["netns", "add", ns]);
      made.push(ns);
      await ip(["-n", ns, "link", "set", "lo", "up"]);
    }
    // A resolv.conf of the client namespace's own (ip netns exec bind-mounts it over
    // /etc/resolv.conf), so a VPN that sets DNS changes this file and not the host's.
    await Deno.mkdir(resolvDir, { recursive: true });
    await Deno.writeTextFile(`${resolvDir}/resolv.conf`, `nameserver ${NET.internetClientSide}\n`);

    await ip([
      "link",
      "add",
      "c0",
      "netns",
      client,
      "type",
      "veth",
      "peer",
      "name",
      "ic",
      "netns",
      internet,
    ]);
    await ip([
      "link",
      "add",
      "s0",
      "netns",
      server,
      "type",
      "veth",
      "peer",
      "name",
      "is",
      "netns",
      internet,
    ]);
    const cfg: [string, string, string][] = [
      [client, "c0", `${NET.client}/24`],
      [internet, "ic", `${NET.internetClientSide}/24`],
      [internet, "is", `${NET.internet}/24`],
      [server, "s0", `${NET.server}/24`],
    ];
    for (const [ns, dev, addr] of cfg) {
      await ip(["-n", ns, "addr", "add", addr, "dev", dev]);
      await ip(["-n", ns, "link", "set", dev, "up"]);
    }
    await ip(["-n", client, "route", "add", "default", "via", NET.internetClientSide]);
    await ip(["-n", server, "route", "add", "default", "via", NET.internet]);
    // A veth pair kept inside the server namespace stands in for its LAN (no dummy module here).
    await ip(["-n", server, "link", "add", "priv0", "type", "veth", "peer", "name", "priv1"]);
    await ip(["-n", server, "link", "set", "priv1", "up"]);
    await ip(["-n", server, "addr", "add", `${NET.serverPrivate}/24`, "dev", "priv0"]);
    await ip(["-n", server, "link", "set", "priv0", "up"]);
    await ip(["netns", "exec", internet, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
  } catch (e) {
    await remove();
    throw e;
  }
  const command = (ns: string, program: string, args: string[], opts: NsCommandOptions = {}) =>
    new Deno.Command("ip", {
      args: ["netns", "exec", ns, program, ...args],
      stdin: opts.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...opts.env },
    });
  return {
    client,
    server,
    internet,
    command,
    async run(ns, program, args) {
      const out = await command(ns, program, args).output();
      const dec = new TextDecoder();
      if (!out.success) {
        throw new Error(
          `${program} ${args.join(" ")} in ${ns} failed (${out.code}): ${dec.decode(out.stderr)}`,
        );
      }
      return dec.decode(out.stdout);
    },
    clientResolvConf: `${resolvDir}/resolv.conf`,
    close: remove,
  };
}

/** Removes namespaces (and /etc/netns entries) left by earlier runs that were killed. */
export async function removeStaleNamespaces(): Promise<string[]> {
  const out = await new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped" }).output();
  const names = new TextDecoder().decode(out.stdout).split("\n").map((l) => l.split(" ")[0]!)
    .filter((n) => n.startsWith(NETNS_PREFIX));
  for (const n of names) {
    await new Deno.Command("ip", { args: ["netns", "del", n], stderr: "null" }).output();
    await Deno.remove(`/etc/netns/${n}`, { recursive: true }).catch(() => {});
  }
  return names;
}
