// Per-tunnel caps on what a server can make the client do: streams open at once, local dials at once.

/** Default `--max-connections`: streams (user connections) open at once per tunnel. */
export const DEFAULT_MAX_CONNECTIONS = 256;
/** Largest `--max-connections` (one data connection refuses streams beyond this anyway). */
export const MAX_MAX_CONNECTIONS = 16_384;
/**
 * Connections to a local service being set up at once per tunnel. Further streams wait their turn
 * (each already counts against `--max-connections`, which bounds the queue).
 */
export const LOCAL_DIALS_PER_TUNNEL = 32;

/** A waiting or running local dial. */
interface DialEntry {
  readonly turn: () => void;
  state: "queued" | "dialing" | "done";
}

/**
 * The admission state of one tunnel, shared by every data connection of every session of the
 * client (so a server cannot get more by reconnecting or by opening more data connections).
 */
export class TunnelGate {
  readonly name: string;
  readonly maxStreams: number;
  readonly maxDials: number;
  #streams = 0;
  #dialing = 0;
  /** Streams waiting for a dial slot, oldest first (a Set keeps insertion order). */
  readonly #waiting = new Set<DialEntry>();
  /** Streams refused because the tunnel was at `maxStreams`. */
  refused = 0;

  constructor(name: string, maxStreams: number, maxDials: number = LOCAL_DIALS_PER_TUNNEL) {
    if (!Number.isSafeInteger(maxStreams) || maxStreams < 1) {
      throw new RangeError(`maxStreams must be a positive whole number, got ${maxStreams}`);
    }
    if (!Number.isSafeInteger(maxDials) || maxDials < 1) {
      throw new RangeError(`maxDials must be a positive whole number, got ${maxDials}`);
    }
    this.name = name;
    this.maxStreams = maxStreams;
    this.maxDials = maxDials;
  }

  /** Streams of this tunnel open now (dialing, waiting to dial, or bridged). */
  get streams(): number {
    return this.#streams;
  }

  /** Local dials running now. */
  get dialing(): number {
    return this.#dialing;
  }

  /** Streams waiting for a dial slot. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /**
   * Takes a stream slot; false (and the refusal counted) when `maxStreams` are open. Every true
   * must be matched by one `leave()`.
   */
  enter(): boolean {
    if (this.#streams >= this.maxStreams) {
      this.refused++;
      return false;
    }
    this.#streams++;
    return true;
  }

  /** Gives back a stream slot taken by `enter()`. */
  leave(): void {
    if (this.#streams === 0) throw new Error(`tunnel ${this.name}: leave() without enter()`);
    this.#streams--;
  }

  /**
   * Asks for a dial slot: `turn` is called (synchronously when one is free, else once an earlier
   * dial is done) and the dial may start. The returned function ends the dial, or withdraws the
   * request if `turn` has not been called yet; calling it again does nothing.
   */
  dial(turn: () => void): () => void {
    const entry: DialEntry = { turn, state: "queued" };
    this.#waiting.add(entry);
    this.#next();
    return () => {
      if (entry.state === "queued") this.#waiting.delete(entry);
      else if (entry.state === "dialing") {
        this.#dialing--;
        entry.state = "done";
        this.#next();
      }
      entry.state = "done";
    };
  }

  #next(): void {
    while (this.#dialing < this.maxDials) {
      const entry = this.#waiting.values().next().value;
      if (entry === undefined) return;
      this.#waiting.delete(entry);
      entry.state = "dialing";
      this.#dialing++;
      entry.turn();
    }
  }
}

/** The gates of every tunnel of a client, by tunnel name. */
export class TunnelGates {
  readonly #gates = new Map<string, TunnelGate>();

  constructor(names: Iterable<string>, maxStreams: number, maxDials = LOCAL_DIALS_PER_TUNNEL) {
    for (const name of names) this.#gates.set(name, new TunnelGate(name, maxStreams, maxDials));
  }

  /** The gate of a tunnel, or undefined for a name the client does not publish. */
  get(name: string): TunnelGate | undefined {
    return this.#gates.get(name);
  }

  /** Every gate (for counters). */
  all(): IterableIterator<TunnelGate> {
    return this.#gates.values();
  }
}
