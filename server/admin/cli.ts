// Admin commands of mport-server (user, token, port, domain, usage, events) acting on the configured store.
import { parsePortRange } from "../../shared/address.ts";
import { closest, parseFlags, UsageError } from "../../shared/cli_args.ts";
import { formatSize, parseDuration, parseSince, parseSize } from "../../shared/units.ts";
import { ManagementService, OPERATOR, publicUser, tokenState } from "../api/service.ts";
import {
  httpDomain,
  parsePublicUrl,
  reservationTtl,
  type ServerConfig,
  serverConfig,
} from "../config.ts";
import { clientCommand } from "../first_start.ts";
import { humanAgo, humanBytes, humanTime } from "./human.ts";
import {
  type Store,
  TOKEN_SCOPES,
  type TokenScope,
  type User,
  USER_PERMISSIONS,
  type UserLimits,
  type UserPermissions,
} from "../store/store.ts";

/** Where admin commands read and write; injectable for tests. */
export interface AdminIo {
  out(line: string): void;
  /** Reads a password: from stdin when `fromStdin`, else from an interactive prompt. */
  readPassword(fromStdin: boolean): Promise<string>;
  now(): number;
  /**
   * The server's settings from `--config FILE` (its port range, reservation TTL, public URL, …);
   * absent: the server's defaults.
   */
  readonly server?: ServerConfig;
}

/** Names of the admin command groups, to tell them apart from server flags. */
export const ADMIN_COMMANDS = ["user", "token", "port", "domain", "usage", "events"] as const;

/** Usage of the admin commands. */
export const ADMIN_USAGE = `Admin commands (act on the store given by --db / MPORT_DB):
  mport-server user add NAME [--admin] [--email E] [--password-stdin] [LIMITS] [PERMISSIONS]
  mport-server user set NAME [LIMITS] [PERMISSIONS]
  mport-server user list
  mport-server user disable NAME | user enable NAME
  mport-server token create --user NAME [--label L] [--expires 30d] [--scope client|api|admin]
  mport-server token list [--user NAME]
  mport-server token revoke ID
  mport-server port reserve PORT --user NAME [--tunnel NAME]
  mport-server port release PORT
  mport-server port list [--user NAME]
  mport-server domain add HOST --user NAME
  mport-server domain remove HOST
  mport-server domain list [--user NAME]
  mport-server usage [--user NAME] [--since 7d|2026-11-01]
  mport-server events [--user NAME] [--since 24h] [--limit N]
LIMITS: --max-tunnels N --max-connections N --port-range LOW-HIGH --quota 10GB
        --max-reserved-ports N (use "default" to clear)
PERMISSIONS: --egress | --no-egress  --vpn | --no-vpn (off unless granted; static --token
        tokens have them)
Live view of the running server (over its HTTP port, with an admin user's token):
  mport-server clients [--server URL] [--token T | --token-file F] [--json]
  mport-server tunnels [--server URL] [--token T | --token-file F] [--json]
Every listing takes --json. Help on one command: mport-server COMMAND [ACTION] --help.`;

const DB_LINE = `  --db PATH|URL        the store (default ./data/mport.db, or MPORT_DB)
  --data-dir DIR       the SQLite store DIR/mport.db (instead of --db)`;
const CONFIG_LINE =
  `  --config FILE        the server's config file: its store, port range, reservation TTL and
                       public URL (flags given here win)`;
const JSON_LINE = "  --json               machine-readable output";
const LIMITS_LINES =
  `  --max-tunnels N      tunnels at once ("default": the server's --max-tunnels-per-client)
  --max-connections N  concurrent user connections ("default": the server's limit)
  --port-range LOW-HIGH  public ports the user may ask for ("default": the server's range)
  --quota SIZE         transfer per calendar month, e.g. 10GB ("default" or "none": no quota)
  --max-reserved-ports N  stable ports kept for the user's tunnel names, >= 1; the least
                       recently used is recycled beyond it ("default": the user's max tunnels)`;
const PERMISSION_LINES =
  `  --egress, --no-egress  grant or withdraw connections out through the server (SOCKS5);
                       off unless granted, also for admins (static --token tokens have it)
  --vpn, --no-vpn      grant or withdraw the VPN (off unless granted)`;
const TTL_LINE =
  `  --reservation-ttl D  the server's --reservation-ttl, for expiry times (default 30d; 0: never)`;

/** Usage of each admin command, by group and action ("" for the group itself). */
const ADMIN_HELP: Record<string, Record<string, string>> = {
  user: {
    "": `Usage: mport-server user ACTION …
  user add NAME [--admin] [--email E] [--password-stdin] [LIMITS] [PERMISSIONS]
                                              create a user
  user set NAME [LIMITS] [PERMISSIONS]        change a user's limits and permissions
  user list [--json]                          list users
  user disable NAME | user enable NAME        block or unblock a user
PERMISSIONS: --egress/--no-egress, --vpn/--no-vpn (off unless granted, also for admins)
${DB_LINE}
Help on one action: mport-server user ACTION --help.`,
    add: `Usage: mport-server user add NAME [--admin] [--email EMAIL] [--password-stdin] [LIMITS]
       [PERMISSIONS]
Creates a user (NAME: letters, digits, '.', '_', '-'). The password is asked twice on a terminal,
or read as one line from stdin with --password-stdin; at least 8 characters.
  --admin              role admin instead of user
  --email EMAIL        contact address
  --password-stdin     read the password from stdin
${LIMITS_LINES}
${PERMISSION_LINES}
${DB_LINE}
${JSON_LINE}`,
    set: `Usage: mport-server user set NAME [LIMITS] [PERMISSIONS]
Changes a user's limits ("default" clears one) and permissions.
${LIMITS_LINES}
${PERMISSION_LINES}
${DB_LINE}
${JSON_LINE}`,
    list: `Usage: mport-server user list [--json]
Lists users with their role, state, limits, permissions and last seen time.
${DB_LINE}
${JSON_LINE}`,
    disable: `Usage: mport-server user disable NAME
Blocks a user: their clients are disconnected within --recheck seconds, new ones are refused.
${DB_LINE}`,
    enable: `Usage: mport-server user enable NAME
Unblocks a disabled user.
${DB_LINE}`,
  },
  token: {
    "": `Usage: mport-server token ACTION …
  token create --user NAME [--label L] [--expires 30d]   a new client token, shown once
  token list [--user NAME] [--json]                       tokens (never their values)
  token revoke ID                                         revoke; its clients are disconnected
${DB_LINE}
Help on one action: mport-server token ACTION --help.`,
    create: `Usage: mport-server token create --user NAME [--label LABEL] [--expires DURATION]
Creates a client token for a user and prints it once (only its hash is stored), with a client
command line that uses it.
  --user NAME          owner of the token (required)
  --label LABEL        what it is for, e.g. laptop
  --expires DURATION   e.g. 90d, 12h (default: never)
  --scope SCOPE        client: tunnels only (default); api: also the REST API /api/v1 as this
                       user; admin: everything, the API as an admin (admin users only)
  --public-url URL     how clients reach the server, for the printed client command
                       (default: the server's --public-url from --config, else a guess)
${DB_LINE}
${CONFIG_LINE}
${JSON_LINE}`,
    list: `Usage: mport-server token list [--user NAME] [--json]
Lists tokens: id, user, label, state, created, expires, last used.
  --user NAME          only this user's tokens
${DB_LINE}
${JSON_LINE}`,
    revoke: `Usage: mport-server token revoke ID
Revokes a token (ID from token list); clients using it are disconnected within seconds.
${DB_LINE}`,
  },
  port: {
    "": `Usage: mport-server port ACTION …
  port reserve PORT --user NAME [--tunnel NAME]   hold a public port for a user (never expires)
  port release PORT                               free a reserved port
  port list [--user NAME] [--json]                reserved ports, last use and expiry
${DB_LINE}
Help on one action: mport-server port ACTION --help.`,
    reserve: `Usage: mport-server port reserve PORT --user NAME [--tunnel NAME]
Reserves a public port for a user (and one of their tunnels); nobody else gets it. Such an explicit
reservation never expires and is never recycled (tunnels' automatic ones do, see port list).
  --user NAME          owner (required)
  --tunnel NAME        the tunnel name that gets this port
  --port-range LOW-HIGH  the server's --port-range: a port outside it is refused (default: from
                       --config, else 10000-10999)
${TTL_LINE}
${DB_LINE}
${CONFIG_LINE}`,
    release: `Usage: mport-server port release PORT
Frees a reserved port.
${DB_LINE}`,
    list: `Usage: mport-server port list [--user NAME] [--reservation-ttl 30d] [--json]
Lists reserved ports: explicit (port reserve; never expire) or automatic (a tunnel's stable port;
expires --reservation-ttl after a tunnel last held it), with last use and expiry.
  --user NAME          only this user's ports
${TTL_LINE}
${DB_LINE}
${JSON_LINE}`,
  },
  domain: {
    "": `Usage: mport-server domain ACTION …
  domain add HOST --user NAME       assign a custom domain to a user for their HTTP tunnels
  domain remove HOST                free a domain or a tunnel's subdomain
  domain list [--user NAME] [--json]  domains and subdomains, with their tunnel and last use
${DB_LINE}
Help on one action: mport-server domain ACTION --help.`,
    add: `Usage: mport-server domain add HOST --user NAME
Assigns a custom domain (e.g. app.example.org) to a user: only their HTTP tunnels may be served
on it (mport --domain HOST). Point the name's DNS at the server first.
  --user NAME          owner (required)
  --http-domain DOMAIN  the server's --http-domain: names under it are refused (they are handed
                       out as subdomains); default: from --config, else not checked
${DB_LINE}
${CONFIG_LINE}`,
    remove: `Usage: mport-server domain remove HOST
Frees a custom domain, or a subdomain a tunnel holds (it may get another one next time).
${DB_LINE}`,
    list: `Usage: mport-server domain list [--user NAME] [--json]
Lists host names of HTTP tunnels: custom domains (kind domain, assigned with domain add) and
subdomains of the HTTP domain (kind subdomain, kept for a user's tunnel name), with the tunnel last
served on each and when.
  --user NAME          only this user's host names
${DB_LINE}
${JSON_LINE}`,
  },
  usage: {
    "": `Usage: mport-server usage [--user NAME] [--since 7d|2026-11-01] [--json]
Hourly bytes in and out, connections and errors per tunnel.
  --user NAME          only this user
  --since WHEN         a duration back from now (7d, 24h) or a date
${DB_LINE}
${JSON_LINE}`,
  },
  events: {
    "": `Usage: mport-server events [--user NAME] [--since 24h] [--limit N] [--json]
The audit log, newest first: users, tokens, ports, clients, tunnels, failed logins.
  --user NAME          only events of this user
  --since WHEN         a duration back from now (24h, 7d) or a date
  --limit N            at most N events (default 100)
${DB_LINE}
${JSON_LINE}`,
  },
};

/** The actions of an admin command group (empty for `usage` and `events`). */
function actionsOf(group: string): string[] {
  return Object.keys(ADMIN_HELP[group] ?? {}).filter((a) => a !== "");
}

/**
 * Usage text of `mport-server GROUP [ACTION]`: the action's when it is known, else the group's;
 * null for an unknown group.
 */
export function adminUsage(group: string, action?: string): string | null {
  const help = ADMIN_HELP[group];
  if (!help) return null;
  return (action !== undefined ? help[action] : undefined) ?? help[""]!;
}

/** `mport-server user add --help` (or the group's, or the program's) for an admin command line. */
export function adminHelpCommand(args: readonly string[]): string {
  const [group, action] = args;
  if (group === undefined || !ADMIN_HELP[group]) return "mport-server --help";
  return action !== undefined && actionsOf(group).includes(action)
    ? `mport-server ${group} ${action} --help`
    : `mport-server ${group} --help`;
}

/** Formats rows as an aligned table with a header. */
export function formatTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

function iso(t: number | null): string {
  return t === null ? "-" : new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** `--reservation-ttl` of an admin command (the server's default when absent). */
function reservationTtlOf(text: string | undefined, server: ServerConfig): number {
  return text === undefined ? server.reservationTtlMs : reservationTtl(text);
}

function limitText(v: number | null, size = false): string {
  if (v === null) return "default";
  return size ? formatSize(v) : String(v);
}

const LIMIT_OPTIONS = {
  "max-tunnels": { type: "string" },
  "max-connections": { type: "string" },
  "port-range": { type: "string" },
  quota: { type: "string" },
  "max-reserved-ports": { type: "string" },
} as const;

function parseLimits(values: Record<string, string | boolean | undefined>): Partial<UserLimits> {
  const out: { -readonly [K in keyof UserLimits]?: UserLimits[K] } = {};
  const num = (flag: string, v: string): number | null => {
    if (v === "default") return null;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new TypeError(`invalid --${flag} "${v}": expected a whole number`);
    }
    return n;
  };
  const t = values["max-tunnels"];
  if (typeof t === "string") out.maxTunnels = num("max-tunnels", t);
  const c = values["max-connections"];
  if (typeof c === "string") out.maxConnections = num("max-connections", c);
  const r = values["port-range"];
  if (typeof r === "string") {
    if (r === "default") {
      out.portLow = null;
      out.portHigh = null;
    } else {
      const range = parsePortRange(r);
      out.portLow = range.low;
      out.portHigh = range.high;
    }
  }
  const q = values.quota;
  if (typeof q === "string") {
    out.monthlyQuotaBytes = q === "default" || q === "none" ? null : parseSize(q);
  }
  const rp = values["max-reserved-ports"];
  if (typeof rp === "string") {
    const n = num("max-reserved-ports", rp);
    if (n === 0) {
      throw new TypeError('invalid --max-reserved-ports "0": expected a whole number >= 1');
    }
    out.maxReservedPorts = n;
  }
  return out;
}

const PERMISSION_OPTIONS = {
  egress: { type: "boolean" },
  "no-egress": { type: "boolean" },
  vpn: { type: "boolean" },
  "no-vpn": { type: "boolean" },
} as const;

/** `--egress` / `--no-egress` and `--vpn` / `--no-vpn`: the permissions to grant or withdraw. */
function parsePermissions(
  values: Record<string, string | boolean | undefined>,
): Partial<UserPermissions> {
  const out: { -readonly [K in keyof UserPermissions]?: boolean } = {};
  for (const key of USER_PERMISSIONS) {
    const grant = values[key] === true;
    const withdraw = values[`no-${key}`] === true;
    if (grant && withdraw) {
      throw new TypeError(`--${key} and --no-${key} contradict each other: give one of them`);
    }
    if (grant || withdraw) out[key] = grant;
  }
  return out;
}

/** `egress,vpn`, one of them, or `-`. */
function permissionsText(u: User): string {
  return USER_PERMISSIONS.filter((p) => u[p]).join(",") || "-";
}

async function needUser(service: ManagementService, name: string | undefined): Promise<User> {
  if (!name) throw new TypeError("--user NAME is required");
  return await service.user(name);
}

function userRow(u: User): string[] {
  const range = u.limits.portLow === null ? "default" : `${u.limits.portLow}-${u.limits.portHigh}`;
  return [
    String(u.id),
    u.name,
    u.role,
    u.disabled ? "disabled" : "active",
    u.email ?? "-",
    limitText(u.limits.maxTunnels),
    limitText(u.limits.maxConnections),
    range,
    limitText(u.limits.monthlyQuotaBytes, true),
    limitText(u.limits.maxReservedPorts),
    permissionsText(u),
    iso(u.createdAt),
    iso(u.lastSeenAt),
  ];
}

const USER_HEADERS = [
  "ID",
  "NAME",
  "ROLE",
  "STATE",
  "EMAIL",
  "TUNNELS",
  "CONNS",
  "PORTS",
  "QUOTA",
  "RESERVED",
  "PERMISSIONS",
  "CREATED",
  "LAST SEEN",
];

function parseAdminFlags(args: readonly string[]) {
  return parseFlags({
    args: [...args],
    strict: true,
    allowPositionals: true,
    options: {
      ...LIMIT_OPTIONS,
      ...PERMISSION_OPTIONS,
      admin: { type: "boolean" },
      email: { type: "string" },
      "password-stdin": { type: "boolean" },
      user: { type: "string" },
      label: { type: "string" },
      expires: { type: "string" },
      scope: { type: "string" },
      tunnel: { type: "string" },
      since: { type: "string" },
      limit: { type: "string" },
      json: { type: "boolean" },
      db: { type: "string" },
      "data-dir": { type: "string" },
      "reservation-ttl": { type: "string" },
      config: { type: "string" },
      "public-url": { type: "string" },
      "http-domain": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

/**
 * Checks an admin command line before any store is opened: returns the usage text to print for
 * `--help`, or null when the command should run. Throws a `UsageError` for bad flags or an
 * unknown action.
 */
export function adminPreflight(args: readonly string[]): string | null {
  const { values, positionals } = parseAdminFlags(args);
  const [group = "", action] = positionals;
  const actions = actionsOf(group);
  if (values.help) return adminUsage(group, action) ?? ADMIN_USAGE;
  if (actions.length > 0 && (action === undefined || !actions.includes(action))) {
    const guess = action === undefined ? null : closest(action, actions);
    throw new UsageError(
      action === undefined
        ? `"${group}" needs an action: ${actions.join(", ")}`
        : `unknown command "${group} ${action}": ${
          guess ? `did you mean ${group} ${guess}?` : `use ${actions.join(", ")}`
        }`,
    );
  }
  return null;
}

/**
 * Runs one admin command. Returns the exit code; user mistakes throw `TypeError` with a message
 * for the operator.
 */
export async function runAdmin(
  args: readonly string[],
  store: Store,
  io: AdminIo,
): Promise<number> {
  const { values, positionals } = parseAdminFlags(args);
  const [group, action, ...rest] = positionals;
  const json = values.json === true;
  const print = (headers: string[], rows: string[][], data: unknown) =>
    io.out(json ? JSON.stringify(data, null, 2) : formatTable(headers, rows));
  const now = io.now();
  const server = io.server ?? serverConfig({ tokens: [] });
  const service = new ManagementService(store, server, () => now);
  const userNames = () => service.userNames();

  switch (group) {
    case "user": {
      if (action === "add") {
        const name = rest[0];
        if (!name || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) {
          throw new TypeError("user add needs a NAME of letters, digits, '.', '_' or '-'");
        }
        const password = await io.readPassword(values["password-stdin"] === true);
        if (password.length < 8) {
          throw new TypeError("the password must be at least 8 characters long");
        }
        const user = await service.createUser(OPERATOR, {
          name,
          password,
          email: values.email ?? null,
          role: values.admin ? "admin" : "user",
          limits: parseLimits(values),
          ...parsePermissions(values),
        });
        print(USER_HEADERS, [userRow(user)], publicUser(user));
        return 0;
      }
      if (action === "set") {
        const user = await needUser(service, rest[0]);
        const limits = parseLimits(values);
        const permissions = parsePermissions(values);
        if (Object.keys(limits).length === 0 && Object.keys(permissions).length === 0) {
          throw new TypeError(
            "user set needs at least one of --max-tunnels, --max-connections, --port-range, " +
              "--quota, --max-reserved-ports, --egress, --no-egress, --vpn, --no-vpn",
          );
        }
        let updated = user;
        if (Object.keys(limits).length > 0) {
          updated = await service.setLimits(OPERATOR, user.name, limits);
        }
        if (Object.keys(permissions).length > 0) {
          updated = await service.setPermissions(OPERATOR, user.name, permissions);
        }
        print(USER_HEADERS, [userRow(updated)], publicUser(updated));
        return 0;
      }
      if (action === "list") {
        const users = await service.listUsers(OPERATOR);
        print(USER_HEADERS, users.map(userRow), users.map(publicUser));
        return 0;
      }
      if (action === "disable" || action === "enable") {
        const user = await needUser(service, rest[0]);
        await service.setDisabled(OPERATOR, user.name, action === "disable");
        io.out(`user ${user.name} ${action}d`);
        return 0;
      }
      throw new TypeError(
        `unknown command "user ${action ?? ""}": use add, set, list, disable or enable`,
      );
    }
    case "token": {
      if (action === "create") {
        const user = await needUser(service, values.user);
        const expiresAt = values.expires ? now + parseDuration(values.expires) : null;
        const scope = values.scope ?? "client";
        if (!(TOKEN_SCOPES as readonly string[]).includes(scope)) {
          throw new TypeError(`invalid --scope "${scope}": use client, api or admin`);
        }
        const { record: rec, token } = await service.createToken(OPERATOR, {
          user,
          label: values.label ?? "",
          expiresAt,
          scope: scope as TokenScope,
        });
        if (json) {
          io.out(
            JSON.stringify(
              { id: rec.id, user: user.name, label: rec.label, expiresAt, token },
              null,
              2,
            ),
          );
        } else {
          io.out(
            `token ${rec.id} for ${user.name}${rec.label ? ` (${rec.label})` : ""}, expires ${
              iso(expiresAt)
            }`,
          );
          io.out(`${token}`);
          io.out("This token is shown only once; store it now. Connect a client with it:");
          // --public-url of this command, else the server's (--config), else the first start's guess.
          const cfg = values["public-url"]
            ? { ...server, publicUrl: parsePublicUrl(values["public-url"]) }
            : server;
          const addr = {
            transport: "tcp",
            hostname: cfg.listenHost,
            port: cfg.listenPort,
          } as const;
          io.out(`  ${clientCommand(cfg, addr, token)}`);
          if (cfg.publicUrl === null) {
            io.out(
              "  (the --server URL is a guess: pass --public-url wss://HOST[:PORT][/PREFIX], or " +
                "--config with the server's config file, to print the one clients use)",
            );
          }
        }
        return 0;
      }
      if (action === "list") {
        const user = values.user ? await needUser(service, values.user) : null;
        const tokens = await store.listTokens(user?.id);
        const names = await userNames();
        const state = (t: (typeof tokens)[number]) => tokenState(t, now);
        print(
          ["ID", "USER", "LABEL", "STATE", "CREATED", "EXPIRES", "LAST USED"],
          tokens.map((t) => [
            String(t.id),
            names.get(t.userId) ?? String(t.userId),
            t.label || "-",
            state(t),
            iso(t.createdAt),
            iso(t.expiresAt),
            iso(t.lastUsedAt),
          ]),
          tokens.map(({ hash: _hash, ...t }) => ({
            ...t,
            user: names.get(t.userId),
            state: state({ ...t, hash: "" }),
          })),
        );
        return 0;
      }
      if (action === "revoke") {
        const id = Number(rest[0]);
        if (!Number.isSafeInteger(id) || id <= 0) {
          throw new TypeError("token revoke needs a token ID (see: token list)");
        }
        if ((await service.revokeToken(OPERATOR, id)) === "already") {
          io.out(`token ${id} was already revoked`);
          return 0;
        }
        io.out(`token ${id} revoked; clients using it are disconnected within seconds`);
        return 0;
      }
      throw new TypeError(`unknown command "token ${action ?? ""}": use create, list or revoke`);
    }
    case "port": {
      if (action === "reserve") {
        const port = Number(rest[0]);
        if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
          throw new TypeError("port reserve needs a PORT");
        }
        const user = await needUser(service, values.user);
        // A port the server never listens on would be reserved for nothing.
        const range = values["port-range"]
          ? parsePortRange(values["port-range"])
          : server.portRange;
        await service.reservePort(OPERATOR, {
          port,
          user,
          tunnel: values.tunnel ?? null,
          range,
          ttlMs: reservationTtlOf(values["reservation-ttl"], server),
        });
        io.out(
          `port ${port} reserved for ${user.name}${
            values.tunnel ? ` (tunnel ${values.tunnel})` : ""
          }`,
        );
        return 0;
      }
      if (action === "release") {
        const port = Number(rest[0]);
        if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
          throw new TypeError("port release needs a PORT");
        }
        if (!(await service.releasePort(OPERATOR, port))) {
          io.out(`port ${port} was not reserved`);
          return 0;
        }
        io.out(`port ${port} released`);
        return 0;
      }
      if (action === "list") {
        const user = values.user ? await needUser(service, values.user) : null;
        const list = await store.listReservations(user?.id);
        const names = await userNames();
        const ttl = reservationTtlOf(values["reservation-ttl"], server);
        const expiresAt = (r: (typeof list)[number]) => service.expiresAt(r, ttl);
        const expiry = (r: (typeof list)[number]) => {
          const at = expiresAt(r);
          return at === null ? "never" : at <= now ? "expired" : iso(at);
        };
        print(
          ["PORT", "USER", "TUNNEL", "KIND", "SINCE", "LAST USED", "EXPIRES"],
          list.map((r) => [
            String(r.port),
            names.get(r.userId) ?? String(r.userId),
            r.tunnel ?? "-",
            r.explicit ? "explicit" : "automatic",
            iso(r.createdAt),
            iso(r.lastUsedAt),
            expiry(r),
          ]),
          list.map((r) => ({
            ...r,
            user: names.get(r.userId),
            expiresAt: expiresAt(r),
            expired: expiry(r) === "expired",
          })),
        );
        return 0;
      }
      throw new TypeError(`unknown command "port ${action ?? ""}": use reserve, release or list`);
    }
    case "domain": {
      if (action === "add") {
        if (!rest[0]) throw new TypeError("domain add needs a HOST, e.g. app.example.org");
        const user = await needUser(service, values.user);
        // Names under the server's HTTP domain are subdomains, handed out to tunnels.
        const domain = values["http-domain"] !== undefined
          ? httpDomain(values["http-domain"])
          : server.httpDomain;
        const r = await service.assignDomain(OPERATOR, rest[0], user, domain);
        io.out(`domain ${r.host} assigned to ${user.name}`);
        return 0;
      }
      if (action === "remove") {
        if (!rest[0]) throw new TypeError("domain remove needs a HOST (see: domain list)");
        const host = rest[0].toLowerCase();
        const held = await service.removeHost(OPERATOR, host);
        if (!held) {
          io.out(`${host} was not reserved (see: mport-server domain list)`);
          return 0;
        }
        io.out(`${held.kind} ${host} removed`);
        return 0;
      }
      if (action === "list") {
        const user = values.user ? await needUser(service, values.user) : null;
        const list = await store.listHosts(user?.id);
        const names = await userNames();
        print(
          ["HOST", "KIND", "USER", "TUNNEL", "LAST USED"],
          list.map((h) => [
            h.host,
            h.kind,
            names.get(h.userId) ?? String(h.userId),
            h.tunnel ?? "-",
            // A domain no tunnel has served yet has not been used.
            h.tunnel === null ? "-" : iso(h.lastUsedAt),
          ]),
          list.map((h) => ({ ...h, user: names.get(h.userId) })),
        );
        return 0;
      }
      throw new TypeError(`unknown command "domain ${action ?? ""}": use add, remove or list`);
    }
    case "usage": {
      const user = values.user ? await needUser(service, values.user) : null;
      const since = values.since ? parseSince(values.since, now) : undefined;
      const rows = await service.usage(OPERATOR, { userId: user?.id, since });
      const names = await userNames();
      print(
        ["HOUR", "USER", "TUNNEL", "BYTES IN", "BYTES OUT", "CONNS", "ERRORS"],
        rows.map((r) => [
          humanTime(r.hour),
          names.get(r.userId) ?? String(r.userId),
          r.tunnel,
          humanBytes(r.bytesIn),
          humanBytes(r.bytesOut),
          String(r.connections),
          String(r.errors),
        ]),
        rows.map((r) => ({ ...r, user: names.get(r.userId) })),
      );
      return 0;
    }
    case "events": {
      const user = values.user ? await needUser(service, values.user) : null;
      const since = values.since ? parseSince(values.since, now) : undefined;
      const limit = values.limit ? Number(values.limit) : 100;
      if (!Number.isSafeInteger(limit) || limit < 1) {
        throw new TypeError(`invalid --limit "${values.limit}"`);
      }
      const events = await service.events(OPERATOR, { since, userId: user?.id, limit });
      const names = await userNames();
      print(
        ["TIME", "AGO", "EVENT", "USER", "DETAIL"],
        events.map((e) => [
          humanTime(e.at),
          humanAgo(e.at, now),
          e.kind,
          e.userId === null ? "-" : names.get(e.userId) ?? String(e.userId),
          Object.entries(e.detail).map(([k, v]) =>
            `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`
          ).join(" "),
        ]),
        events.map((e) => ({ ...e, user: e.userId === null ? null : names.get(e.userId) })),
      );
      return 0;
    }
    default:
      throw new TypeError(`unknown command "${group}"\n${ADMIN_USAGE}`);
  }
}
