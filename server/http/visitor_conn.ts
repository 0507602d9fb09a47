// A visitor's socket as a stream sees it: the head the front already read comes first, and every
// byte either way passes an observer (access log, metrics) unchanged.
import { PrefixedConn } from "../../shared/prefixed_conn.ts";
import type { HttpObserver } from "./observer.ts";

/** Reads return `prefix` first; bytes both ways are shown to `observer`. */
export class VisitorConn extends PrefixedConn {
  readonly #observer: HttpObserver;
  #ended = false;

  constructor(conn: Deno.Conn, prefix: Uint8Array, observer: HttpObserver) {
    super(conn, prefix);
    this.#observer = observer;
  }

  override async read(p: Uint8Array): Promise<number | null> {
    const n = await super.read(p);
    if (n !== null) this.#observer.request(p.subarray(0, n));
    return n;
  }

  override async write(p: Uint8Array): Promise<number> {
    const n = await super.write(p);
    this.#observer.response(p.subarray(0, n));
    return n;
  }

  override close(): void {
    if (!this.#ended) {
      this.#ended = true;
      this.#observer.end();
    }
    super.close();
  }
}
