// Datagrams on a byte stream (UDP tunnels): each is its length (u16, big-endian) and its bytes.
import { DATAGRAM_HEADER_BYTES, MAX_DATAGRAM_BYTES, ProtocolError } from "./protocol.ts";

/** One datagram as stream bytes: length header and payload. Throws for an oversized one. */
export function frameDatagram(payload: Uint8Array): Uint8Array {
  const n = payload.byteLength;
  if (n > MAX_DATAGRAM_BYTES) {
    throw new RangeError(`datagram of ${n} bytes exceeds the ${MAX_DATAGRAM_BYTES}-byte limit`);
  }
  const out = new Uint8Array(DATAGRAM_HEADER_BYTES + n);
  out[0] = n >> 8;
  out[1] = n & 0xff;
  out.set(payload, DATAGRAM_HEADER_BYTES);
  return out;
}

/** Reads framed datagrams off a stream; the buffer never holds more than one datagram's bytes. */
export class DatagramReader {
  readonly #conn: Deno.Conn;
  #buf = new Uint8Array(64 * 1024 + DATAGRAM_HEADER_BYTES);
  #start = 0;
  #end = 0;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The next datagram (a copy), or null at a clean end between datagrams. */
  async next(): Promise<Uint8Array | null> {
    for (;;) {
      const have = this.#end - this.#start;
      if (have >= DATAGRAM_HEADER_BYTES) {
        const n = (this.#buf[this.#start]! << 8) | this.#buf[this.#start + 1]!;
        if (n > MAX_DATAGRAM_BYTES) {
          throw new ProtocolError(
            `datagram length ${n} exceeds the ${MAX_DATAGRAM_BYTES}-byte limit`,
          );
        }
        if (have >= DATAGRAM_HEADER_BYTES + n) {
          const from = this.#start + DATAGRAM_HEADER_BYTES;
          this.#start = from + n;
          return this.#buf.slice(from, from + n);
        }
      }
      if (this.#start > 0) {
        // Move what is left to the front: there is always room for one whole datagram.
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const got = await this.#conn.read(this.#buf.subarray(this.#end));
      if (got === null) {
        if (this.#end - this.#start === 0) return null;
        throw new ProtocolError("the stream ended inside a datagram");
      }
      this.#end += got;
    }
  }
}
