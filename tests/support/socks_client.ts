// A minimal SOCKS5 client for tests (RFC 1928 CONNECT and UDP ASSOCIATE, RFC 1929
// username/password).
import { readExactly, writeAll } from "./tcp_services.ts";

/** The server's reply to CONNECT: 0 is success; the connection is open when it is. */
export interface SocksReply {
  readonly code: number;
  readonly conn: Deno.TcpConn;
}

/**
 * Connects through the SOCKS5 proxy on `proxyPort` to `host:port` (a domain is sent as a name,
 * resolved by the proxy's side). Returns the reply code and the connection (closed unless 0).
 */
export async function socksConnect(
  proxyPort: number,
  host: string,
  port: number,
  auth?: { username: string; password: string },
): Promise<SocksReply> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  try {
    await writeAll(conn, new Uint8Array([5, 1, auth ? 2 : 0]));
    const method = await readExactly(conn, 2);
    if (method[1] === 0xff) return close(conn, 0xff);
    if (auth) {
      const u = new TextEncoder().encode(auth.username);
      const p = new TextEncoder().encode(auth.password);
      await writeAll(conn, new Uint8Array([1, u.length, ...u, p.length, ...p]));
      const status = await readExactly(conn, 2);
      if (status[1] !== 0) return close(conn, 0x100 + status[1]!);
    }
    const name = new TextEncoder().encode(host);
    const isV4 = /^\d+\.\d+\.\d+\.\d+$/.test(host);
    const addr = isV4 ? [1, ...host.split(".").map(Number)] : [3, name.length, ...name];
    await writeAll(conn, new Uint8Array([5, 1, 0, ...addr, port >> 8, port & 0xff]));
    const reply = await readReply(conn);
    if (reply.code !== 0) return close(conn, reply.code);
    return { code: 0, conn };
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** The reply to a request: its code and BND.ADDR:BND.PORT (IPv4 as text, else ""). */
async function readReply(conn: Deno.Conn): Promise<{ code: number; host: string; port: number }> {
  const head = await readExactly(conn, 4);
  const atyp = head[3]!;
  const rest = atyp === 1 ? 6 : atyp === 4 ? 18 : (await readExactly(conn, 1))[0]! + 2;
  const bound = await readExactly(conn, rest);
  const port = (bound[rest - 2]! << 8) | bound[rest - 1]!;
  return { code: head[1]!, host: atyp === 1 ? [...bound.subarray(0, 4)].join(".") : "", port };
}

/** The answer to UDP ASSOCIATE: the code, the relay's address, and the control connection. */
export interface SocksAssociation {
  readonly code: number;
  /** Where to send datagrams (the proxy's UDP relay). */
  readonly relay: Deno.NetAddr;
  /** Closing it ends the association. */
  readonly control: Deno.TcpConn;
}

/**
 * Asks the SOCKS5 proxy on `proxyPort` for a UDP association (client address 0.0.0.0:0). The
 * control connection is closed unless the code is 0.
 */
export async function socksUdpAssociate(
  proxyPort: number,
  auth?: { username: string; password: string },
): Promise<SocksAssociation> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  try {
    await writeAll(conn, new Uint8Array([5, 1, auth ? 2 : 0]));
    const method = await readExactly(conn, 2);
    const none: Deno.NetAddr = { transport: "udp", hostname: "", port: 0 };
    if (method[1] === 0xff) return { code: close(conn, 0xff).code, relay: none, control: conn };
    if (auth) {
      const u = new TextEncoder().encode(auth.username);
      const p = new TextEncoder().encode(auth.password);
      await writeAll(conn, new Uint8Array([1, u.length, ...u, p.length, ...p]));
      const status = await readExactly(conn, 2);
      if (status[1] !== 0) {
        return { code: close(conn, 0x100 + status[1]!).code, relay: none, control: conn };
      }
    }
    await writeAll(conn, new Uint8Array([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]));
    const reply = await readReply(conn);
    if (reply.code !== 0) return { code: close(conn, reply.code).code, relay: none, control: conn };
    return {
      code: 0,
      relay: { transport: "udp", hostname: reply.host, port: reply.port },
      control: conn,
    };
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA` for an IPv4 address or a name. */
export function socksUdpDatagram(host: string, port: number, data: Uint8Array): Uint8Array {
  const isV4 = /^\d+\.\d+\.\d+\.\d+$/.test(host);
  const name = new TextEncoder().encode(host);
  const addr = isV4 ? [1, ...host.split(".").map(Number)] : [3, name.length, ...name];
  const head = [0, 0, 0, ...addr, port >> 8, port & 0xff];
  const out = new Uint8Array(head.length + data.byteLength);
  out.set(head);
  out.set(data, head.length);
  return out;
}

/** Parses a datagram from the relay: its source (IPv4 only) and payload. */
export function parseSocksUdpReply(
  packet: Uint8Array,
): { frag: number; host: string; port: number; data: Uint8Array } {
  if (packet.byteLength < 10 || packet[3] !== 1) {
    throw new RangeError(`not an IPv4 SOCKS5 UDP datagram: ${[...packet.subarray(0, 10)]}`);
  }
  return {
    frag: packet[2]!,
    host: [...packet.subarray(4, 8)].join("."),
    port: (packet[8]! << 8) | packet[9]!,
    data: packet.subarray(10),
  };
}

function close(conn: Deno.TcpConn, code: number): SocksReply {
  conn.close();
  return { code, conn };
}
