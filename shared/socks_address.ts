// SOCKS5's address encoding (RFC 1928 §5: ATYP, address, port) in front of a datagram: what a
// SOCKS5 UDP association's datagrams carry, locally and on the `udp` egress stream to the server.
import { parseIp } from "./ip_cidr.ts";
import { MAX_EGRESS_HOST_LENGTH } from "./protocol.ts";

export const ATYP_IPV4 = 0x01;
export const ATYP_DOMAIN = 0x03;
export const ATYP_IPV6 = 0x04;

/** A datagram with the address it goes to (or came from). */
export interface AddressedDatagram {
  /** An IPv4 or IPv6 literal (RFC 5952 text) or a domain name. */
  readonly host: string;
  readonly port: number;
  /** True when `host` travelled as a name (ATYP 3), to be resolved by the receiver. */
  readonly isName: boolean;
  /** The payload (a view into the decoded bytes). */
  readonly data: Uint8Array;
}

/** What a domain name may hold: visible ASCII, no spaces or control bytes. */
export const VISIBLE_ASCII = /^[\x21-\x7e]+$/;
const latin1 = new TextDecoder("latin1");
const encoder = new TextEncoder();

/**
 * Parses `ATYP ADDR PORT DATA`. Throws a RangeError that says what is wrong: a short or
 * unknown address, an empty name or one with spaces, control or non-ASCII bytes, port 0.
 */
export function decodeAddressed(bytes: Uint8Array): AddressedDatagram {
  const atyp = bytes[0];
  if (atyp === undefined) throw new RangeError("datagram has no address");
  let host: string;
  let at: number;
  if (atyp === ATYP_IPV4) {
    at = 1 + 4;
    if (bytes.byteLength < at + 2) throw new RangeError("datagram too short for an IPv4 address");
    host = [...bytes.subarray(1, 5)].join(".");
  } else if (atyp === ATYP_IPV6) {
    at = 1 + 16;
    if (bytes.byteLength < at + 2) throw new RangeError("datagram too short for an IPv6 address");
    host = formatIpv6(bytes.subarray(1, 17));
  } else if (atyp === ATYP_DOMAIN) {
    const n = bytes[1];
    if (n === undefined) throw new RangeError("datagram too short for a domain name");
    if (n === 0) throw new RangeError("datagram has an empty domain name");
    at = 2 + n;
    if (bytes.byteLength < at + 2) throw new RangeError("datagram too short for its domain name");
    host = latin1.decode(bytes.subarray(2, at));
    if (!VISIBLE_ASCII.test(host)) {
      throw new RangeError(
        `datagram has a domain name with spaces, control or non-ASCII bytes: ${
          JSON.stringify(host)
        }`,
      );
    }
  } else {
    throw new RangeError(`datagram has address type ${atyp}, not 1 (IPv4), 3 (domain) or 4 (IPv6)`);
  }
  const port = (bytes[at]! << 8) | bytes[at + 1]!;
  if (port === 0) throw new RangeError("datagram for port 0");
  return { host, port, isName: atyp === ATYP_DOMAIN, data: bytes.subarray(at + 2) };
}

/**
 * `ATYP ADDR PORT DATA` for `host` (an IP literal, IPv6 with or without brackets, or a name of
 * at most 255 visible ASCII bytes) and `port` (1-65535). Throws RangeError otherwise.
 */
export function encodeAddressed(host: string, port: number, data: Uint8Array): Uint8Array {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`port must be 1-65535, not ${port}`);
  }
  const ip = parseIp(host);
  let address: Uint8Array;
  if (ip) {
    address = new Uint8Array(1 + ip.length);
    address[0] = ip.length === 4 ? ATYP_IPV4 : ATYP_IPV6;
    address.set(ip, 1);
  } else {
    const name = encoder.encode(host);
    if (name.byteLength === 0 || name.byteLength > MAX_EGRESS_HOST_LENGTH) {
      throw new RangeError(`a domain name must be 1-${MAX_EGRESS_HOST_LENGTH} bytes`);
    }
    if (!VISIBLE_ASCII.test(host)) {
      throw new RangeError(`not an address or a domain name: ${JSON.stringify(host)}`);
    }
    address = new Uint8Array(2 + name.byteLength);
    address[0] = ATYP_DOMAIN;
    address[1] = name.byteLength;
    address.set(name, 2);
  }
  const out = new Uint8Array(address.byteLength + 2 + data.byteLength);
  out.set(address);
  out[address.byteLength] = port >> 8;
  out[address.byteLength + 1] = port & 0xff;
  out.set(data, address.byteLength + 2);
  return out;
}

/** IPv6 bytes as RFC 5952 text (lower case, longest run of zero groups as "::"). */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestAt = -1;
  let bestLen = 1; // a single zero group is not shortened
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(groups);
  return `${hex(groups.slice(0, bestAt))}::${hex(groups.slice(bestAt + bestLen))}`;
}
