// A local client's socket that reports when it is closed, by whoever owns it by then, so the
// proxy can count the connections it has open.
import { WrappedConn } from "../../shared/prefixed_conn.ts";

/** Wraps `conn`; `onClose` runs once, at the first `close()`. Everything else is passed on. */
export class TrackedConn extends WrappedConn {
  #onClose: (() => void) | null;

  constructor(conn: Deno.Conn, onClose: () => void) {
    super(conn);
    this.#onClose = onClose;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#onClose === null;
  }

  override close(): void {
    const onClose = this.#onClose;
    this.#onClose = null;
    onClose?.();
    super.close();
  }

  [Symbol.dispose](): void {
    if (!this.closed) this.close();
  }
}
