// The seam between the local egress proxy and the transport that carries its streams to the server.
import type { Logger } from "@logtape/logtape";

/** Opens a connection to host:port from the server's side. */
export interface EgressDialer {
  /** Resolves once the server connected (address = what the server dialled, "ip:port"); rejects with EgressRefused. */
  open(host: string, port: number): Promise<EgressStream>;
  /**
   * Opens a UDP association on the server (SOCKS5 UDP ASSOCIATE); rejects with EgressRefused.
   * A dialer without it answers UDP ASSOCIATE "command not supported".
   */
  openUdp?(): Promise<EgressDatagrams>;
}

/**
 * A UDP association the server relays: each datagram is `ATYP ADDR PORT DATA` (SOCKS5's address
 * encoding), the destination on the way out and the source on the way back.
 */
export interface EgressDatagrams {
  /** Queues one datagram for the server; false when it was dropped (queue full, or ended). */
  send(datagram: Uint8Array): boolean;
  /** The next datagram from the server; null once the association is over. */
  receive(): Promise<Uint8Array | null>;
  /** Ends the association (idempotent). */
  close(): void;
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

/** What the local status page (the inspector port) shows for `mport socks` and `mport vpn`. */
export interface EgressStatus {
  readonly kind: "socks" | "vpn";
  /** The mport server, as configured (`wss://tunnel.example.com`). */
  readonly server: string;
  /** A session with the server is up (false while reconnecting). */
  readonly connected: boolean;
  /** When the current session was welcomed (ms since the epoch), null while disconnected. */
  readonly since: number | null;
  /** Why the last session ended or the server refused, while not connected. */
  readonly problem: string | null;
  /** Bytes sent to the server's side (toward destinations) and received from it. */
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** socks: where the local proxy listens (`127.0.0.1:1080`). */
  readonly listen?: string;
  /** socks: local connections open now, opened in all, refused by the server. */
  readonly connections?: {
    readonly active: number;
    readonly opened: number;
    readonly refused: number;
  };
  /** vpn: the virtual address with its prefix (`10.8.0.2/24`) and the device (`mport0`). */
  readonly virtualIp?: string | null;
  readonly device?: string | null;
  /** vpn: what is routed through the tunnel, the DNS servers set, the kill switch. */
  readonly routes?: readonly string[];
  readonly dns?: readonly string[];
  readonly killSwitch?: boolean;
  /** vpn: IP packets each way, and packets dropped (full queue, not from the virtual address). */
  readonly packetsUp?: number;
  readonly packetsDown?: number;
  readonly dropped?: number;
}
