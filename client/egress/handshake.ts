// What both proxy protocols share: a bounded reader for handshake bytes, the refusal a handshake
// ends with, and the request it produces when it succeeds.
import type { EgressRefused } from "./egress_types.ts";

/**
 * Handshake bytes held at most: the longest SOCKS5 message (username/password, 513 bytes) with
 * room to spare, and the first chunk of an HTTP head (the head reader takes over from there).
 */
export const HANDSHAKE_BUFFER_BYTES = 1024;

/** The local client closed the connection before its handshake was complete. */
export class HandshakeEof extends Error {
  constructor(got: number) {
    super(
      got === 0
        ? "connection closed before a handshake"
        : `connection closed after ${got} bytes of an incomplete handshake`,
    );
    this.name = "HandshakeEof";
  }
}

/** A handshake that ends here: `reply` (if any) is written to the client, then it is closed. */
export class HandshakeRefused extends Error {
  constructor(
    message: string,
    readonly reply: Uint8Array | null,
    /** `info` for what a user should see (SOCKS4, bad credentials), `debug` for malformed input. */
    readonly level: "debug" | "info" = "debug",
  ) {
    super(message);
    this.name = "HandshakeRefused";
  }
}

/** A destination asked for by a completed handshake, and how to answer the client. */
export interface EgressRequest {
  /** `socks5`, `http-connect` or `http-forward`, for log lines. */
  readonly protocol: string;
  readonly host: string;
  readonly port: number;
  /**
   * A SOCKS5 UDP ASSOCIATE: host:port is where the client will send its datagrams from (often
   * 0.0.0.0:0, "not known yet"), and `accept` tells it the relay's address.
   */
  readonly associate?: boolean;
  /** Bytes already read from the client that belong to the destination. */
  readonly initial: Uint8Array;
  /** Tells the client its destination is open (`address` = what the server dialled). */
  accept(address: string): Promise<void>;
  /** Tells the client why its destination could not be opened. */
  refuse(e: EgressRefused): Promise<void>;
}

/** Reads handshake bytes from a connection into a fixed buffer; never holds more than it. */
export class HandshakeReader {
  readonly #conn: Deno.Conn;
  readonly #buf = new Uint8Array(HANDSHAKE_BUFFER_BYTES);
  #start = 0;
  #end = 0;
  #consumed = 0;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Bytes available without reading. */
  get available(): number {
    return this.#end - this.#start;
  }

  /** Waits until `n` bytes are available (n ≤ HANDSHAKE_BUFFER_BYTES); HandshakeEof on EOF. */
  async need(n: number): Promise<void> {
    if (n > HANDSHAKE_BUFFER_BYTES) throw new RangeError(`cannot buffer ${n} handshake bytes`);
    while (this.#end - this.#start < n) {
      if (this.#end === HANDSHAKE_BUFFER_BYTES) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const got = await this.#conn.read(this.#buf.subarray(this.#end));
      if (got === null) throw new HandshakeEof(this.#consumed + this.#end - this.#start);
      this.#end += got;
    }
  }

  /** The byte `i` places ahead (after `need`). */
  peek(i: number): number {
    return this.#buf[this.#start + i]!;
  }

  /** The next `n` bytes (after `need`), copied. */
  take(n: number): Uint8Array {
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    this.#consumed += n;
    return out;
  }

  /** Everything read but not taken, copied; the reader is empty afterwards. */
  rest(): Uint8Array {
    return this.take(this.#end - this.#start);
  }
}

const encoder = new TextEncoder();

/** Credentials compared in time that does not depend on where they differ. */
export class Credentials {
  readonly #username: Uint8Array;
  readonly #password: Uint8Array;

  constructor(username: string, password: string) {
    this.#username = encoder.encode(username);
    this.#password = encoder.encode(password);
  }

  /** Byte lengths, for the SOCKS5 limit of 255 each. */
  get sizes(): { readonly username: number; readonly password: number } {
    return { username: this.#username.length, password: this.#password.length };
  }

  matches(username: Uint8Array, password: Uint8Array): boolean {
    // Both compared always, so a wrong username takes as long as a wrong password.
    const u = sameBytes(username, this.#username);
    const p = sameBytes(password, this.#password);
    return u && p;
  }

  toString(): string {
    return "***";
  }

  toJSON(): string {
    return "***";
  }

  [Symbol.for("Deno.customInspect")](): string {
    return "***";
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i % Math.max(1, a.length)] ?? 0) ^ b[i]!;
  return diff === 0;
}
