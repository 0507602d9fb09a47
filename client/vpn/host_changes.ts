// What `mport vpn` changes on the client's host, each change written to a journal file before the
// next is made: routes (the server's own address stays outside the tunnel), DNS (resolv.conf),
// the kill switch (an nftables table). `undoAll()` reverts them in reverse order on exit; a start
// that finds a journal reverts what a crashed run left before it changes anything.
import { dirname } from "node:path";
import { dropNftTable, sys, sysQuiet } from "../../shared/sys_cmd.ts";

/** The kill switch's nftables table (family inet). */
export const KILL_SWITCH_TABLE = "mport_killswitch";
const RESOLV_CONF = "/etc/resolv.conf";

/** One change and how to revert it. */
export type HostChange =
  | {
    readonly kind: "route";
    readonly dst: string;
    readonly via: string | null;
    readonly dev: string;
  }
  | { readonly kind: "nft"; readonly family: string; readonly table: string }
  | {
    readonly kind: "resolv";
    readonly path: string;
    /** The file's text before, or null when it was a symlink (`link`). */
    readonly content: string | null;
    readonly link: string | null;
  };

/** An endpoint the client's transport connects to (kept outside the tunnel, let through). */
export interface Endpoint {
  readonly ip: string;
  readonly port: number;
}

/** The journal of changes. */
export class HostChanges {
  readonly #file: string;
  readonly #done: HostChange[] = [];

  constructor(journalFile: string) {
    this.#file = journalFile;
  }

  /** Changes in force now (oldest first). */
  get changes(): readonly HostChange[] {
    return this.#done;
  }

  /**
   * Reverts what an earlier run left in the journal (it crashed or was killed). Returns what it
   * reverted, described for the log.
   */
  async recover(): Promise<string[]> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.#file);
    } catch {
      return [];
    }
    let left: HostChange[] = [];
    try {
      const v = JSON.parse(text);
      if (Array.isArray(v)) left = v as HostChange[];
    } catch {
      // a torn write: the kill switch table is still worth removing
      left = [{ kind: "nft", family: "inet", table: KILL_SWITCH_TABLE }];
    }
    const said: string[] = [];
    for (const c of left.reverse()) {
      await revert(c);
      said.push(describe(c));
    }
    await Deno.remove(this.#file).catch(() => {});
    return said;
  }

  /** Routes `dst` (a CIDR) through `dev`, or through `via` on `dev`. */
  async addRoute(dst: string, dev: string, via: string | null = null): Promise<void> {
    const args = ["route", "add", dst, ...(via ? ["via", via] : []), "dev", dev];
    try {
      await sys("ip", args);
    } catch (e) {
      // Someone's own route to the same place: leave it, and do not remove it later.
      if (/File exists/.test((e as Error).message)) return;
      throw e;
    }
    await this.#record({ kind: "route", dst, via, dev });
  }

  /**
   * Keeps `ip` (an endpoint of the transport) routed as it is now, outside the tunnel: a host
   * route through today's gateway. Nothing when it is reached on a local link or through `tun`.
   */
  async pinOutside(ip: string, tun: string): Promise<void> {
    const v6 = ip.includes(":");
    const out = await sys("ip", [...(v6 ? ["-6"] : []), "-j", "route", "get", ip]);
    const route = (JSON.parse(out) as { gateway?: string; dev?: string; type?: string }[])[0];
    if (!route?.dev || route.dev === tun || route.dev === "lo" || route.type === "local") return;
    await this.addRoute(v6 ? `${ip}/128` : `${ip}/32`, route.dev, route.gateway ?? null);
  }

  /** Points /etc/resolv.conf at `servers` (the old file comes back on exit). */
  async setDns(servers: readonly string[]): Promise<void> {
    const path = RESOLV_CONF;
    let link: string | null = null;
    let content: string | null = null;
    try {
      const st = await Deno.lstat(path);
      if (st.isSymlink) link = await Deno.readLink(path);
      else content = await Deno.readTextFile(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      content = "";
    }
    await this.#record({ kind: "resolv", path, content, link });
    const text = "# written by mport vpn while it runs; the previous file comes back on exit\n" +
      servers.map((s) => `nameserver ${s}\n`).join("");
    // A symlink (systemd-resolved's stub) is replaced by a file; a file is rewritten in place,
    // which also works where it is a bind mount (ip netns exec).
    if (link !== null) await Deno.remove(path);
    await Deno.writeTextFile(path, text);
  }

  /**
   * The kill switch: while it is in force, the host sends nothing except on loopback, through
   * `tun`, and to the transport's endpoints.
   */
  async killSwitch(tun: string, endpoints: readonly Endpoint[]): Promise<void> {
    await dropNftTable("inet", KILL_SWITCH_TABLE);
    await this.#record({ kind: "nft", family: "inet", table: KILL_SWITCH_TABLE });
    await sys("nft", ["-f", "-"], killSwitchRules(tun, endpoints));
  }

  /** Reverts every change, newest first. Returns problems (it never throws). */
  async undoAll(): Promise<string[]> {
    const problems: string[] = [];
    while (this.#done.length > 0) {
      const c = this.#done.pop()!;
      const p = await revert(c);
      if (p) problems.push(p);
      await this.#save();
    }
    await Deno.remove(this.#file).catch(() => {});
    return problems;
  }

  async #record(change: HostChange): Promise<void> {
    this.#done.push(change);
    await this.#save();
  }

  async #save(): Promise<void> {
    await Deno.mkdir(dirname(this.#file), { recursive: true, mode: 0o700 });
    const tmp = `${this.#file}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(this.#done) + "\n", { mode: 0o600 });
    await Deno.rename(tmp, this.#file);
  }
}

/** The kill switch's table. */
export function killSwitchRules(tun: string, endpoints: readonly Endpoint[]): string {
  const allow = endpoints.map((e) =>
    `    ${e.ip.includes(":") ? "ip6" : "ip"} daddr ${e.ip} tcp dport ${e.port} accept\n`
  ).join("");
  return `table inet ${KILL_SWITCH_TABLE} {
  chain output {
    type filter hook output priority 0; policy drop;
    oifname "lo" accept
    oifname "${tun}" accept
${allow}  }
}
`;
}

async function revert(c: HostChange): Promise<string | null> {
  switch (c.kind) {
    case "route": {
      const args = ["route", "del", c.dst, ...(c.via ? ["via", c.via] : []), "dev", c.dev];
      const p = await sysQuiet("ip", args);
      // Routes through the TUN device went with it.
      return p && !/No such process|Cannot find device|No such device/.test(p) ? p : null;
    }
    case "nft": {
      return await dropNftTable(c.family, c.table);
    }
    case "resolv":
      try {
        if (c.link !== null) {
          await Deno.remove(c.path).catch(() => {});
          await Deno.symlink(c.link, c.path);
        } else {
          await Deno.writeTextFile(c.path, c.content ?? "");
        }
        return null;
      } catch (e) {
        return `cannot restore ${c.path}: ${(e as Error).message}`;
      }
    default: {
      const never: never = c;
      return `unknown change ${JSON.stringify(never)}`;
    }
  }
}

function describe(c: HostChange): string {
  switch (c.kind) {
    case "route":
      return `route ${c.dst}${c.via ? ` via ${c.via}` : ""} dev ${c.dev}`;
    case "nft":
      return `nftables table ${c.family} ${c.table}`;
    case "resolv":
      return `${c.path}`;
  }
}
