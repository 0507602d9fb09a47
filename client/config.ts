// The client's configuration: subcommands, flags, environment and the TOML file, built once in main.ts.
import type { LogLevel } from "@logtape/logtape";
import { formatHostPort, parseHostPort, parsePort, unbracket } from "../shared/address.ts";
import { parseFlags } from "../shared/cli_args.ts";
import { parseLogLevel } from "../shared/log.ts";
import {
  DEFAULT_PATH_PREFIX,
  MAX_DATA_CONNS_PER_SESSION,
  validateTunnelName,
} from "../shared/protocol.ts";
import { keyLine, parseTomlFile, tableLine, where } from "../shared/toml_file.ts";
import { Secret } from "../shared/secret.ts";
import { parseCidr, parseIp } from "../shared/ip_cidr.ts";
import { dirname, join } from "node:path";
import type { VpnSpec } from "./vpn/vpn_client.ts";
import { LOGIN_FILE_NAME, parseLoginFile, type SavedLogin } from "./login.ts";
import { DEFAULT_MAX_CONNECTIONS, MAX_MAX_CONNECTIONS } from "./tunnel_gate.ts";
import {
  HTTP_FLAGS,
  HTTP_TOML_KEYS,
  type HttpOptionValues,
  type HttpSpec,
  httpSpec,
} from "./http_config.ts";

/** Where the request inspector listens by default (the next ports are tried when it is taken). */
export const DEFAULT_INSPECT = { host: "127.0.0.1", port: 4040 } as const;

/** One local service to publish. */
export interface TunnelSpec {
  readonly name: string;
  readonly localHost: string;
  readonly localPort: number;
  /** Requested public port, 0 for any. */
  readonly remotePort: number;
  /** HTTP tunnels: the local URL's scheme, the host asked for and the rules; null for tcp. */
  readonly http: HttpSpec | null;
  /** A UDP tunnel (datagrams to the local UDP service). */
  readonly udp?: boolean;
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
  /** The request inspector's address (HTTP tunnels only), or null when it is off. */
  readonly inspect: { readonly host: string; readonly port: number } | null;
  /** `mport socks`: the local SOCKS5/HTTP proxy whose connections leave from the server. */
  readonly egress: EgressSpec | null;
  /** `mport vpn`: a full-tunnel VPN through the server (Linux). */
  readonly vpn: VpnSpec | null;
  /**
   * Dial this address instead of resolving the server's (or the proxy's) name: `mport vpn` pins
   * the address it kept outside the tunnel, since DNS may only be reachable through the tunnel.
   */
  readonly connectAddress?: string | null;
}

export type { VpnSpec };

/** The local egress proxy of `mport socks`. */
export interface EgressSpec {
  readonly host: string;
  readonly port: number;
  readonly auth: { readonly username: string; readonly password: Secret } | null;
}

/** The client's TUN device unless `--device` names another. */
export const DEFAULT_VPN_DEVICE = "mport0";

/** What `mport vpn` says on systems it does not run on. */
export function vpnUnsupported(os: string): string {
  return `mport vpn runs on Linux only (this is ${os}): on Windows it needs the Wintun driver and ` +
    "on macOS a utun device, which mport does not drive yet; use `mport socks` there instead";
}

/** Where `mport socks` listens unless told. */
export const DEFAULT_SOCKS_LISTEN = "127.0.0.1:1080";

/** Usage text for `mport --help`. */
export const CLIENT_USAGE = `mport: publish a local TCP service through an mport server.

Usage:
  mport tcp [HOST:]PORT [--remote-port N] [--name NAME] [options]
  mport http [HOST:]PORT|URL [--subdomain NAME | --domain HOST] [HTTP options]
  mport udp [HOST:]PORT [--remote-port N] [--name NAME] [options]
                      a UDP service (DNS, WireGuard…) on a public UDP port
  mport socks [--listen 127.0.0.1:1080] [--username U --password P] [options]
                      a local SOCKS5 and HTTP proxy whose connections leave from
                      the server (egress: the server's operator must allow it)
  mport vpn [--routes default|CIDR,...] [--dns IP] [--kill-switch] [options]
                      a full-tunnel VPN through the server (Linux, root or
                      CAP_NET_ADMIN): a TUN device with an address from the
                      server, routes, DNS while connected; --kill-switch drops
                      what does not go through the tunnel while it runs
  mport start --config mport.toml [options]
  mport login TOKEN --server URL   save server and token for later runs (in
                      ~/.config/mport/config.toml, mode 0600; %APPDATA%\\mport)

Options:
  --server URL        server, wss://host[:port][/prefix] or ws://… (env MPORT_SERVER)
  --token-file FILE   read the client token from FILE (its first non-empty line)
  --token TOKEN       client token (env MPORT_TOKEN); visible to other users in
                      the process list: prefer --token-file or mport login
  --remote-port N     ask for this public port (tcp only)

HTTP options (mport http; in a config file, the same keys with '_' in [[tunnels]]
with type = "http"):
  --subdomain NAME    serve on NAME.<server's HTTP domain> (kept for you); default:
                      a stable random name per tunnel
  --domain HOST       serve on a custom domain an admin assigned to you
  --host-header preserve|rewrite|VALUE
                      Host sent to the local service (default rewrite: its address)
  --basic-auth USER:PASS   visitors must log in (repeatable)
  --allow-ip CIDR, --deny-ip CIDR   who may visit (repeatable; deny wins)
  --request-header-add 'K: V', --request-header-remove K,
  --response-header-add 'K: V'      header rules (repeatable)
  --security-headers  add X-Frame-Options, X-Content-Type-Options, CSP, HSTS
  --max-body SIZE     refuse larger request bodies with 413 (e.g. 10MB)
  --local-insecure    accept a self-signed certificate from an https:// local URL
  --inspect HOST:PORT request inspector address (default 127.0.0.1:4040)
  --no-inspect        no request inspector

Options:
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
 * The file `name` in the client's config directory: `%APPDATA%\mport\NAME` on Windows, else
 * `$XDG_CONFIG_HOME/mport/NAME` or `~/.config/mport/NAME`; null when none is known.
 */
function configDirFile(
  env: Readonly<Record<string, string | undefined>>,
  os: typeof Deno.build.os,
  name: string,
): string | null {
  if (os === "windows") {
    const base = env.APPDATA || (env.USERPROFILE ? `${env.USERPROFILE}\\AppData\\Roaming` : "");
    return base ? `${base}\\mport\\${name}` : null;
  }
  // The XDG spec ignores relative paths.
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg && xdg.startsWith("/")) return `${xdg.replace(/\/+$/, "")}/mport/${name}`;
  return env.HOME ? `${env.HOME.replace(/\/+$/, "")}/.config/mport/${name}` : null;
}

/**
 * Where the client keeps its persistent id: `%APPDATA%\mport\client-id` on Windows, else
 * `$XDG_CONFIG_HOME/mport/client-id` or `~/.config/mport/client-id`; null when none is known.
 */
export function defaultClientIdFile(
  env: Readonly<Record<string, string | undefined>>,
  os: typeof Deno.build.os,
): string | null {
  return configDirFile(env, os, "client-id");
}

/** Where `mport login` saves the server and token: `config.toml` next to the client id. */
export function defaultLoginFile(
  env: Readonly<Record<string, string | undefined>>,
  os: typeof Deno.build.os,
): string | null {
  return configDirFile(env, os, LOGIN_FILE_NAME);
}

/** The canonical text of a server URL: `ws[s]://host[:port]`, plus the prefix unless default. */
export function formatServerUrl(server: URL, pathPrefix: string): string {
  return `${server.protocol}//${server.host}${
    pathPrefix === DEFAULT_PATH_PREFIX ? "" : pathPrefix
  }`;
}

/** True for a host name that stays on this machine (localhost, 127.0.0.0/8, ::1). */
export function isLoopbackHost(hostname: string): boolean {
  const h = unbracket(hostname.toLowerCase());
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:127\./.test(h);
}

/** The warning for a token about to travel in clear text, or null when it does not. */
export function plainTextWarning(server: URL): string | null {
  if (server.protocol !== "ws:" || isLoopbackHost(server.hostname)) return null;
  return `the token travels unencrypted to ${server.hostname} over ws://; ` +
    "use wss:// (TLS) for anything but a trusted network";
}

/**
 * Reads a token file: its first non-empty line, trimmed. `mode` is the file's permission bits
 * (null where unknown, e.g. Windows); a file that group or others may read adds a warning.
 */
export function readTokenFile(
  path: string,
  readFile: (path: string) => string,
  mode: number | null,
  warnings: string[],
): string {
  let text: string;
  try {
    text = readFile(path);
  } catch (e) {
    throw new Error(`cannot read the token file ${path}: ${(e as Error).message}`);
  }
  const token = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l !== "");
  if (token === undefined) throw new TypeError(`the token file ${path} is empty`);
  if (mode !== null && (mode & 0o044) !== 0) {
    warnings.push(
      `the token file ${path} is readable by other users (mode ${
        (mode & 0o777).toString(8).padStart(4, "0")
      }): run chmod 600 ${path}`,
    );
  }
  return token;
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
  const host = unbracket(url.hostname);
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
  if (noProxyMatches(noProxy, unbracket(server.hostname), port)) return null;
  return parseProxyUrl(fromEnv);
}

function tunnelFromLocal(
  local: string,
  name: string | undefined,
  remotePort: number,
  udp = false,
): TunnelSpec {
  const { host, port } = parseHostPort(local, "127.0.0.1");
  return {
    name: validateTunnelName(name ?? (udp ? `udp-${port}` : defaultTunnelName(host, port))),
    localHost: host,
    localPort: port,
    remotePort,
    http: null,
    ...(udp ? { udp: true } : {}),
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
  inspect?: string | false;
}

function parseConfigFile(text: string, path: string): FileConfig {
  const doc = parseTomlFile(text, path);
  /** `FILE:LINE` of a top-level key, or of a key in the `i`-th [[tunnels]]. */
  const at = (k: string, i?: number) =>
    where(
      path,
      i === undefined ? keyLine(text, k) : keyLine(text, k, { table: "tunnels", index: i }),
    );
  const known = new Set([
    "server",
    "token",
    "pool",
    "max_connections",
    "ca",
    "proxy",
    "tunnels",
    "inspect",
  ]);
  for (const k of Object.keys(doc)) {
    if (!known.has(k)) throw new TypeError(`${at(k)}: unknown key "${k}"`);
  }
  const optStr = (k: string): string | undefined => {
    const v = doc[k];
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw new TypeError(`${at(k)}: "${k}" must be a string`);
    return v;
  };
  if (doc.pool !== undefined && typeof doc.pool !== "number") {
    throw new TypeError(`${at("pool")}: "pool" must be a number`);
  }
  if (doc.max_connections !== undefined && typeof doc.max_connections !== "number") {
    throw new TypeError(`${at("max_connections")}: "max_connections" must be a number`);
  }
  const list = doc.tunnels ?? [];
  if (!Array.isArray(list)) {
    throw new TypeError(`${at("tunnels")}: "tunnels" must be an array of tables ([[tunnels]])`);
  }
  const tunnels = list.map((t: unknown, i: number) => {
    if (typeof t !== "object" || t === null) {
      throw new TypeError(`${at("tunnels")}: tunnels[${i}] must be a table`);
    }
    const r = t as Record<string, unknown>;
    if (r.type !== undefined && r.type !== "tcp" && r.type !== "http" && r.type !== "udp") {
      throw new TypeError(`${at("type", i)}: tunnels[${i}]: type must be "tcp", "http" or "udp"`);
    }
    const isHttp = r.type === "http";
    for (const k of Object.keys(r)) {
      const allowed = ["name", "local", "type", isHttp ? "" : "remote_port"];
      if (!allowed.includes(k) && !(isHttp && k in HTTP_TOML_KEYS)) {
        throw new TypeError(
          `${at(k, i)}: tunnels[${i}]: ${
            k in HTTP_TOML_KEYS ? `"${k}" needs type = "http"` : `unknown key "${k}"`
          }`,
        );
      }
    }
    if (typeof r.local !== "string" && typeof r.local !== "number") {
      throw new TypeError(
        `${
          where(
            path,
            keyLine(text, "local", { table: "tunnels", index: i }) ?? tableLine(text, "tunnels", i),
          )
        }: tunnels[${i}] needs local = "HOST:PORT"`,
      );
    }
    if (r.name !== undefined && typeof r.name !== "string") {
      throw new TypeError(`${at("name", i)}: tunnels[${i}]: name must be a string`);
    }
    if (isHttp) {
      const values: Record<string, unknown> = {};
      for (const [key, field] of Object.entries(HTTP_TOML_KEYS)) {
        const v = r[key];
        if (v === undefined) continue;
        const ok = field === "securityHeaders" || field === "localInsecure"
          ? typeof v === "boolean"
          : LIST_OPTIONS.has(field)
          ? (typeof v === "string" || (Array.isArray(v) && v.every((x) => typeof x === "string")))
          : typeof v === "string" || (field === "maxBody" && typeof v === "number");
        if (!ok) throw new TypeError(`${at(key, i)}: tunnels[${i}]: "${key}" has the wrong type`);
        // A list key takes one string or an array of them; max_body also a number of bytes.
        values[field] = LIST_OPTIONS.has(field)
          ? (typeof v === "string" ? [v] : v)
          : typeof v === "number"
          ? String(v)
          : v;
      }
      try {
        return httpTunnel(String(r.local), r.name as string | undefined, values);
      } catch (e) {
        const key = Object.keys(HTTP_TOML_KEYS).find((k) =>
          (e as Error).message.includes(`--${k.replaceAll("_", "-")}`)
        );
        throw new TypeError(
          `${key ? at(key, i) : at("local", i)}: tunnels[${i}]: ${(e as Error).message}`,
        );
      }
    }
    let remote = 0;
    try {
      if (r.remote_port !== undefined) remote = parsePort(String(r.remote_port), "remote_port");
    } catch (e) {
      throw new TypeError(`${at("remote_port", i)}: ${(e as Error).message}`);
    }
    return tunnelFromLocal(String(r.local), r.name as string | undefined, remote, r.type === "udp");
  });
  let inspect: string | false | undefined;
  if (doc.inspect !== undefined) {
    if (doc.inspect !== false && typeof doc.inspect !== "string") {
      throw new TypeError(`${at("inspect")}: "inspect" must be "HOST:PORT" or false`);
    }
    inspect = doc.inspect as string | false;
  }
  return {
    server: optStr("server"),
    token: optStr("token"),
    pool: doc.pool as number | undefined,
    maxConnections: doc.max_connections as number | undefined,
    ca: optStr("ca"),
    proxy: optStr("proxy"),
    tunnels,
    inspect,
  };
}

/** HTTP options whose flag may be repeated (a TOML array). */
const LIST_OPTIONS: ReadonlySet<string> = new Set([
  "basicAuth",
  "allowIp",
  "denyIp",
  "requestHeaderAdd",
  "requestHeaderRemove",
  "responseHeaderAdd",
]);

/** An HTTP tunnel from its local address and options; the name defaults to the subdomain. */
function httpTunnel(local: string, name: string | undefined, v: HttpOptionValues): TunnelSpec {
  const http = httpSpec(local, v);
  return {
    name: validateTunnelName(name ?? http.subdomain ?? `http-${http.target.port}`),
    localHost: http.target.host,
    localPort: http.target.port,
    remotePort: 0,
    http,
  };
}

/** `--inspect HOST:PORT` / `--no-inspect` / the file's `inspect`: the address, or null (off). */
/** `--routes`: `default`, or IPv4 CIDR blocks separated by commas. */
export function vpnRoutes(text: string): "default" | string[] {
  const t = text.trim();
  if (t === "default") return "default";
  const out: string[] = [];
  for (const part of t.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    let cidr;
    try {
      cidr = parseCidr(part);
    } catch {
      cidr = null;
    }
    if (!cidr || cidr.family !== 4) {
      throw new TypeError(
        `invalid --routes "${text}": give default or IPv4 blocks like 10.0.0.0/8,192.0.2.0/24`,
      );
    }
    out.push(`${[...cidr.bytes].join(".")}/${cidr.prefix}`);
  }
  if (out.length === 0) throw new TypeError(`invalid --routes "${text}": it names no block`);
  return out;
}

/** `--dns`: IPv4 addresses (repeatable, or separated by commas); `none` leaves DNS alone. */
export function vpnDnsList(values: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values.flatMap((x) => x.split(",")).map((x) => x.trim()).filter(Boolean)) {
    if (v === "none") return [];
    const ip = parseIp(v);
    if (ip === null || ip.byteLength !== 4) {
      throw new TypeError(`invalid --dns "${v}": give an IPv4 address, e.g. 1.1.1.1 (or none)`);
    }
    out.push(v);
  }
  if (out.length > 3) throw new TypeError("--dns takes at most 3 servers (resolv.conf reads 3)");
  return out;
}

function inspectAddress(
  off: boolean | undefined,
  flag: string | undefined,
  fromFile: string | false | undefined,
): { host: string; port: number } | null {
  if (off && flag !== undefined) throw new TypeError("--inspect and --no-inspect contradict");
  if (off || (flag === undefined && fromFile === false)) return null;
  const text = flag ?? (typeof fromFile === "string" ? fromFile : undefined);
  if (text === undefined) return { ...DEFAULT_INSPECT };
  const { host, port } = parseHostPort(text, "127.0.0.1", true);
  return { host, port };
}

/** Result of parsing the command line: a config, or a request for help or the version. */
export type ClientArgs =
  | { readonly help: true }
  | { readonly help: false; readonly version: true }
  | {
    readonly help: false;
    readonly version?: undefined;
    /** `mport login`: save `login` to `file`. */
    readonly login: { readonly file: string; readonly login: SavedLogin };
    readonly config?: undefined;
  }
  | {
    readonly help: false;
    readonly version?: undefined;
    readonly login?: undefined;
    readonly config: ClientConfig;
    /** Said once at start: a token file others can read, a token about to travel in clear. */
    readonly warnings: readonly string[];
  };

/**
 * The server and token of the saved login (null when there is none), read only when flags,
 * environment and --config leave one of them out.
 */
function readSavedLogin(
  path: string | null,
  readFile: (path: string) => string,
): SavedLogin | null {
  if (path === null) return null;
  let text: string;
  try {
    text = readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`cannot read the saved login ${path}: ${(e as Error).message}`);
  }
  return parseLoginFile(text, path);
}

/** True when two server URLs name the same server and prefix (`vps` = `wss://vps:443/_mport`). */
function sameServer(a: string, b: string): boolean {
  try {
    const x = parseServerUrl(a);
    const y = parseServerUrl(b);
    return x.server.href === y.server.href && x.pathPrefix === y.pathPrefix;
  } catch {
    return false;
  }
}

/**
 * Parses `mport` arguments, environment and config file (read through `readFile`). `fileMode`
 * gives a file's permission bits (null where unknown), to warn about a token file others can read.
 */
export function parseClientArgs(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  readFile: (path: string) => string,
  fileMode: (path: string) => number | null = () => null,
  os: typeof Deno.build.os = Deno.build.os,
): ClientArgs {
  const { values, positionals } = parseFlags({
    args: [...args],
    strict: true,
    allowPositionals: true,
    options: {
      server: { type: "string" },
      token: { type: "string" },
      "token-file": { type: "string" },
      "remote-port": { type: "string" },
      name: { type: "string" },
      pool: { type: "string" },
      "max-connections": { type: "string" },
      ca: { type: "string" },
      proxy: { type: "string" },
      config: { type: "string", short: "c" },
      "log-level": { type: "string" },
      "client-id-file": { type: "string" },
      subdomain: { type: "string" },
      domain: { type: "string" },
      "host-header": { type: "string" },
      "basic-auth": { type: "string", multiple: true },
      "allow-ip": { type: "string", multiple: true },
      "deny-ip": { type: "string", multiple: true },
      "request-header-add": { type: "string", multiple: true },
      "request-header-remove": { type: "string", multiple: true },
      "response-header-add": { type: "string", multiple: true },
      "security-headers": { type: "boolean" },
      "max-body": { type: "string" },
      "local-insecure": { type: "boolean" },
      inspect: { type: "string" },
      "no-inspect": { type: "boolean" },
      listen: { type: "string" },
      routes: { type: "string" },
      dns: { type: "string", multiple: true },
      "kill-switch": { type: "boolean" },
      device: { type: "string" },
      username: { type: "string" },
      password: { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
  });
  if (values.version) return { help: false, version: true };
  if (values.help || positionals.length === 0 || positionals[0] === "help") return { help: true };
  const [command, ...rest] = positionals;
  const warnings: string[] = [];
  if (values.token !== undefined && values["token-file"] !== undefined) {
    throw new TypeError("--token and --token-file both give the token: pass one of them");
  }
  const flagToken = values["token-file"] !== undefined
    ? readTokenFile(values["token-file"], readFile, fileMode(values["token-file"]), warnings)
    : values.token;
  const loginFile = defaultLoginFile(env, os);
  if (command === "login") {
    if (rest.length > 1 || (rest.length === 1 && flagToken !== undefined)) {
      throw new TypeError("usage: mport login TOKEN --server URL (or --token-file FILE for TOKEN)");
    }
    const token = rest[0] ?? flagToken ?? env.MPORT_TOKEN;
    if (!token) throw new TypeError("usage: mport login TOKEN --server URL");
    const serverText = values.server ?? env.MPORT_SERVER;
    if (!serverText) throw new TypeError("mport login needs --server URL: the server TOKEN is for");
    const { server, pathPrefix } = parseServerUrl(serverText);
    if (loginFile === null) {
      throw new Error(
        "cannot tell where to save the login: set HOME (XDG_CONFIG_HOME, or APPDATA on Windows)",
      );
    }
    return {
      help: false,
      login: {
        file: loginFile,
        login: { server: formatServerUrl(server, pathPrefix), token: new Secret(token) },
      },
    };
  }
  let file: FileConfig = { tunnels: [] };
  let tunnels: TunnelSpec[];
  const httpFlagsGiven = HTTP_FLAGS.filter((f) => values[f] !== undefined);
  if (command !== "http" && httpFlagsGiven.length > 0) {
    throw new TypeError(
      `--${httpFlagsGiven[0]} belongs to \`mport http\`` +
        (command === "start" ? "; set it per tunnel in the config file" : ""),
    );
  }
  let egress: EgressSpec | null = null;
  const socksFlags = (["listen", "username", "password"] as const).filter((f) =>
    values[f] !== undefined
  );
  if (command !== "socks" && socksFlags.length > 0) {
    throw new TypeError(`--${socksFlags[0]} belongs to \`mport socks\``);
  }
  let vpn: VpnSpec | null = null;
  const vpnFlags = (["routes", "dns", "kill-switch", "device"] as const).filter((f) =>
    values[f] !== undefined
  );
  if (command !== "vpn" && vpnFlags.length > 0) {
    throw new TypeError(`--${vpnFlags[0]} belongs to \`mport vpn\``);
  }
  if (command === "vpn") {
    if (os !== "linux") throw new TypeError(vpnUnsupported(os));
    if (rest.length > 0) throw new TypeError(`unexpected argument "${rest[0]}" for mport vpn`);
    if (values.name || values["remote-port"]) {
      throw new TypeError("--name and --remote-port belong to `mport tcp`");
    }
    const device = values.device ?? DEFAULT_VPN_DEVICE;
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(device)) {
      throw new TypeError(`invalid --device "${device}": 1-15 letters, digits, '_', '.' or '-'`);
    }
    const idFile = values["client-id-file"] ?? defaultClientIdFile(env, os);
    vpn = {
      routes: vpnRoutes(values.routes ?? "default"),
      dns: values.dns === undefined ? null : vpnDnsList(values.dns),
      killSwitch: values["kill-switch"] === true,
      device,
      journal: idFile
        ? join(dirname(idFile), `vpn-${device}.json`)
        : `/run/mport-vpn-${device}.json`,
    };
    tunnels = [];
    if (values.config) file = parseConfigFile(readFile(values.config), values.config);
  } else if (command === "socks") {
    if (rest.length > 0) throw new TypeError(`unexpected argument "${rest[0]}" for mport socks`);
    if (values.name || values["remote-port"]) {
      throw new TypeError("--name and --remote-port belong to `mport tcp`");
    }
    const { host, port } = parseHostPort(values.listen ?? DEFAULT_SOCKS_LISTEN, "127.0.0.1", true);
    const username = values.username;
    const password = values.password ?? env.MPORT_SOCKS_PASSWORD;
    if (values.password !== undefined) {
      warnings.push(
        "--password is visible to other users in the process list: prefer MPORT_SOCKS_PASSWORD",
      );
    }
    if ((username === undefined) !== (password === undefined)) {
      throw new TypeError("--username and --password go together (or set MPORT_SOCKS_PASSWORD)");
    }
    for (const [flag, v] of [["--username", username], ["--password", password]] as const) {
      if (v !== undefined && (v.length === 0 || new TextEncoder().encode(v).byteLength > 255)) {
        throw new TypeError(`${flag} must be 1 to 255 bytes long (the SOCKS5 limit)`);
      }
    }
    egress = {
      host,
      port,
      auth: username !== undefined && password !== undefined
        ? { username, password: new Secret(password) }
        : null,
    };
    tunnels = [];
    if (values.config) file = parseConfigFile(readFile(values.config), values.config);
  } else if (command === "http") {
    if (rest.length !== 1) {
      throw new TypeError(
        "usage: mport http [HOST:]PORT|URL [--subdomain NAME | --domain HOST] [--name NAME]",
      );
    }
    if (values["remote-port"]) throw new TypeError("--remote-port belongs to `mport tcp`");
    tunnels = [httpTunnel(rest[0]!, values.name, {
      subdomain: values.subdomain,
      domain: values.domain,
      hostHeader: values["host-header"],
      basicAuth: values["basic-auth"],
      allowIp: values["allow-ip"],
      denyIp: values["deny-ip"],
      requestHeaderAdd: values["request-header-add"],
      requestHeaderRemove: values["request-header-remove"],
      responseHeaderAdd: values["response-header-add"],
      securityHeaders: values["security-headers"],
      maxBody: values["max-body"],
      localInsecure: values["local-insecure"],
    })];
    if (values.config) file = parseConfigFile(readFile(values.config), values.config);
  } else if (command === "tcp" || command === "udp") {
    if (rest.length !== 1) {
      throw new TypeError(`usage: mport ${command} [HOST:]PORT [--remote-port N] [--name NAME]`);
    }
    const remote = values["remote-port"] ? parsePort(values["remote-port"], "--remote-port") : 0;
    tunnels = [tunnelFromLocal(rest[0]!, values.name, remote, command === "udp")];
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
      `unknown command "${command}": use "mport tcp PORT", "mport http PORT", "mport udp PORT", ` +
        `"mport socks", "mport vpn", ` +
        `"mport start --config FILE" or ` +
        `"mport login TOKEN --server URL"`,
    );
  }
  const names = new Set(tunnels.map((t) => t.name));
  if (names.size !== tunnels.length) throw new TypeError("tunnel names must be unique");

  // Precedence: flags, then the environment, then --config, then the saved login, whose token
  // goes only to the server it was saved for.
  let serverText = values.server ?? env.MPORT_SERVER ?? file.server;
  let token = flagToken ?? env.MPORT_TOKEN ?? file.token;
  const saved = serverText && token ? null : readSavedLogin(loginFile, readFile);
  serverText ??= saved?.server;
  if (!serverText) {
    throw new TypeError(
      "no server: pass --server wss://HOST, set MPORT_SERVER, or save one with " +
        "`mport login TOKEN --server URL`",
    );
  }
  const { server, pathPrefix } = parseServerUrl(serverText);
  if (!token && saved) {
    if (!sameServer(saved.server, serverText)) {
      throw new TypeError(
        `no token for ${
          formatServerUrl(server, pathPrefix)
        } (the saved login is for ${saved.server}): pass --token-file FILE, set MPORT_TOKEN, or run \`mport login TOKEN --server URL\``,
      );
    }
    token = saved.token.reveal();
  }
  if (!token) {
    throw new TypeError(
      "no token: pass --token-file FILE (or --token TOKEN), set MPORT_TOKEN, or save one with " +
        "`mport login TOKEN --server URL`",
    );
  }
  const clearText = plainTextWarning(server);
  if (clearText !== null) warnings.push(clearText);
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
      clientIdFile: values["client-id-file"] ?? defaultClientIdFile(env, os),
      inspect: inspectAddress(values["no-inspect"], values.inspect, file.inspect),
      egress,
      vpn,
    },
    warnings,
  };
}
