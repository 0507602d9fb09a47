// The client's configuration: subcommands, flags, environment and the TOML file, built once in main.ts.
import type { LogLevel } from "@logtape/logtape";
import { parse as parseToml } from "smol-toml";
import { formatHostPort, parseHostPort, parsePort } from "../shared/address.ts";
import { parseFlags } from "../shared/cli_args.ts";
import { parseLogLevel } from "../shared/log.ts";
import {
  DEFAULT_PATH_PREFIX,
  MAX_DATA_CONNS_PER_SESSION,
  validateTunnelName,
} from "../shared/protocol.ts";
import { Secret } from "../shared/secret.ts";
import { DEFAULT_MAX_CONNECTIONS, MAX_MAX_CONNECTIONS } from "./tunnel_gate.ts";

/** One local service to publish. */
export interface TunnelSpec {
  readonly name: string;
  readonly localHost: string;
  readonly localPort: number;
  /** Requested public port, 0 for any. */
  readonly remotePort: number;
}

/** An HTTP CONNECT proxy. */
export interface ProxySpec {
  /** `http://host:port` without credentials. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly username: string | null;
  readonly password: Secret | null;
}

/** Everything the client needs, fully defaulted and validated. */
export interface ClientConfig {
  /** `ws://` or `wss://` origin of the server. */
  readonly server: URL;
  /** Path prefix of the endpoints on the server (from the URL's path, default /_mport). */
  readonly pathPrefix: string;
  readonly token: Secret;
  readonly tunnels: readonly TunnelSpec[];
  /** Data connections (multiplexed WebSockets) to keep open. */
  readonly pool: number;
  /** User connections open at once per tunnel; the server's further `OPEN`s are refused. */
  readonly maxConnections: number;
  readonly caCert: string | null;
  readonly proxy: ProxySpec | null;
  readonly logLevel: LogLevel;
  /** Backoff start and cap for reconnects. */
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
  /** Time to wait for a local service to accept a connection. */
  readonly dialTimeoutMs: number;
  /** On shutdown, let open streams finish this long. */
  readonly drainMs: number;
  /**
   * File holding this installation's persistent client id (made on first run), or null when no
   * config directory is known (main.ts then says to set HOME or pass --client-id-file).
   */
  readonly clientIdFile: string | null;
}

/** Usage text for `mport --help`. */
export const CLIENT_USAGE = `mport: publish a local TCP service through an mport server.

Usage:
  mport tcp [HOST:]PORT [--remote-port N] [--name NAME] [options]
  mport start --config mport.toml [options]

Options:
  --server URL        server, wss://host[:port][/prefix] or ws://… (env MPORT_SERVER)
  --token TOKEN       client token (env MPORT_TOKEN)
  --remote-port N     ask for this public port (tcp only)
  --name NAME         tunnel name (default: derived from the local address)
  --pool N            data connections to keep open, each carrying many user
                      connections (default 1, at most 8)
  --max-connections N user connections open at once per tunnel; more are
                      refused (default ${DEFAULT_MAX_CONNECTIONS}, at most ${MAX_MAX_CONNECTIONS})
  --ca FILE           trust this CA certificate (PEM) for wss://
  --proxy URL         HTTP CONNECT proxy, http://user:pass@host:port, or none
                      (default from HTTPS_PROXY for wss://, HTTP_PROXY for
                      ws://, then ALL_PROXY, minus NO_PROXY; none ignores them)
  --config FILE       TOML file with server, token and [[tunnels]] (start)
  --log-level LEVEL   trace, debug, info, warning, error (default info)
  --client-id-file FILE
                      this installation's id, made on first run (default
                      ~/.config/mport/client-id; %APPDATA%\\mport\\client-id)
  -h, --help          show this help
  --version           print the version
`;

/**
 * Where the client keeps its persistent id: `%APPDATA%\mport\client-id` on Windows, else
 * `$XDG_CONFIG_HOME/mport/client-id` or `~/.config/mport/client-id`; null when none is known.
 */
export function defaultClientIdFile(
  env: Readonly<Record<string, string | undefined>>,
  os: typeof Deno.build.os,
): string | null {
  if (os === "windows") {
    const base = env.APPDATA || (env.USERPROFILE ? `${env.USERPROFILE}\\AppData\\Roaming` : "");
    return base ? `${base}\\mport\\client-id` : null;
  }
  // The XDG spec ignores relative paths.
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg && xdg.startsWith("/")) return `${xdg.replace(/\/+$/, "")}/mport/client-id`;
  return env.HOME ? `${env.HOME.replace(/\/+$/, "")}/.config/mport/client-id` : null;
}

/** Tunnel name derived from a local address: `127.0.0.1:5555` → `127.0.0.1-5555`. */
export function defaultTunnelName(host: string, port: number): string {
  const safe = host.replace(/[^A-Za-z0-9._-]/g, "_");
  // IPv6 literals start with ':' or '_' after escaping; names must start with a letter or digit.
  return /^[A-Za-z0-9]/.test(safe) ? `${safe}-${port}` : `ip6${safe}-${port}`;
}

/** Parses a server URL into an origin and a path prefix; http(s) is accepted as ws(s). */
export function parseServerUrl(text: string): { server: URL; pathPrefix: string } {
  let url: URL;
  try {
    url = new URL(text.includes("://") ? text : `wss://${text}`);
  } catch {
    throw new TypeError(
      `invalid --server "${text}": expected wss://host[:port] or ws://host[:port]`,
    );
  }
  const scheme = { "ws:": "ws:", "wss:": "wss:", "http:": "ws:", "https:": "wss:" }[url.protocol];
  if (!scheme) {
    throw new TypeError(
      `invalid --server "${text}": the scheme must be wss://, ws://, https:// or http://`,
    );
  }
  const server = new URL(`${scheme}//${url.host}`);
  const path = url.pathname.replace(/\/+$/, "");
  return { server, pathPrefix: path === "" ? DEFAULT_PATH_PREFIX : path };
}

/** Parses `http://user:pass@host:port` into a proxy spec. */
export function parseProxyUrl(text: string): ProxySpec {
  let url: URL;
  try {
    url = new URL(text.includes("://") ? text : `http://${text}`);
  } catch {
    throw new TypeError(`invalid proxy "${text}": expected http://[user:pass@]host:port`);
  }
  if (url.protocol !== "http:") {
    throw new TypeError(`invalid proxy "${text}": only http:// CONNECT proxies are supported`);
  }
  const port = url.port ? Number(url.port) : 80;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return {
    url: `http://${formatHostPort(host, port)}`,
    host,
    port,
    username: url.username ? decodeURIComponent(url.username) : null,
    password: url.password ? new Secret(decodeURIComponent(url.password)) : null,
  };
}

/** True if `host` matches a NO_PROXY list (`*`, exact names, `.suffix` or `suffix`, optional :port). */
export function noProxyMatches(noProxy: string, host: string, port: number): boolean {
  const h = host.toLowerCase();
  for (const raw of noProxy.split(",")) {
    let entry = raw.trim().toLowerCase();
    if (!entry) continue;
    const bracketed = /^\[([0-9a-f:.]+)\](?::(\d+))?$/.exec(entry);
    if (bracketed) {
      if (bracketed[2] !== undefined && Number(bracketed[2]) !== port) continue;
      if (h === bracketed[1]) return true;
      continue;
    }
    if (entry === "*") return true;
    const m = /^(.*):(\d+)$/.exec(entry);
    if (m && !entry.includes("]") && m[1]!.split(":").length === 1) {
      if (Number(m[2]) !== port) continue;
      entry = m[1]!;
    }
    entry = entry.replace(/^\*?\./, "");
    if (h === entry || h.endsWith(`.${entry}`)) return true;
  }
  return false;
}

/** True for a proxy setting that means "connect directly": `none` (any case) or empty. */
function isNoProxy(value: string): boolean {
  const v = value.trim().toLowerCase();
  return v === "" || v === "none";
}

/**
 * Picks the proxy for a server: `setting` (`--proxy`, else the config file's `proxy`) wins over
 * the environment, and `none` (or an empty value) there means no proxy whatever the environment
 * says. Otherwise HTTPS_PROXY (wss://) or HTTP_PROXY (ws://), then ALL_PROXY, upper case before
 * lower case; the first one that is set decides, and `none` or empty there also means no proxy.
 * NO_PROXY can exempt the server.
 */
export function resolveProxy(
  setting: string | undefined,
  server: URL,
  env: Readonly<Record<string, string | undefined>>,
): ProxySpec | null {
  if (setting !== undefined) return isNoProxy(setting) ? null : parseProxyUrl(setting.trim());
  const secure = server.protocol === "wss:";
  const fromEnv = secure
    ? env.HTTPS_PROXY ?? env.https_proxy ?? env.ALL_PROXY ?? env.all_proxy
    : env.HTTP_PROXY ?? env.http_proxy ?? env.ALL_PROXY ?? env.all_proxy;
  if (fromEnv === undefined || isNoProxy(fromEnv)) return null;
  const noProxy = env.NO_PROXY ?? env.no_proxy ?? "";
  const port = server.port ? Number(server.port) : secure ? 443 : 80;
  if (noProxyMatches(noProxy, server.hostname.replace(/^\[|\]$/g, ""), port)) return null;
  return parseProxyUrl(fromEnv);
}

function tunnelFromLocal(local: string, name: string | undefined, remotePort: number): TunnelSpec {
  const { host, port } = parseHostPort(local, "127.0.0.1");
  return {
    name: validateTunnelName(name ?? defaultTunnelName(host, port)),
    localHost: host,
    localPort: port,
    remotePort,
  };
}

interface FileConfig {
  server?: string;
  token?: string;
  pool?: number;
  maxConnections?: number;
  ca?: string;
  proxy?: string;
  tunnels: TunnelSpec[];
}

function parseConfigFile(text: string, path: string): FileConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw new TypeError(`cannot parse ${path}: ${(e as Error).message.split("\n")[0]}`);
  }
  const known = new Set(["server", "token", "pool", "max_connections", "ca", "proxy", "tunnels"]);
  for (const k of Object.keys(doc)) {
    if (!known.has(k)) throw new TypeError(`${path}: unknown key "${k}"`);
  }
  const optStr = (k: string): string | undefined => {
    const v = doc[k];
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw new TypeError(`${path}: "${k}" must be a string`);
    return v;
  };
  if (doc.pool !== undefined && typeof doc.pool !== "number") {
    throw new TypeError(`${path}: "pool" must be a number`);
  }
  if (doc.max_connections !== undefined && typeof doc.max_connections !== "number") {
    throw new TypeError(`${path}: "max_connections" must be a number`);
  }
  const list = doc.tunnels ?? [];
  if (!Array.isArray(list)) {
    throw new TypeError(`${path}: "tunnels" must be an array of tables ([[tunnels]])`);
  }
  const tunnels = list.map((t: unknown, i: number) => {
    if (typeof t !== "object" || t === null) {
      throw new TypeError(`${path}: tunnels[${i}] must be a table`);
    }
    const r = t as Record<string, unknown>;
    for (const k of Object.keys(r)) {
      if (!["name", "local", "remote_port", "type"].includes(k)) {
        throw new TypeError(`${path}: tunnels[${i}]: unknown key "${k}"`);
      }
    }
    if (r.type !== undefined && r.type !== "tcp") {
      throw new TypeError(`${path}: tunnels[${i}]: type must be "tcp"`);
    }
    if (typeof r.local !== "string" && typeof r.local !== "number") {
      throw new TypeError(`${path}: tunnels[${i}] needs local = "HOST:PORT"`);
    }
    if (r.name !== undefined && typeof r.name !== "string") {
      throw new TypeError(`${path}: tunnels[${i}]: name must be a string`);
    }
    const remote = r.remote_port === undefined
      ? 0
      : parsePort(String(r.remote_port), "remote_port");
    return tunnelFromLocal(String(r.local), r.name as string | undefined, remote);
  });
  return {
    server: optStr("server"),
    token: optStr("token"),
    pool: doc.pool as number | undefined,
    maxConnections: doc.max_connections as number | undefined,
    ca: optStr("ca"),
    proxy: optStr("proxy"),
    tunnels,
  };
}

/** Result of parsing the command line: a config, or a request for help or the version. */
export type ClientArgs =
  | { readonly help: true }
  | { readonly help: false; readonly version: true }
  | { readonly help: false; readonly version?: undefined; readonly config: ClientConfig };

/** Parses `mport` arguments, environment and config file (read through `readFile`). */
export function parseClientArgs(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  readFile: (path: string) => string,
): ClientArgs {
  const { values, positionals } = parseFlags({
    args: [...args],
    strict: true,
    allowPositionals: true,
    options: {
      server: { type: "string" },
      token: { type: "string" },
      "remote-port": { type: "string" },
      name: { type: "string" },
      pool: { type: "string" },
      "max-connections": { type: "string" },
      ca: { type: "string" },
      proxy: { type: "string" },
      config: { type: "string", short: "c" },
      "log-level": { type: "string" },
      "client-id-file": { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
  });
  if (values.version) return { help: false, version: true };
  if (values.help || positionals.length === 0 || positionals[0] === "help") return { help: true };
  const [command, ...rest] = positionals;
  let file: FileConfig = { tunnels: [] };
  let tunnels: TunnelSpec[];
  if (command === "tcp") {
    if (rest.length !== 1) {
      throw new TypeError("usage: mport tcp [HOST:]PORT [--remote-port N] [--name NAME]");
    }
    const remote = values["remote-port"] ? parsePort(values["remote-port"], "--remote-port") : 0;
    tunnels = [tunnelFromLocal(rest[0]!, values.name, remote)];
    if (values.config) file = parseConfigFile(readFile(values.config), values.config);
  } else if (command === "start") {
    if (rest.length > 0) throw new TypeError(`unexpected argument "${rest[0]}" for mport start`);
    if (!values.config) throw new TypeError("mport start needs --config FILE");
    if (values["remote-port"] || values.name) {
      throw new TypeError(
        "--remote-port and --name belong to `mport tcp`; set them per tunnel in the config file",
      );
    }
    file = parseConfigFile(readFile(values.config), values.config);
    tunnels = file.tunnels;
    if (tunnels.length === 0) throw new TypeError(`${values.config} lists no [[tunnels]]`);
  } else {
    throw new TypeError(
      `unknown command "${command}": use "mport tcp PORT" or "mport start --config FILE"`,
    );
  }
  const names = new Set(tunnels.map((t) => t.name));
  if (names.size !== tunnels.length) throw new TypeError("tunnel names must be unique");

  const serverText = values.server ?? env.MPORT_SERVER ?? file.server;
  if (!serverText) throw new TypeError("no server: pass --server wss://HOST or set MPORT_SERVER");
  const { server, pathPrefix } = parseServerUrl(serverText);
  const token = values.token ?? env.MPORT_TOKEN ?? file.token;
  if (!token) throw new TypeError("no token: pass --token TOKEN or set MPORT_TOKEN");
  const poolText = values.pool ?? (file.pool === undefined ? "1" : String(file.pool));
  const pool = Number(poolText);
  if (!Number.isSafeInteger(pool) || pool < 1 || pool > MAX_DATA_CONNS_PER_SESSION) {
    throw new TypeError(
      `invalid --pool "${poolText}": expected a whole number from 1 to ${MAX_DATA_CONNS_PER_SESSION}`,
    );
  }
  const maxText = values["max-connections"] ??
    String(file.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
  const maxConnections = Number(maxText);
  if (
    !/^\s*\d+\s*$/.test(maxText) || !Number.isSafeInteger(maxConnections) ||
    maxConnections < 1 || maxConnections > MAX_MAX_CONNECTIONS
  ) {
    throw new TypeError(
      `invalid --max-connections "${maxText}": expected a whole number from 1 to ${MAX_MAX_CONNECTIONS}`,
    );
  }
  const caPath = values.ca ?? file.ca;
  return {
    help: false,
    config: {
      server,
      pathPrefix,
      token: new Secret(token),
      tunnels,
      pool,
      maxConnections,
      caCert: caPath ? readFile(caPath) : null,
      proxy: resolveProxy(values.proxy ?? file.proxy, server, env),
      logLevel: values["log-level"] ? parseLogLevel(values["log-level"]) : "info",
      backoffBaseMs: 1000,
      backoffCapMs: 30_000,
      dialTimeoutMs: 10_000,
      drainMs: 5_000,
      clientIdFile: values["client-id-file"] ?? defaultClientIdFile(env, Deno.build.os),
    },
  };
}
