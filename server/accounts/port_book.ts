// Stable ports: which public port a user's named tunnel holds, kept in the store across restarts,
// until the reservation expires (not used for a TTL) or is recycled (the user is at their cap).
import type { PortRange } from "../../shared/address.ts";
import { SERVER_DEFAULTS } from "../config.ts";
import { type PortAllocator, TunnelRefused } from "../listeners/port_allocator.ts";
import type { PortReservation, ReserveResult, Store, UserLimits } from "../store/store.ts";

/** Longest time between two refreshes of live tunnels' reservations (and sweeps). */
const MAX_SWEEP_INTERVAL_MS = 3_600_000;

/** Options of {@link PortBook}. */
export interface PortBookOptions {
  /** An automatic reservation not used for this long expires; 0: never. Default: the server's. */
  readonly ttlMs?: number;
  /** A user's max tunnels when their limits leave it unset (`--max-tunnels-per-client`). */
  readonly defaultMaxTunnels?: number;
  /** Called with a store failure of a fire-and-forget refresh (at a tunnel's release). */
  readonly onError?: (e: unknown) => void;
  /** Called for each reservation that expired, was recycled or was taken over by another tunnel. */
  readonly onDropped?: (r: PortReservation, reason: DropReason) => void;
}

/**
 * Why a reservation went: not used for the TTL, the least recently used one beyond the user's
 * cap, or taken over by another tunnel of the same user when the range had no other port.
 */
export type DropReason = "expired" | "recycled" | "taken_over";

/** Where a new tunnel that asked for no port may go. */
export interface PortPick {
  /**
   * Ports held by live reservations of other users and of the user's other tunnels (an operator's
   * reservation without a tunnel name stays available to its user).
   */
  readonly avoid: ReadonlySet<number>;
  /** The user's own automatic reservations of other tunnels, least recently used first. */
  readonly recyclable: readonly number[];
}

/** A tunnel holding a port now. */
export interface PortUse {
  readonly userId: number;
  readonly port: number;
}

/** The reservations the tunnel registry consults; backed by the store. */
export class PortBook {
  readonly #store: Store;
  readonly #now: () => number;
  readonly #ttlMs: number;
  readonly #defaultMaxTunnels: number;
  readonly #onError: (e: unknown) => void;
  readonly #onDropped: (r: PortReservation, reason: DropReason) => void;
  readonly #pending = new Set<Promise<unknown>>();

  constructor(store: Store, now: () => number = Date.now, opts: PortBookOptions = {}) {
    this.#store = store;
    this.#now = now;
    this.#ttlMs = opts.ttlMs ?? SERVER_DEFAULTS.reservationTtlMs;
    this.#defaultMaxTunnels = opts.defaultMaxTunnels ?? SERVER_DEFAULTS.maxTunnelsPerClient;
    this.#onError = opts.onError ?? (() => {});
    this.#onDropped = opts.onDropped ?? (() => {});
    if (!Number.isSafeInteger(this.#ttlMs) || this.#ttlMs < 0) {
      throw new RangeError(`reservation TTL must be a whole number of ms >= 0, got ${opts.ttlMs}`);
    }
  }

  /** How often {@link sweep} should run: a tenth of the TTL, from 1 s to 1 h. */
  get sweepIntervalMs(): number {
    return this.#ttlMs === 0
      ? MAX_SWEEP_INTERVAL_MS
      : Math.max(1000, Math.min(MAX_SWEEP_INTERVAL_MS, Math.floor(this.#ttlMs / 10)));
  }

  /** Automatic reservations last used before this time have expired (null: none expire). */
  expiredBefore(): number | null {
    return this.#ttlMs === 0 ? null : this.#now() - this.#ttlMs;
  }

  /** True if `r` has expired: automatic and not used for the TTL. */
  expired(r: PortReservation): boolean {
    const before = this.expiredBefore();
    return !r.explicit && before !== null && r.lastUsedAt < before;
  }

  /** How many automatic reservations a user with `limits` keeps. */
  cap(limits: UserLimits | undefined): number {
    return Math.max(
      1,
      limits?.maxReservedPorts ?? limits?.maxTunnels ?? this.#defaultMaxTunnels,
    );
  }

  /**
   * The port reserved for a user's named tunnel, if any (an expired one too: nobody else has
   * taken it yet, and using it renews it).
   */
  async portFor(userId: number, tunnel: string): Promise<number | null> {
    return (await this.#store.reservationFor(userId, tunnel))?.port ?? null;
  }

  /** Who holds `port`, if anyone (an expired reservation holds nothing). */
  async holder(port: number): Promise<PortReservation | null> {
    const r = await this.#store.reservationByPort(port);
    return r && !this.expired(r) ? r : null;
  }

  /** Where a new tunnel of `userId` named `tunnel` that asked for no port may go. */
  async pick(userId: number, tunnel: string): Promise<PortPick> {
    const avoid = new Set<number>();
    const own: PortReservation[] = [];
    for (const r of await this.#store.listReservations()) {
      if (this.expired(r)) continue;
      if (r.userId !== userId) {
        avoid.add(r.port);
      } else if (r.tunnel !== null && r.tunnel !== tunnel) {
        avoid.add(r.port);
        if (!r.explicit) own.push(r);
      }
    }
    own.sort((a, b) => a.lastUsedAt - b.lastUsedAt || a.createdAt - b.createdAt || a.port - b.port);
    return { avoid, recyclable: own.map((r) => r.port) };
  }

  /**
   * Records that the user's tunnel holds `port` (now its last use). Expired reservations of the
   * port are replaced, an automatic one of the user's other tunnel is taken over, and the user's
   * least recently used automatic reservations beyond their cap are dropped. Not `ok` when
   * someone else holds the port.
   */
  async record(
    userId: number,
    tunnel: string,
    port: number,
    limits?: UserLimits,
  ): Promise<ReserveResult> {
    const r = await this.#store.reservePort({
      userId,
      tunnel,
      port,
      at: this.#now(),
      expiredBefore: this.expiredBefore(),
      maxAutomatic: this.cap(limits),
      takeOverOwn: true,
    });
    if (r.ok) {
      for (const d of r.dropped) {
        const reason = d.port !== port
          ? "recycled"
          : d.userId === userId
          ? "taken_over"
          : "expired";
        this.#onDropped(d, reason);
      }
    }
    return r;
  }

  /**
   * A tunnel let go of its port: its reservation was used until now. Fire and forget (failures go
   * to `onError`); {@link settled} waits for it.
   */
  released(use: PortUse): void {
    this.#track(this.#store.touchReservations([use], this.#now()));
  }

  /**
   * Refreshes the reservations of the tunnels holding ports now, then deletes expired reservations
   * and trims every user's automatic reservations to their cap. Returns what it deleted.
   */
  async sweep(live: readonly PortUse[]): Promise<PortReservation[]> {
    const now = this.#now();
    await this.#store.touchReservations(live, now);
    const before = this.expiredBefore();
    const dropped = before === null ? [] : await this.#store.dropExpiredReservations(before);
    for (const d of dropped) this.#onDropped(d, "expired");
    const counts = new Map<number, number>();
    for (const r of await this.#store.listReservations()) {
      if (!r.explicit) counts.set(r.userId, (counts.get(r.userId) ?? 0) + 1);
    }
    // Every cap is at least 1, so only users with two or more can be over theirs.
    const over = [...counts].filter(([, n]) => n > 1);
    if (over.length > 0) {
      const users = new Map((await this.#store.listUsers()).map((u) => [u.id, u]));
      for (const [userId, n] of over) {
        const cap = this.cap(users.get(userId)?.limits);
        if (n <= cap) continue;
        for (const d of await this.#store.trimReservations(userId, cap)) {
          this.#onDropped(d, "recycled");
          dropped.push(d);
        }
      }
    }
    return dropped;
  }

  /** Resolves once every fire-and-forget store call has finished. */
  async settled(): Promise<void> {
    // Bounded: each round waits for the calls pending now, and new ones come only from releases.
    for (let i = 0; i < 10 && this.#pending.size > 0; i++) {
      await Promise.allSettled([...this.#pending]);
    }
  }

  #track(p: Promise<unknown>): void {
    const tracked = p.catch(this.#onError).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }
}

/**
 * Binds a port for a new tunnel that asked for none: a free port of `range` that no live
 * reservation holds, else — the range being full of reservations — the least recently used of
 * the user's own automatic reservations of other tunnels whose port can be bound, so that a user
 * cycling tunnel names is never stuck on their own reservations. Throws `TunnelRefused`.
 */
export function bindPicked<T = Deno.TcpListener>(
  ports: PortAllocator,
  pick: PortPick,
  range: PortRange | undefined,
  rangeOwner: string,
  bind: (
    port: number,
    range: PortRange | undefined,
    exclude: ReadonlySet<number> | undefined,
    owner: string,
  ) => T = (p, r, ex, o) => ports.bind(p, r, ex, o) as T,
): T {
  try {
    return bind(0, range, pick.avoid, rangeOwner);
  } catch (e) {
    if (!(e instanceof TunnelRefused) || e.code !== "port_taken") throw e;
    for (const port of pick.recyclable) {
      const inside = range ? port >= range.low && port <= range.high : ports.inRange(port);
      if (!inside || ports.held(port)) continue;
      try {
        return bind(port, range, undefined, rangeOwner);
      } catch (inner) {
        if (!(inner instanceof TunnelRefused)) throw inner;
      }
    }
    throw e;
  }
}

/**
 * The refusal for a port someone reserved between the pick and the record: another user, or —
 * said so, since the next try picks another port — another tunnel of the same user.
 */
export function justReservedMessage(port: number, userId: number, heldBy: PortReservation): string {
  return heldBy.userId === userId
    ? `port ${port} was just reserved for your tunnel "${
      heldBy.tunnel ?? "(unnamed)"
    }"; try again (another port will be picked)`
    : `port ${port} was just reserved by another user; try again`;
}
