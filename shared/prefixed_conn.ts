// A connection whose first reads return bytes already taken from it (a proxy's handshake read
// past its end), so a stream can be attached to it as if nothing had been read.
import { INNER_CONN } from "./net.ts";

/** `conn`, with `prefix` served before anything read from it. */
export class PrefixedConn {
  readonly [INNER_CONN]: Deno.Conn;
  readonly #conn: Deno.Conn;
  #prefix: Uint8Array | null;

  constructor(conn: Deno.Conn, prefix: Uint8Array) {
    this[INNER_CONN] = conn;
    this.#conn = conn;
    this.#prefix = prefix.byteLength > 0 ? prefix : null;
  }

  /** This wrapper as the `Deno.Conn` a stream attaches to (read, write, close, closeWrite). */
  asConn(): Deno.Conn {
    return this as unknown as Deno.Conn;
  }

  get localAddr(): Deno.Addr {
    return this.#conn.localAddr;
  }

  get remoteAddr(): Deno.Addr {
    return this.#conn.remoteAddr;
  }

  read(p: Uint8Array): Promise<number | null> {
    const prefix = this.#prefix;
    if (!prefix) return this.#conn.read(p);
    const n = Math.min(p.byteLength, prefix.byteLength);
    p.set(prefix.subarray(0, n));
    this.#prefix = n === prefix.byteLength ? null : prefix.subarray(n);
    return Promise.resolve(n);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#conn.write(p);
  }

  closeWrite(): Promise<void> {
    return (this.#conn as Deno.TcpConn).closeWrite();
  }

  close(): void {
    this.#conn.close();
  }
}
