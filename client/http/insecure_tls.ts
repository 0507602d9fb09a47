// TLS to a local development server with a self-signed certificate (`--local-insecure`):
// Deno.connectTls always verifies the chain, node:tls can be told not to.
import * as tls from "node:tls";

/** Bytes read ahead from the socket before it is paused. */
const READ_AHEAD_BYTES = 256 * 1024;

/** A node TLS socket with the read/write/close/closeWrite of a `Deno.Conn`. */
class NodeTlsConn {
  readonly #socket: tls.TLSSocket;
  readonly #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | null = null;
  #reader: (() => void) | null = null;
  readonly localAddr: Deno.Addr;
  readonly remoteAddr: Deno.Addr;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    this.localAddr = {
      transport: "tcp",
      hostname: socket.localAddress ?? "127.0.0.1",
      port: socket.localPort ?? 0,
    };
    this.remoteAddr = {
      transport: "tcp",
      hostname: socket.remoteAddress ?? "127.0.0.1",
      port: socket.remotePort ?? 0,
    };
    socket.on("data", (d: Uint8Array) => {
      this.#chunks.push(d);
      this.#queued += d.byteLength;
      if (this.#queued > READ_AHEAD_BYTES) socket.pause();
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", (e: Error) => {
      this.#error = e;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wake();
    });
  }

  #wake(): void {
    const r = this.#reader;
    this.#reader = null;
    r?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((r) => (this.#reader = r));
    }
    let n = 0;
    while (n < p.byteLength && this.#chunks.length > 0) {
      const head = this.#chunks[0]!;
      const take = Math.min(head.byteLength, p.byteLength - n);
      p.set(head.subarray(0, take), n);
      n += take;
      if (take === head.byteLength) this.#chunks.shift();
      else this.#chunks[0] = head.subarray(take);
    }
    this.#queued -= n;
    if (this.#queued <= READ_AHEAD_BYTES / 2 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    const copy = p.slice();
    return new Promise((resolve, reject) => {
      this.#socket.write(copy, (e?: Error | null) => (e ? reject(e) : resolve(copy.byteLength)));
    });
  }

  closeWrite(): Promise<void> {
    this.#socket.end();
    return Promise.resolve();
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** Connects with TLS without verifying the certificate (it is the user's own local server). */
export function connectInsecureTls(host: string, port: number): Promise<Deno.Conn> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      rejectUnauthorized: false,
      servername: /^[0-9.:]+$/.test(host) ? undefined : host,
    });
    const fail = (e: Error) => reject(e);
    socket.once("error", fail);
    socket.once("secureConnect", () => {
      socket.off("error", fail);
      resolve(new NodeTlsConn(socket) as unknown as Deno.Conn);
    });
  });
}
