// Small TCP helpers both programs use: write everything, close without caring whether it is closed.

/** Writes every byte of `data` to `conn`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.byteLength) {
    off += await conn.write(off === 0 ? data : data.subarray(off));
  }
}

/** Closes a connection or listener that may already be closed. */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/**
 * Frees the memory behind `view` now instead of at the next garbage collection, by detaching its
 * whole ArrayBuffer (`transfer(0)`). Only for buffers nothing else refers to any more: every other
 * view of it becomes empty. A flood through many streams would otherwise leave tens of MiB of
 * dead buffers for the collector, which V8 lets grow to 64 MiB before it collects.
 */
export function freeBuffer(view: Uint8Array): void {
  const buffer = view.buffer;
  if (buffer instanceof ArrayBuffer && !buffer.detached) buffer.transfer(0);
}

/** Property under which a wrapping connection keeps the socket it wraps (for resets and options). */
export const INNER_CONN: unique symbol = Symbol("mport.innerConn");

/** The socket under any wrappers (a wrapper sets {@link INNER_CONN}); `conn` itself otherwise. */
export function innermostConn(conn: Deno.Conn): Deno.Conn {
  let c = conn;
  for (;;) {
    const inner = (c as unknown as { [INNER_CONN]?: Deno.Conn })[INNER_CONN];
    if (!inner) return c;
    c = inner;
  }
}

/** `a` then `b` in one new buffer. */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}

/** A wait bounded by {@link within} ran out. */
export class TimedOut extends Error {
  constructor(readonly ms: number) {
    super(`timed out after ${ms / 1000} s`);
    this.name = "TimedOut";
  }
}

/** Waits for `p` at most `ms` (one timer, cleared when `p` settles); rejects with TimedOut. */
export async function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimedOut(ms)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** A connection attempt bounded by `ms`; a connection that arrives after giving up is closed. */
export async function connectWithin<T extends { close(): void }>(
  attempt: Promise<T>,
  ms: number,
): Promise<T> {
  try {
    return await within(attempt, ms);
  } catch (e) {
    attempt.then((c) => c.close(), () => {});
    throw e;
  }
}
