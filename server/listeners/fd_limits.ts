// File-descriptor headroom for the HTTP front: a reserve of spare descriptors and RLIMIT_NOFILE.
import { errorText } from "../../shared/error_text.ts";

/**
 * A handful of descriptors (opened `/dev/null` files) held back so that, when `accept` fails
 * with EMFILE, closing them lets the front accept the waiting connections and answer them instead
 * of leaving them hanging in the backlog.
 */
export class FdReserve {
  readonly size: number;
  #files: Deno.FsFile[] = [];
  #disabled: string | null = null;

  constructor(size: number) {
    this.size = Math.max(0, Math.floor(size));
    if (this.size > 0 && !canOpenDevNull()) {
      this.#disabled = "no read permission for /dev/null";
    }
  }

  /** Why the reserve cannot be held (no permission), or null. */
  get disabled(): string | null {
    return this.#disabled;
  }

  /** Descriptors currently held. */
  get held(): number {
    return this.#files.length;
  }

  /** Tops the reserve up; false when descriptors ran out before it was full. */
  fill(): boolean {
    if (this.#disabled) return true;
    while (this.#files.length < this.size) {
      const f = openDevNull();
      if (!f) return false;
      this.#files.push(f);
    }
    return true;
  }

  /** Closes every reserved descriptor, making them available to `accept`. */
  release(): void {
    for (const f of this.#files.splice(0)) {
      try {
        f.close();
      } catch {
        // already closed
      }
    }
  }

  /**
   * True when `n` more descriptors can be opened right now (checked by opening and closing them).
   * Asked before work that needs descriptors of its own, so that work fails here, cleanly, and not
   * inside a listener that would stop on EMFILE.
   */
  headroom(n: number): boolean {
    if (this.#disabled) return true;
    const probe: Deno.FsFile[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const f = openDevNull();
        if (!f) return false;
        probe.push(f);
      }
      return true;
    } finally {
      for (const f of probe) f.close();
    }
  }
}

function canOpenDevNull(): boolean {
  try {
    return Deno.permissions.querySync({ name: "read", path: "/dev/null" }).state === "granted";
  } catch {
    return false;
  }
}

function openDevNull(): Deno.FsFile | null {
  try {
    return Deno.openSync("/dev/null", { read: true });
  } catch {
    return null;
  }
}

/**
 * Makes the Deno runtime set up its signal handling now, while descriptors are plentiful.
 * Measured on Deno 2.9.6: the runtime creates its signal pipe on first use, about a second after
 * start even in a program that registers no signal, and panics (an unwrap on EMFILE in
 * ext/signals) if descriptors are exhausted at that moment: the whole process dies. Registering
 * and removing a listener for SIGWINCH (ignored by default) does that first use early.
 * Idempotent; never throws.
 */
export function initSignalHandling(): void {
  if (Deno.build.os === "windows") return;
  const noop = () => {};
  try {
    Deno.addSignalListener("SIGWINCH", noop);
    Deno.removeSignalListener("SIGWINCH", noop);
  } catch {
    // not supported here: nothing to prepare
  }
}

/** Soft and hard RLIMIT_NOFILE (`Infinity` for RLIM_INFINITY). */
export interface NofileLimit {
  readonly soft: number;
  readonly hard: number;
}

/** Result of `raiseNofileLimit`: the limits before and after. */
export interface NofileRaise {
  readonly before: NofileLimit;
  readonly after: NofileLimit;
}

const RLIMIT_NOFILE = 7; // Linux, every architecture
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

const LIBC_SYMBOLS = {
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

/**
 * Raises the soft RLIMIT_NOFILE to the hard limit through libc (FFI). Returns the limits before
 * and after, or a sentence saying why nothing was done (not Linux, no `--allow-ffi`, libc not
 * loadable, setrlimit refused). Never throws.
 *
 * Note: the `deno` CLI already raises the soft limit to the hard one when it starts, so under
 * `deno run` this usually finds nothing to do; it matters where that did not happen.
 */
export function raiseNofileLimit(): NofileRaise | string {
  if (Deno.build.os !== "linux") return `not raised: ${Deno.build.os} is not Linux`;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
      return "not raised: FFI is not permitted (run with --allow-ffi)";
    }
  } catch (e) {
    return `not raised: cannot query the FFI permission: ${errorText(e)}`;
  }
  let lib: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;
  try {
    lib = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  } catch (e) {
    return `not raised: cannot load libc.so.6: ${errorText(e)}`;
  }
  try {
    // struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; } with a 64-bit rlim_t (64-bit Linux).
    const lim = new BigUint64Array(2);
    if (lib.symbols.getrlimit(RLIMIT_NOFILE, lim) !== 0) return "not raised: getrlimit failed";
    const before = toLimit(lim);
    if (lim[0]! >= lim[1]!) return { before, after: before };
    lim[0] = lim[1]!;
    if (lib.symbols.setrlimit(RLIMIT_NOFILE, lim) !== 0) {
      return `not raised: setrlimit to ${before.hard} failed (soft limit stays ${before.soft})`;
    }
    const now = new BigUint64Array(2);
    if (lib.symbols.getrlimit(RLIMIT_NOFILE, now) !== 0) return "raised, but getrlimit failed";
    return { before, after: toLimit(now) };
  } catch (e) {
    return `not raised: ${errorText(e)}`;
  } finally {
    lib.close();
  }
}

function toLimit(lim: BigUint64Array): NofileLimit {
  const n = (v: bigint) => (v === RLIM_INFINITY ? Infinity : Number(v));
  return { soft: n(lim[0]!), hard: n(lim[1]!) };
}
