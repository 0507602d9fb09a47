// What the VPN changes on the server's host: the TUN device's address, forwarding, and an
// nftables table of its own that masquerades the pool and keeps the outside from reaching clients.
// The previous forwarding setting is kept in a state file, so a server that crashed is cleaned up
// by the next start; the table is ours by name and is replaced at every start.
import { dirname } from "node:path";
import { dropNftTable, sys } from "../../shared/sys_cmd.ts";
import { u32ToIpv4 } from "../../shared/ipv4.ts";
import type { VpnPoolRange } from "./vpn_pool.ts";

/** The nftables table the server owns (family ip). */
export const SERVER_NFT_TABLE = "mport_vpn";
const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";

interface ServerState {
  /** ip_forward before the first start that changed it. */
  readonly ipForward: string;
  readonly device: string;
}

/** What a start found left over from a server that did not exit cleanly. */
export interface StaleCleanup {
  readonly found: boolean;
}

/** The host's side of the VPN gateway, set up and torn down. */
export class ServerHostSetup {
  readonly #device: string;
  readonly #stateFile: string;
  #state: ServerState | null = null;

  constructor(device: string, stateFile: string) {
    this.#device = device;
    this.#stateFile = stateFile;
  }

  /**
   * Cleans what a crashed server left (its table; forwarding as it was recorded), then sets the
   * device up (`gateway/prefix`, MTU, up), turns forwarding on and installs the table.
   */
  async apply(pool: VpnPoolRange, gateway: number, mtu: number): Promise<StaleCleanup> {
    const stale = this.#readState();
    await dropNftTable("ip", SERVER_NFT_TABLE);
    const forwardBefore = stale?.ipForward ?? (await Deno.readTextFile(IP_FORWARD)).trim();
    this.#state = { ipForward: forwardBefore, device: this.#device };
    await Deno.mkdir(dirname(this.#stateFile), { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(this.#stateFile, JSON.stringify(this.#state) + "\n", { mode: 0o600 });
    const dev = this.#device;
    await sys("ip", ["addr", "add", `${u32ToIpv4(gateway)}/${pool.prefix}`, "dev", dev]);
    await sys("ip", ["link", "set", "dev", dev, "mtu", String(mtu), "up"]);
    await Deno.writeTextFile(IP_FORWARD, "1\n");
    await sys("nft", ["-f", "-"], serverRules(dev, pool.text));
    return { found: stale !== null };
  }

  /** Removes the table, restores forwarding, forgets the state. Never throws. */
  async undo(): Promise<string[]> {
    const problems: string[] = [];
    const state = this.#state ?? this.#readState();
    const nft = await dropNftTable("ip", SERVER_NFT_TABLE);
    if (nft) problems.push(nft);
    if (state) {
      try {
        await Deno.writeTextFile(IP_FORWARD, `${state.ipForward}\n`);
      } catch (e) {
        problems.push(`cannot restore ${IP_FORWARD}: ${(e as Error).message}`);
      }
    }
    await Deno.remove(this.#stateFile).catch(() => {});
    this.#state = null;
    return problems;
  }

  #readState(): ServerState | null {
    try {
      const v = JSON.parse(Deno.readTextFileSync(this.#stateFile));
      if (typeof v?.ipForward === "string" && /^[01]$/.test(v.ipForward)) return v as ServerState;
    } catch {
      // none, or unreadable: nothing to restore
    }
    return null;
  }
}

/** The server's table: masquerade what the pool sends out; only replies go back in to clients. */
export function serverRules(device: string, pool: string): string {
  return `table ip ${SERVER_NFT_TABLE} {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "${device}" ip saddr ${pool} accept
    iifname "${device}" drop
    oifname "${device}" ct state established,related accept
    oifname "${device}" drop
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip saddr ${pool} oifname != "${device}" masquerade
  }
}
`;
}
