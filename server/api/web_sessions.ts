// Browser sessions of the API and dashboard: in-memory, cookie `mport_session`, with a CSRF token.
import { createHash, randomBytes } from "node:crypto";
import { secretsEqual } from "../auth.ts";

/** Name of the session cookie. */
export const SESSION_COOKIE = "mport_session";
/** Header a cookie-authenticated state-changing request must carry the session's CSRF token in. */
export const CSRF_HEADER = "x-csrf-token";
/** A session unused this long is over. */
export const IDLE_MS = 12 * 3_600_000;
/** A session is over this long after login, however busy. */
export const ABSOLUTE_MS = 7 * 24 * 3_600_000;
/** Sessions kept at most; a login past it ends the least recently used one. */
export const MAX_WEB_SESSIONS = 10_000;

/** One logged-in browser. */
export interface WebSession {
  readonly userId: number;
  /** Sent back by the browser in {@link CSRF_HEADER} on every state-changing request. */
  readonly csrfToken: string;
  readonly createdAt: number;
  lastSeenAt: number;
}

function digest(id: string): string {
  return createHash("sha256").update(id, "utf8").digest("hex");
}

/** Methods that change state and so need the CSRF header when authenticated by cookie. */
export function isStateChanging(method: string): boolean {
  return !["GET", "HEAD", "OPTIONS"].includes(method.toUpperCase());
}

/** The value of cookie `name` in a `Cookie` header, or null. */
export function cookieValue(header: string | null, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * The server's browser sessions. Session ids are 256-bit random values given to the browser in a
 * cookie; only their SHA-256 is kept, so a memory dump does not hand out live sessions.
 */
export class WebSessions {
  /** By SHA-256 of the id; Map order is least recently used first. */
  readonly #byDigest = new Map<string, WebSession>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Sessions held now (expired ones included until looked up or swept). */
  get size(): number {
    return this.#byDigest.size;
  }

  /** Starts a session for `userId`; returns the id for the cookie (shown nowhere else). */
  create(userId: number): { id: string; session: WebSession } {
    this.sweep();
    const id = randomBytes(32).toString("base64url");
    const at = this.#now();
    const session: WebSession = {
      userId,
      csrfToken: randomBytes(32).toString("base64url"),
      createdAt: at,
      lastSeenAt: at,
    };
    this.#byDigest.set(digest(id), session);
    if (this.#byDigest.size > MAX_WEB_SESSIONS) {
      const oldest = this.#byDigest.keys().next().value;
      if (oldest !== undefined) this.#byDigest.delete(oldest);
    }
    return { id, session };
  }

  /** The live session with this id (and marks it used), or null when unknown or expired. */
  lookup(id: string | null): WebSession | null {
    if (!id || id.length > 128) return null;
    const key = digest(id);
    const s = this.#byDigest.get(key);
    if (!s) return null;
    const now = this.#now();
    if (this.#expired(s, now)) {
      this.#byDigest.delete(key);
      return null;
    }
    s.lastSeenAt = now;
    this.#byDigest.delete(key);
    this.#byDigest.set(key, s);
    return s;
  }

  /** The session of a request's `mport_session` cookie, or null. */
  fromRequest(req: Request): WebSession | null {
    return this.lookup(cookieValue(req.headers.get("cookie"), SESSION_COOKIE));
  }

  /** The session id of a request's cookie (for logout), or null. */
  idOf(req: Request): string | null {
    return cookieValue(req.headers.get("cookie"), SESSION_COOKIE);
  }

  /** True when `req` carries the session's CSRF token in {@link CSRF_HEADER} (constant time). */
  csrfOk(session: WebSession, req: Request): boolean {
    const sent = req.headers.get(CSRF_HEADER);
    return sent !== null && secretsEqual(sent, session.csrfToken);
  }

  /** Ends a session; true when it existed. */
  end(id: string | null): boolean {
    return id !== null && this.#byDigest.delete(digest(id));
  }

  /** Ends every session of a user (disabled, password changed). */
  endUser(userId: number): void {
    for (const [k, s] of this.#byDigest) if (s.userId === userId) this.#byDigest.delete(k);
  }

  /** Drops expired sessions. */
  sweep(): void {
    const now = this.#now();
    for (const [k, s] of this.#byDigest) if (this.#expired(s, now)) this.#byDigest.delete(k);
  }

  #expired(s: WebSession, now: number): boolean {
    return now - s.lastSeenAt >= IDLE_MS || now - s.createdAt >= ABSOLUTE_MS;
  }
}

/** The `Set-Cookie` value that gives the browser session `id` (`secure` over TLS). */
export function sessionCookie(id: string, secure: boolean): string {
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${
    ABSOLUTE_MS / 1000
  }${secure ? "; Secure" : ""}`;
}

/** The `Set-Cookie` value that removes the session cookie. */
export function clearedCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${
    secure ? "; Secure" : ""
  }`;
}
