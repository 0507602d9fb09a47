// Per-user budgets for stream receive windows: how much a user's tunnels may buffer in the server.
import type { WindowBudget } from "../../shared/mux_stream.ts";

/**
 * Every stream starts with the protocol's initial window; growing it beyond that (so a fast
 * stream can run at full speed) draws on its owner's budget. A user's streams whose readers stall
 * therefore pin at most the initial window each, plus the budget in total.
 */
export class OwnerBudgets {
  readonly #limit: number;
  readonly #used = new Map<string, number>();

  constructor(limitBytes: number) {
    this.#limit = limitBytes;
  }

  /** Bytes of grown windows `owner` holds now. */
  used(owner: string): number {
    return this.#used.get(owner) ?? 0;
  }

  /** The budget of one owner, as its streams see it. */
  of(owner: string): WindowBudget {
    return {
      take: (bytes) => {
        const used = this.#used.get(owner) ?? 0;
        if (used + bytes > this.#limit) return false;
        this.#used.set(owner, used + bytes);
        return true;
      },
      give: (bytes) => {
        const left = (this.#used.get(owner) ?? 0) - bytes;
        if (left <= 0) this.#used.delete(owner);
        else this.#used.set(owner, left);
      },
    };
  }
}
