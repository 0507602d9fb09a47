// The server's configuration: defaults, command-line parsing and validation, built once in main.ts.
import type { LogLevel } from "@logtape/logtape";
import { parseHostPort, parsePortRange, type PortRange } from "../shared/address.ts";
import { closest, parseFlags } from "../shared/cli_args.ts";
import { parseLogLevel } from "../shared/log.ts";
import { formatCidr, parseCidr } from "./client_address.ts";
import { DEFAULT_METRICS_ALLOW } from "./metrics_access.ts";
import {
  DEFAULT_PATH_PREFIX,
  HANDSHAKE_TIMEOUT_MS,
  HEARTBEAT_INTERVAL_MS,
  MAX_VPN_MTU,
  MUX_DEFAULT_BUDGET_BYTES,
} from "../shared/protocol.ts";
import { Secret } from "../shared/secret.ts";
import { keyLine, parseTomlFile, where } from "../shared/toml_file.ts";
import { parseDuration, parseSize } from "../shared/units.ts";
import { parseEgressRule } from "./egress/policy.ts";
import { parseVpnPool } from "./vpn/vpn_pool.ts";
import { ipv4ToU32 } from "../shared/ipv4.ts";
import { join } from "node:path";

/** Everything the server needs, fully defaulted and validated. */
export interface ServerConfig {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly pathPrefix: string;
  readonly tokens: readonly Secret[];
  readonly portRange: PortRange;
  readonly bindHost: string;
  readonly publicHost: string | null;
  /**
   * `--public-url`: how clients reach this server (`wss://host[:port][/prefix]`, e.g. behind
   * nginx), used in the client command printed at first start. Null: guessed from --listen.
   */
  readonly publicUrl: string | null;
  readonly tlsCert: string | null;
  /** PEM private key; wrapped so that printing the config does not print it. */
  readonly tlsKey: Secret | null;
  readonly graceMs: number;
  /**
   * `--reservation-ttl`: a tunnel's automatic port reservation expires this long after a tunnel
   * last held the port (0: never).
   */
  readonly reservationTtlMs: number;
  readonly holdTimeoutMs: number;
  readonly maxTunnelsPerClient: number;
  readonly maxConnectionsPerClient: number;
  readonly tunnelsPerMinute: number;
  readonly maxPending: number;
  readonly authFailuresPerMinute: number;
  readonly authBlockMs: number;
  /**
   * `--trusted-proxy`: CIDR blocks (canonical `address/prefix`) of reverse proxies whose
   * `X-Forwarded-For` names the client address; from any other peer the header is ignored.
   */
  readonly trustedProxies: readonly string[];
  readonly handshakeTimeoutMs: number;
  readonly heartbeatMs: number;
  readonly drainMs: number;
  readonly statsIntervalMs: number;
  /** `--db`: an SQLite path or a postgres:// URL (`--data-dir DIR` gives `DIR/mport.db`). */
  readonly db: string;
  /** Default monthly transfer quota per user in bytes (null: unlimited). */
  readonly monthlyQuotaBytes: number | null;
  /** How often usage counters are written to the store. */
  readonly usageFlushMs: number;
  /** Deadline of every store call (`--store-timeout`); the final usage flush is bounded by it. */
  readonly storeTimeoutMs: number;
  /** How often running sessions re-check their token and user (revocation, limits). */
  readonly recheckMs: number;
  readonly logLevel: LogLevel;
  readonly logFile: string | null;
  /** Per-user bytes that stream receive windows may grow by beyond the initial window. */
  readonly bufferBudgetBytes: number;
  /** Close a user connection after this long without a byte either way (0: never). */
  readonly idleTimeoutMs: number;
  /** Time an HTTP client has to send its whole request head (slowloris). */
  readonly headerTimeoutMs: number;
  /** Open HTTP connections (including data and control WebSockets) at most, and per address. */
  readonly maxHttpConnections: number;
  readonly maxHttpConnectionsPerIp: number;
  /** Connections per address that have not authenticated yet. */
  readonly maxUnauthenticatedPerIp: number;
  /**
   * `--http-domain`: HTTP tunnels are served on `NAME.<domain>` (and on custom domains assigned
   * to users). Null: HTTP tunnels are off.
   */
  readonly httpDomain: string | null;
  /** `--http-listen`: a second, plain-HTTP listener serving only the tunnels' host names. */
  readonly httpListen: { readonly host: string; readonly port: number } | null;
  /**
   * `--public-http-url-scheme`: the scheme of printed HTTP tunnel URLs; null: https when the
   * server has TLS or a trusted proxy says the client came over https, else http.
   */
  readonly publicHttpScheme: "http" | "https" | null;
  /** `--udp-idle`: a UDP tunnel's flow (one source address) with no datagram this long ends. */
  readonly udpIdleMs: number;
  /** `--egress`: clients may open connections from the server (`mport socks`); off by default. */
  readonly egress: boolean;
  /** `--egress-allow` / `--egress-deny` rules, as given (validated). */
  readonly egressAllow: readonly string[];
  readonly egressDeny: readonly string[];
  /** `--vpn-pool`: the VPN's address block (canonical `a.b.c.d/n`), or null: no VPN. */
  readonly vpnPool: string | null;
  /** `--vpn-dns`: DNS servers suggested to VPN clients. */
  readonly vpnDns: readonly string[];
  /** `--vpn-mtu`: MTU of the VPN devices. */
  readonly vpnMtu: number;
  /** `--vpn-device`: the server's TUN device. */
  readonly vpnDevice: string;
  /** Where the VPN keeps what it must restore after a crash (next to the store when it can). */
  readonly vpnStateFile: string;
  /** `--metrics-token`: a bearer token that may read /metrics from any address (null: none). */
  readonly metricsToken: Secret | null;
  /**
   * `--metrics-allow`: CIDR blocks (canonical) whose clients may read /metrics without a token;
   * the real client address counts behind a --trusted-proxy. Default: loopback only.
   */
  readonly metricsAllow: readonly string[];
}

/** Defaults for every field that has one. */
export const SERVER_DEFAULTS: Omit<ServerConfig, "tokens" | "tlsCert" | "tlsKey"> = {
  listenHost: "0.0.0.0",
  listenPort: 8080,
  pathPrefix: DEFAULT_PATH_PREFIX,
  portRange: { low: 10000, high: 10999 },
  bindHost: "0.0.0.0",
  publicHost: null,
  publicUrl: null,
  graceMs: 60_000,
  reservationTtlMs: 30 * 86_400_000,
  holdTimeoutMs: 15_000,
  maxTunnelsPerClient: 16,
  maxConnectionsPerClient: 256,
  tunnelsPerMinute: 60,
  maxPending: 256,
  authFailuresPerMinute: 10,
  authBlockMs: 5 * 60_000,
  trustedProxies: [],
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  heartbeatMs: HEARTBEAT_INTERVAL_MS,
  drainMs: 10_000,
  statsIntervalMs: 300_000,
  db: "./data/mport.db",
  monthlyQuotaBytes: null,
  usageFlushMs: 30_000,
  storeTimeoutMs: 5_000,
  recheckMs: 5_000,
  logLevel: "info",
  logFile: null,
  bufferBudgetBytes: MUX_DEFAULT_BUDGET_BYTES,
  idleTimeoutMs: 0,
  headerTimeoutMs: 10_000,
  maxHttpConnections: 10_000,
  maxHttpConnectionsPerIp: 1_000,
  maxUnauthenticatedPerIp: 64,
  httpDomain: null,
  httpListen: null,
  publicHttpScheme: null,
  udpIdleMs: 60_000,
  egress: false,
  egressAllow: [],
  egressDeny: [],
  vpnPool: null,
  vpnDns: [],
  vpnMtu: 1500,
  vpnDevice: "mportgw0",
  vpnStateFile: "/var/lib/mport/vpn-state.json",
  metricsToken: null,
  metricsAllow: DEFAULT_METRICS_ALLOW,
};

const DOMAIN_RE =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** `--http-domain`: a host name with at least two labels, lower-cased, no port or dot at the end. */
export function httpDomain(text: string): string {
  const d = text.trim().toLowerCase().replace(/^\*\./, "");
  if (!DOMAIN_RE.test(d)) {
    throw new TypeError(
      `invalid --http-domain "${text}": use a domain name like tunnels.example.com (no port, no scheme)`,
    );
  }
  return d;
}

function vpnDns(text: string): string {
  if (ipv4ToU32(text.trim()) === null) {
    throw new TypeError(`invalid --vpn-dns "${text}": give an IPv4 address, e.g. 1.1.1.1`);
  }
  return text.trim();
}

function vpnMtu(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 576 || n > MAX_VPN_MTU) {
    throw new TypeError(`invalid --vpn-mtu "${text}": give a number from 576 to ${MAX_VPN_MTU}`);
  }
  return n;
}

function httpScheme(text: string): "http" | "https" {
  if (text === "http" || text === "https") return text;
  throw new TypeError(`invalid --public-http-url-scheme "${text}": use http or https`);
}

/** Builds a config from partial fields (tests use this with port 0). */
export function serverConfig(
  fields: Partial<ServerConfig> & { tokens: readonly Secret[] },
): ServerConfig {
  const cfg: ServerConfig = { ...SERVER_DEFAULTS, tlsCert: null, tlsKey: null, ...fields };
  validate(cfg);
  return cfg;
}

function validate(cfg: ServerConfig): void {
  if ((cfg.tlsCert === null) !== (cfg.tlsKey === null)) {
    throw new TypeError("--tls-cert and --tls-key must be given together");
  }
  if (!/^(\/[A-Za-z0-9._~-]+)*$/.test(cfg.pathPrefix)) {
    throw new TypeError(
      `invalid --path-prefix "${cfg.pathPrefix}": use a path like /_mport (no trailing slash)`,
    );
  }
  for (const cidr of cfg.trustedProxies) parseCidr(cidr);
  for (const cidr of cfg.metricsAllow) parseCidr(cidr, "--metrics-allow");
  if (cfg.metricsToken !== null && cfg.metricsToken.reveal().length < 16) {
    throw new TypeError("--metrics-token must be at least 16 characters long");
  }
  if (!Number.isSafeInteger(cfg.reservationTtlMs) || cfg.reservationTtlMs < 0) {
    throw new TypeError("--reservation-ttl must be a duration >= 0 (0: never expire)");
  }
  for (
    const [name, v] of [
      ["--max-tunnels-per-client", cfg.maxTunnelsPerClient],
      ["--max-connections-per-client", cfg.maxConnectionsPerClient],
      ["--tunnels-per-minute", cfg.tunnelsPerMinute],
      ["--max-pending", cfg.maxPending],
      ["--max-http-connections", cfg.maxHttpConnections],
      ["--max-http-connections-per-ip", cfg.maxHttpConnectionsPerIp],
      ["--max-unauthenticated-per-ip", cfg.maxUnauthenticatedPerIp],
    ] as const
  ) {
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new TypeError(`${name} must be a whole number >= 1`);
    }
  }
}

/** Usage text for `mport-server --help`. */
export const SERVER_USAGE = `mport-server: publish TCP services of connected mport clients.

Usage: mport-server [options]
       mport-server COMMAND …      (user, token, port, usage, events: see below)

  --config FILE                  TOML file with these options as keys, without the dashes:
                                 listen = "127.0.0.1:8080", trusted-proxy = ["127.0.0.1/32"],
                                 grace = 60 (flags given as well win over the file)
  --db PATH|URL                  store: SQLite file or postgres://… (default ./data/mport.db,
                                 relative to the directory the server starts in)
  --data-dir DIR                 keep the SQLite store in DIR/mport.db (instead of --db)
  --listen HOST:PORT             HTTP/WebSocket address (default 0.0.0.0:8080)
  --path-prefix PATH             prefix of the tunnel endpoints (default /_mport)
  --token TOKEN                  static client token of the admin user (repeatable)
  --tokens-file FILE             file with one static token per line
  --port-range LOW-HIGH          public ports handed out (default 10000-10999)
  --bind HOST                    address public ports listen on (default 0.0.0.0)
  --public-host NAME             host name in addresses reported to clients
  --public-url URL               how clients reach the server, wss://host[:port][/prefix]
                                 (behind nginx; used in the printed client command)
  --tls-cert FILE --tls-key FILE serve HTTPS/WSS directly
  --grace SECONDS                keep a dropped client's ports this long (default 60)
  --reservation-ttl DURATION     a tunnel's stable port is kept this long after its last use,
                                 e.g. 30d, 12h; 0 = forever (default 30d)
  --hold-timeout SECONDS         hold user connections for a returning client (default 15)
  --max-tunnels-per-client N     default per-user limit (default 16)
  --max-connections-per-client N default per-user limit (default 256)
  --monthly-quota SIZE           default per-user transfer quota, e.g. 50GB (default none)
  --tunnels-per-minute N         (default 60)
  --max-pending N                unbridged connections per tunnel (default 256)
  --drain SECONDS                on shutdown, let open streams finish this long (default 10)
  --heartbeat SECONDS            control-channel ping interval (default 15)
  --handshake-timeout SECONDS    time a client has to send hello (default 10)
  --auth-failures-per-minute N   failed logins per address and token before a 5-minute block
                                 of that token (default 10); 5 times as many with any tokens
                                 block the whole address
  --trusted-proxy CIDR           believe X-Forwarded-For only from these peers, e.g.
                                 127.0.0.1/32 behind nginx on the same host (repeatable;
                                 default none: the socket address counts)
  --buffer-budget SIZE           per-user memory for fast streams' grown windows (default 16MiB)
  --idle-timeout SECONDS         close user connections idle this long, 0 = never (default 0)
  --udp-idle SECONDS             end a UDP tunnel's flow (one source) idle this long (default 60)
  --egress                       let permitted users' clients open connections from here
                                 (mport socks); loopback, private and link-local addresses
                                 are refused unless allowed
  --egress-allow RULE            allow a destination: CIDR[:PORT[-PORT]] or a domain
                                 (.example.com for it and its subdomains) (repeatable)
  --egress-deny RULE             deny one, the same forms; deny wins (repeatable)
  --vpn-pool CIDR                offer a full-tunnel VPN (mport vpn, Linux, root) with client
                                 addresses from this block, e.g. 10.8.0.0/24; the server is
                                 its first address; the egress rules apply to VPN packets
  --vpn-dns IP                   DNS server suggested to VPN clients (repeatable)
  --vpn-mtu N                    MTU of the VPN devices (default 1500)
  --vpn-device NAME              the server's TUN device (default mportgw0)
  --http-domain DOMAIN           serve HTTP tunnels on NAME.DOMAIN (wildcard DNS *.DOMAIN to
                                 this server); without it HTTP tunnels are refused
  --http-listen HOST:PORT        also serve the tunnels' sites on this plain-HTTP address (e.g.
                                 0.0.0.0:80)
  --public-http-url-scheme http|https  scheme of printed HTTP tunnel URLs (default: https with
                                 --tls-cert or behind a trusted proxy on https, else http)
  --header-timeout SECONDS       time to send an HTTP request head (default 10)
  --max-http-connections N       open HTTP/WebSocket connections at most (default 10000)
  --max-http-connections-per-ip N  of them from one address (default 1000)
  --max-unauthenticated-per-ip N   not yet authenticated, from one address (default 64)
  --metrics-token TOKEN          /metrics also answers requests with Authorization: Bearer
                                 TOKEN, from any address (at least 16 characters)
  --metrics-allow CIDR           addresses that may read /metrics without a token (repeatable;
                                 default loopback only: 127.0.0.0/8 and ::1; behind a
                                 --trusted-proxy the forwarded client address counts; none:
                                 the token only)
  --log-level LEVEL              trace, debug, info, warning, error (default info)
  --log-file FILE                also write JSON lines to FILE
  --stats-interval SECONDS       statistics log line every N seconds, 0 = off (default 300)
  --usage-flush SECONDS          write usage counters to the store this often (default 30)
  --store-timeout SECONDS        a database call taking longer fails (default 5)
  --recheck SECONDS              re-check tokens of connected clients this often (default 5)
  -h, --help                     show this help
  --version                      print the version

Environment: MPORT_TOKENS (comma-separated static tokens, added to token / --token),
MPORT_DB (as --db, when neither the command line nor the config file names the store).
`;

function seconds(text: string, flag: string, allowZero = false): number {
  const v = Number(text);
  // Check the rounded value: "0.0001" must not become a 0 ms heartbeat or timeout.
  const ms = Math.round(v * 1000);
  if (!Number.isFinite(v) || v < 0 || (!allowZero && ms === 0)) {
    throw new TypeError(`invalid ${flag} "${text}": expected a number of seconds`);
  }
  return ms;
}

/** The SQLite file `--data-dir DIR` names. */
export const DATA_DIR_DB_FILE = "mport.db";

/**
 * The store a server or admin command uses: `--db`, else `--data-dir DIR` as `DIR/mport.db`, else
 * MPORT_DB, else ./data/mport.db (relative paths are relative to the working directory).
 */
export function storeLocation(
  db: string | undefined,
  dataDir: string | undefined,
  envDb: string | undefined,
): string {
  if (db !== undefined && dataDir !== undefined) {
    throw new TypeError("--db and --data-dir both name the store: give one of them");
  }
  if (dataDir !== undefined) {
    if (dataDir.trim() === "") throw new TypeError("--data-dir needs a directory");
    return `${dataDir.replace(/(.)\/+$/, "$1")}/${DATA_DIR_DB_FILE}`.replace(/^\/\//, "/");
  }
  return db ?? envDb ?? SERVER_DEFAULTS.db;
}

/** Parses `--reservation-ttl`: a duration like `30d` or `12h`, or `0` for never. */
export function reservationTtl(text: string): number {
  if (/^\s*0+(\.0*)?\s*[smhdw]?\s*$/i.test(text)) return 0;
  try {
    return parseDuration(text);
  } catch {
    throw new TypeError(
      `invalid --reservation-ttl "${text}": use a duration like 30d or 12h, or 0 for never`,
    );
  }
}

function count(text: string, flag: string): number {
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new TypeError(`invalid ${flag} "${text}": expected a whole number >= 1`);
  }
  return v;
}

/** Result of parsing the command line: a config, or a request for help or the version. */
export type ServerArgs =
  | { readonly help: true }
  | { readonly help: false; readonly version: true }
  | { readonly help: false; readonly version?: undefined; readonly config: ServerConfig };

/**
 * Parses `--public-url`: `wss://` or `ws://` (`https://`/`http://` accepted), a host, an optional
 * port and path prefix; returns it without a trailing slash.
 */
export function parsePublicUrl(text: string): string {
  const bad = (why: string) =>
    new TypeError(`invalid --public-url "${text}": ${why}, e.g. wss://vps.example.com/_mport`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad("expected wss://host[:port][/prefix]");
  }
  const scheme = { "ws:": "ws:", "wss:": "wss:", "http:": "ws:", "https:": "wss:" }[url.protocol];
  if (!scheme || !url.hostname) throw bad("expected wss://host[:port][/prefix]");
  if (url.username || url.password || url.search || url.hash) {
    throw bad("no user, password, query or fragment");
  }
  const path = url.pathname.replace(/\/+$/, "");
  if (!/^(\/[A-Za-z0-9._~-]+)*$/.test(path)) throw bad("the path must be like /_mport");
  return `${scheme}//${url.host}${path}`;
}

/** The flags of `mport-server` (each but help and version is also a key of `--config` files). */
const SERVER_OPTIONS = {
  config: { type: "string" },
  listen: { type: "string" },
  "path-prefix": { type: "string" },
  token: { type: "string", multiple: true },
  "tokens-file": { type: "string" },
  "port-range": { type: "string" },
  bind: { type: "string" },
  "public-host": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  grace: { type: "string" },
  "reservation-ttl": { type: "string" },
  "hold-timeout": { type: "string" },
  "max-tunnels-per-client": { type: "string" },
  "max-connections-per-client": { type: "string" },
  "tunnels-per-minute": { type: "string" },
  "max-pending": { type: "string" },
  drain: { type: "string" },
  heartbeat: { type: "string" },
  "handshake-timeout": { type: "string" },
  "auth-failures-per-minute": { type: "string" },
  "trusted-proxy": { type: "string", multiple: true },
  "log-level": { type: "string" },
  "log-file": { type: "string" },
  "stats-interval": { type: "string" },
  db: { type: "string" },
  "data-dir": { type: "string" },
  "monthly-quota": { type: "string" },
  "usage-flush": { type: "string" },
  "store-timeout": { type: "string" },
  recheck: { type: "string" },
  "buffer-budget": { type: "string" },
  "idle-timeout": { type: "string" },
  "http-domain": { type: "string" },
  egress: { type: "boolean" },
  "vpn-pool": { type: "string" },
  "vpn-dns": { type: "string", multiple: true },
  "vpn-mtu": { type: "string" },
  "vpn-device": { type: "string" },
  "udp-idle": { type: "string" },
  "egress-allow": { type: "string", multiple: true },
  "egress-deny": { type: "string", multiple: true },
  "http-listen": { type: "string" },
  "public-http-url-scheme": { type: "string" },
  "header-timeout": { type: "string" },
  "max-http-connections": { type: "string" },
  "max-http-connections-per-ip": { type: "string" },
  "max-unauthenticated-per-ip": { type: "string" },
  "public-url": { type: "string" },
  "metrics-token": { type: "string" },
  "metrics-allow": { type: "string", multiple: true },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

type FlagValues = {
  [K in keyof typeof SERVER_OPTIONS]?: (typeof SERVER_OPTIONS)[K] extends { multiple: true }
    ? string[]
    : (typeof SERVER_OPTIONS)[K] extends { type: "boolean" } ? boolean
    : string;
};

/** A `--config` file's settings as flag values, and how to point an error at its line. */
interface ConfigFile {
  readonly values: FlagValues;
  /** Prefixes an error about a file setting (one not overridden by `flags`) with FILE:LINE. */
  locate(e: unknown, flags: FlagValues): unknown;
}

/** The keys of a server config file: every flag but --config, --help and --version. */
const FILE_KEYS = Object.keys(SERVER_OPTIONS).filter((k) =>
  !["config", "help", "version"].includes(k)
);

/**
 * Reads `mport-server --config FILE`: TOML whose keys are the flags' names (`listen =
 * "127.0.0.1:8080"`, `trusted-proxy = ["127.0.0.1/32"]`, `grace = 60`). Unknown keys and wrong
 * types are errors naming FILE:LINE.
 */
function readConfigFile(path: string, readFile: (path: string) => string): ConfigFile {
  const text = readFile(path);
  const doc = parseTomlFile(text, path);
  const at = (k: string) => where(path, keyLine(text, k));
  const values: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(doc)) {
    if (!FILE_KEYS.includes(k)) {
      const guess = closest(k, FILE_KEYS);
      throw new TypeError(
        `${at(k)}: unknown key "${k}"${guess ? `: did you mean ${guess}?` : ""}`,
      );
    }
    const option = (SERVER_OPTIONS as Record<string, { multiple?: boolean; type: string }>)[k]!;
    const multiple = option.multiple;
    if (option.type === "boolean") {
      if (typeof v !== "boolean") throw new TypeError(`${at(k)}: "${k}" must be true or false`);
      (values as Record<string, unknown>)[k] = v;
      continue;
    }
    const scalar = (x: unknown) =>
      typeof x === "string" ? x : typeof x === "number" && Number.isFinite(x) ? String(x) : null;
    if (multiple) {
      const list = Array.isArray(v) ? v.map(scalar) : [scalar(v)];
      if (list.some((x) => x === null)) {
        throw new TypeError(`${at(k)}: "${k}" must be a string or an array of strings`);
      }
      values[k] = list as string[];
    } else {
      const one = scalar(v);
      if (one === null) throw new TypeError(`${at(k)}: "${k}" must be a string or a number`);
      values[k] = one;
    }
  }
  return {
    values: values as FlagValues,
    locate(e, flags) {
      if (!(e instanceof TypeError)) return e;
      const fromFile = Object.keys(values).filter((k) =>
        (flags as Record<string, unknown>)[k] === undefined
      );
      const named = fromFile.find((k) => new RegExp(`--${k}(?![\\w-])`).test(e.message)) ??
        fromFile.find((k) => {
          const v = values[k]!;
          return (Array.isArray(v) ? v : [v]).some((x) => e.message.includes(`"${x}"`));
        });
      return new TypeError(`${named ? at(named) : path}: ${e.message}`);
    },
  };
}

/** The entries of `values` that are set, so that spreading them overrides only those. */
function definedOnly(values: FlagValues): FlagValues {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined));
}

/**
 * Parses `mport-server` arguments and environment. File reads (`--tokens-file`) go through
 * `readFile` so that tests need no files.
 */
export function parseServerArgs(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  readFile: (path: string) => string,
): ServerArgs {
  const { values: flags } = parseFlags({
    args: [...args],
    strict: true,
    allowPositionals: false,
    options: SERVER_OPTIONS,
  });
  if (flags.help) return { help: true };
  if (flags.version) return { help: false, version: true };
  const file = flags.config === undefined ? null : readConfigFile(flags.config, readFile);
  // Flags beat the file, which beats the environment (read below) and the defaults.
  const fileValues = { ...file?.values };
  if (flags.db !== undefined || flags["data-dir"] !== undefined) {
    // --db or --data-dir on the command line replaces the file's store, whichever way it names it.
    delete fileValues.db;
    delete fileValues["data-dir"];
  }
  const values: FlagValues = { ...fileValues, ...definedOnly(flags) };
  try {
    return { help: false, config: buildConfig(values, env, readFile) };
  } catch (e) {
    throw file === null ? e : file.locate(e, flags);
  }
}

function buildConfig(
  values: FlagValues,
  env: Readonly<Record<string, string | undefined>>,
  readFile: (path: string) => string,
): ServerConfig {
  const tokens: string[] = [...(values.token ?? [])];
  if (values["tokens-file"]) {
    const text = readFile(values["tokens-file"]);
    tokens.push(...text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#")));
  }
  if (env.MPORT_TOKENS) {
    tokens.push(...env.MPORT_TOKENS.split(",").map((t) => t.trim()).filter(Boolean));
  }
  for (const t of tokens) {
    if (t.length < 8) throw new TypeError("every token must be at least 8 characters long");
  }
  const listen = parseHostPort(values.listen ?? "0.0.0.0:8080", "0.0.0.0", true);
  const d = SERVER_DEFAULTS;
  const flag = (name: string) => (values as Record<string, unknown>)[name] as string | undefined;
  const secs = (name: string, fallback: number, allowZero = false) => {
    const v = flag(name);
    return v ? seconds(v, `--${name}`, allowZero) : fallback;
  };
  const num = (name: string, fallback: number) => {
    const v = flag(name);
    return v ? count(v, `--${name}`) : fallback;
  };
  return serverConfig({
    listenHost: listen.host,
    listenPort: listen.port,
    pathPrefix: values["path-prefix"]?.replace(/\/+$/, "") ?? d.pathPrefix,
    tokens: tokens.map((t) => new Secret(t)),
    portRange: values["port-range"] ? parsePortRange(values["port-range"]) : d.portRange,
    bindHost: values.bind ?? d.bindHost,
    publicHost: values["public-host"] ?? null,
    publicUrl: values["public-url"] ? parsePublicUrl(values["public-url"]) : null,
    tlsCert: values["tls-cert"] ? readFile(values["tls-cert"]) : null,
    tlsKey: values["tls-key"] ? new Secret(readFile(values["tls-key"])) : null,
    graceMs: secs("grace", d.graceMs, true),
    reservationTtlMs: values["reservation-ttl"]
      ? reservationTtl(values["reservation-ttl"])
      : d.reservationTtlMs,
    holdTimeoutMs: secs("hold-timeout", d.holdTimeoutMs, true),
    maxTunnelsPerClient: num("max-tunnels-per-client", d.maxTunnelsPerClient),
    maxConnectionsPerClient: num("max-connections-per-client", d.maxConnectionsPerClient),
    tunnelsPerMinute: num("tunnels-per-minute", d.tunnelsPerMinute),
    maxPending: num("max-pending", d.maxPending),
    drainMs: secs("drain", d.drainMs, true),
    heartbeatMs: secs("heartbeat", d.heartbeatMs),
    handshakeTimeoutMs: secs("handshake-timeout", d.handshakeTimeoutMs),
    authFailuresPerMinute: num("auth-failures-per-minute", d.authFailuresPerMinute),
    trustedProxies: (values["trusted-proxy"] ?? []).map((t) => formatCidr(parseCidr(t))),
    statsIntervalMs: secs("stats-interval", d.statsIntervalMs, true),
    logLevel: values["log-level"] ? parseLogLevel(values["log-level"]) : d.logLevel,
    logFile: values["log-file"] ?? null,
    db: storeLocation(values.db, values["data-dir"], env.MPORT_DB),
    monthlyQuotaBytes: values["monthly-quota"] && values["monthly-quota"] !== "none"
      ? parseSize(values["monthly-quota"])
      : null,
    usageFlushMs: secs("usage-flush", d.usageFlushMs),
    storeTimeoutMs: secs("store-timeout", d.storeTimeoutMs),
    recheckMs: secs("recheck", d.recheckMs),
    bufferBudgetBytes: values["buffer-budget"]
      ? parseSize(values["buffer-budget"])
      : d.bufferBudgetBytes,
    idleTimeoutMs: secs("idle-timeout", d.idleTimeoutMs, true),
    headerTimeoutMs: secs("header-timeout", d.headerTimeoutMs),
    maxHttpConnections: num("max-http-connections", d.maxHttpConnections),
    maxHttpConnectionsPerIp: num("max-http-connections-per-ip", d.maxHttpConnectionsPerIp),
    maxUnauthenticatedPerIp: num("max-unauthenticated-per-ip", d.maxUnauthenticatedPerIp),
    httpDomain: values["http-domain"] ? httpDomain(values["http-domain"]) : null,
    egress: (values.egress as boolean | undefined) === true,
    udpIdleMs: secs("udp-idle", d.udpIdleMs),
    egressAllow: (values["egress-allow"] ?? []).map((r) =>
      parseEgressRule(r, "--egress-allow").text
    ),
    egressDeny: (values["egress-deny"] ?? []).map((r) => parseEgressRule(r, "--egress-deny").text),
    vpnPool: values["vpn-pool"] ? parseVpnPool(values["vpn-pool"]).text : null,
    vpnDns: (values["vpn-dns"] ?? []).map(vpnDns),
    vpnMtu: values["vpn-mtu"] ? vpnMtu(values["vpn-mtu"]) : d.vpnMtu,
    vpnDevice: values["vpn-device"] ?? d.vpnDevice,
    vpnStateFile: values["data-dir"] ? join(values["data-dir"], "vpn-state.json") : d.vpnStateFile,
    httpListen: values["http-listen"]
      ? (({ host, port }) => ({ host, port }))(
        parseHostPort(values["http-listen"], "0.0.0.0", true),
      )
      : null,
    publicHttpScheme: values["public-http-url-scheme"]
      ? httpScheme(values["public-http-url-scheme"])
      : null,
    metricsToken: values["metrics-token"] ? new Secret(values["metrics-token"]) : null,
    // `--metrics-allow none`: the token only.
    metricsAllow: values["metrics-allow"]
      ? values["metrics-allow"].filter((t) => t !== "none").map((t) =>
        formatCidr(parseCidr(t, "--metrics-allow"))
      )
      : d.metricsAllow,
  });
}
