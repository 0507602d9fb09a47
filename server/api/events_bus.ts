// Live events of the running server (clients, tunnels, rates) for the API's Server-Sent Events.

/** A client (control session) came or went. */
export interface ClientEventData {
  readonly session: string;
  readonly user: string;
  readonly userId: number;
  readonly address: string;
}

/** A tunnel opened or closed. */
export interface TunnelEventData {
  readonly id: string;
  readonly name: string;
  readonly user: string;
  readonly userId: number;
  readonly url: string;
  readonly port: number;
  readonly reason?: string;
}

/** Server-wide traffic over the last second. */
export interface RatesData {
  readonly bytesInPerSecond: number;
  readonly bytesOutPerSecond: number;
  readonly connectionsActive: number;
  readonly connectionsPerSecond: number;
  readonly clientsConnected: number;
  readonly tunnelsActive: number;
}

/** One live event; `userId` is whose it is (null: server-wide, for admins only). */
export type BusEvent =
  | { readonly type: "client.connected" | "client.disconnected"; readonly data: ClientEventData }
  | { readonly type: "tunnel.opened" | "tunnel.closed"; readonly data: TunnelEventData }
  | { readonly type: "rates"; readonly data: RatesData };

/** The event types, for documentation and tests. */
export const BUS_EVENT_TYPES = [
  "client.connected",
  "client.disconnected",
  "tunnel.opened",
  "tunnel.closed",
  "rates",
] as const;

/** Server totals the rates are computed from (monotonic counters and gauges). */
export interface RateSource {
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly connectionsTotal: number;
  readonly connectionsActive: number;
  readonly clientsConnected: number;
  readonly tunnelsActive: number;
}

/** Events a subscriber may hold unread; past it the subscriber is too slow and is cut off. */
export const MAX_QUEUED_EVENTS = 256;

/** Subscribers at once; past it `subscribe` refuses (each holds an open HTTP response). */
export const MAX_SUBSCRIBERS = 1_000;

/** One reader of the bus. `next()` resolves with null once it is closed or cut off. */
export class Subscription {
  readonly #queue: BusEvent[] = [];
  readonly #accepts: (e: BusEvent) => boolean;
  readonly #max: number;
  readonly #onClose: (s: Subscription) => void;
  #wake: (() => void) | null = null;
  #closed = false;
  /** Why it ended: null while open, "closed" or "slow" (its queue overflowed). */
  endReason: "closed" | "slow" | null = null;

  constructor(accepts: (e: BusEvent) => boolean, max: number, onClose: (s: Subscription) => void) {
    this.#accepts = accepts;
    this.#max = max;
    this.#onClose = onClose;
  }

  /** Queues `e` if this subscriber wants it; cuts the subscriber off when its queue is full. */
  offer(e: BusEvent): void {
    if (this.#closed || !this.#accepts(e)) return;
    if (this.#queue.length >= this.#max) {
      this.close("slow");
      return;
    }
    this.#queue.push(e);
    this.#wake?.();
  }

  /** The next event, waiting for one; null once closed (queued events are dropped then). */
  async next(): Promise<BusEvent | null> {
    while (!this.#closed) {
      const e = this.#queue.shift();
      if (e) return e;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = null;
    }
    return null;
  }

  close(reason: "closed" | "slow" = "closed"): void {
    if (this.#closed) return;
    this.#closed = true;
    this.endReason = reason;
    this.#queue.length = 0;
    this.#wake?.();
    this.#onClose(this);
  }
}

/**
 * Fan-out of live events to subscribers, each with a bounded queue. While anyone listens, a
 * `rates` event is published every `intervalMs` from the server's counters.
 */
export class EventBus {
  readonly #subs = new Set<Subscription>();
  readonly #rates: () => RateSource;
  readonly #intervalMs: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #last: { at: number; totals: RateSource } | null = null;
  readonly #now: () => number;

  constructor(rates: () => RateSource, intervalMs = 1_000, now: () => number = Date.now) {
    this.#rates = rates;
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /** Current subscribers. */
  get size(): number {
    return this.#subs.size;
  }

  /**
   * A new subscriber receiving the events `accepts` lets through; null when there are already
   * {@link MAX_SUBSCRIBERS}.
   */
  subscribe(
    accepts: (e: BusEvent) => boolean = () => true,
    maxQueued = MAX_QUEUED_EVENTS,
  ): Subscription | null {
    if (this.#subs.size >= MAX_SUBSCRIBERS) return null;
    const sub = new Subscription(accepts, maxQueued, (s) => {
      this.#subs.delete(s);
      if (this.#subs.size === 0) this.#stopRates();
    });
    this.#subs.add(sub);
    if (this.#timer === undefined) {
      this.#last = { at: this.#now(), totals: this.#rates() };
      this.#timer = setInterval(() => this.#tick(), this.#intervalMs);
    }
    return sub;
  }

  publish(e: BusEvent): void {
    for (const s of [...this.#subs]) s.offer(e);
  }

  /** Ends every subscription (server shutdown). */
  close(): void {
    for (const s of [...this.#subs]) s.close();
    this.#stopRates();
  }

  #stopRates(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#last = null;
  }

  #tick(): void {
    const at = this.#now();
    const totals = this.#rates();
    const last = this.#last ?? { at: at - this.#intervalMs, totals };
    const secs = Math.max(0.001, (at - last.at) / 1000);
    const per = (now: number, before: number) => Math.max(0, Math.round((now - before) / secs));
    this.#last = { at, totals };
    this.publish({
      type: "rates",
      data: {
        bytesInPerSecond: per(totals.bytesIn, last.totals.bytesIn),
        bytesOutPerSecond: per(totals.bytesOut, last.totals.bytesOut),
        connectionsPerSecond: per(totals.connectionsTotal, last.totals.connectionsTotal),
        connectionsActive: totals.connectionsActive,
        clientsConnected: totals.clientsConnected,
        tunnelsActive: totals.tunnelsActive,
      },
    });
  }
}
