// Socket control Deno lacks, through libc: closing with a reset (RST) so a cut-off transfer reads
// as an error, and capping a socket's unsent bytes (TCP_NOTSENT_LOWAT).
//
// Why not SO_LINGER 0: Deno's close() calls shutdown(SHUT_WR) before close(), so the FIN goes out
// first and the peer reads a clean end of stream before the RST (measured on Deno 2.9.6, strace).
// Instead, connect(fd, AF_UNSPEC) makes Linux's tcp_disconnect() send the RST at once and leave the
// socket unconnected; Deno's shutdown then fails with ENOTCONN and its close() sends nothing more.
// Deno offers neither call, so they go through FFI into libc, on the descriptor Deno keeps on an
// accepted TcpConn, or one found by matching getsockname/getpeername against the conn's addresses.

import { errorText } from "./error_text.ts";
import { innermostConn } from "./net.ts";

/** Whether {@link resetConn} can send a real RST in this process, and how or why not. */
export interface ResetSupport {
  readonly ok: boolean;
  /** The mechanism in use, when `ok`. */
  readonly how?: string;
  /** Why aborted connections fall back to a plain close (a FIN), when not `ok`. */
  readonly why?: string;
}

// Linux values (the same on x86_64 and aarch64).
const AF_INET = 2;
const AF_INET6 = 10;
const O_RDONLY_CLOEXEC = 0o2000000;

const SYMBOLS = {
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

interface Ready {
  readonly support: ResetSupport;
  readonly libc?: Libc;
}

/** A zeroed `struct sockaddr`, family AF_UNSPEC: connect() to it dissolves the connection. */
const UNSPEC = new Uint8Array(16);
const PROC_SELF_STATUS = new TextEncoder().encode("/proc/self/status\0");
// Scratch space for getsockname/getpeername (sized for sockaddr_storage).
const sockaddr = new Uint8Array(128);
const sockaddrLen = new Uint32Array(1);
const sockaddrLenBytes = new Uint8Array(sockaddrLen.buffer);

let ready: Ready | undefined;
/** Conns already reset or closed here: a second call must not search again. */
const handled = new WeakSet<Deno.Conn>();

function load(): Ready {
  if (Deno.build.os !== "linux") {
    return unsupported(`implemented for Linux only (this is ${Deno.build.os})`);
  }
  let ffi: Deno.PermissionState;
  try {
    // querySync, not request: a permission prompt must never appear on an abort path.
    ffi = Deno.permissions.querySync({ name: "ffi" }).state;
  } catch (e) {
    return unsupported(`cannot query the FFI permission: ${errorText(e)}`);
  }
  if (ffi !== "granted") {
    return unsupported("no FFI permission (run with --allow-ffi, unscoped)");
  }
  try {
    // Kept open for the life of the process.
    const libc = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
    return {
      libc,
      support: { ok: true, how: "connect(fd, AF_UNSPEC) through libc.so.6 (FFI), then close()" },
    };
  } catch (e) {
    return unsupported(`cannot load libc.so.6 through FFI: ${errorText(e)}`);
  }
}

function unsupported(reason: string): Ready {
  return { support: { ok: false, why: `${reason}; aborted connections close with a FIN instead` } };
}

function init(): Ready {
  return ready ??= load();
}

/**
 * Reports once, and then from a cache, whether aborted connections can be reset with an RST here:
 * yes on Linux with `--allow-ffi` (a `deno compile` binary needs it compiled in); elsewhere a plain
 * close. Call it once at startup and log a fallback: the first call loads libc (~1 ms), and a
 * test's resource sanitizer would count that library against the first test that resets a conn.
 */
export function resetSupport(): ResetSupport {
  return init().support;
}

/**
 * Closes `conn` with a TCP reset: the peer's next read or write fails with ECONNRESET instead of
 * seeing a clean end of stream, so a cut-off transfer never looks complete. Data still unsent in
 * the socket's buffer is discarded, and pending reads and writes on `conn` are cancelled as by
 * `close()`. Falls back to a plain `close()` when a reset is impossible (see
 * {@link resetSupport}). Never throws, also on an already closed connection.
 *
 * For when this side aborts. A conn whose own read or write already failed with ConnectionReset
 * needs only `close()` (here it would cost a search, see below, to find nothing to reset).
 *
 * Cost on Linux: ~20 µs for an accepted TcpConn (Deno knows its descriptor). For a connected
 * TcpConn or a TlsConn the descriptor is searched for: one getsockname per descriptor number,
 * ~10 ms with 10,000 sockets open, remembered so that later calls cost ~20 µs until one misses.
 *
 * @returns whether an RST was sent (false after a fallback, or when there was nothing to reset).
 */
export function resetConn(conn: Deno.Conn): boolean {
  let armed = false;
  try {
    if (!handled.has(conn)) {
      handled.add(conn);
      armed = disconnectWithReset(conn);
    }
  } catch {
    // A reset is best effort; the close below still ends the connection.
  }
  try {
    conn.close();
  } catch {
    // Already closed.
  }
  return armed;
}

const IPPROTO_TCP = 6;
const TCP_NOTSENT_LOWAT = 25;

/**
 * Caps the bytes a TCP socket keeps queued in the kernel but not yet sent (TCP_NOTSENT_LOWAT):
 * writes beyond it wait in our own queue instead, where a small frame of another stream is not
 * stuck behind megabytes of bulk data. Data in flight (sent, unacknowledged) is not limited, so
 * throughput over long paths is kept. Best effort: false when it could not be set (no FFI, not
 * Linux, descriptor not found).
 */
export function limitUnsentBytes(conn: Deno.Conn, bytes: number): boolean {
  try {
    const sock = socketOf(conn);
    if (!sock) return false;
    const value = new Int32Array([bytes]);
    const optval = new Uint8Array(value.buffer);
    return sock.libc.setsockopt(sock.fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, optval, 4) === 0;
  } catch {
    return false;
  }
}

function disconnectWithReset(conn: Deno.Conn): boolean {
  const sock = socketOf(conn);
  return sock !== null && sock.libc.connect(sock.fd, UNSPEC, UNSPEC.byteLength) === 0;
}

/** libc and the descriptor of `conn`'s socket; null without FFI or when it cannot be found. */
function socketOf(wrapped: Deno.Conn): { libc: Libc; fd: number } | null {
  const { libc } = init();
  if (!libc) return null;
  const conn = innermostConn(wrapped);
  const local = netAddr(conn.localAddr);
  const remote = netAddr(conn.remoteAddr);
  if (!local || !remote) return null;
  const fd = findFd(libc, conn, local, remote);
  return fd === undefined ? null : { libc, fd };
}

interface Endpoint {
  readonly ip: Uint8Array; // 16 bytes, IPv4 as ::ffff:a.b.c.d
  readonly port: number;
}

function netAddr(addr: Deno.Addr): Endpoint | undefined {
  if (addr.transport !== "tcp") return undefined;
  const ip = parseIp(addr.hostname);
  return ip ? { ip, port: addr.port } : undefined;
}

/**
 * The socket's descriptor. Deno records it on accepted TcpConns; for connected TcpConns and
 * TlsConns it is looked up in a table of this process's TCP sockets, rebuilt on a miss, so that
 * aborting many connections at once (a lost session) costs one scan, not one per connection.
 */
function findFd(
  libc: Libc,
  conn: Deno.Conn,
  local: Endpoint,
  remote: Endpoint,
): number | undefined {
  const known = internalFd(conn);
  if (known !== undefined) {
    // Checked, because after close() the number may already belong to another socket.
    return matches(libc, known, local, remote) ? known : undefined;
  }
  if (isClosedTcpConn(conn)) return undefined; // spares a scan that cannot succeed
  const cached = lookup(libc, local, remote);
  if (cached !== undefined) return cached;
  table = scanSockets(libc);
  return lookup(libc, local, remote);
}

function internalFd(conn: Deno.Conn): number | undefined {
  for (const symbol of Object.getOwnPropertySymbols(conn)) {
    if (symbol.description === "Deno.internal.fd") {
      const fd = (conn as unknown as Record<symbol, unknown>)[symbol];
      return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
    }
  }
  return undefined;
}

/** A closed TcpConn throws BadResource from setNoDelay; TCP_NODELAY on a live one is harmless. */
function isClosedTcpConn(conn: Deno.Conn): boolean {
  const tcp = conn as Partial<Deno.TcpConn>;
  if (typeof tcp.setNoDelay !== "function") return false;
  try {
    tcp.setNoDelay.call(conn, true);
    return false;
  } catch (e) {
    // Only a closed resource is "closed": with a write pending Deno throws a plain Error
    // ("Unable to get resources"), and that socket still needs its reset.
    return e instanceof Deno.errors.BadResource;
  }
}

/** Sockets by local port, from the last scan; may be stale, so every candidate is checked. */
let table = new Map<number, number[]>();

function lookup(libc: Libc, local: Endpoint, remote: Endpoint): number | undefined {
  return table.get(local.port)?.find((fd) => matches(libc, fd, local, remote));
}

/**
 * Records every IPv4/IPv6 socket below the descriptor table's size by its local port: one
 * getsockname per descriptor (closed numbers fail fast), cheaper than listing /proc/self/fd.
 */
function scanSockets(libc: Libc): Map<number, number[]> {
  const found = new Map<number, number[]>();
  const size = fdTableSize(libc);
  for (let fd = 0; fd < size; fd++) {
    const port = inetPort(libc.getsockname, fd);
    if (port === undefined) continue;
    const fds = found.get(port);
    if (fds) fds.push(fd);
    else found.set(port, [fd]);
  }
  return found;
}

/** `FDSize` from /proc/self/status: the descriptor table's capacity, above every open fd. */
function fdTableSize(libc: Libc): number {
  const fd = libc.open(PROC_SELF_STATUS, O_RDONLY_CLOEXEC);
  if (fd < 0) return 0;
  try {
    const buf = new Uint8Array(8192);
    const n = Number(libc.read(fd, buf, BigInt(buf.byteLength)));
    const text = new TextDecoder().decode(buf.subarray(0, Math.max(0, n)));
    return Number(/^FDSize:\s*(\d+)/m.exec(text)?.[1] ?? 0);
  } finally {
    libc.close(fd);
  }
}

type SockaddrCall = (fd: number, addr: Uint8Array, len: Uint8Array) => number;

/** Fills the scratch sockaddr; the port of an IPv4/IPv6 address, else undefined. */
function inetPort(call: SockaddrCall, fd: number): number | undefined {
  sockaddrLen[0] = sockaddr.byteLength;
  if (call(fd, sockaddr, sockaddrLenBytes) !== 0) return undefined;
  const family = sockaddr[0]! | (sockaddr[1]! << 8);
  if (family !== AF_INET && family !== AF_INET6) return undefined;
  return (sockaddr[2]! << 8) | sockaddr[3]!;
}

function matches(libc: Libc, fd: number, local: Endpoint, remote: Endpoint): boolean {
  return sameEndpoint(libc.getpeername, fd, remote) && sameEndpoint(libc.getsockname, fd, local);
}

function sameEndpoint(call: SockaddrCall, fd: number, want: Endpoint): boolean {
  if (inetPort(call, fd) !== want.port) return false;
  const family = sockaddr[0]! | (sockaddr[1]! << 8);
  if (family === AF_INET) {
    return isV4Mapped(want.ip) && equalBytes(sockaddr, 4, want.ip, 12, 4);
  }
  if (family === AF_INET6) {
    return equalBytes(sockaddr, 8, want.ip, 0, 16);
  }
  return false;
}

function isV4Mapped(ip: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (ip[i] !== 0) return false;
  return ip[10] === 0xff && ip[11] === 0xff;
}

function equalBytes(a: Uint8Array, aAt: number, b: Uint8Array, bAt: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[aAt + i] !== b[bAt + i]) return false;
  return true;
}

/** Parses an IPv4 or IPv6 literal (zone id ignored) to 16 bytes, IPv4 as ::ffff:a.b.c.d. */
export function parseIp(text: string): Uint8Array | undefined {
  const host = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const zone = host.indexOf("%");
  const s = zone >= 0 ? host.slice(0, zone) : host;
  const out = new Uint8Array(16);
  if (!s.includes(":")) {
    const v4 = parseV4(s);
    if (!v4) return undefined;
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(v4, 12);
    return out;
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const head = groups(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1]!, true) : [];
  if (!head || !tail) return undefined;
  const total = head.length + tail.length;
  if (halves.length === 2 ? total > 7 : total !== 8) return undefined;
  const words = [...head, ...new Array<number>(8 - total).fill(0), ...tail];
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** Colon-separated 16-bit groups; a trailing dotted IPv4 counts as two. */
function groups(part: string, last: boolean): number[] | undefined {
  if (part === "") return [];
  const words: number[] = [];
  const items = part.split(":");
  for (let i = 0; i < items.length; i++) {
    const item = items[i]!;
    if (last && i === items.length - 1 && item.includes(".")) {
      const v4 = parseV4(item);
      if (!v4) return undefined;
      words.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    } else if (/^[0-9a-fA-F]{1,4}$/.test(item)) {
      words.push(parseInt(item, 16));
    } else {
      return undefined;
    }
  }
  return words;
}

function parseV4(s: string): number[] | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : 256));
  return bytes.every((b) => b <= 255) ? bytes : undefined;
}
