// How the client reaches the server: direct, trusting a private CA, or through an HTTP CONNECT proxy.
import { formatHostPort } from "../shared/address.ts";
import { writeAll } from "../shared/stream_bridge.ts";
import type { ProxySpec } from "./config.ts";

const MAX_PROXY_RESPONSE_BYTES = 16 * 1024;

/** An `HttpClient` for `new WebSocket(url, { client })`, plus what must be closed with it. */
export interface Transport {
  readonly client: Deno.HttpClient | undefined;
  /** The last failure talking to the proxy, for messages; null when none or no proxy. */
  lastProxyError(): string | null;
  close(): Promise<void>;
}

function basicAuth(proxy: ProxySpec): string | null {
  if (proxy.username === null) return null;
  const raw = `${proxy.username}:${proxy.password?.reveal() ?? ""}`;
  return "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(raw)));
}

/**
 * Opens a TCP tunnel to `target` through the proxy with `CONNECT`; throws with the proxy's
 * status line when it refuses.
 */
export async function connectViaProxy(
  proxy: ProxySpec,
  targetHost: string,
  targetPort: number,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: proxy.host, port: proxy.port });
  try {
    const target = formatHostPort(targetHost, targetPort);
    const auth = basicAuth(proxy);
    const head = `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n` +
      (auth ? `Proxy-Authorization: ${auth}\r\n` : "") + "\r\n";
    await writeAll(conn, new TextEncoder().encode(head));
    // Read byte-wise up to the blank line so no tunnelled byte is consumed.
    const buf = new Uint8Array(MAX_PROXY_RESPONSE_BYTES);
    const one = new Uint8Array(1);
    let n = 0;
    while (true) {
      const r = await conn.read(one);
      if (r === null) throw new Error(`proxy ${proxy.url} closed the connection during CONNECT`);
      buf[n++] = one[0]!;
      if (
        n >= 4 && buf[n - 4] === 13 && buf[n - 3] === 10 && buf[n - 2] === 13 && buf[n - 1] === 10
      ) break;
      if (n >= buf.length) throw new Error(`proxy ${proxy.url} sent an oversized CONNECT response`);
    }
    const status = new TextDecoder().decode(buf.subarray(0, n)).split("\r\n")[0] ?? "";
    if (!/^HTTP\/1\.[01] 2\d\d/.test(status)) {
      throw new Error(`proxy ${proxy.url} refused CONNECT to ${target}: ${status}`);
    }
    return conn;
  } catch (e) {
    conn.close();
    throw e;
  }
}

/**
 * A local Unix-socket shim that turns each connection into a CONNECT tunnel through the proxy;
 * `Deno.createHttpClient({ proxy: { transport: "unix" } })` dials it while the WebSocket keeps the
 * real URL (and Host header). Needed for ws:// because Deno forwards plain-HTTP requests to a proxy
 * instead of using CONNECT, and proxies drop the Upgrade header.
 */
async function connectShim(proxy: ProxySpec, host: string, port: number): Promise<Transport> {
  const dir = await Deno.makeTempDir({ prefix: "mport-proxy-" });
  const path = `${dir}/connect.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const open = new Set<Deno.Conn>();
  let lastError: string | null = null;
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        await writeAll(to, buf.subarray(0, n));
      }
    } catch {
      // either side went away
    }
    for (const c of [from, to]) {
      if (open.delete(c)) c.close();
    }
  };
  const serve = (async () => {
    for await (const local of listener) {
      open.add(local);
      connectViaProxy(proxy, host, port).then((remote) => {
        lastError = null;
        open.add(remote);
        pump(local, remote);
        pump(remote, local);
      }, (e) => {
        lastError = e instanceof Deno.errors.ConnectionRefused || !(e instanceof Error)
          ? `cannot connect to proxy ${proxy.url}: ${String((e as Error)?.message ?? e)}`
          : e.message;
        if (open.delete(local)) local.close();
      });
    }
  })().catch(() => {});
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  return {
    client,
    lastProxyError: () => lastError,
    async close() {
      client.close();
      listener.close();
      for (const c of open) c.close();
      open.clear();
      await serve;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Builds the transport for a server URL, CA certificate and proxy. */
export async function openTransport(
  server: URL,
  caCert: string | null,
  proxy: ProxySpec | null,
): Promise<Transport> {
  const caCerts = caCert ? [caCert] : undefined;
  if (proxy && server.protocol === "ws:") {
    const port = server.port ? Number(server.port) : 80;
    return await connectShim(proxy, server.hostname.replace(/^\[|\]$/g, ""), port);
  }
  if (proxy) {
    const client = Deno.createHttpClient({
      caCerts,
      proxy: {
        url: proxy.url,
        ...(proxy.username !== null
          ? { basicAuth: { username: proxy.username, password: proxy.password?.reveal() ?? "" } }
          : {}),
      },
    });
    return { client, lastProxyError: () => null, close: () => Promise.resolve(client.close()) };
  }
  if (caCerts) {
    const client = Deno.createHttpClient({ caCerts });
    return { client, lastProxyError: () => null, close: () => Promise.resolve(client.close()) };
  }
  return { client: undefined, lastProxyError: () => null, close: () => Promise.resolve() };
}
