// Stable ports: which public port a user's named tunnel holds, kept in the store across restarts.
import type { PortReservation, Store } from "../store/store.ts";

/** The reservations the tunnel registry consults; backed by the store. */
export class PortBook {
  readonly #store: Store;
  readonly #now: () => number;

  constructor(store: Store, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  /** The port reserved for a user's named tunnel, if any. */
  async portFor(userId: number, tunnel: string): Promise<number | null> {
    return (await this.#store.reservationFor(userId, tunnel))?.port ?? null;
  }

  /** Who holds `port`, if anyone. */
  holder(port: number): Promise<PortReservation | null> {
    return this.#store.reservationByPort(port);
  }

  /** Ports reserved for other users, to skip when picking a free port. */
  async reservedForOthers(userId: number): Promise<Set<number>> {
    const all = await this.#store.listReservations();
    return new Set(all.filter((r) => r.userId !== userId).map((r) => r.port));
  }

  /** Records that the user's tunnel holds `port`; returns false if another user got it first. */
  async record(userId: number, tunnel: string, port: number): Promise<boolean> {
    const r = await this.#store.reservePort({ userId, tunnel, port, at: this.#now() });
    return r.ok;
  }
}
