// The management operations (users, tokens, ports, host names, usage, events) shared by the REST
// API, the dashboard and the admin CLI: validation, ownership, the store calls and their audit.
import { HostBook } from "../accounts/host_book.ts";
import { hashPassword, hashToken, newToken } from "../accounts/secrets.ts";
import type { PortRange } from "../../shared/address.ts";
import {
  type AuditEvent,
  type HostReservation,
  type PortReservation,
  type Role,
  type Store,
  type TokenRecord,
  type TokenScope,
  type UsageRow,
  type User,
  USER_PERMISSIONS,
  type UserLimits,
  type UserPermissions,
} from "../store/store.ts";

/** What went wrong, as the API reports it; a TypeError so the CLI prints it as a user mistake. */
export type ServiceErrorCode = "bad_request" | "not_found" | "conflict" | "forbidden";

/** A refused operation; `message` says what failed and what to do (named TypeError, like the CLI's). */
export class ServiceError extends TypeError {
  readonly code: ServiceErrorCode;
  constructor(code: ServiceErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * Who asks. An admin sees and changes everything; a user only their own objects, and objects of
 * others look absent to them (not_found, never forbidden, so ids cannot be probed).
 */
export interface Actor {
  /** Null for the operator at the admin CLI (no user of the store). */
  readonly userId: number | null;
  readonly name: string | null;
  readonly admin: boolean;
}

/** The operator running admin commands on the store. */
export const OPERATOR: Actor = { userId: null, name: null, admin: true };

/** A user as the API shows it: no password hash. */
export type PublicUser = Omit<User, "passwordHash"> & { readonly hasPassword: boolean };

/** A token as listings show it: never its hash. */
export type TokenView = Omit<TokenRecord, "hash"> & {
  readonly user: string | undefined;
  readonly state: "active" | "revoked" | "expired";
};

/** Names users may have. */
export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Shortest password accepted. */
export const MIN_PASSWORD = 8;

/** Server settings the operations depend on. */
export interface ServiceSettings {
  readonly portRange: PortRange;
  readonly reservationTtlMs: number;
  readonly httpDomain: string | null;
  readonly maxTunnelsPerClient: number;
}

/** Strips the password hash. */
export function publicUser(u: User): PublicUser {
  const { passwordHash, ...rest } = u;
  return { ...rest, hasPassword: passwordHash !== null };
}

/** The state of a token at `now`. */
export function tokenState(t: TokenRecord, now: number): TokenView["state"] {
  return t.revokedAt !== null
    ? "revoked"
    : t.expiresAt !== null && t.expiresAt <= now
    ? "expired"
    : "active";
}

/** The management operations on one store. */
export class ManagementService {
  readonly store: Store;
  readonly settings: ServiceSettings;
  readonly #now: () => number;

  constructor(store: Store, settings: ServiceSettings, now: () => number = Date.now) {
    this.store = store;
    this.settings = settings;
    this.#now = now;
  }

  async #event(
    actor: Actor,
    kind: string,
    userId: number | null,
    detail: Record<string, unknown>,
  ): Promise<void> {
    // Who did it, when it was not the operator at the CLI (whose events keep their old shape).
    const by = actor.userId !== null && actor.userId !== userId ? { by: actor.name } : {};
    await this.store.addEvent({ at: this.#now(), kind, userId, detail: { ...detail, ...by } });
  }

  /** Users by id, for listings that show whose row it is. */
  async userNames(): Promise<Map<number, string>> {
    return new Map((await this.store.listUsers()).map((u) => [u.id, u.name]));
  }

  /** The user named `name`; not_found when there is none. */
  async user(name: string): Promise<User> {
    const u = await this.store.userByName(name);
    if (!u) {
      throw new ServiceError("not_found", `no user named "${name}" (see: mport-server user list)`);
    }
    return u;
  }

  /** The user an actor may act on: themselves, or anyone for an admin (others: not_found). */
  async visibleUser(actor: Actor, name: string): Promise<User> {
    const u = await this.store.userByName(name);
    if (!u || (!actor.admin && u.id !== actor.userId)) {
      throw new ServiceError("not_found", `no user named "${name}" (see: mport-server user list)`);
    }
    return u;
  }

  /** The user id whose objects a listing shows: the asked one for admins, else the actor's own. */
  #scopeOf(actor: Actor, userId: number | undefined): number | undefined {
    return actor.admin ? userId : actor.userId ?? -1;
  }

  #requireAdmin(actor: Actor): void {
    if (!actor.admin) throw new ServiceError("forbidden", "only an admin may do this");
  }

  listUsers(actor: Actor): Promise<User[]> {
    this.#requireAdmin(actor);
    return this.store.listUsers();
  }

  /** Creates a user with a password (checked: name pattern, at least 8 characters). */
  async createUser(
    actor: Actor,
    u: {
      name: string;
      password: string;
      role?: Role;
      email?: string | null;
      limits?: Partial<UserLimits>;
      /** Permissions granted from the start (default: none). */
      egress?: boolean;
      vpn?: boolean;
    },
  ): Promise<User> {
    this.#requireAdmin(actor);
    if (!USER_NAME.test(u.name)) {
      throw new ServiceError(
        "bad_request",
        "user add needs a NAME of letters, digits, '.', '_' or '-'",
      );
    }
    checkPassword(u.password);
    checkLimits(u.limits ?? {});
    const permissions = givenPermissions({ egress: u.egress, vpn: u.vpn });
    // A taken name throws the store's ConflictError (the API answers 409).
    const user = await this.store.createUser({
      name: u.name,
      email: u.email ?? null,
      role: u.role ?? "user",
      passwordHash: await hashPassword(u.password),
      limits: u.limits ?? {},
      permissions,
    });
    // Only permissions granted show up, so a plain user's event keeps its old shape.
    const granted = Object.fromEntries(Object.entries(permissions).filter(([, v]) => v));
    await this.#event(actor, "user_created", user.id, {
      name: u.name,
      role: user.role,
      ...granted,
    });
    return user;
  }

  /** Changes limits (null: the server default) and returns the user. */
  async setLimits(actor: Actor, name: string, limits: Partial<UserLimits>): Promise<User> {
    this.#requireAdmin(actor);
    const user = await this.user(name);
    checkLimits(limits);
    const updated = await this.store.setUserLimits(user.id, limits);
    await this.#event(actor, "user_limits_changed", user.id, { ...limits });
    return updated;
  }

  /**
   * Grants (true) or withdraws (false) permissions (egress, vpn), leaving the others; returns the
   * user. Admins only. The audit event `user_permissions_changed` names the user and each value
   * given; nothing given changes nothing and records nothing. Static `--token` tokens have every
   * permission whatever is stored.
   */
  async setPermissions(
    actor: Actor,
    name: string,
    permissions: Partial<UserPermissions>,
  ): Promise<User> {
    this.#requireAdmin(actor);
    const user = await this.user(name);
    const given = givenPermissions(permissions);
    if (Object.keys(given).length === 0) return user;
    const updated = await this.store.setUserPermissions(user.id, given);
    await this.#event(actor, "user_permissions_changed", user.id, { name: user.name, ...given });
    return updated;
  }

  /** Blocks or unblocks a user (their clients go within the recheck interval). */
  async setDisabled(actor: Actor, name: string, disabled: boolean): Promise<User> {
    this.#requireAdmin(actor);
    const user = await this.user(name);
    await this.store.setUserDisabled(user.id, disabled);
    await this.#event(actor, `user_${disabled ? "disable" : "enable"}d`, user.id, {
      name: user.name,
    });
    return { ...user, disabled };
  }

  /** Sets a user's password (admins: anyone's; users: their own). */
  async setPassword(actor: Actor, name: string, password: string): Promise<User> {
    const user = await this.visibleUser(actor, name);
    checkPassword(password);
    await this.store.setUserPassword(user.id, await hashPassword(password));
    await this.#event(actor, "password_changed", user.id, { name: user.name });
    return user;
  }

  /** Tokens (never their hashes): an admin's of anyone (or of `userId`), a user's own. */
  async listTokens(actor: Actor, userId?: number): Promise<TokenView[]> {
    const tokens = await this.store.listTokens(this.#scopeOf(actor, userId));
    const names = await this.userNames();
    const now = this.#now();
    return tokens.map(({ hash: _hash, ...t }) => ({
      ...t,
      user: names.get(t.userId),
      state: tokenState({ ...t, hash: "" }, now),
    }));
  }

  /**
   * Creates a token for `user` and returns it with its secret (shown once). Users create their
   * own, with a scope up to `api`; `admin` scope needs an admin user and an admin actor.
   */
  async createToken(
    actor: Actor,
    t: { user: User; label?: string; expiresAt?: number | null; scope?: TokenScope },
  ): Promise<{ record: TokenRecord; token: string }> {
    if (!actor.admin && t.user.id !== actor.userId) {
      throw new ServiceError("not_found", `no user named "${t.user.name}"`);
    }
    const scope = t.scope ?? "client";
    if (scope === "admin" && (t.user.role !== "admin" || !actor.admin)) {
      throw new ServiceError(
        "bad_request",
        `scope admin needs an admin user: ${t.user.name} may have client or api tokens`,
      );
    }
    const expiresAt = t.expiresAt ?? null;
    const token = newToken();
    const record = await this.store.createToken({
      userId: t.user.id,
      label: t.label ?? "",
      hash: hashToken(token),
      expiresAt,
      scope,
    });
    await this.#event(actor, "token_created", t.user.id, {
      tokenId: record.id,
      label: record.label,
      expiresAt,
      ...(scope === "client" ? {} : { scope }),
    });
    return { record, token };
  }

  /**
   * Revokes a token: "revoked", or "already" when it was. not_found for an unknown id or (for a
   * user) another user's token.
   */
  async revokeToken(actor: Actor, id: number): Promise<"revoked" | "already"> {
    const rec = await this.store.tokenById(id);
    if (!rec || (!actor.admin && rec.userId !== actor.userId)) {
      throw new ServiceError("not_found", `no token with ID ${id}`);
    }
    if (!(await this.store.revokeToken(id, this.#now()))) return "already";
    await this.#event(actor, "token_revoked", rec.userId, { tokenId: id, label: rec.label });
    return "revoked";
  }

  /** Port reservations: an admin's of anyone (or of `userId`), a user's own. */
  listPorts(actor: Actor, userId?: number): Promise<PortReservation[]> {
    return this.store.listReservations(this.#scopeOf(actor, userId));
  }

  /** When an automatic reservation expires (null: never) under `ttlMs`. */
  expiresAt(r: PortReservation, ttlMs = this.settings.reservationTtlMs): number | null {
    return r.explicit || ttlMs === 0 ? null : r.lastUsedAt + ttlMs;
  }

  /**
   * Reserves `port` for `user` (and their tunnel) explicitly: it never expires. Checks the
   * server's range (`range`, default the server's) and the user's; a user reserving for
   * themselves may hold at most their tunnel limit of explicit ports.
   */
  async reservePort(
    actor: Actor,
    r: { port: number; user: User; tunnel?: string | null; range?: PortRange; ttlMs?: number },
  ): Promise<PortReservation> {
    const { port, user } = r;
    if (!actor.admin && user.id !== actor.userId) {
      throw new ServiceError("not_found", `no user named "${user.name}"`);
    }
    if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
      throw new ServiceError("bad_request", "port reserve needs a PORT");
    }
    const range = r.range ?? this.settings.portRange;
    if (port < range.low || port > range.high) {
      throw new ServiceError(
        "bad_request",
        `port ${port} is outside the server's port range ${range.low}-${range.high}: ` +
          "choose a port in it (if the server runs with another --port-range, pass it here " +
          "or --config FILE)",
      );
    }
    const { portLow, portHigh } = user.limits;
    if (portLow !== null && portHigh !== null && (port < portLow || port > portHigh)) {
      throw new ServiceError(
        "bad_request",
        `port ${port} is outside ${user.name}'s port range ${portLow}-${portHigh} ` +
          `(change it with: mport-server user set ${user.name} --port-range LOW-HIGH)`,
      );
    }
    if (!actor.admin) {
      const cap = user.limits.maxTunnels ?? this.settings.maxTunnelsPerClient;
      const held = (await this.store.listReservations(user.id)).filter((p) =>
        p.explicit && p.port !== port
      );
      if (held.length >= cap) {
        throw new ServiceError(
          "bad_request",
          `${user.name} already holds ${held.length} reserved port(s), the most allowed ` +
            "(release one first)",
        );
      }
    }
    const now = this.#now();
    const ttl = r.ttlMs ?? this.settings.reservationTtlMs;
    const result = await this.store.reservePort({
      userId: user.id,
      tunnel: r.tunnel ?? null,
      port,
      at: now,
      explicit: true,
      // A tunnel's reservation that has expired does not stand in an operator's way.
      expiredBefore: ttl === 0 ? null : now - ttl,
    });
    if (!result.ok) {
      const holder = actor.admin || result.heldBy.userId === actor.userId
        ? (await this.store.userById(result.heldBy.userId))?.name ?? "another user"
        : "another user";
      throw new ServiceError("conflict", `port ${port} is already reserved by ${holder}`);
    }
    await this.#event(actor, "port_reserved", user.id, {
      port,
      tunnel: r.tunnel ?? undefined,
    });
    return result.reservation;
  }

  /**
   * Frees a reserved port: true when it was reserved (and visible to the actor), false when not.
   */
  async releasePort(actor: Actor, port: number): Promise<boolean> {
    if (!Number.isSafeInteger(port) || port < 1 || port > 65535) {
      throw new ServiceError("bad_request", "port release needs a PORT");
    }
    const held = await this.store.reservationByPort(port);
    if (!held || (!actor.admin && held.userId !== actor.userId)) return false;
    if (!(await this.store.releasePort(port))) return false;
    await this.#event(actor, "port_released", held.userId, { port });
    return true;
  }

  /** Host names (custom domains and subdomains): an admin's of anyone, a user's own. */
  listHosts(actor: Actor, userId?: number): Promise<HostReservation[]> {
    return this.store.listHosts(this.#scopeOf(actor, userId));
  }

  /** Admin: assigns a custom domain to a user (not under `httpDomain`, default the server's). */
  async assignDomain(
    actor: Actor,
    host: string,
    user: User,
    httpDomain: string | null = this.settings.httpDomain,
  ): Promise<HostReservation> {
    this.#requireAdmin(actor);
    const book = new HostBook(this.store, { domain: httpDomain, now: this.#now });
    let r: HostReservation;
    try {
      r = await book.assignDomain(host, user.id);
    } catch (e) {
      if (e instanceof TypeError) {
        throw new ServiceError(
          /already held/.test(e.message) ? "conflict" : "bad_request",
          e.message,
        );
      }
      throw e;
    }
    await this.#event(actor, "domain_assigned", user.id, { host: r.host });
    return r;
  }

  /** Frees a domain or subdomain; the reservation removed, or null when there was none. */
  async removeHost(actor: Actor, host: string): Promise<HostReservation | null> {
    const h = host.toLowerCase();
    const held = await this.store.hostByName(h);
    if (!held || (!actor.admin && held.userId !== actor.userId)) return null;
    if (!(await this.store.releaseHost(h))) return null;
    await this.#event(actor, "host_released", held.userId, { host: h, kind: held.kind });
    return held;
  }

  /** Hourly usage rows, oldest first, from `since` up to (not including) `until`. */
  async usage(
    actor: Actor,
    q: { userId?: number; since?: number; until?: number },
  ): Promise<UsageRow[]> {
    const rows = await this.store.usage({ userId: this.#scopeOf(actor, q.userId), since: q.since });
    return q.until === undefined ? rows : rows.filter((r) => r.hour < q.until!);
  }

  /** Audit events, newest first; users see only their own. */
  async events(
    actor: Actor,
    q: { userId?: number; since?: number; limit?: number; kind?: string },
  ): Promise<AuditEvent[]> {
    const limit = q.limit ?? 100;
    const userId = this.#scopeOf(actor, q.userId);
    if (q.kind === undefined) return this.store.events({ since: q.since, userId, limit });
    // The store has no kind filter: read up to its maximum and filter.
    const all = await this.store.events({ since: q.since, userId, limit: 1000 });
    return all.filter((e) => e.kind === q.kind).slice(0, limit);
  }
}

function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD) {
    throw new ServiceError(
      "bad_request",
      `the password must be at least ${MIN_PASSWORD} characters long`,
    );
  }
}

/** The permissions actually given (undefined dropped); bad_request for a non-boolean value. */
function givenPermissions(p: Partial<UserPermissions>): Partial<UserPermissions> {
  const out: { -readonly [K in keyof UserPermissions]?: boolean } = {};
  for (const key of USER_PERMISSIONS) {
    const v = p[key];
    if (v === undefined) continue;
    if (typeof v !== "boolean") {
      throw new ServiceError("bad_request", `${key} must be true or false`);
    }
    out[key] = v;
  }
  return out;
}

function checkLimits(l: Partial<UserLimits>): void {
  if ((l.portLow === null) !== (l.portHigh === null) && "portLow" in l && "portHigh" in l) {
    throw new ServiceError("bad_request", "portLow and portHigh are set (or cleared) together");
  }
  if (
    l.portLow !== undefined && l.portLow !== null && l.portHigh !== undefined &&
    l.portHigh !== null && l.portLow > l.portHigh
  ) {
    throw new ServiceError("bad_request", "portLow must not be above portHigh");
  }
  if (l.maxReservedPorts === 0) {
    throw new ServiceError(
      "bad_request",
      'invalid --max-reserved-ports "0": expected a whole number >= 1',
    );
  }
}
