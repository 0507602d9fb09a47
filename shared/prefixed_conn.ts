// Connections wrapped for a stream to attach to: the base passes everything to the socket (and
// keeps it under INNER_CONN for resets); a prefixed one first returns bytes already read from it
// (a proxy's or router's handshake read past its end).
import { INNER_CONN } from "./net.ts";

/** Passes every call to `conn`; subclasses change what they need. */
export class WrappedConn {
  readonly [INNER_CONN]: Deno.Conn;
  protected readonly conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this[INNER_CONN] = conn;
    this.conn = conn;
  }

  /** This wrapper as the `Deno.Conn` it stands for (streams use read, write, close, closeWrite). */
  asConn(): Deno.Conn {
    return this as unknown as Deno.Conn;
  }

  get localAddr(): Deno.Addr {
    return this.conn.localAddr;
  }

  get remoteAddr(): Deno.Addr {
    return this.conn.remoteAddr;
  }

  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.conn.readable;
  }

  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    return this.conn.writable;
  }

  read(p: Uint8Array): Promise<number | null> {
    return this.conn.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.conn.write(p);
  }

  closeWrite(): Promise<void> {
    return (this.conn as Deno.TcpConn).closeWrite();
  }

  setNoDelay(on?: boolean): void {
    (this.conn as Deno.TcpConn).setNoDelay?.(on);
  }

  setKeepAlive(on?: boolean): void {
    (this.conn as Deno.TcpConn).setKeepAlive?.(on);
  }

  ref(): void {
    this.conn.ref();
  }

  unref(): void {
    this.conn.unref();
  }

  close(): void {
    this.conn.close();
  }
}

/** `conn`, with `prefix` served before anything read from it. */
export class PrefixedConn extends WrappedConn {
  #prefix: Uint8Array | null;

  constructor(conn: Deno.Conn, prefix: Uint8Array) {
    super(conn);
    this.#prefix = prefix.byteLength > 0 ? prefix : null;
  }

  override read(p: Uint8Array): Promise<number | null> {
    const prefix = this.#prefix;
    if (!prefix) return this.conn.read(p);
    const n = Math.min(p.byteLength, prefix.byteLength);
    p.set(prefix.subarray(0, n));
    this.#prefix = n === prefix.byteLength ? null : prefix.subarray(n);
    return Promise.resolve(n);
  }
}
