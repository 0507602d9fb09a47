// Admin commands of mport-server (user, token, port, usage, events) acting on the configured store.
import { parseArgs } from "node:util";
import { parsePortRange } from "../../shared/address.ts";
import { formatSize, parseDuration, parseSince, parseSize } from "../../shared/units.ts";
import { hashPassword, hashToken, newToken } from "../accounts/secrets.ts";
import type { Store, User, UserLimits } from "../store/store.ts";

/** Where admin commands read and write; injectable for tests. */
export interface AdminIo {
  out(line: string): void;
  /** Reads a password: from stdin when `fromStdin`, else from an interactive prompt. */
  readPassword(fromStdin: boolean): Promise<string>;
  now(): number;
}

/** Names of the admin command groups, to tell them apart from server flags. */
export const ADMIN_COMMANDS = ["user", "token", "port", "usage", "events"] as const;

/** Usage of the admin commands. */
export const ADMIN_USAGE = `Admin commands (act on the store given by --db / MPORT_DB):
  mport-server user add NAME [--admin] [--email E] [--password-stdin] [LIMITS]
  mport-server user set NAME [LIMITS]
  mport-server user list
  mport-server user disable NAME | user enable NAME
  mport-server token create --user NAME [--label L] [--expires 30d]
  mport-server token list [--user NAME]
  mport-server token revoke ID
  mport-server port reserve PORT --user NAME [--tunnel NAME]
  mport-server port release PORT
  mport-server port list [--user NAME]
  mport-server usage [--user NAME] [--since 7d|2026-11-01]
  mport-server events [--user NAME] [--since 24h] [--limit N]
LIMITS: --max-tunnels N --max-connections N --port-range LOW-HIGH --quota 10GB (use "default" to clear)
Every listing takes --json.`;

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

function limitText(v: number | null, size = false): string {
  if (v === null) return "default";
  return size ? formatSize(v) : String(v);
}

const LIMIT_OPTIONS = {
  "max-tunnels": { type: "string" },
  "max-connections": { type: "string" },
  "port-range": { type: "string" },
  quota: { type: "string" },
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
  return out;
}

/** User names by id, for listings that show whose row it is. */
async function userNames(store: Store): Promise<Map<number, string>> {
  return new Map((await store.listUsers()).map((u) => [u.id, u.name]));
}

async function needUser(store: Store, name: string | undefined): Promise<User> {
  if (!name) throw new TypeError("--user NAME is required");
  const u = await store.userByName(name);
  if (!u) throw new TypeError(`no user named "${name}" (see: mport-server user list)`);
  return u;
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
  "CREATED",
  "LAST SEEN",
];

function publicUser(u: User): Omit<User, "passwordHash"> & { hasPassword: boolean } {
  const { passwordHash, ...rest } = u;
  return { ...rest, hasPassword: passwordHash !== null };
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
  const { values, positionals } = parseArgs({
    args: [...args],
    strict: true,
    allowPositionals: true,
    options: {
      ...LIMIT_OPTIONS,
      admin: { type: "boolean" },
      email: { type: "string" },
      "password-stdin": { type: "boolean" },
      user: { type: "string" },
      label: { type: "string" },
      expires: { type: "string" },
      tunnel: { type: "string" },
      since: { type: "string" },
      limit: { type: "string" },
      json: { type: "boolean" },
      db: { type: "string" },
    },
  });
  const [group, action, ...rest] = positionals;
  const json = values.json === true;
  const print = (headers: string[], rows: string[][], data: unknown) =>
    io.out(json ? JSON.stringify(data, null, 2) : formatTable(headers, rows));
  const now = io.now();

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
        const user = await store.createUser({
          name,
          email: values.email ?? null,
          role: values.admin ? "admin" : "user",
          passwordHash: await hashPassword(password),
          limits: parseLimits(values),
        });
        await store.addEvent({
          at: now,
          kind: "user_created",
          userId: user.id,
          detail: { name, role: user.role },
        });
        print(USER_HEADERS, [userRow(user)], publicUser(user));
        return 0;
      }
      if (action === "set") {
        const user = await needUser(store, rest[0]);
        const limits = parseLimits(values);
        if (Object.keys(limits).length === 0) {
          throw new TypeError(
            "user set needs at least one of --max-tunnels, --max-connections, --port-range, --quota",
          );
        }
        const updated = await store.setUserLimits(user.id, limits);
        await store.addEvent({
          at: now,
          kind: "user_limits_changed",
          userId: user.id,
          detail: { ...limits },
        });
        print(USER_HEADERS, [userRow(updated)], publicUser(updated));
        return 0;
      }
      if (action === "list") {
        const users = await store.listUsers();
        print(USER_HEADERS, users.map(userRow), users.map(publicUser));
        return 0;
      }
      if (action === "disable" || action === "enable") {
        const user = await needUser(store, rest[0]);
        await store.setUserDisabled(user.id, action === "disable");
        await store.addEvent({
          at: now,
          kind: `user_${action}d`,
          userId: user.id,
          detail: { name: user.name },
        });
        io.out(`user ${user.name} ${action}d`);
        return 0;
      }
      throw new TypeError(
        `unknown command "user ${action ?? ""}": use add, set, list, disable or enable`,
      );
    }
    case "token": {
      if (action === "create") {
        const user = await needUser(store, values.user);
        const expiresAt = values.expires ? now + parseDuration(values.expires) : null;
        const token = newToken();
        const rec = await store.createToken({
          userId: user.id,
          label: values.label ?? "",
          hash: hashToken(token),
          expiresAt,
        });
        await store.addEvent({
          at: now,
          kind: "token_created",
          userId: user.id,
          detail: { tokenId: rec.id, label: rec.label, expiresAt },
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
          io.out("This token is shown only once; store it now.");
        }
        return 0;
      }
      if (action === "list") {
        const user = values.user ? await needUser(store, values.user) : null;
        const tokens = await store.listTokens(user?.id);
        const names = await userNames(store);
        const state = (t: (typeof tokens)[number]) =>
          t.revokedAt !== null
            ? "revoked"
            : t.expiresAt !== null && t.expiresAt <= now
            ? "expired"
            : "active";
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
        const rec = await store.tokenById(id);
        if (!rec) throw new TypeError(`no token with ID ${id}`);
        if (!(await store.revokeToken(id, now))) {
          io.out(`token ${id} was already revoked`);
          return 0;
        }
        await store.addEvent({
          at: now,
          kind: "token_revoked",
          userId: rec.userId,
          detail: { tokenId: id, label: rec.label },
        });
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
        const user = await needUser(store, values.user);
        const r = await store.reservePort({
          userId: user.id,
          tunnel: values.tunnel ?? null,
          port,
          at: now,
        });
        if (!r.ok) {
          const holder = await store.userById(r.heldBy.userId);
          throw new TypeError(
            `port ${port} is already reserved by ${holder?.name ?? "another user"}`,
          );
        }
        await store.addEvent({
          at: now,
          kind: "port_reserved",
          userId: user.id,
          detail: { port, tunnel: values.tunnel },
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
        const held = await store.reservationByPort(port);
        if (!held || !(await store.releasePort(port))) {
          io.out(`port ${port} was not reserved`);
          return 0;
        }
        await store.addEvent({
          at: now,
          kind: "port_released",
          userId: held.userId,
          detail: { port },
        });
        io.out(`port ${port} released`);
        return 0;
      }
      if (action === "list") {
        const user = values.user ? await needUser(store, values.user) : null;
        const list = await store.listReservations(user?.id);
        const names = await userNames(store);
        print(
          ["PORT", "USER", "TUNNEL", "SINCE"],
          list.map((
            r,
          ) => [
            String(r.port),
            names.get(r.userId) ?? String(r.userId),
            r.tunnel ?? "-",
            iso(r.createdAt),
          ]),
          list.map((r) => ({ ...r, user: names.get(r.userId) })),
        );
        return 0;
      }
      throw new TypeError(`unknown command "port ${action ?? ""}": use reserve, release or list`);
    }
    case "usage": {
      const user = values.user ? await needUser(store, values.user) : null;
      const since = values.since ? parseSince(values.since, now) : undefined;
      const rows = await store.usage({ userId: user?.id, since });
      const names = await userNames(store);
      print(
        ["HOUR", "USER", "TUNNEL", "BYTES IN", "BYTES OUT", "CONNS", "ERRORS"],
        rows.map((r) => [
          iso(r.hour),
          names.get(r.userId) ?? String(r.userId),
          r.tunnel,
          String(r.bytesIn),
          String(r.bytesOut),
          String(r.connections),
          String(r.errors),
        ]),
        rows.map((r) => ({ ...r, user: names.get(r.userId) })),
      );
      return 0;
    }
    case "events": {
      const user = values.user ? await needUser(store, values.user) : null;
      const since = values.since ? parseSince(values.since, now) : undefined;
      const limit = values.limit ? Number(values.limit) : 100;
      if (!Number.isSafeInteger(limit) || limit < 1) {
        throw new TypeError(`invalid --limit "${values.limit}"`);
      }
      const events = await store.events({ since, userId: user?.id, limit });
      const names = await userNames(store);
      print(
        ["TIME", "EVENT", "USER", "DETAIL"],
        events.map((e) => [
          iso(e.at),
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
