// A local client's socket that reports when it is closed, by whoever owns it by then, so the
// proxy can count the connections it has open.
import { INNER_CONN } from "../../shared/net.ts";

/** Wraps `conn`; `onClose` runs once, at the first `close()`. Everything else is passed on. */
export class TrackedConn {
  readonly [INNER_CONN]: Deno.Conn;
  readonly #conn: Deno.Conn;
  #onClose: (() => void) | null;

  constructor(conn: Deno.Conn, onClose: () => void) {
    this[INNER_CONN] = conn;
    this.#conn = conn;
    this.#onClose = onClose;
  }

  /** This wrapper as the `Deno.Conn` it stands for. */
  asConn(): Deno.Conn {
    return this as unknown as Deno.Conn;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#onClose === null;
  }

  get localAddr(): Deno.Addr {
    return this.#conn.localAddr;
  }

  get remoteAddr(): Deno.Addr {
    return this.#conn.remoteAddr;
  }

  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#conn.readable;
  }

  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    return this.#conn.writable;
  }

  read(p: Uint8Array): Promise<number | null> {
    return this.#conn.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#conn.write(p);
  }

  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  setNoDelay(on?: boolean): void {
    (this.#conn as Deno.TcpConn).setNoDelay?.(on);
  }

  setKeepAlive(on?: boolean): void {
    (this.#conn as Deno.TcpConn).setKeepAlive?.(on);
  }

  ref(): void {
    this.#conn.ref();
  }

  unref(): void {
    this.#conn.unref();
  }

  close(): void {
    const onClose = this.#onClose;
    this.#onClose = null;
    onClose?.();
    this.#conn.close();
  }

  [Symbol.dispose](): void {
    if (!this.closed) this.close();
  }
}
