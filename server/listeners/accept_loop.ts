// An accept loop that never dies: it rides out EMFILE/ENFILE and any other accept error, and
// re-creates its listener if that is closed under it.
import type { Logger } from "@logtape/logtape";
import { closeQuietly } from "../../shared/net.ts";
import type { FdReserve } from "./fd_limits.ts";
import { errorText } from "../../shared/error_text.ts";

const BACKOFF_MIN_MS = 50;
const BACKOFF_MAX_MS = 1000;
/** At most this many waiting clients are answered per failed accept. */
const SHED_MAX = 4096;
/** Answering waiting clients stops when none arrives for this long. */
const SHED_WAIT_MS = 10;
/**
 * Answers being written at once while shedding. Each holds a descriptor until written, so the
 * window must fit in the freed reserve; waiting for one to finish recycles its descriptor.
 */
const SHED_WINDOW = 4;
/** A burst of failed accepts is logged at most once per this window (a count of the rest). */
const LOG_WINDOW_MS = 10_000;

interface Burst {
  readonly since: number;
  errors: number;
  shed: number;
  /** Whether its start was logged (then its end is too). */
  readonly logged: boolean;
}

/** What an accept loop needs. */
export interface AcceptLoopOptions {
  /** Creates the listener; called again, with the bound port, to re-create it. */
  listen(port: number): Deno.Listener;
  readonly port: number;
  /** Spare descriptors: freed on EMFILE, re-taken after; a connection is shed while short. */
  readonly reserve: FdReserve;
  readonly log: Logger;
  /** Accepting resumed after failing, or the listener was re-created. */
  onRestart(): void;
  /** A connection to serve. */
  onConn(conn: Deno.Conn): void;
  /** Null to accept at once, or a promise to wait for first (back-pressure on accepting). */
  gate?(): Promise<void> | null;
  /** A connection to answer at once and close (descriptors are short); settles when closed. */
  onShed(conn: Deno.Conn): Promise<void>;
}

/**
 * Accepts until `stop()`. A failed accept (EMFILE, ENFILE, anything) is logged once per burst and
 * counted; on descriptor exhaustion the reserve is freed so that clients waiting in the backlog
 * are accepted and answered instead of hanging; then it backs off (50 ms doubling to 1 s) and
 * retries. A listener closed by anyone but `stop()` is re-created on the same port.
 */
export class AcceptLoop {
  /** The bound address (the port stays the same across re-creations). */
  readonly addr: Deno.NetAddr;
  /** Settles once the loop has stopped. */
  readonly done: Promise<void>;
  readonly #opts: AcceptLoopOptions;
  readonly #shedding = new Set<Promise<void>>();
  #listener: Deno.Listener;
  #pending: Promise<Deno.Conn> | null = null;
  #running = true;
  #wake: (() => void) | null = null;
  readonly #stopped = Promise.withResolvers<void>();
  #lastLogged = -Infinity;
  #unlogged = 0;

  /** Binds (throws like `Deno.listen` when it cannot) and starts accepting. */
  constructor(opts: AcceptLoopOptions) {
    this.#opts = opts;
    this.#listener = opts.listen(opts.port);
    this.addr = this.#listener.addr as Deno.NetAddr;
    this.done = this.#loop();
  }

  /** Closes the listener and ends the loop (connections already accepted are not touched). */
  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    closeQuietly(this.#listener);
    this.#wake?.();
    this.#stopped.resolve();
  }

  #next(): Promise<Deno.Conn> {
    return this.#pending ??= this.#listener.accept();
  }

  async #loop(): Promise<void> {
    const { reserve } = this.#opts;
    reserve.fill();
    let backoff = BACKOFF_MIN_MS;
    let burst: Burst | null = null;
    while (this.#running) {
      const gate = this.#opts.gate?.();
      if (gate) {
        await Promise.race([gate, this.#stopped.promise]);
        continue; // re-check: stopped meanwhile, or still no room
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#next();
        this.#pending = null;
      } catch (e) {
        this.#pending = null;
        if (!this.#running) break;
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) {
          await this.#relisten();
          continue;
        }
        burst ??= this.#burstStarts(e);
        burst.errors++;
        if (isFdExhaustion(e)) {
          const drained = await this.#shedWaiting();
          burst.shed += drained.shed;
          if (drained.recovered) {
            burst = this.#recovered(burst);
            backoff = BACKOFF_MIN_MS;
            continue;
          }
        }
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        continue;
      }
      if (burst) {
        burst = this.#recovered(burst);
        backoff = BACKOFF_MIN_MS;
      }
      if (reserve.fill()) this.#opts.onConn(conn);
      else this.#shed(conn); // accepted, but descriptors are short: answer rather than hold it
    }
  }

  #burstStarts(e: unknown): Burst {
    this.#opts.onRestart();
    const now = Date.now();
    const logged = now - this.#lastLogged >= LOG_WINDOW_MS;
    if (logged) {
      this.#opts.log.warn(
        "cannot accept connections on port {port}: {error}; answering waiting clients " +
          "with 503 and retrying{more}",
        {
          port: this.addr.port,
          error: errorText(e),
          more: this.#unlogged > 0 ? ` (${this.#unlogged} shorter bursts not logged)` : "",
        },
      );
      this.#lastLogged = now;
      this.#unlogged = 0;
    } else {
      this.#unlogged++;
    }
    return { since: now, errors: 0, shed: 0, logged };
  }

  #recovered(burst: Burst): null {
    if (burst.logged) {
      this.#opts.log.info(
        "accepting again on port {port} after {errors} failed accept(s) in {ms} ms; " +
          "{shed} waiting client(s) were answered 503",
        {
          port: this.addr.port,
          errors: burst.errors,
          shed: burst.shed,
          ms: Date.now() - burst.since,
        },
      );
    }
    return null;
  }

  /**
   * Frees the reserve and answers the clients waiting in the backlog 503, for as long as the
   * reserve cannot be taken back (descriptors are still short). A client accepted once it can is
   * served instead, and the drain ends `recovered`.
   */
  async #shedWaiting(): Promise<{ shed: number; recovered: boolean }> {
    const { reserve } = this.#opts;
    reserve.release();
    let shed = 0;
    let recovered = false;
    try {
      const window = Math.max(1, Math.min(SHED_WINDOW, reserve.size));
      for (let i = 0; i < SHED_MAX && this.#running; i++) {
        if (this.#shedding.size >= window) await Promise.race(this.#shedding);
        const conn = await withTimeout(this.#next(), SHED_WAIT_MS);
        if (!conn) break; // nobody waiting: the pending accept becomes the loop's next one
        this.#pending = null;
        if (reserve.fill()) {
          this.#opts.onConn(conn);
          recovered = true;
          break;
        }
        reserve.release(); // still short: keep the freed descriptors for answering
        this.#shed(conn);
        shed++;
      }
    } catch {
      this.#pending = null; // accept failed again; the loop backs off
    }
    // Each answer holds its descriptor until written: let them go out before re-taking.
    await Promise.allSettled([...this.#shedding]);
    reserve.fill();
    return { shed, recovered };
  }

  #shed(conn: Deno.Conn): void {
    const task = this.#opts.onShed(conn).finally(() => this.#shedding.delete(task));
    this.#shedding.add(task);
  }

  async #relisten(): Promise<void> {
    const { log } = this.#opts;
    log.error("HTTP listener on port {port} was closed unexpectedly; re-creating it", {
      port: this.addr.port,
    });
    this.#opts.onRestart();
    let delay = BACKOFF_MIN_MS;
    for (let attempt = 1; this.#running; attempt++) {
      try {
        this.#listener = this.#opts.listen(this.addr.port);
        log.info("HTTP listener on port {port} re-created", { port: this.addr.port });
        return;
      } catch (e) {
        if (attempt === 1) {
          log.warn("cannot re-create the HTTP listener yet: {error}", { error: errorText(e) });
        }
        await this.#sleep(delay);
        delay = Math.min(delay * 2, BACKOFF_MAX_MS);
      }
    }
  }

  /** A backoff pause that `stop()` cuts short. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }
}

/** True for "too many open files", per process (EMFILE) or system-wide (ENFILE). */
export function isFdExhaustion(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (code === "EMFILE" || code === "ENFILE") return true;
  return /too many open files|os error 2[34]\b/i.test(errorText(e));
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
