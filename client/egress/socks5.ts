// SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): the server side of the
// handshake (CONNECT and UDP ASSOCIATE), and the reply codes for each way a destination can fail.
import { writeAll } from "../../shared/net.ts";
import { parseIp } from "../../shared/ip_cidr.ts";
import {
  ATYP_DOMAIN,
  ATYP_IPV4,
  ATYP_IPV6,
  encodeAddressed,
  formatIpv6,
  VISIBLE_ASCII,
} from "../../shared/socks_address.ts";
import type { EgressFailure } from "./egress_types.ts";
import {
  type Credentials,
  type EgressRequest,
  HandshakeReader,
  HandshakeRefused,
} from "./handshake.ts";

export { formatIpv6 };

export const SOCKS5_VERSION = 0x05;
export const SOCKS4_VERSION = 0x04;
/** A domain name in a SOCKS5 request is at most this long (its length is one byte). */
export const MAX_DOMAIN_BYTES = 255;
/** Username and password (RFC 1929) are at most this long each (their lengths are one byte). */
export const MAX_CREDENTIAL_BYTES = 255;

const AUTH_VERSION = 0x01;
const METHOD_NONE = 0x00;
const METHOD_PASSWORD = 0x02;
const METHOD_UNACCEPTABLE = 0xff;
const CMD_CONNECT = 0x01;
const CMD_BIND = 0x02;
const CMD_UDP_ASSOCIATE = 0x03;

/** SOCKS5 reply codes (RFC 1928 §6). */
export const Socks5Reply = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** The reply code for a destination the server could not open. */
export function replyCodeFor(kind: EgressFailure): number {
  switch (kind) {
    case "denied":
      return Socks5Reply.notAllowed;
    case "unreachable":
      return Socks5Reply.hostUnreachable;
    case "refused":
      return Socks5Reply.connectionRefused;
    case "timeout":
      return Socks5Reply.ttlExpired;
    case "failed":
      return Socks5Reply.generalFailure;
    default: {
      const never: never = kind;
      return never;
    }
  }
}

const UNSPECIFIED = new Uint8Array([ATYP_IPV4, 0, 0, 0, 0, 0, 0]);

/**
 * A reply: `05 REP 00` then ATYP, BND.ADDR and BND.PORT from `address` ("ip:port", "[v6]:port");
 * 0.0.0.0:0 when there is none or it is not an IP address and port.
 */
export function socks5Reply(code: number, address?: string): Uint8Array {
  const bound = (address !== undefined && boundAddress(address)) || UNSPECIFIED;
  const out = new Uint8Array(3 + bound.length);
  out.set([SOCKS5_VERSION, code, 0]);
  out.set(bound, 3);
  return out;
}

/** ATYP, address bytes and port of "ip:port" / "[v6]:port", or null. */
function boundAddress(address: string): Uint8Array | null {
  const m = /^\[([^\]]+)\]:([0-9]{1,5})$/.exec(address) ??
    /^([^\[\]]+):([0-9]{1,5})$/.exec(address);
  if (!m) return null;
  const port = Number(m[2]);
  if (!parseIp(m[1]!) || port < 1 || port > 65535) return null;
  return encodeAddressed(m[1]!, port, new Uint8Array(0));
}
const latin1 = new TextDecoder("latin1");

/**
 * Runs the SOCKS5 handshake after its first byte was seen: method negotiation, RFC 1929
 * authentication when `credentials` is set, then the request. Returns the CONNECT request;
 * throws HandshakeRefused (with the reply to send) for anything else, HandshakeEof on EOF.
 */
export async function socks5Handshake(
  conn: Deno.Conn,
  reader: HandshakeReader,
  credentials: Credentials | null,
): Promise<EgressRequest> {
  await reader.need(2);
  const methodCount = reader.peek(1);
  if (methodCount === 0) {
    throw new HandshakeRefused(
      "SOCKS5 greeting offers no authentication method",
      new Uint8Array([SOCKS5_VERSION, METHOD_UNACCEPTABLE]),
    );
  }
  await reader.need(2 + methodCount);
  const methods = reader.take(2 + methodCount).subarray(2);
  const wanted = credentials ? METHOD_PASSWORD : METHOD_NONE;
  if (!methods.includes(wanted)) {
    throw new HandshakeRefused(
      credentials
        ? "SOCKS5 client does not offer username/password authentication, which this proxy requires (give the client --username/--password, e.g. socks5://USER:PASS@host:port)"
        : "SOCKS5 client offers only authentication methods this proxy does not use (it runs without --username/--password: offer method 0x00)",
      new Uint8Array([SOCKS5_VERSION, METHOD_UNACCEPTABLE]),
      "info",
    );
  }
  await writeAll(conn, new Uint8Array([SOCKS5_VERSION, wanted]));
  if (credentials) await authenticate(conn, reader, credentials);
  return await readRequest(conn, reader);
}

async function authenticate(
  conn: Deno.Conn,
  reader: HandshakeReader,
  credentials: Credentials,
): Promise<void> {
  const failure = new Uint8Array([AUTH_VERSION, 0x01]);
  await reader.need(2);
  if (reader.peek(0) !== AUTH_VERSION) {
    throw new HandshakeRefused(
      `SOCKS5 username/password negotiation has version ${reader.peek(0)}, expected 1`,
      failure,
    );
  }
  const userLength = reader.peek(1);
  await reader.need(2 + userLength + 1);
  const passwordLength = reader.peek(2 + userLength);
  await reader.need(3 + userLength + passwordLength);
  const msg = reader.take(3 + userLength + passwordLength);
  const username = msg.subarray(2, 2 + userLength);
  const password = msg.subarray(3 + userLength);
  if (!credentials.matches(username, password)) {
    throw new HandshakeRefused(
      `SOCKS5 authentication failed for user ${JSON.stringify(latin1.decode(username))}`,
      failure,
      "info",
    );
  }
  await writeAll(conn, new Uint8Array([AUTH_VERSION, 0x00]));
}

async function readRequest(conn: Deno.Conn, reader: HandshakeReader): Promise<EgressRequest> {
  const fail = (code: number, message: string, level: "debug" | "info" = "debug") =>
    new HandshakeRefused(message, socks5Reply(code), level);
  await reader.need(4);
  const version = reader.peek(0);
  const command = reader.peek(1);
  const addressType = reader.peek(3);
  if (version !== SOCKS5_VERSION) {
    throw fail(Socks5Reply.generalFailure, `SOCKS5 request has version ${version}, expected 5`);
  }
  let host: string;
  let length: number;
  if (addressType === ATYP_IPV4) {
    length = 4 + 4 + 2;
    await reader.need(length);
    host = [4, 5, 6, 7].map((i) => reader.peek(i)).join(".");
  } else if (addressType === ATYP_IPV6) {
    length = 4 + 16 + 2;
    await reader.need(length);
    const bytes = new Uint8Array(16);
    for (let i = 0; i < 16; i++) bytes[i] = reader.peek(4 + i);
    host = formatIpv6(bytes);
  } else if (addressType === ATYP_DOMAIN) {
    await reader.need(5);
    const nameLength = reader.peek(4);
    length = 5 + nameLength + 2;
    await reader.need(length);
    const name = new Uint8Array(nameLength);
    for (let i = 0; i < nameLength; i++) name[i] = reader.peek(5 + i);
    host = latin1.decode(name);
    if (nameLength === 0) {
      throw fail(Socks5Reply.generalFailure, "SOCKS5 request has an empty domain name");
    }
    if (!VISIBLE_ASCII.test(host)) {
      throw fail(
        Socks5Reply.generalFailure,
        `SOCKS5 request has a domain name with spaces, control or non-ASCII bytes: ${
          JSON.stringify(host)
        }`,
      );
    }
  } else {
    throw fail(
      Socks5Reply.addressTypeNotSupported,
      `SOCKS5 request has address type ${addressType}, not 1 (IPv4), 3 (domain) or 4 (IPv6)`,
    );
  }
  const port = (reader.peek(length - 2) << 8) | reader.peek(length - 1);
  reader.take(length);
  if (command !== CMD_CONNECT && command !== CMD_UDP_ASSOCIATE) {
    const name = command === CMD_BIND ? "BIND" : `command ${command}`;
    throw fail(
      Socks5Reply.commandNotSupported,
      `SOCKS5 ${name} is not supported (only CONNECT and UDP ASSOCIATE)`,
      "info",
    );
  }
  const associate = command === CMD_UDP_ASSOCIATE;
  // UDP ASSOCIATE names where the client will send from, and may leave it 0.0.0.0:0.
  if (port === 0 && !associate) {
    throw fail(Socks5Reply.generalFailure, "SOCKS5 request for port 0");
  }
  return {
    protocol: associate ? "socks5-udp" : "socks5",
    ...(associate ? { associate } : {}),
    host,
    port,
    initial: reader.rest(),
    accept: (address) => writeAll(conn, socks5Reply(Socks5Reply.succeeded, address)),
    refuse: (e) => writeAll(conn, socks5Reply(replyCodeFor(e.kind))),
  };
}
