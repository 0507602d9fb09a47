// The VPN's virtual addresses: a pool (`--vpn-pool 10.8.0.0/24`) whose first host address is the
// server's; each client installation (user and client id) keeps its address across reconnects.
import { ipv4ToU32, u32ToIpv4 } from "../../shared/ipv4.ts";

/** How long an address stays reserved for a client that went away. */
export const VPN_LEASE_KEEP_MS = 60 * 60_000;
/**
 * Addresses one user holds at most (connected or reserved): a user connecting with ever new client
 * ids takes back their own oldest reservation, never other users' addresses.
 */
export const VPN_LEASES_PER_USER = 16;

/** A parsed `--vpn-pool`. */
export interface VpnPoolRange {
  readonly text: string;
  /** Network address, host bits clear. */
  readonly network: number;
  readonly prefix: number;
}

/** Parses `--vpn-pool`: an IPv4 block from /8 to /30. Throws a TypeError that says what is wrong. */
export function parseVpnPool(text: string): VpnPoolRange {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text.trim());
  const ip = m ? ipv4ToU32(m[1]!) : null;
  const prefix = m ? Number(m[2]) : NaN;
  if (ip === null || !(prefix >= 8 && prefix <= 30)) {
    throw new TypeError(
      `invalid --vpn-pool "${text}": give an IPv4 block from /8 to /30, e.g. 10.8.0.0/24`,
    );
  }
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  return { text: `${u32ToIpv4((ip & mask) >>> 0)}/${prefix}`, network: (ip & mask) >>> 0, prefix };
}

interface Lease {
  readonly key: string;
  readonly user: number;
  readonly address: number;
  /** Sessions holding it now (a reconnect overlaps the old session's end); 0: only reserved. */
  holders: number;
  releasedAt: number;
}

/** Hands out and keeps addresses. */
export class VpnPool {
  readonly range: VpnPoolRange;
  /** The server's own address in the pool (the first host address). */
  readonly gateway: number;
  readonly #byKey = new Map<string, Lease>();
  readonly #byAddress = new Map<number, Lease>();
  readonly #first: number;
  readonly #last: number;
  readonly #now: () => number;

  constructor(range: VpnPoolRange, now: () => number = Date.now) {
    this.range = range;
    this.#now = now;
    const size = 2 ** (32 - range.prefix);
    this.gateway = range.network + 1;
    this.#first = range.network + 2;
    this.#last = range.network + size - 2;
  }

  /** Addresses clients can get (the network, the server's and the broadcast address excluded). */
  get capacity(): number {
    return this.#last - this.#first + 1;
  }

  /** Leases held by connected clients. */
  get active(): number {
    let n = 0;
    for (const l of this.#byKey.values()) if (l.holders > 0) n++;
    return n;
  }

  /**
   * The address of client `clientId` of user `user`: the one it had, else a free one, else the
   * one reserved longest for a client that left. A string says why there is none: the user holds
   * {@link VPN_LEASES_PER_USER} addresses already (all connected), or every address is held.
   */
  acquire(user: number, clientId: string): number | string {
    const key = `${user}/${clientId}`;
    const had = this.#byKey.get(key);
    if (had) {
      had.holders++;
      return had.address;
    }
    const now = this.#now();
    this.#expire(now);
    const mine = [...this.#byKey.values()].filter((l) => l.user === user);
    if (mine.length >= VPN_LEASES_PER_USER) {
      // At the cap: the user's own reservation held longest makes room, if there is one.
      const idle = mine.filter((l) => l.holders === 0).sort((a, b) => a.releasedAt - b.releasedAt);
      if (idle.length === 0) {
        return `at most ${VPN_LEASES_PER_USER} VPN clients per user are connected at once`;
      }
      this.#byKey.delete(idle[0]!.key);
      this.#byAddress.delete(idle[0]!.address);
    }
    let address: number | null = null;
    for (let a = this.#first; a <= this.#last; a++) {
      if (!this.#byAddress.has(a)) {
        address = a;
        break;
      }
    }
    if (address === null) {
      // Reclaim from a client that left: an expired reservation first, else the oldest one.
      let oldest: Lease | null = null;
      for (const l of this.#byAddress.values()) {
        if (l.holders > 0) continue;
        if (!oldest || l.releasedAt < oldest.releasedAt) oldest = l;
      }
      if (!oldest) return `the VPN pool ${this.range.text} is full (every address is in use)`;
      this.#byKey.delete(oldest.key);
      this.#byAddress.delete(oldest.address);
      address = oldest.address;
    }
    const lease: Lease = { key, user, address, holders: 1, releasedAt: now };
    this.#byKey.set(key, lease);
    this.#byAddress.set(address, lease);
    return address;
  }

  /** A session of the client ended: once none holds it, the address stays reserved a while. */
  release(user: number, clientId: string): void {
    const l = this.#byKey.get(`${user}/${clientId}`);
    if (!l || l.holders === 0) return;
    l.holders--;
    if (l.holders === 0) l.releasedAt = this.#now();
  }

  #expire(now: number): void {
    for (const l of [...this.#byKey.values()]) {
      if (l.holders === 0 && now - l.releasedAt > VPN_LEASE_KEEP_MS) {
        this.#byKey.delete(l.key);
        this.#byAddress.delete(l.address);
      }
    }
  }
}
