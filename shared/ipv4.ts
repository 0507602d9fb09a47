// IPv4 addresses as 32-bit numbers and the few header fields the VPN looks at.
import { parseIp } from "./ip_cidr.ts";

/** "10.8.0.2" → 0x0a080002; null when it is not a dotted IPv4 address (parsed by `parseIp`). */
export function ipv4ToU32(text: string): number | null {
  const b = parseIp(text);
  if (b === null || b.byteLength !== 4) return null;
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

/** 0x0a080002 → "10.8.0.2". */
export function u32ToIpv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** The source address of an IPv4 packet (the caller checked it is one). */
export function packetSource(p: Uint8Array): number {
  return ((p[12]! << 24) | (p[13]! << 16) | (p[14]! << 8) | p[15]!) >>> 0;
}

/** The destination address of an IPv4 packet. */
export function packetDestination(p: Uint8Array): number {
  return ((p[16]! << 24) | (p[17]! << 16) | (p[18]! << 8) | p[19]!) >>> 0;
}

/** True for a packet that is long enough to be IPv4 and says it is. */
export function isIpv4(p: Uint8Array): boolean {
  return p.byteLength >= 20 && p[0]! >> 4 === 4;
}

/** TCP and UDP: the destination port of a first fragment; 0 for anything else. */
export function packetDestinationPort(p: Uint8Array): number {
  const proto = p[9];
  if (proto !== 6 && proto !== 17) return 0;
  // A later fragment carries no ports.
  if (((p[6]! & 0x1f) << 8 | p[7]!) !== 0) return 0;
  const ihl = (p[0]! & 0x0f) * 4;
  if (p.byteLength < ihl + 4) return 0;
  return (p[ihl + 2]! << 8) | p[ihl + 3]!;
}

/** Protocol name for logs: tcp, udp, icmp, or the number. */
export function protocolName(p: Uint8Array): string {
  const proto = p[9]!;
  return proto === 6 ? "tcp" : proto === 17 ? "udp" : proto === 1 ? "icmp" : String(proto);
}
