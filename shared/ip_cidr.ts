// IPv4 and IPv6 addresses and CIDR blocks: strict parsing, matching, allow/deny rules.

/** A parsed CIDR block. An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) is held as IPv4. */
export interface Cidr {
  readonly family: 4 | 6;
  /** The block as it was given (trimmed). */
  readonly text: string;
  /** Network address bytes (4 or 16), host bits cleared. */
  readonly bytes: Uint8Array;
  /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
  readonly prefix: number;
}

/** Longest address text looked at (a full IPv6 address with an IPv4 tail and a zone fits). */
export const MAX_IP_TEXT_LENGTH = 100;

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    // Leading zeros are refused: some parsers read "010" as octal.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

function parseIpv6(text: string): Uint8Array | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIpv4(p);
        if (v4 === null) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === null || tail === null) return null;
  const count = head.length + tail.length;
  // "::" stands for at least one zero group; without it there must be exactly eight.
  if (halves.length === 2 ? count > 7 : count !== 8) return null;
  const all = [...head, ...new Array<number>(8 - count).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/**
 * Parses an IP address text (v4, v6, v4-mapped v6 "::ffff:1.2.3.4", bracketed "[::1]"
 * accepted) → bytes (4 for IPv4, 16 for any IPv6 form) or null. An IPv6 zone (`fe80::1%eth0`)
 * is dropped. No surrounding whitespace, no leading zeros in IPv4 parts.
 */
export function parseIp(text: string): Uint8Array | null {
  if (text.length > MAX_IP_TEXT_LENGTH) return null;
  let t = text;
  const bracketed = t.startsWith("[") && t.endsWith("]");
  if (bracketed) t = t.slice(1, -1);
  if (t.includes(":")) {
    const zone = t.indexOf("%");
    if (zone >= 0) {
      if (!/^[0-9A-Za-z._~-]+$/.test(t.slice(zone + 1))) return null;
      t = t.slice(0, zone);
    }
    return parseIpv6(t);
  }
  return bracketed ? null : parseIpv4(t);
}

/** 4 bytes for IPv4 or IPv4-mapped IPv6, 16 bytes for other IPv6. */
function unmap(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16 && V4_MAPPED_PREFIX.every((b, i) => bytes[i] === b)) {
    return bytes.subarray(12);
  }
  return bytes;
}

/** Clears the bits of `bytes` past `prefix` (in place). */
function mask(bytes: Uint8Array, prefix: number): Uint8Array {
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    bytes[i]! &= (0xff00 >> keep) & 0xff;
  }
  return bytes;
}

/**
 * Parses "10.0.0.0/8", "192.168.1.5" (= /32), "2001:db8::/32", "::1" (= /128). Host bits are
 * cleared (`10.1.2.3/8` is 10.0.0.0/8). Throws TypeError("invalid CIDR \"x\": …").
 */
export function parseCidr(text: string): Cidr {
  const t = text.trim();
  const bad = (why: string) => new TypeError(`invalid CIDR ${JSON.stringify(text)}: ${why}`);
  const slash = t.indexOf("/");
  const addressText = slash < 0 ? t : t.slice(0, slash);
  const prefixText = slash < 0 ? null : t.slice(slash + 1);
  if (addressText.includes("%") || addressText.startsWith("[")) {
    throw bad("expected an address without brackets or zone, such as 10.0.0.0/8 or 2001:db8::/32");
  }
  const parsed = parseIp(addressText);
  if (parsed === null) {
    throw bad(
      "expected an IPv4 or IPv6 address or block, such as 10.0.0.0/8, 192.168.1.5 or 2001:db8::/32",
    );
  }
  const width = parsed.length * 8;
  let prefix = width;
  if (prefixText !== null) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) {
      throw bad(`prefix length "${prefixText}" is not a number from 0 to ${width}`);
    }
    prefix = Number(prefixText);
    if (prefix > width) {
      throw bad(`prefix length ${prefix} is more than ${width} for IPv${width === 32 ? 4 : 6}`);
    }
  }
  let bytes = Uint8Array.from(parsed);
  // ::ffff:10.0.0.0/104 is 10.0.0.0/8 in disguise: addresses are compared in their IPv4 form.
  const v4 = unmap(bytes);
  if (v4 !== bytes && prefix >= 96) {
    bytes = Uint8Array.from(v4);
    prefix -= 96;
  }
  return { family: bytes.length === 4 ? 4 : 6, text: t, bytes: mask(bytes, prefix), prefix };
}

/** True when `addr` (already unmapped) is inside `cidr`. */
function containsBytes(cidr: Cidr, addr: Uint8Array): boolean {
  if (addr.length !== cidr.bytes.length) return false;
  const full = cidr.prefix >> 3;
  for (let i = 0; i < full; i++) if (addr[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const m = (0xff00 >> rest) & 0xff;
  return (addr[full]! & m) === cidr.bytes[full];
}

/**
 * True if ip is inside cidr; v4-mapped IPv6 addresses match IPv4 CIDRs (and IPv4 addresses
 * never match a plain IPv6 block). Non-IP text → false.
 */
export function cidrContains(cidr: Cidr, ip: string): boolean {
  const bytes = parseIp(ip);
  return bytes !== null && containsBytes(cidr, unmap(bytes));
}

/** Allow/deny lists: deny wins; with a non-empty allow list only matching addresses pass. */
export class IpRules {
  readonly #allow: readonly Cidr[];
  readonly #deny: readonly Cidr[];

  /** Throws TypeError on a bad CIDR in either list. */
  constructor(allow: readonly string[], deny: readonly string[]) {
    this.#allow = allow.map(parseCidr);
    this.#deny = deny.map(parseCidr);
  }

  /**
   * True when `ip` may pass. With no rules at all everything passes; with any rule, text that
   * is not an IP address does not (fail closed).
   */
  allows(ip: string): boolean {
    if (this.empty) return true;
    const parsed = parseIp(ip);
    if (parsed === null) return false;
    const bytes = unmap(parsed);
    if (this.#deny.some((c) => containsBytes(c, bytes))) return false;
    return this.#allow.length === 0 || this.#allow.some((c) => containsBytes(c, bytes));
  }

  /** True when both lists are empty. */
  get empty(): boolean {
    return this.#allow.length === 0 && this.#deny.length === 0;
  }
}
