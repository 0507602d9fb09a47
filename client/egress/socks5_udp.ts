// SOCKS5 UDP ASSOCIATE (RFC 1928 §7) on the client: the `RSV RSV FRAG` header in front of each
// datagram, and the relay between the local UDP socket and the association on the server.
import type { Logger } from "@logtape/logtape";
import { closeQuietly } from "../../shared/net.ts";
import { decodeAddressed } from "../../shared/socks_address.ts";
import type { EgressDatagrams } from "./egress_types.ts";

/** `RSV RSV FRAG` in front of every datagram of an association. */
export const SOCKS_UDP_HEADER_BYTES = 3;
/** Biggest datagram received: one buffer of it is reused for every receive. */
const RECEIVE_BYTES = 65_536;

/** A datagram from a SOCKS client, parsed. */
export interface SocksUdpDatagram {
  /** Fragment number: 0 is a whole datagram; fragments are not supported (dropped). */
  readonly frag: number;
  readonly host: string;
  readonly port: number;
  readonly isName: boolean;
  /** `ATYP DST.ADDR DST.PORT DATA`: what travels to the server (a view into the packet). */
  readonly addressed: Uint8Array;
  readonly data: Uint8Array;
}

/**
 * Parses `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA`. Throws a RangeError that says what is
 * wrong (too short, reserved bytes set, bad address, port 0).
 */
export function parseSocksUdp(packet: Uint8Array): SocksUdpDatagram {
  if (packet.byteLength < SOCKS_UDP_HEADER_BYTES) {
    throw new RangeError(`datagram of ${packet.byteLength} bytes has no SOCKS5 UDP header`);
  }
  if (packet[0] !== 0 || packet[1] !== 0) {
    throw new RangeError("datagram's reserved bytes are not zero (not a SOCKS5 UDP datagram)");
  }
  const addressed = packet.subarray(SOCKS_UDP_HEADER_BYTES);
  const d = decodeAddressed(addressed);
  return {
    frag: packet[2]!,
    host: d.host,
    port: d.port,
    isName: d.isName,
    addressed,
    data: d.data,
  };
}

/** `00 00 00` (a whole datagram) in front of `ATYP ADDR PORT DATA`. */
export function encodeSocksUdp(addressed: Uint8Array): Uint8Array {
  const out = new Uint8Array(SOCKS_UDP_HEADER_BYTES + addressed.byteLength);
  out.set(addressed, SOCKS_UDP_HEADER_BYTES);
  return out;
}

/** What one association carried. */
export interface AssociationTotals {
  /** Datagrams sent on to the server, and back to the client. */
  up: number;
  down: number;
  /** Dropped: from another address, fragments, malformed, or a full queue. */
  dropped: number;
}

/** What {@link relayAssociation} needs. */
export interface AssociationOptions {
  /** The TCP connection the association was asked on: it lives as long as this does. */
  readonly control: Deno.Conn;
  /** The local relay socket (the address the client was told). */
  readonly socket: Deno.DatagramConn;
  readonly datagrams: EgressDatagrams;
  /** Only datagrams from this IP (the control connection's peer) are relayed. */
  readonly clientIp: string;
  /** The port the client said it sends from, or 0: then the first sender's port is kept. */
  readonly clientPort: number;
  readonly log: Logger;
}

/**
 * Relays until the control connection closes or the server ends the association; then closes
 * the socket, the association and the control connection.
 */
export async function relayAssociation(opts: AssociationOptions): Promise<AssociationTotals> {
  const { control, socket, datagrams, log } = opts;
  const totals: AssociationTotals = { up: 0, down: 0, dropped: 0 };
  const clientIp = plainIp(opts.clientIp);
  let client: Deno.NetAddr | null = null;
  let malformedLogged = false;
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    closeQuietly(socket);
    datagrams.close();
    closeQuietly(control);
  };
  const fromClient = async () => {
    const buf = new Uint8Array(RECEIVE_BYTES);
    try {
      for (;;) {
        const [packet, from] = await socket.receive(buf);
        const addr = from as Deno.NetAddr;
        // RFC 1928 §7: only the client that asked, from one port (the first one it uses).
        const port = client?.port ?? (opts.clientPort || addr.port);
        if (plainIp(addr.hostname) !== clientIp || addr.port !== port) {
          totals.dropped++;
          continue;
        }
        client ??= addr;
        let d: SocksUdpDatagram;
        try {
          d = parseSocksUdp(packet);
        } catch (e) {
          totals.dropped++;
          if (!malformedLogged) {
            malformedLogged = true;
            log.debug("UDP association: dropped a malformed datagram: {reason}", {
              reason: (e as Error).message,
            });
          }
          continue;
        }
        if (d.frag !== 0) {
          totals.dropped++;
          continue;
        }
        // Copied on its way into the queue, so the buffer may be reused.
        if (datagrams.send(d.addressed)) totals.up++;
        else totals.dropped++;
      }
    } catch {
      // the socket was closed: the association is over
    }
    stop();
  };
  const toClient = async () => {
    for (;;) {
      const d = await datagrams.receive();
      if (d === null) break;
      if (client === null) {
        totals.dropped++;
        continue;
      }
      try {
        await socket.send(encodeSocksUdp(d), client);
        totals.down++;
      } catch {
        if (stopped) break;
        totals.dropped++;
      }
    }
    stop();
  };
  const watchControl = async () => {
    // Nothing more is expected on it; whatever arrives is discarded until it closes.
    const buf = new Uint8Array(512);
    try {
      while ((await control.read(buf)) !== null) {
        // discard
      }
    } catch {
      // reset or closed
    }
    stop();
  };
  await Promise.all([fromClient(), toClient(), watchControl()]);
  return totals;
}

/** An IP without the IPv4-mapped prefix, lower case, so both sockets' views compare equal. */
function plainIp(ip: string): string {
  return ip.toLowerCase().replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, "");
}
