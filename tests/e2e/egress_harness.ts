// Egress end-to-end helpers: `mport socks` started and ready, the REST API as the admin, audit
// events waited for.
import { type Proc, startClient, TEST_TOKEN } from "./harness.ts";
import { freePort } from "../support/net.ts";

/** Starts `mport socks` on a free port of 127.0.0.1 and waits for its ready line. */
export async function startSocks(
  serverUrl: string,
  args: string[] = [],
): Promise<{ client: Proc; port: number }> {
  const { client, port } = await startSocksWaiting(serverUrl, args, []);
  return { client, port };
}

/**
 * `mport socks` with its status page on any free port; resolves once both are ready, with the
 * proxy's port and the page's URL.
 */
export async function startSocksWithStatus(serverUrl: string): Promise<{
  client: Proc;
  proxy: number;
  page: string;
}> {
  const { client, port, lines } = await startSocksWaiting(
    serverUrl,
    ["--inspect", "127.0.0.1:0"],
    [/^inspector (http:\/\/127\.0\.0\.1:\d+)$/],
  );
  return { client, proxy: port, page: lines[0]![1]! };
}

/** `mport socks` on a free port, once its ready line and a line matching each of `also` came. */
async function startSocksWaiting(
  serverUrl: string,
  args: string[],
  also: RegExp[],
): Promise<{ client: Proc; port: number; lines: RegExpMatchArray[] }> {
  const port = freePort();
  const client = startClient([
    "socks",
    "--listen",
    `127.0.0.1:${port}`,
    "--server",
    serverUrl,
    ...args,
  ]);
  try {
    const [, ...lines] = await Promise.all([
      client.stdout.wait(
        /^socks socks5:\/\/127\.0\.0\.1:\d+ http:\/\/127\.0\.0\.1:\d+ -> /,
        15_000,
      ),
      ...also.map((re) => client.stdout.wait(re, 15_000)),
    ]);
    return { client, port, lines };
  } catch (e) {
    await client.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${client.output()}`);
  }
}

/** A call to the server's REST API with the admin token; throws with the body when not 2xx. */
export async function api(
  serverUrl: string,
  path: string,
  init: RequestInit = {},
  token = TEST_TOKEN,
): Promise<unknown> {
  const res = await fetch(`${serverUrl}/api/v1${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      ...init.headers,
    },
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** An audit event as the API lists it. */
export interface AuditEvent {
  readonly type: string;
  readonly detail: Record<string, unknown>;
}

/**
 * The audit events of `type` once `ready(events)` holds (the server writes them as streams end,
 * so they are asked for again until then); throws with what there was after `ms`.
 */
export async function auditEvents(
  serverUrl: string,
  type: string,
  ready: (events: AuditEvent[]) => boolean,
  ms = 10_000,
  token = TEST_TOKEN,
): Promise<AuditEvent[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await api(serverUrl, `/events?type=${type}`, {}, token) as { items: AuditEvent[] };
    if (ready(got.items)) return got.items;
    if (Date.now() > deadline) {
      throw new Error(
        `${type} events not as expected within ${ms} ms: ${JSON.stringify(got.items)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
