// The storage boundary: users, hashed tokens, reserved ports and host names, hourly usage, audit events.

/** A user's role. */
export type Role = "admin" | "user";

/** Per-user limits; null means "use the server default". */
export interface UserLimits {
  readonly maxTunnels: number | null;
  readonly maxConnections: number | null;
  /** Inclusive public port range the user may ask for, or null for the server's range. */
  readonly portLow: number | null;
  readonly portHigh: number | null;
  /** Bytes (in + out) per calendar month (UTC), or null for unlimited. */
  readonly monthlyQuotaBytes: number | null;
  /**
   * Automatic port reservations (stable ports of the user's tunnels) kept at most, ≥ 1; beyond it
   * the least recently used is recycled. Null: the user's max tunnels.
   */
  readonly maxReservedPorts: number | null;
}

/**
 * What a user may do besides opening tunnels; each is off unless an operator grants it (an admin
 * role does not imply them).
 */
export interface UserPermissions {
  /** Connections out through the server (SOCKS5 egress). */
  readonly egress: boolean;
  /** The VPN. */
  readonly vpn: boolean;
}

/** Every permission a user may be granted, in `UserPermissions` key order. */
export const USER_PERMISSIONS: readonly (keyof UserPermissions)[] = ["egress", "vpn"];

/** A stored user. Times are epoch milliseconds. */
export interface User {
  readonly id: number;
  readonly name: string;
  readonly email: string | null;
  readonly role: Role;
  readonly disabled: boolean;
  /** scrypt hash in the form `scrypt$N$r$p$saltB64$hashB64`, or null when no password is set. */
  readonly passwordHash: string | null;
  readonly createdAt: number;
  readonly lastSeenAt: number | null;
  readonly limits: UserLimits;
  /** May open connections out through the server (SOCKS5 egress). */
  readonly egress: boolean;
  /** May use the VPN. */
  readonly vpn: boolean;
}

/**
 * What a token may do: `client` opens tunnels only; `api` also uses the REST API as its user;
 * `admin` does everything, the REST API as an admin included (when its user is an admin).
 */
export type TokenScope = "client" | "api" | "admin";

/** Every token scope, narrowest first. */
export const TOKEN_SCOPES: readonly TokenScope[] = ["client", "api", "admin"];

/** A stored token (the secret itself is never stored, only its SHA-256 hex). */
export interface TokenRecord {
  readonly id: number;
  readonly userId: number;
  readonly label: string;
  readonly scope: TokenScope;
  /** SHA-256 of the token, lowercase hex. */
  readonly hash: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
  readonly revokedAt: number | null;
  readonly lastUsedAt: number | null;
}

/** A public port held for a user's named tunnel. */
export interface PortReservation {
  readonly port: number;
  readonly userId: number;
  /** Tunnel name, or null for a port an admin reserved without naming a tunnel. */
  readonly tunnel: string | null;
  readonly createdAt: number;
  /**
   * When a tunnel last held the port (refreshed while one does); an automatic reservation expires
   * a TTL after it.
   */
  readonly lastUsedAt: number;
  /** Reserved by an operator (`port reserve`): never expires or is recycled, not in the cap. */
  readonly explicit: boolean;
}

/** What {@link Store.reservePort} is asked to do. */
export interface ReserveRequest {
  readonly userId: number;
  readonly tunnel: string | null;
  readonly port: number;
  /** Now (epoch ms): `createdAt` of a new reservation and `lastUsedAt` of the one reserved. */
  readonly at: number;
  /** An operator's reservation; also marks a reservation the same user already holds explicit. */
  readonly explicit?: boolean;
  /** Automatic reservations last used before this time (epoch ms) have expired: they are free. */
  readonly expiredBefore?: number | null;
  /**
   * Keep at most this many (≥ 1) automatic reservations for the user, the one reserved included:
   * the least recently used others beyond it are dropped.
   */
  readonly maxAutomatic?: number | null;
  /** A port held by an automatic reservation of another of the user's tunnels is taken over. */
  readonly takeOverOwn?: boolean;
}

/** A host name an HTTP tunnel is served on. */
export interface HostReservation {
  /** Lower-case, e.g. `myapp.tunnels.example.com` or `app.example.org`. */
  readonly host: string;
  readonly userId: number;
  /** `subdomain`: of the HTTP domain, claimed by a tunnel; `domain`: assigned by an admin. */
  readonly kind: HostKind;
  /** Tunnel name last served on it (null for a domain never used). */
  readonly tunnel: string | null;
  readonly createdAt: number;
  readonly lastUsedAt: number;
}

/** How a host name came to be reserved. */
export type HostKind = "subdomain" | "domain";

/** What {@link Store.reserveHost} is asked to do. */
export interface HostReserveRequest {
  /** Lower-case host name. */
  readonly host: string;
  readonly userId: number;
  readonly kind: HostKind;
  /** The tunnel served on it now, or null (an admin's assignment). */
  readonly tunnel: string | null;
  /** Now (epoch ms): `createdAt` of a new reservation and `lastUsedAt` of the one reserved. */
  readonly at: number;
}

/** Result of trying to reserve a host name. */
export type HostReserveResult =
  | { readonly ok: true; readonly reservation: HostReservation }
  | { readonly ok: false; readonly heldBy: number };

/** Usage of one tunnel in one hour. `hour` is the epoch ms of the hour's start (UTC). */
export interface UsageRow {
  readonly userId: number;
  readonly tunnel: string;
  readonly hour: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly connections: number;
  readonly errors: number;
}

/** An audit event. */
export interface AuditEvent {
  readonly id: number;
  readonly at: number;
  /** e.g. `user_created`, `token_created`, `token_revoked`, `client_connected`, `tunnel_opened`. */
  readonly kind: string;
  readonly userId: number | null;
  /** Free-form details (address, token label, port, reason). */
  readonly detail: Record<string, unknown>;
}

/** Result of trying to reserve a port. */
export type ReserveResult =
  | {
    readonly ok: true;
    readonly reservation: PortReservation;
    /**
     * Reservations of other tunnels this call removed, by port: an expired holder of the port, the
     * user's own reservation taken over, the least recently used ones beyond `maxAutomatic`.
     */
    readonly dropped: readonly PortReservation[];
  }
  | { readonly ok: false; readonly heldBy: PortReservation };

/** Thrown for a name that is already taken (user name). */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConflictError";
  }
}

/** A token to create: its owner, label, secret's hash, expiry and scope. */
export interface NewToken {
  readonly userId: number;
  readonly label: string;
  readonly hash: string;
  readonly expiresAt: number | null;
  readonly scope?: TokenScope;
}

/**
 * Persistent state of mport-server. Both implementations (SQLite, PostgreSQL) pass the same
 * contract tests in tests/server/store/.
 */
export interface Store {
  /** `sqlite:PATH` or `postgres://…` (password redacted), for logs. */
  readonly description: string;

  createUser(
    u: {
      name: string;
      email?: string | null;
      role: Role;
      passwordHash?: string | null;
      limits?: Partial<UserLimits>;
      /** Permissions granted from the start; the others are off. */
      permissions?: Partial<UserPermissions>;
    },
  ): Promise<User>;
  userById(id: number): Promise<User | null>;
  userByName(name: string): Promise<User | null>;
  listUsers(): Promise<User[]>;
  /** Throws a RangeError when there is no such user (so do setUserLimits, setUserPassword and
   * setUserPermissions). */
  setUserDisabled(id: number, disabled: boolean): Promise<void>;
  /** Sets the given limits (null clears one), leaves the others, returns the updated user. */
  setUserLimits(id: number, limits: Partial<UserLimits>): Promise<User>;
  setUserPassword(id: number, passwordHash: string): Promise<void>;
  /**
   * Grants (true) or withdraws (false) the given permissions, leaves the others, returns the
   * updated user. A RangeError for an unknown user or a value that is not a boolean.
   */
  setUserPermissions(id: number, permissions: Partial<UserPermissions>): Promise<User>;
  touchUser(id: number, at: number): Promise<void>;

  /** `scope` defaults to `client`; a RangeError for an unknown one. */
  createToken(t: NewToken): Promise<TokenRecord>;
  tokenByHash(hash: string): Promise<TokenRecord | null>;
  tokenById(id: number): Promise<TokenRecord | null>;
  listTokens(userId?: number): Promise<TokenRecord[]>;
  /** True if the token existed and was not revoked yet (an earlier `revokedAt` is kept). */
  revokeToken(id: number, at: number): Promise<boolean>;
  touchToken(id: number, at: number): Promise<void>;

  /**
   * Atomically reserves `port` for (userId, tunnel). Succeeds if the port is free or already held by
   * the same user and tunnel (or by the same user with tunnel null, which is then named). Two
   * concurrent calls for one port: exactly one succeeds.
   *
   * A tunnel holds at most one port: when (userId, tunnel) already holds another port, that
   * reservation moves to `port` (the old port is released in the same transaction); when `port`
   * is taken, nothing changes. With `tunnel` null, a port the same user already holds under any
   * tunnel name is returned unchanged. A repeat call keeps the original `createdAt` and moves
   * `lastUsedAt` forward to `at`. A port held by someone else counts as free when that reservation
   * is automatic and expired (`expiredBefore`), or is the same user's other tunnel's automatic one
   * and `takeOverOwn` is set; it is then replaced. With `maxAutomatic`, the user's least recently
   * used automatic reservations beyond it are dropped in the same transaction. Throws a RangeError
   * for a port outside 1–65535, an unknown user or a `maxAutomatic` below 1.
   */
  reservePort(r: ReserveRequest): Promise<ReserveResult>;
  /**
   * Moves `lastUsedAt` forward to `at` on each reservation that user holds on that port (ports held
   * by a live tunnel); returns how many rows matched.
   */
  touchReservations(
    uses: readonly { readonly userId: number; readonly port: number }[],
    at: number,
  ): Promise<number>;
  /** Deletes the automatic reservations last used before `before`; returns them, by port. */
  dropExpiredReservations(before: number): Promise<PortReservation[]>;
  /** Deletes a user's least recently used automatic reservations beyond `keep`; returns them. */
  trimReservations(userId: number, keep: number): Promise<PortReservation[]>;
  /** The port held for a user's named tunnel, if any. */
  reservationFor(userId: number, tunnel: string): Promise<PortReservation | null>;
  reservationByPort(port: number): Promise<PortReservation | null>;
  listReservations(userId?: number): Promise<PortReservation[]>;
  releasePort(port: number): Promise<boolean>;

  /**
   * Atomically reserves `host` for `userId`: ok when it is free or already the same user's. A
   * repeat keeps `createdAt`, moves `lastUsedAt` forward to `at` and sets `tunnel` when it is not
   * null; a `domain` stays a `domain` (and a `subdomain` asked for as a `domain` becomes one). Not
   * ok, changing nothing, when another user holds it (`heldBy`: their id). Two concurrent calls by
   * different users for one host: exactly one succeeds. Throws a RangeError for a host that is
   * empty or not lower-case, an unknown kind or an unknown user.
   */
  reserveHost(r: HostReserveRequest): Promise<HostReserveResult>;
  hostByName(host: string): Promise<HostReservation | null>;
  /** The user's subdomain reservation last used by that tunnel name, or null. */
  hostForTunnel(userId: number, tunnel: string): Promise<HostReservation | null>;
  /** Host reservations ordered by host, optionally of one user. */
  listHosts(userId?: number): Promise<HostReservation[]>;
  /** True if the host was reserved (the reservation is deleted). */
  releaseHost(host: string): Promise<boolean>;

  /** Adds the rows to the stored hourly totals (upsert with addition). */
  addUsage(rows: readonly UsageRow[]): Promise<void>;
  /** Hourly rows, oldest first, optionally for one user and from `since` (epoch ms) on. */
  usage(q: { userId?: number; since?: number }): Promise<UsageRow[]>;
  /** Sum of bytesIn + bytesOut of a user from `since` on. */
  bytesSince(userId: number, since: number): Promise<number>;

  addEvent(
    e: { at: number; kind: string; userId: number | null; detail: Record<string, unknown> },
  ): Promise<void>;
  /**
   * Events newest first, optionally from `since` (epoch ms) on and for one user; at most `limit`
   * (default and maximum 1000).
   */
  events(q: { since?: number; userId?: number; limit?: number }): Promise<AuditEvent[]>;

  close(): Promise<void>;
}
