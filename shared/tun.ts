// A Linux TUN device through libc (Deno has no API for it): open /dev/net/tun, TUNSETIFF, then
// non-blocking reads drained in batches after a poll() on a thread of Deno's blocking pool, and
// writes of single IP packets. The device disappears when the descriptor is closed (also when the process dies),
// and with it its addresses and the routes through it.

/** Linux ioctl and flag values (the same on x86_64 and aarch64). */
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const O_RDWR = 0o2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const POLLIN = 0x001;
const EAGAIN = 11;
const EINTR = 4;
const EPERM = 1;
const EACCES = 13;
const EBUSY = 16;
const ENOENT = 2;
/** Longest interface name (IFNAMSIZ − 1). */
export const MAX_DEVICE_NAME = 15;
/** Largest packet read from the device (the biggest MTU a lease may have, with room). */
export const MAX_PACKET_BYTES = 65_535;
/** How long one poll() waits before the reader checks whether it was closed. */
const POLL_MS = 250;

const SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: Libc | null = null;

function load(): Libc {
  if (libc) return libc;
  if (Deno.build.os !== "linux") {
    throw new Error(`TUN devices are implemented for Linux only (this is ${Deno.build.os})`);
  }
  let lib;
  try {
    lib = Deno.dlopen("libc.so.6", SYMBOLS);
  } catch (e) {
    throw new Error(`cannot load libc for the TUN device: ${(e as Error).message}`);
  }
  libc = lib.symbols;
  return libc;
}

function errno(c: Libc): number {
  const p = c.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** Called for each packet read; `packet` is a view valid only during the call. */
export type PacketSink = (packet: Uint8Array) => void;

/** An open TUN device. */
export class TunDevice {
  readonly name: string;
  readonly #fd: number;
  readonly #c: Libc;
  #closed = false;
  readonly #readBuf = new Uint8Array(MAX_PACKET_BYTES);
  readonly #pollFd = new Uint8Array(8);
  /** Packets the kernel refused on write (the device's queue is full or it is down). */
  writeErrors = 0;

  private constructor(name: string, fd: number, c: Libc) {
    this.name = name;
    this.#fd = fd;
    this.#c = c;
    const v = new DataView(this.#pollFd.buffer);
    v.setInt32(0, fd, true);
    v.setInt16(4, POLLIN, true);
  }

  /**
   * Creates the device `name` (`mport0`; a `%d` in it lets the kernel number it). Throws an Error
   * that says what to do when the process lacks CAP_NET_ADMIN or the name is in use.
   */
  static open(name: string): TunDevice {
    if (name.length === 0 || name.length > MAX_DEVICE_NAME || !/^[A-Za-z0-9_.%-]+$/.test(name)) {
      throw new TypeError(
        `invalid device name "${name}": 1-${MAX_DEVICE_NAME} letters, digits, '_', '.' or '-'`,
      );
    }
    const c = load();
    const fd = c.open(new TextEncoder().encode("/dev/net/tun\0"), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const e = errno(c);
      if (e === ENOENT) throw new Error("/dev/net/tun does not exist (load the tun module)");
      if (e === EPERM || e === EACCES) {
        throw new Error(
          "opening /dev/net/tun was not permitted: run as root or with CAP_NET_ADMIN",
        );
      }
      throw new Error(`cannot open /dev/net/tun (errno ${e})`);
    }
    // struct ifreq: char ifr_name[16]; short ifr_flags; (padded to 40 bytes)
    const ifreq = new Uint8Array(40);
    ifreq.set(new TextEncoder().encode(name));
    new DataView(ifreq.buffer).setInt16(16, IFF_TUN | IFF_NO_PI, true);
    if (c.ioctl(fd, BigInt(TUNSETIFF), ifreq) < 0) {
      const e = errno(c);
      c.close(fd);
      if (e === EPERM || e === EACCES) {
        throw new Error(
          `creating TUN device ${name} was not permitted: run as root or with CAP_NET_ADMIN`,
        );
      }
      if (e === EBUSY) {
        throw new Error(`TUN device ${name} is in use by another process (choose another name)`);
      }
      throw new Error(`cannot create TUN device ${name} (TUNSETIFF failed, errno ${e})`);
    }
    const end = ifreq.indexOf(0);
    const actual = new TextDecoder().decode(ifreq.subarray(0, end < 0 ? 16 : Math.min(end, 16)));
    return new TunDevice(actual, fd, c);
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Reads packets until the device is closed: waits (a poll() on Deno's blocking pool) until one is there,
   * then drains up to `batch` packets synchronously and calls `flush()` after each batch, so a
   * caller can send what the batch collected as one message. Resolves when closed.
   */
  async readLoop(sink: PacketSink, flush: () => Promise<void> | void, batch = 64): Promise<void> {
    const c = this.#c;
    const buf = this.#readBuf;
    const room = BigInt(buf.byteLength);
    while (!this.#closed) {
      const ready = await c.poll(this.#pollFd, 1n, POLL_MS);
      if (this.#closed) return;
      if (ready <= 0) continue;
      let n = 0;
      while (n < batch) {
        const got = Number(c.read(this.#fd, buf, room));
        if (got > 0) {
          n++;
          sink(buf.subarray(0, got));
          continue;
        }
        if (got < 0) {
          const e = errno(c);
          if (e === EAGAIN || e === EINTR) break;
          if (this.#closed) return;
          throw new Error(`reading from TUN device ${this.name} failed (errno ${e})`);
        }
        break;
      }
      if (n > 0) {
        const wait = flush();
        if (wait) await wait;
      }
    }
  }

  /** Writes one IP packet; false (and counted) when the kernel did not take it. */
  write(packet: Uint8Array): boolean {
    if (this.#closed) return false;
    const n = Number(this.#c.write(this.#fd, packet, BigInt(packet.byteLength)));
    if (n === packet.byteLength) return true;
    this.writeErrors++;
    return false;
  }

  /** Closes the descriptor: the device, its addresses and its routes go away. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#c.close(this.#fd);
  }
}
