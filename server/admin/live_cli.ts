// `mport-server clients` and `mport-server tunnels`: the running server's live view, over its HTTP port.
import { parseFlags } from "../../shared/cli_args.ts";
import { adminPath, DEFAULT_PATH_PREFIX } from "../../shared/protocol.ts";
import { formatTable } from "./cli.ts";
import { humanAgo, humanBytes } from "./human.ts";
import type { LiveClient, LiveTunnel } from "./live.ts";

/** The commands that ask the running server rather than the store. */
export const LIVE_COMMANDS = ["clients", "tunnels"] as const;

/** Where live commands print, fetch and read; injectable for tests. */
export interface LiveIo {
  out(line: string): void;
  fetch(url: string, init: RequestInit): Promise<Response>;
  readFile(path: string): string;
  now(): number;
}

const COMMON =
  `  --server URL         the running server's address, with its path prefix if not /_mport
                       (default http://127.0.0.1:8080; ws:// and wss:// URLs work too)
  --token TOKEN        a token of an admin user (or MPORT_TOKEN, or --token-file)
  --token-file FILE    read the token from FILE
  --json               machine-readable output (raw numbers and epoch-ms times)`;

/** Usage of the live commands. */
export const LIVE_USAGE: Record<(typeof LIVE_COMMANDS)[number], string> = {
  clients: `Usage: mport-server clients [--server URL] [--token TOKEN] [--json]
Who is connected to the running server: session, user, address, since when, tunnels and data
connections. Asks the server over HTTP (GET PREFIX/v2/admin/clients) with an admin's token.
${COMMON}`,
  tunnels: `Usage: mport-server tunnels [--server URL] [--token TOKEN] [--json]
The running server's open tunnels: name, public port, user, client address, active connections,
bytes in and out, since when. Asks the server over HTTP (GET PREFIX/v2/admin/tunnels) with an
admin's token.
${COMMON}`,
};

/** `http(s)://host:port` and the path prefix of a `--server` value. */
export function liveServerUrl(text: string): { origin: string; prefix: string } {
  let url: URL;
  try {
    url = new URL(text.includes("://") ? text : `http://${text}`);
  } catch {
    throw new TypeError(`invalid --server "${text}": expected e.g. http://127.0.0.1:8080`);
  }
  const scheme = { "http:": "http:", "https:": "https:", "ws:": "http:", "wss:": "https:" }[
    url.protocol
  ];
  if (!scheme || url.search || url.hash || url.username) {
    throw new TypeError(
      `invalid --server "${text}": expected http(s)://HOST[:PORT][/PREFIX], e.g. http://127.0.0.1:8080`,
    );
  }
  const path = url.pathname.replace(/\/+$/, "");
  return { origin: `${scheme}//${url.host}`, prefix: path === "" ? DEFAULT_PATH_PREFIX : path };
}

function parseLiveFlags(args: readonly string[]) {
  return parseFlags({
    args: [...args],
    strict: true,
    allowPositionals: true,
    options: {
      server: { type: "string" },
      token: { type: "string" },
      "token-file": { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}

/** Usage text when `args` asks for help, else null (throws a `UsageError` for bad flags). */
export function livePreflight(args: readonly string[]): string | null {
  const { values, positionals } = parseLiveFlags(args);
  const command = positionals[0] as (typeof LIVE_COMMANDS)[number];
  if (values.help) return LIVE_USAGE[command];
  if (positionals.length > 1) {
    throw new TypeError(`unexpected argument "${positionals[1]}" for mport-server ${command}`);
  }
  return null;
}

/**
 * Runs `mport-server clients|tunnels`. Returns the exit code; a command line that cannot work
 * throws `TypeError`, a server that cannot be asked throws `Error`.
 */
export async function runLive(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  io: LiveIo,
): Promise<number> {
  const { values, positionals } = parseLiveFlags(args);
  const command = positionals[0] as (typeof LIVE_COMMANDS)[number];
  const { origin, prefix } = liveServerUrl(values.server ?? "http://127.0.0.1:8080");
  let token = values.token;
  if (token === undefined && values["token-file"] !== undefined) {
    token = io.readFile(values["token-file"]).trim();
  }
  token ??= env.MPORT_TOKEN;
  if (!token) {
    throw new TypeError(
      "no admin token: pass --token TOKEN, --token-file FILE or set MPORT_TOKEN " +
        "(create one with: mport-server token create --user ADMIN)",
    );
  }
  const url = `${origin}${adminPath(prefix)}/${command}`;
  let res: Response;
  try {
    res = await io.fetch(url, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
  } catch (e) {
    throw new Error(
      `cannot reach the server at ${origin}: ${(e as Error).message} ` +
        "(is mport-server running there? pass --server URL)",
    );
  }
  const text = await res.text();
  if (!res.ok) {
    let message = text.trim();
    try {
      message = (JSON.parse(text) as { error?: string }).error ?? message;
    } catch {
      // not JSON: a proxy's page, or an older server
    }
    if (res.status === 404 || res.status === 426) {
      message = `${url} is not an admin endpoint (an older server, or pass --server with its ` +
        `path prefix, e.g. ${origin}/PREFIX)`;
    }
    throw new Error(`the server refused (${res.status}): ${message}`);
  }
  const now = io.now();
  if (command === "clients") {
    const { clients } = JSON.parse(text) as { clients: LiveClient[] };
    if (values.json) io.out(JSON.stringify(clients, null, 2));
    else if (clients.length === 0) io.out("no clients connected");
    else {
      io.out(formatTable(
        ["SESSION", "USER", "ADDRESS", "SINCE", "DATA CONNS", "TUNNELS"],
        clients.map((c) => [
          c.session.slice(0, 8),
          c.user,
          c.address,
          humanAgo(c.since, now),
          String(c.dataConnections),
          c.tunnels.join(", ") || "-",
        ]),
      ));
    }
    return 0;
  }
  const { tunnels } = JSON.parse(text) as { tunnels: LiveTunnel[] };
  if (values.json) io.out(JSON.stringify(tunnels, null, 2));
  else if (tunnels.length === 0) io.out("no open tunnels");
  else {
    io.out(formatTable(
      ["NAME", "PORT", "USER", "CLIENT", "ACTIVE", "BYTES IN", "BYTES OUT", "SINCE"],
      tunnels.map((t) => [
        t.name,
        String(t.port),
        t.user,
        t.clientAddress ?? "(waiting for its client)",
        String(t.activeConnections),
        humanBytes(t.bytesIn),
        humanBytes(t.bytesOut),
        humanAgo(t.since, now),
      ]),
    ));
  }
  return 0;
}
