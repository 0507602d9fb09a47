// End-to-end fixture for HTTP tunnels: the real server (with an HTTP domain) and client processes
// in front of a local HTTP service.
import { type Proc, type ServerProc, startClient, startServer } from "./harness.ts";

/** The HTTP domain tests serve tunnels under (never resolved: requests name it in Host). */
export const TEST_DOMAIN = "t.test";

/** A granted HTTP tunnel as its ready line printed it. */
export interface HttpGrant {
  readonly name: string;
  readonly url: string;
  /** The host name visitors send (`app.t.test`). */
  readonly host: string;
  readonly local: string;
}

/** Waits for the client's ready line of an HTTP tunnel (from stdout line `from` on). */
export async function httpGrant(client: Proc, from = 0, timeoutMs = 15_000): Promise<HttpGrant> {
  const m = await client.stdout.wait(
    /^(\S+) (https?:\/\/(\S+?)(?::\d+)?) -> (\S+)$/,
    timeoutMs,
    from,
  );
  return { name: m[1]!, url: m[2]!, host: m[3]!, local: m[4]! };
}

/** A local HTTP service on 127.0.0.1 (Deno.serve) that records what it got. */
export interface LocalHttp {
  readonly port: number;
  readonly url: string;
  /** Requests received, in order. */
  readonly requests: Request[];
  close(): Promise<void>;
}

/** Starts a local HTTP service answering with `handler`. */
export function startLocalHttp(
  handler: (
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
): LocalHttp {
  const requests: Request[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req, info) => {
      requests.push(req.clone());
      return handler(req, info);
    },
  );
  return {
    port: server.addr.port,
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    close: () => server.shutdown(),
  };
}

/** A server with `--http-domain t.test` and one `mport http` client. */
export interface HttpTunnelRig {
  readonly server: ServerProc;
  readonly client: Proc;
  readonly grant: HttpGrant;
  /** The server's HTTP port (visitors connect here with `Host: grant.host`). */
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Starts the server (extra `serverArgs`) and `mport http LOCAL clientArgs…` (the inspector off
 * unless `clientArgs` turn it on), and waits for the tunnel's ready line.
 */
export async function startHttpTunnel(opts: {
  local: string;
  clientArgs?: string[];
  serverArgs?: string[];
  server?: ServerProc;
}): Promise<HttpTunnelRig> {
  const server = opts.server ??
    await startServer(["--http-domain", TEST_DOMAIN, ...(opts.serverArgs ?? [])]);
  const args = opts.clientArgs ?? [];
  const inspect = args.includes("--inspect") || args.includes("--no-inspect");
  const client = startClient([
    "http",
    opts.local,
    "--server",
    server.wsUrl,
    ...(inspect ? [] : ["--no-inspect"]),
    ...args,
  ]);
  let grant: HttpGrant;
  try {
    grant = await httpGrant(client);
  } catch (e) {
    await client.stop("SIGKILL");
    if (!opts.server) await server.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${client.output()}`);
  }
  return {
    server,
    client,
    grant,
    port: server.port,
    async close() {
      await client.stop();
      if (!opts.server) await server.stop();
    },
  };
}
