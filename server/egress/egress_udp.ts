// Egress over UDP: one SOCKS5 UDP association of a client, carried as a stream of framed
// datagrams (`ATYP ADDR PORT DATA`), each checked against the rules and sent from the
// association's own sockets; replies come back only from destinations it has sent to.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../../shared/address.ts";
import { DatagramReader, frameDatagram } from "../../shared/datagrams.ts";
import { errorText } from "../../shared/error_text.ts";
import { parseIp } from "../../shared/ip_cidr.ts";
import { memoryPipe, type PipeEnd } from "../../shared/mem_pipe.ts";
import type { MuxStream } from "../../shared/mux_stream.ts";
import { closeQuietly, within } from "../../shared/net.ts";
import { type ErrorCode, MAX_DATAGRAM_BYTES } from "../../shared/protocol.ts";
import { decodeAddressed, encodeAddressed } from "../../shared/socks_address.ts";
import type { EgressPolicy } from "./policy.ts";

/** Destinations an association remembers (replies are let in only from them); oldest go first. */
export const MAX_UDP_DESTINATIONS = 1024;
/** Names an association keeps resolved, and for how long. */
export const UDP_RESOLVE_CACHE_ENTRIES = 256;
export const UDP_RESOLVE_CACHE_MS = 30_000;
/** Refused destinations an association writes an audit row for (one each); the rest are counted. */
export const MAX_UDP_REFUSALS_AUDITED = 64;
/** Biggest datagram received: one buffer of it per socket is reused for every receive. */
const RECEIVE_BYTES = 65_536;

/** What one association carried, for its `egress_udp` audit row. */
export interface UdpTotals {
  datagramsToDestinations: number;
  bytesToDestinations: number;
  datagramsFromDestinations: number;
  bytesFromDestinations: number;
  /** Datagrams refused by the rules (or whose name did not resolve). */
  denied: number;
  /** Dropped otherwise: a full queue, a send that failed, a reply from elsewhere, bad framing. */
  dropped: number;
  /** Distinct destinations sent to. */
  destinations: number;
}

/** What an association needs. */
export interface UdpAssociationDeps {
  readonly policy: EgressPolicy;
  readonly resolve: (host: string) => Promise<string[]>;
  readonly resolveTimeoutMs: number;
  /** No datagram either way for this long ends the association. */
  readonly idleMs: number;
  readonly log: Logger;
  /** An audit row (through egress's per-user budget). */
  readonly audit: (kind: string, detail: Record<string, unknown>) => void;
  /** Called once when the association is over, with what it carried and why it ended. */
  readonly finished: (totals: UdpTotals, reason: string) => void;
  readonly now?: () => number;
}

class Denied extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

/** One client's UDP association on the server. */
export class UdpAssociation {
  /** The IPv4 socket's local address, told to the client in `CONNECTED`. */
  readonly address: string;
  readonly #d: UdpAssociationDeps;
  readonly #now: () => number;
  readonly #socket4: Deno.DatagramConn;
  #socket6: Deno.DatagramConn | null = null;
  #pipe: PipeEnd | null = null;
  /** Destinations sent to (key: address bytes and port), in the order they were last used. */
  readonly #sentTo = new Set<string>();
  readonly #names = new Map<string, { addresses: string[]; expires: number }>();
  readonly #refusedAudited = new Set<string>();
  readonly #totals: UdpTotals = {
    datagramsToDestinations: 0,
    bytesToDestinations: 0,
    datagramsFromDestinations: 0,
    bytesFromDestinations: 0,
    denied: 0,
    dropped: 0,
    destinations: 0,
  };
  #last: number;
  #sweep: ReturnType<typeof setInterval> | undefined;
  #ended = false;

  /** Opens the association's IPv4 socket; throws when it cannot. */
  constructor(deps: UdpAssociationDeps) {
    if (typeof Deno.listenDatagram !== "function") {
      throw new Error("UDP egress needs Deno's --unstable-net flag on the server");
    }
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
    this.#last = this.#now();
    this.#socket4 = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
    const a = this.#socket4.addr as Deno.NetAddr;
    this.address = formatHostPort(a.hostname, a.port);
  }

  /** Carries the association on `stream` until it ends (stream over, idle, or `end()`). */
  start(stream: MuxStream): void {
    const [streamSide, mine] = memoryPipe();
    this.#pipe = mine;
    stream.attach(streamSide.asConn());
    const idle = this.#d.idleMs;
    this.#sweep = setInterval(() => {
      if (this.#now() - this.#last >= idle) this.end("idle");
    }, Math.max(100, Math.min(5_000, idle / 2)));
    this.#fromClient(mine);
    this.#replies(this.#socket4);
  }

  /** Ends the association (idempotent): sockets closed, a clean EOF to the client. */
  end(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    clearInterval(this.#sweep);
    closeQuietly(this.#socket4);
    if (this.#socket6) closeQuietly(this.#socket6);
    if (this.#pipe) {
      this.#pipe.closeWrite().catch(() => {});
      closeQuietly(this.#pipe);
    }
    this.#totals.destinations = this.#sentTo.size;
    this.#d.finished({ ...this.#totals }, reason);
  }

  async #fromClient(pipe: PipeEnd): Promise<void> {
    const reader = new DatagramReader(pipe.asConn());
    let reason = "the client ended it";
    try {
      for (;;) {
        const datagram = await reader.next();
        if (datagram === null) break;
        this.#last = this.#now();
        await this.#send(datagram);
      }
    } catch (e) {
      if (!this.#ended) reason = `the stream failed: ${errorText(e)}`;
    }
    this.end(reason);
  }

  /** Checks and sends one datagram from the client; drops and counts what may not go. */
  async #send(datagram: Uint8Array): Promise<void> {
    const t = this.#totals;
    let d;
    try {
      d = decodeAddressed(datagram);
    } catch {
      t.dropped++;
      return;
    }
    const dest = formatHostPort(d.host, d.port);
    let ip: string;
    try {
      ip = await this.#pick(d.host, d.port, d.isName);
    } catch (e) {
      if (!(e instanceof Denied)) throw e;
      t.denied++;
      this.#refused(dest, e);
      return;
    }
    if (this.#ended) return;
    const bytes = parseIp(ip)!;
    let socket: Deno.DatagramConn;
    try {
      socket = bytes.length === 4 ? this.#socket4 : this.#v6();
    } catch {
      t.dropped++;
      return;
    }
    const key = destinationKey(bytes, d.port);
    // Most recently used last, so the oldest is the one forgotten when there are too many.
    this.#sentTo.delete(key);
    this.#sentTo.add(key);
    if (this.#sentTo.size > MAX_UDP_DESTINATIONS) {
      this.#sentTo.delete(this.#sentTo.values().next().value!);
    }
    try {
      await socket.send(d.data, { transport: "udp", hostname: ip, port: d.port });
      t.datagramsToDestinations++;
      t.bytesToDestinations += d.data.byteLength;
    } catch {
      t.dropped++;
    }
  }

  /** The IPv6 socket, opened with the first IPv6 destination. */
  #v6(): Deno.DatagramConn {
    if (!this.#socket6) {
      this.#socket6 = Deno.listenDatagram({ transport: "udp", hostname: "::", port: 0 });
      this.#replies(this.#socket6);
    }
    return this.#socket6;
  }

  /** The address to send to: the first the rules allow (a name is checked, then resolved). */
  async #pick(host: string, port: number, isName: boolean): Promise<string> {
    const policy = this.#d.policy;
    if (!isName) {
      const v = policy.checkAddress(host, port);
      if (!v.ok) throw new Denied("egress_denied", v.reason);
      return host;
    }
    const v = policy.checkName(host, port);
    if (v !== "allowed" && !v.ok) throw new Denied("egress_denied", v.reason);
    const addresses = await this.#resolve(host);
    let first: string | null = null;
    for (const ip of addresses) {
      const a = policy.checkAddress(ip, port, v === "allowed");
      if (a.ok) return ip;
      first ??= a.reason;
    }
    throw new Denied("egress_denied", first ?? `${host} is not allowed`);
  }

  async #resolve(host: string): Promise<string[]> {
    const name = host.toLowerCase();
    const now = this.#now();
    const cached = this.#names.get(name);
    if (cached && cached.expires > now) return cached.addresses;
    let addresses: string[];
    try {
      addresses = await within(this.#d.resolve(name), this.#d.resolveTimeoutMs);
    } catch (e) {
      throw new Denied("egress_unreachable", `cannot resolve ${host}: ${errorText(e)}`);
    }
    if (addresses.length === 0) {
      throw new Denied("egress_unreachable", `cannot resolve ${host}: no addresses`);
    }
    this.#names.delete(name);
    if (this.#names.size >= UDP_RESOLVE_CACHE_ENTRIES) {
      this.#names.delete(this.#names.keys().next().value!);
    }
    this.#names.set(name, { addresses, expires: now + UDP_RESOLVE_CACHE_MS });
    return addresses;
  }

  /** One audit row and log line per refused destination (up to a limit), the rest counted. */
  #refused(dest: string, e: Denied): void {
    if (this.#refusedAudited.has(dest) || this.#refusedAudited.size >= MAX_UDP_REFUSALS_AUDITED) {
      return;
    }
    this.#refusedAudited.add(dest);
    this.#d.audit("egress_refused", {
      destination: dest,
      code: e.code,
      message: e.message,
      service: "udp",
    });
    this.#d.log.info("UDP egress to {dest} refused: {message}", { dest, message: e.message });
  }

  /** Replies from destinations sent to go back to the client, framed with their source. */
  async #replies(socket: Deno.DatagramConn): Promise<void> {
    const t = this.#totals;
    const buf = new Uint8Array(RECEIVE_BYTES);
    try {
      for (;;) {
        const [data, from] = await socket.receive(buf);
        const addr = from as Deno.NetAddr;
        const bytes = parseIp(addr.hostname);
        // Restricted cone: only a destination this association has sent to may answer.
        if (!bytes || !this.#sentTo.has(destinationKey(bytes, addr.port))) {
          t.dropped++;
          continue;
        }
        let addressed: Uint8Array;
        try {
          addressed = encodeAddressed(addr.hostname, addr.port, data);
        } catch {
          t.dropped++;
          continue;
        }
        if (
          addressed.byteLength > MAX_DATAGRAM_BYTES || !this.#pipe?.offer(frameDatagram(addressed))
        ) {
          t.dropped++;
          continue;
        }
        this.#last = this.#now();
        t.datagramsFromDestinations++;
        t.bytesFromDestinations += data.byteLength;
      }
    } catch {
      // the socket was closed with the association
    }
  }
}

/** A destination's address bytes (IPv4-mapped addresses as IPv4) and port. */
function destinationKey(ip: Uint8Array, port: number): string {
  const v4 = ip.length === 16 && ip.subarray(0, 10).every((b) => b === 0) && ip[10] === 0xff &&
    ip[11] === 0xff;
  return `${(v4 ? ip.subarray(12) : ip).join(".")}|${port}`;
}
