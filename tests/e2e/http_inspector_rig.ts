// End-to-end fixture for the request inspector: the real server and `mport http` client (with
// `--inspect`) in front of a local HTTP service that records every request it receives.
import { CSRF_HEADER } from "../../client/inspector/server.ts";
import { freeStablePort } from "../support/net.ts";
import { Notifier } from "../support/wait.ts";
import { type HttpTunnelRig, startHttpTunnel } from "./http_harness.ts";

/** A request as the local service received it. */
export interface Received {
  readonly method: string;
  /** Path and query. */
  readonly path: string;
  readonly headers: Headers;
  readonly body: string;
  readonly bodyBytes: number;
}

/** A tunnel with its inspector on, and the local service behind it. */
export interface InspectedTunnel {
  readonly tunnel: HttpTunnelRig;
  /** The inspector as the client printed it: `http://127.0.0.1:PORT`. */
  readonly inspector: string;
  readonly inspectorPort: number;
  /** What the local service received, in order. */
  readonly received: Received[];
  /** Notified whenever the local service receives a request. */
  readonly arrivals: Notifier;
  /** Calls the inspector's API; the response body is read (JSON, or null when empty). */
  api(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> | null }>;
  close(): Promise<void>;
}

/**
 * Starts a local service (answering `{ok, seen}` as JSON, 201 for POST), the server and
 * `mport http PORT --subdomain app --inspect 127.0.0.1:<free port>`, and waits for both the
 * tunnel's and the inspector's lines.
 */
export async function startInspectedTunnel(
  opts: { inspectPort?: number; clientArgs?: string[] } = {},
): Promise<InspectedTunnel> {
  const received: Received[] = [];
  const arrivals = new Notifier();
  const service = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      const bytes = new Uint8Array(await req.arrayBuffer());
      received.push({
        method: req.method,
        path: url.pathname + url.search,
        headers: req.headers,
        body: new TextDecoder().decode(bytes),
        bodyBytes: bytes.byteLength,
      });
      arrivals.notify();
      if (url.pathname === "/api/login") {
        return Response.json({ error: "wrong password" }, { status: 401 });
      }
      if (url.pathname.endsWith(".png")) {
        const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]);
        return new Response(png, { headers: { "content-type": "image/png" } });
      }
      return Response.json({ ok: true, seen: received.length, bytes: bytes.byteLength }, {
        status: req.method === "POST" ? 201 : 200,
      });
    },
  );
  const inspectPort = opts.inspectPort ?? freeStablePort();
  let tunnel: HttpTunnelRig;
  try {
    tunnel = await startHttpTunnel({
      local: String(service.addr.port),
      clientArgs: ["--subdomain", "app", "--inspect", `127.0.0.1:${inspectPort}`].concat(
        opts.clientArgs ?? [],
      ),
    });
  } catch (e) {
    await service.shutdown();
    throw e;
  }
  let inspector: string;
  try {
    inspector = (await tunnel.client.stdout.wait(/^inspector (http:\/\/\S+)$/, 15_000))[1]!;
  } catch (e) {
    await tunnel.close();
    await service.shutdown();
    throw new Error(`${(e as Error).message}\n${tunnel.client.output()}`);
  }
  return {
    tunnel,
    inspector,
    inspectorPort: Number(new URL(inspector).port),
    received,
    arrivals,
    async api(method, path, body) {
      const res = await fetch(inspector + path, {
        method,
        // The API's guard against cross-site requests: changes carry a JSON type or this header.
        headers: {
          ...(method === "GET" ? {} : { [CSRF_HEADER]: "1" }),
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, json: text ? JSON.parse(text) : null };
    },
    async close() {
      await tunnel.close();
      await service.shutdown();
    },
  };
}

/**
 * The TCP ports process `pid` listens on (from /proc: its socket inodes that are in LISTEN
 * state), so a test can tell that nothing listens without guessing which port to try.
 */
export function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const m = Deno.readLinkSync(`/proc/${pid}/fd/${fd.name}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== "0A" || !inodes.has(cols[9]!)) continue;
      ports.push(parseInt(cols[1]!.split(":").pop()!, 16));
    }
  }
  return ports;
}
