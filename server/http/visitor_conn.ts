// A visitor's socket as a stream sees it: the head the front already read comes first, and every
// byte either way passes an observer (access log, metrics) unchanged.
import { INNER_CONN } from "../../shared/net.ts";
import type { HttpObserver } from "./observer.ts";

/** Wraps `conn` so that reads return `prefix` first; bytes both ways are shown to `observer`. */
export class VisitorConn {
  readonly [INNER_CONN]: Deno.Conn;
  readonly #conn: Deno.Conn;
  #prefix: Uint8Array | null;
  readonly #observer: HttpObserver;
  #ended = false;

  constructor(conn: Deno.Conn, prefix: Uint8Array, observer: HttpObserver) {
    this[INNER_CONN] = conn;
    this.#conn = conn;
    this.#prefix = prefix.byteLength > 0 ? prefix : null;
    this.#observer = observer;
  }

  /** This wrapper as the `Deno.Conn` a stream attaches to (it uses read, write, close, closeWrite). */
  asConn(): Deno.Conn {
    return this as unknown as Deno.Conn;
  }

  get localAddr(): Deno.Addr {
    return this.#conn.localAddr;
  }

  get remoteAddr(): Deno.Addr {
    return this.#conn.remoteAddr;
  }

  async read(p: Uint8Array): Promise<number | null> {
    const prefix = this.#prefix;
    if (prefix) {
      const n = Math.min(p.byteLength, prefix.byteLength);
      p.set(prefix.subarray(0, n));
      this.#prefix = n === prefix.byteLength ? null : prefix.subarray(n);
      this.#observer.request(p.subarray(0, n));
      return n;
    }
    const n = await this.#conn.read(p);
    if (n === null) return null;
    this.#observer.request(p.subarray(0, n));
    return n;
  }

  async write(p: Uint8Array): Promise<number> {
    const n = await this.#conn.write(p);
    this.#observer.response(p.subarray(0, n));
    return n;
  }

  closeWrite(): Promise<void> {
    return (this.#conn as Deno.TcpConn).closeWrite();
  }

  setNoDelay(on?: boolean): void {
    (this.#conn as Deno.TcpConn).setNoDelay?.(on);
  }

  setKeepAlive(on?: boolean): void {
    (this.#conn as Deno.TcpConn).setKeepAlive?.(on);
  }

  close(): void {
    this.#end();
    this.#conn.close();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#observer.end();
  }
}
