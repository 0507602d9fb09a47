// Parsers for HOST:PORT addresses, port numbers and port ranges given on the command line.

/** A host and port. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** An inclusive range of TCP ports. */
export interface PortRange {
  readonly low: number;
  readonly high: number;
}

/** Parses a TCP port number (1-65535, or 0 when `allowZero`). */
export function parsePort(text: string, what = "port", allowZero = false): number {
  const min = allowZero ? 0 : 1;
  if (!/^\d{1,5}$/.test(text.trim())) {
    throw new TypeError(`invalid ${what} "${text}": expected a number from ${min} to 65535`);
  }
  const port = Number(text.trim());
  if (port < min || port > 65535) {
    throw new TypeError(`invalid ${what} "${text}": expected a number from ${min} to 65535`);
  }
  return port;
}

/**
 * Parses `HOST:PORT`, `[v6]:PORT` or a bare `PORT` (host = `defaultHost`).
 * Throws a `TypeError` that quotes the input.
 */
export function parseHostPort(text: string, defaultHost: string, allowZero = false): HostPort {
  const t = text.trim();
  if (/^\d+$/.test(t)) return { host: defaultHost, port: parsePort(t, "port", allowZero) };
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(t) ?? /^([^:\s/[\]]+):(\d+)$/.exec(t);
  if (!m) throw new TypeError(`invalid address "${text}": expected HOST:PORT or PORT`);
  return { host: m[1]!, port: parsePort(m[2]!, "port", allowZero) };
}

/** A host name or IP literal without the brackets URLs put around IPv6 (`[::1]` → `::1`). */
export function unbracket(host: string): string {
  return host.replace(/^\[|\]$/g, "");
}

/** Formats a host and port, bracketing IPv6 literals. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parses `LOW-HIGH` (inclusive) or a single port. */
export function parsePortRange(text: string): PortRange {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(text);
  if (!m) throw new TypeError(`invalid port range "${text}": expected LOW-HIGH, e.g. 10000-10999`);
  // Quote the whole range, not just the bad end, so the user sees what they typed.
  const port = (digits: string): number => {
    const p = Number(digits);
    if (p < 1 || p > 65535) {
      throw new TypeError(`invalid port range "${text}": ${digits} is not a port from 1 to 65535`);
    }
    return p;
  };
  const low = port(m[1]!);
  const high = m[2] === undefined ? low : port(m[2]);
  if (low > high) {
    throw new TypeError(`invalid port range "${text}": ${low} is greater than ${high}`);
  }
  return { low, high };
}
