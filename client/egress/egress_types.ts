// The seam between the local egress proxy and the transport that carries its streams to the server.
import type { Logger } from "@logtape/logtape";

/** Opens a connection to host:port from the server's side. */
export interface EgressDialer {
  /** Resolves once the server connected (address = what the server dialled, "ip:port"); rejects with EgressRefused. */
  open(host: string, port: number): Promise<EgressStream>;
}

/** A connection the server opened to a destination, not yet carrying bytes. */
export interface EgressStream {
  readonly address: string;
  /** Starts carrying bytes between `conn` and the destination (takes ownership of conn; `initial` = bytes already read from conn that belong to the destination). */
  attach(conn: Deno.Conn, initial?: Uint8Array): void;
  /** Gives the stream up without using it (e.g. the local client went away meanwhile). */
  abandon(): void;
}

/** Why the server could not open a destination. */
export type EgressFailure = "denied" | "unreachable" | "refused" | "timeout" | "failed";

/** The server did not open the destination; `kind` picks the SOCKS reply code or HTTP status. */
export class EgressRefused extends Error {
  constructor(readonly kind: EgressFailure, message: string) {
    super(message);
    this.name = "EgressRefused";
  }
}

/** What `startSocksServer` needs. */
export interface SocksServerOptions {
  readonly hostname: string;
  readonly port: number;
  readonly auth: { readonly username: string; readonly password: string } | null;
  readonly dialer: EgressDialer;
  readonly log: Logger;
  /** Handshake (SOCKS greeting/request or HTTP proxy head) must complete within this (default 10 s). */
  readonly handshakeTimeoutMs?: number;
  /** Most local connections open at once (default 1024); beyond it new ones are closed at once. */
  readonly maxConnections?: number;
}
