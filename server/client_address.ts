// The address a request is charged to: the socket peer, or X-Forwarded-For from a --trusted-proxy.
import { BlockList, isIP } from "node:net";
import { unbracket } from "../shared/address.ts";

/** Forwarded hops looked at, right to left, before giving up (a header can list many). */
export const MAX_FORWARDED_HOPS = 16;

const V4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/**
 * An IP address in the form the server keys it by, or null when `text` is not one: IPv4-mapped
 * IPv6 (`::ffff:127.0.0.1`) becomes plain IPv4, brackets and a zone (`%eth0`) are dropped.
 */
export function normalizeIp(text: string): string | null {
  let ip = text.trim();
  if (ip.startsWith("[") && ip.endsWith("]")) ip = ip.slice(1, -1);
  const zone = ip.indexOf("%");
  if (zone >= 0) ip = ip.slice(0, zone);
  const mapped = V4_MAPPED.exec(ip);
  if (mapped && isIP(mapped[1]!) === 4) return mapped[1]!;
  return isIP(ip) === 0 ? null : ip.toLowerCase();
}

/** A parsed CIDR block. */
export interface Cidr {
  readonly address: string;
  readonly prefix: number;
  readonly family: "ipv4" | "ipv6";
}

/**
 * Parses `ADDRESS/PREFIX` (IPv4 or IPv6) or a bare address (a single host); throws a TypeError
 * naming `flag` and showing the expected form.
 */
export function parseCidr(text: string, flag = "--trusted-proxy"): Cidr {
  const bad = () =>
    new TypeError(
      `invalid ${flag} "${text}": expected an IPv4 or IPv6 address or CIDR block, ` +
        `such as 127.0.0.1/32, 10.0.0.0/8 or ::1/128`,
    );
  const [addressText = "", prefixText, extra] = text.split("/");
  if (extra !== undefined || addressText.includes("%") || addressText !== addressText.trim()) {
    throw bad();
  }
  const address = normalizeIp(addressText);
  if (address === null) throw bad();
  const family = isIP(address) === 4 ? "ipv4" : "ipv6";
  // ::ffff:10.0.0.0/104 is 10.0.0.0/8 in disguise: peers are compared in their IPv4 form.
  const mapped = family === "ipv4" && isIP(unbracket(addressText)) === 6;
  const width = family === "ipv4" && !mapped ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) throw bad();
  const prefix = prefixText === undefined ? width : Number(prefixText);
  if (prefix > width || (mapped && prefix < 96)) throw bad();
  return { address, prefix: mapped ? prefix - 96 : prefix, family };
}

/** The text form of a CIDR block, as the config holds it. */
export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

/** The reverse proxies whose `X-Forwarded-For` the server believes. */
export class TrustedProxies {
  readonly #list = new BlockList();
  readonly #empty: boolean;

  /** `cidrs` as `--trusted-proxy` takes them (validated: throws a TypeError on a bad one). */
  constructor(cidrs: readonly string[]) {
    for (const text of cidrs) {
      const c = parseCidr(text);
      this.#list.addSubnet(c.address, c.prefix, c.family);
    }
    this.#empty = cidrs.length === 0;
  }

  /** True when `ip` (already normalized) is a trusted proxy. */
  trusts(ip: string): boolean {
    if (this.#empty) return false;
    return this.#list.check(ip, isIP(ip) === 4 ? "ipv4" : "ipv6");
  }

  /**
   * The client's address: the socket `peer`, unless the peer is a trusted proxy; then the
   * right-most `X-Forwarded-For` hop that is not itself a trusted proxy. Hops are read right to
   * left because each proxy appends the address it saw: everything to the left of the last
   * trusted hop was written by the client and is not believed. A hop that is not an address
   * stops the walk at the last address a trusted proxy vouched for.
   */
  clientIp(headers: Headers, peer: string): string {
    let client = normalizeIp(peer) ?? peer;
    if (!this.trusts(client)) return client;
    const xff = headers.get("x-forwarded-for");
    if (!xff) return client;
    const hops = xff.split(",");
    for (let i = hops.length - 1, n = 0; i >= 0 && n < MAX_FORWARDED_HOPS; i--, n++) {
      const hop = normalizeIp(hops[i]!);
      if (hop === null) break;
      client = hop;
      if (!this.trusts(hop)) break;
    }
    return client;
  }
}
