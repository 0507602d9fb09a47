// A minimal SOCKS5 client for tests (RFC 1928 CONNECT, RFC 1929 username/password).
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
    const head = await readExactly(conn, 4);
    const atyp = head[3]!;
    const rest = atyp === 1 ? 6 : atyp === 4 ? 18 : (await readExactly(conn, 1))[0]! + 2;
    await readExactly(conn, rest);
    if (head[1] !== 0) return close(conn, head[1]!);
    return { code: 0, conn };
  } catch (e) {
    conn.close();
    throw e;
  }
}

function close(conn: Deno.TcpConn, code: number): SocksReply {
  conn.close();
  return { code, conn };
}
