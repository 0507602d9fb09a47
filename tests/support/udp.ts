// UDP in tests: a loopback socket with a bounded inbox, local UDP services (echo, DNS, silent),
// DNS query/answer packets, and the kernel's count of UDP receive-buffer drops.
import { Notifier } from "./wait.ts";

const LOOPBACK = "127.0.0.1";
/** Datagrams an inbox keeps before it counts the rest as overflow. */
const MAX_INBOX = 20_000;

/** A datagram with the address it came from. */
export interface Datagram {
  readonly data: Uint8Array;
  readonly from: Deno.NetAddr;
}

/**
 * A UDP socket on 127.0.0.1:0. Every datagram goes to `onDatagram` when one is given (its bytes
 * are valid until the handler's promise settles: the next receive reuses them), else a copy goes
 * into a bounded inbox read with {@link UdpSocket.next}. Reading runs until {@link UdpSocket.close}.
 */
export class UdpSocket {
  readonly conn: Deno.DatagramConn;
  readonly port: number;
  readonly changed = new Notifier();
  /** Datagrams received so far. */
  received = 0;
  /** Datagrams the inbox had no room for. */
  overflow = 0;
  readonly #inbox: Datagram[] = [];
  readonly #loop: Promise<void>;
  /** One receive buffer for every datagram: `receive()` without one allocates 64 KiB per call. */
  readonly #buf = new Uint8Array(64 * 1024);

  constructor(onDatagram?: (d: Datagram, sock: UdpSocket) => void | Promise<void>) {
    this.conn = Deno.listenDatagram({ transport: "udp", hostname: LOOPBACK, port: 0 });
    this.port = (this.conn.addr as Deno.NetAddr).port;
    this.#loop = this.#read(onDatagram);
  }

  async #read(
    onDatagram?: (d: Datagram, sock: UdpSocket) => void | Promise<void>,
  ): Promise<void> {
    try {
      for (;;) {
        const [data, from] = await this.conn.receive(this.#buf);
        this.received++;
        if (onDatagram) {
          await onDatagram({ data, from: from as Deno.NetAddr }, this);
        } else if (this.#inbox.length < MAX_INBOX) {
          this.#inbox.push({ data: data.slice(), from: from as Deno.NetAddr });
        } else {
          this.overflow++;
        }
        this.changed.notify();
      }
    } catch {
      // closed by close()
    }
    this.changed.notify();
  }

  /** Sends one datagram to 127.0.0.1:`port` (or to `to`). */
  async send(data: Uint8Array, to: number | Deno.NetAddr): Promise<void> {
    const addr: Deno.NetAddr = typeof to === "number"
      ? { transport: "udp", hostname: LOOPBACK, port: to }
      : to;
    await this.conn.send(data, addr);
  }

  /** Datagrams waiting in the inbox. */
  get pending(): number {
    return this.#inbox.length;
  }

  /** Takes every datagram waiting in the inbox. */
  drain(): Datagram[] {
    return this.#inbox.splice(0);
  }

  /** The next datagram of the inbox, waiting at most `ms`. */
  async next(ms: number, what = `a datagram on port ${this.port}`): Promise<Datagram> {
    await this.changed.until(what, () => this.#inbox.length > 0, ms);
    return this.#inbox.shift()!;
  }

  /** Stops reading and closes the socket. */
  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    await this.#loop;
  }
}

/** A UDP echo service: every datagram goes back to its sender. */
export function udpEcho(): UdpSocket {
  return new UdpSocket(async (d, sock) => {
    await sock.send(d.data, d.from).catch(() => {});
  });
}

/**
 * A service that answers only datagrams starting with "ping" (with "pong" and the rest) and
 * counts everything else, never answering it.
 */
export function udpSilent(): UdpSocket {
  return new UdpSocket(async (d, sock) => {
    if (startsWith(d.data, PING)) {
      const reply = d.data.slice();
      reply.set(PONG);
      await sock.send(reply, d.from).catch(() => {});
    }
  });
}

const PING = new TextEncoder().encode("ping");
const PONG = new TextEncoder().encode("pong");

function startsWith(data: Uint8Array, prefix: Uint8Array): boolean {
  if (data.byteLength < prefix.byteLength) return false;
  return prefix.every((b, i) => data[i] === b);
}

/** Datagram `seq` of an echo test, `size` bytes: its number, then bytes that depend on it. */
export function numbered(seq: number, size: number): Uint8Array {
  const d = new Uint8Array(size);
  new DataView(d.buffer).setUint32(0, seq);
  for (let j = 4; j < size; j++) d[j] = (seq * 31 + j * 7) & 0xff;
  return d;
}

/** `ping` + `tag`, answered by {@link udpSilent} with `pong` + `tag`. */
export function ping(tag: string): Uint8Array {
  return new TextEncoder().encode(`ping${tag}`);
}

/** A DNS question. */
export interface DnsQuestion {
  readonly id: number;
  readonly name: string;
  readonly qtype: number;
}

/** A DNS answer with its A records. */
export interface DnsAnswer {
  readonly id: number;
  readonly rcode: number;
  readonly addresses: string[];
}

const QTYPE_A = 1;
const QCLASS_IN = 1;

/** A standard query (recursion desired) for `name`'s A records. */
export function dnsQuery(id: number, name: string): Uint8Array {
  const out: number[] = [id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
  for (const label of name.split(".")) {
    const bytes = new TextEncoder().encode(label);
    if (bytes.byteLength === 0 || bytes.byteLength > 63) {
      throw new RangeError(`bad label in ${name}`);
    }
    out.push(bytes.byteLength, ...bytes);
  }
  out.push(0, QTYPE_A >> 8, QTYPE_A & 0xff, QCLASS_IN >> 8, QCLASS_IN & 0xff);
  return new Uint8Array(out);
}

/** Reads an uncompressed name at `off`; returns it and the offset after it. */
function readName(p: Uint8Array, off: number): [string, number] {
  const labels: string[] = [];
  for (let hops = 0; hops < 128; hops++) {
    const len = p[off];
    if (len === undefined) throw new RangeError("DNS name runs past the packet");
    if (len === 0) return [labels.join("."), off + 1];
    if (len >= 0xc0) return [labels.join("."), off + 2]; // a pointer ends the name
    labels.push(new TextDecoder().decode(p.subarray(off + 1, off + 1 + len)));
    off += 1 + len;
  }
  throw new RangeError("DNS name has too many labels");
}

function u16(p: Uint8Array, off: number): number {
  if (off + 2 > p.byteLength) throw new RangeError("DNS packet too short");
  return (p[off]! << 8) | p[off + 1]!;
}

/** Parses a query's id and first question. */
export function parseDnsQuery(p: Uint8Array): DnsQuestion {
  if (u16(p, 4) !== 1) throw new RangeError("expected one question");
  const [name, off] = readName(p, 12);
  return { id: u16(p, 0), name, qtype: u16(p, off) };
}

/** Parses an answer: its id, rcode and every A record's address. */
export function parseDnsAnswer(p: Uint8Array): DnsAnswer {
  const id = u16(p, 0);
  const flags = u16(p, 2);
  if ((flags & 0x8000) === 0) throw new RangeError("not a response");
  const qd = u16(p, 4);
  const an = u16(p, 6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = readName(p, off)[1] + 4;
  const addresses: string[] = [];
  for (let i = 0; i < an; i++) {
    off = readName(p, off)[1];
    const type = u16(p, off);
    const rdlength = u16(p, off + 8);
    const rdata = p.subarray(off + 10, off + 10 + rdlength);
    if (rdata.byteLength !== rdlength) throw new RangeError("DNS record runs past the packet");
    if (type === QTYPE_A && rdlength === 4) addresses.push([...rdata].join("."));
    off += 10 + rdlength;
  }
  return { id, rcode: flags & 0xf, addresses };
}

/** The answer to `query`: the question copied, one A record `address` (TTL 60). */
export function dnsAnswer(query: Uint8Array, address: string): Uint8Array {
  const q = parseDnsQuery(query);
  const [, end] = readName(query, 12);
  const question = query.subarray(12, end + 4);
  const ip = address.split(".").map(Number);
  const head = [q.id >> 8, q.id & 0xff, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
  // Name: a pointer to the question's name at offset 12.
  const record = [0xc0, 12, 0, QTYPE_A, 0, QCLASS_IN, 0, 0, 0, 60, 0, 4, ...ip];
  const out = new Uint8Array(head.length + question.byteLength + record.length);
  out.set(head);
  out.set(question, head.length);
  out.set(record, head.length + question.byteLength);
  return out;
}

/** A DNS responder that answers every A question with `address`; `questions` lists what it was asked. */
export function dnsResponder(address: string): UdpSocket & { questions: DnsQuestion[] } {
  const questions: DnsQuestion[] = [];
  const sock = new UdpSocket(async (d, s) => {
    try {
      questions.push(parseDnsQuery(d.data));
      await s.send(dnsAnswer(d.data, address), d.from);
    } catch {
      // not a query we answer
    }
  });
  return Object.assign(sock, { questions });
}

/** The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets). */
export function kernelUdpRcvbufErrors(): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((l) =>
    l.startsWith("Udp: ")
  );
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  return Number(values[names.indexOf("RcvbufErrors")] ?? NaN);
}
