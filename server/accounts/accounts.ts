// Who a client is: token → user through the store (plus static --token tokens of the admin user).
import { timingSafeEqual } from "node:crypto";
import type { Secret } from "../../shared/secret.ts";
import type { Store, TokenScope, User, UserLimits, UserPermissions } from "../store/store.ts";
import { hashToken, newToken } from "./secrets.ts";

/** The authenticated identity behind a control session. */
export interface Principal {
  /**
   * Key tunnels are owned by: one per user, so a user's tunnel names are their own; each static
   * `--token` is an owner of its own (acting as the admin user), so unrelated holders of static
   * tokens do not share names and limits.
   */
  readonly owner: string;
  readonly userId: number;
  readonly userName: string;
  /** Stored token id, or null for a static `--token`. */
  readonly tokenId: number | null;
  readonly tokenLabel: string;
  /** What the token may do; static `--token` tokens are `admin`. */
  readonly scope: TokenScope;
  readonly limits: UserLimits;
  /**
   * May open connections out through the server (SOCKS5 egress): the user's flag, or true for a
   * static `--token` (the operator's own token), never implied by the admin role.
   */
  readonly egress: boolean;
  /** May use the VPN: the user's flag, or true for a static `--token`. */
  readonly vpn: boolean;
}

/** What {@link Accounts.recheck} finds about a running session. */
export interface Recheck {
  /** Why the session is no longer valid, or null. */
  readonly reason: string | null;
  /** The user's current limits. */
  readonly limits: UserLimits;
  /** The session's current permissions (static tokens keep theirs: all). */
  readonly permissions: UserPermissions;
}

/** Result of checking a token. */
export type AuthResult =
  | { readonly ok: true; readonly principal: Principal }
  | { readonly ok: false; readonly message: string };

const WRONG_TOKEN = "the server rejected the token (wrong or revoked): check --token / MPORT_TOKEN";

/** A static-token login waits this long for the store before using the last known admin. */
export const STATIC_LOOKUP_MS = 1_000;

/** Label of the token that the first start creates. */
export const FIRST_TOKEN_LABEL = "first token";

/** What the first start on an empty store created: the admin user and maybe its first token. */
export interface Bootstrap {
  readonly user: string;
  /** The first client token, to print once; null when none was asked for. */
  readonly token: string | null;
}

/** Resolves tokens to principals and re-checks them while sessions run. */
export class Accounts {
  readonly store: Store;
  readonly #static: Buffer[];
  readonly #now: () => number;
  /** The last admin user static tokens resolved to, for when the store is down. */
  #admin: User | null = null;
  #adminKnown = false;

  constructor(store: Store, staticTokens: readonly Secret[], now: () => number = Date.now) {
    this.store = store;
    this.#static = staticTokens.map((t) => Buffer.from(hashToken(t.reveal()), "hex"));
    this.#now = now;
  }

  /**
   * On an empty store, creates the `admin` user (without a password: nothing uses one yet) and,
   * when `withToken`, a first client token, and returns the token so it can be printed once.
   * Returns null when users already exist.
   */
  async bootstrap(withToken = true): Promise<Bootstrap | null> {
    if ((await this.store.listUsers()).length > 0) return null;
    const user = await this.store.createUser({ name: "admin", role: "admin", passwordHash: null });
    const at = this.#now();
    await this.store.addEvent({
      at,
      kind: "user_created",
      userId: user.id,
      detail: { name: "admin", role: "admin" },
    });
    if (!withToken) return { user: "admin", token: null };
    const token = newToken();
    const rec = await this.store.createToken({
      userId: user.id,
      label: FIRST_TOKEN_LABEL,
      hash: hashToken(token),
      expiresAt: null,
    });
    await this.store.addEvent({
      at,
      kind: "token_created",
      userId: user.id,
      detail: { tokenId: rec.id, label: rec.label },
    });
    return { user: "admin", token };
  }

  /**
   * The user static tokens act as: the first enabled admin. When the store fails or takes longer
   * than {@link STATIC_LOOKUP_MS}, the last one found stands in, so that static-token logins keep
   * working while the database is down (throws only when none was ever found).
   */
  async staticAdmin(): Promise<User | null> {
    const lookup = this.store.listUsers().then((users) => {
      this.#admin = users.find((u) => u.role === "admin" && !u.disabled) ?? null;
      this.#adminKnown = true;
      return this.#admin;
    });
    if (!this.#adminKnown) return await lookup;
    lookup.catch(() => {}); // it still refreshes the last known admin when it completes
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), STATIC_LOOKUP_MS);
    });
    try {
      const found = await Promise.race([lookup, late]).catch(() => "late" as const);
      return found === "late" ? this.#admin : found;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Checks a bearer token. Failure messages say what is wrong without revealing anything. */
  async authenticate(token: string): Promise<AuthResult> {
    const hash = hashToken(token);
    const h = Buffer.from(hash, "hex");
    let staticIndex = -1;
    // Every entry is compared (constant time overall); the first match names the owner.
    this.#static.forEach((s, i) => {
      if (timingSafeEqual(s, h) && staticIndex < 0) staticIndex = i;
    });
    if (staticIndex >= 0) {
      const admin = await this.staticAdmin();
      if (!admin) {
        return { ok: false, message: "no enabled admin user owns the static --token tokens" };
      }
      // The operator's own tokens may do everything, whatever the admin user was granted.
      const p = { ...principal(admin, null, "static token", "admin"), egress: true, vpn: true };
      return { ok: true, principal: { ...p, owner: `${p.owner}.static${staticIndex + 1}` } };
    }
    const rec = await this.store.tokenByHash(hash);
    if (!rec) return { ok: false, message: WRONG_TOKEN };
    const now = this.#now();
    if (rec.revokedAt !== null) {
      return { ok: false, message: "this token was revoked: ask the operator for a new one" };
    }
    if (rec.expiresAt !== null && rec.expiresAt <= now) {
      return {
        ok: false,
        message: `this token expired on ${
          new Date(rec.expiresAt).toISOString()
        }: ask the operator for a new one`,
      };
    }
    const user = await this.store.userById(rec.userId);
    if (!user) return { ok: false, message: WRONG_TOKEN };
    if (user.disabled) {
      return { ok: false, message: `user ${user.name} is disabled: ask the operator` };
    }
    await this.store.touchToken(rec.id, now);
    await this.store.touchUser(user.id, now);
    return { ok: true, principal: principal(user, rec.id, rec.label, rec.scope) };
  }

  /**
   * Re-checks a running session's token and user; returns why it is no longer valid, or null.
   * Also returns the user's current limits and permissions so changes apply without a reconnect.
   */
  async recheck(p: Principal): Promise<Recheck> {
    const user = await this.store.userById(p.userId);
    if (!user) {
      return {
        reason: "the user was deleted",
        limits: p.limits,
        permissions: { egress: p.egress, vpn: p.vpn },
      };
    }
    const found = (reason: string | null): Recheck => ({
      reason,
      limits: user.limits,
      permissions: p.tokenId === null
        ? { egress: p.egress, vpn: p.vpn }
        : { egress: user.egress, vpn: user.vpn },
    });
    if (user.disabled) return found(`user ${user.name} was disabled`);
    if (p.tokenId !== null) {
      const rec = await this.store.tokenById(p.tokenId);
      if (!rec || rec.revokedAt !== null) return found("this token was revoked");
      if (rec.expiresAt !== null && rec.expiresAt <= this.#now()) {
        return found("this token expired");
      }
    }
    return found(null);
  }
}

function principal(
  user: User,
  tokenId: number | null,
  label: string,
  scope: TokenScope,
): Principal {
  return {
    scope,
    owner: `u${user.id}`,
    userId: user.id,
    userName: user.name,
    tokenId,
    tokenLabel: label,
    limits: user.limits,
    egress: user.egress,
    vpn: user.vpn,
  };
}
