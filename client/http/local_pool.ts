// Keep-alive connections to an HTTP tunnel's local service: one new TCP (or TLS) connection per
// burst of requests, not per request.
import { formatHostPort } from "../../shared/address.ts";
import { closeQuietly, connectWithin } from "../../shared/net.ts";
import { errorText } from "../../shared/error_text.ts";
import { connectInsecureTls } from "./insecure_tls.ts";

/** The local service of an HTTP tunnel. */
export interface LocalTarget {
  readonly scheme: "http" | "https";
  readonly host: string;
  readonly port: number;
  /** https: accept any certificate (self-signed development servers). */
  readonly insecure: boolean;
}

/** Idle local connections kept per tunnel. */
export const MAX_IDLE_LOCAL = 32;
/** An idle local connection is closed after this long (before most servers' own timeouts). */
export const LOCAL_IDLE_MS = 30_000;

/** The local service could not be reached; the message names it and says what to check. */
export class LocalDialError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LocalDialError";
  }
}

/** `http://127.0.0.1:3000` */
export function targetUrl(t: LocalTarget): string {
  return `${t.scheme}://${formatHostPort(t.host, t.port)}`;
}

interface Idle {
  readonly conn: Deno.Conn;
  readonly since: number;
}

/** A pool of idle keep-alive connections to one local service. */
export class LocalPool {
  readonly target: LocalTarget;
  readonly #dialTimeoutMs: number;
  readonly #idle: Idle[] = [];
  #sweep: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(target: LocalTarget, dialTimeoutMs: number) {
    this.target = target;
    this.#dialTimeoutMs = dialTimeoutMs;
  }

  /** An idle connection (most recently used first), else a new one. */
  async acquire(): Promise<{ conn: Deno.Conn; reused: boolean }> {
    const idle = this.#idle.pop();
    if (idle) return { conn: idle.conn, reused: true };
    return { conn: await this.dial(), reused: false };
  }

  /** A new connection; throws {@link LocalDialError}. */
  async dial(): Promise<Deno.Conn> {
    const t = this.target;
    const attempt: Promise<Deno.Conn> = t.scheme === "https"
      ? (t.insecure ? connectInsecureTls(t.host, t.port) : connectTlsVerified(t.host, t.port))
      : Deno.connect({ hostname: t.host, port: t.port });
    try {
      const conn = await connectWithin(attempt, this.#dialTimeoutMs);
      try {
        (conn as Deno.TcpConn).setNoDelay?.(true);
      } catch {
        // TLS connections set it on the socket below; nothing to do
      }
      return conn;
    } catch (e) {
      const hint = e instanceof Deno.errors.ConnectionRefused
        ? "is it running?"
        : t.scheme === "https" && /certificate|tls|handshake/i.test(errorText(e))
        ? "for a self-signed certificate add --local-insecure"
        : "check the address";
      throw new LocalDialError(
        `cannot connect to the local service ${targetUrl(t)}: ${errorText(e)} (${hint})`,
      );
    }
  }

  /** Gives back a connection whose last response ended cleanly. */
  release(conn: Deno.Conn): void {
    if (this.#closed || this.#idle.length >= MAX_IDLE_LOCAL) {
      closeQuietly(conn);
      return;
    }
    this.#idle.push({ conn, since: Date.now() });
    this.#sweep ??= setInterval(() => this.#expire(), LOCAL_IDLE_MS / 2);
  }

  /** Closes every idle connection; later releases close theirs. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const i of this.#idle.splice(0)) closeQuietly(i.conn);
  }

  #expire(): void {
    const cutoff = Date.now() - LOCAL_IDLE_MS;
    while (this.#idle.length > 0 && this.#idle[0]!.since < cutoff) {
      closeQuietly(this.#idle.shift()!.conn);
    }
    if (this.#idle.length === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }
}

/**
 * A verified TLS connection with its handshake done: Deno.connectTls resolves before the
 * handshake, so a certificate error would otherwise surface as a local service that "closed the
 * connection without answering" instead of a dial error that suggests --local-insecure.
 */
async function connectTlsVerified(hostname: string, port: number): Promise<Deno.TlsConn> {
  const conn = await Deno.connectTls({ hostname, port });
  try {
    await conn.handshake();
  } catch (e) {
    conn.close();
    throw e;
  }
  return conn;
}
