// Host names of HTTP tunnels: a user's stable subdomains of the HTTP domain, and custom domains an
// admin assigned, kept in the store across restarts.
import { TunnelRefused } from "../listeners/port_allocator.ts";
import type { HostReservation, Store } from "../store/store.ts";

/** Labels never handed out as subdomains: they name the service itself or common infrastructure. */
export const RESERVED_LABELS: ReadonlySet<string> = new Set([
  "admin",
  "api",
  "autoconfig",
  "autodiscover",
  "cdn",
  "dashboard",
  "ftp",
  "imap",
  "localhost",
  "mail",
  "mport",
  "mx",
  "ns",
  "ns1",
  "ns2",
  "ns3",
  "ns4",
  "pop",
  "pop3",
  "smtp",
  "static",
  "status",
  "webmail",
  "www",
]);

/** Length of a random subdomain label. */
export const RANDOM_LABEL_LENGTH = 8;

/** Random labels tried before giving up (each of 36^8 is taken with a tiny chance). */
const RANDOM_TRIES = 16;

const MAX_LABEL = 63;
const MAX_HOST = 253;
const LABEL_RULE = "1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'";

/** What is wrong with a lower-cased DNS label, or null when it is a valid one. */
function labelProblem(label: string): string | null {
  if (label === "") return "is empty";
  if (label.length > MAX_LABEL) return `is ${label.length} characters long (at most ${MAX_LABEL})`;
  if (!/^[a-z0-9-]+$/.test(label)) return "may only contain a-z, 0-9 and '-'";
  if (label.startsWith("-") || label.endsWith("-")) return "may not start or end with '-'";
  return null;
}

/**
 * Validates a subdomain label a user asked for (`--subdomain`) and returns it lower-cased: 1–63
 * characters of a-z, 0-9 and '-', not starting or ending with '-'. Throws
 * `TunnelRefused("bad_message")` saying what is wrong. Reserved labels are refused by
 * {@link HostBook.subdomainFor}, which knows the domain to name.
 */
export function validateSubdomain(label: string): string {
  const l = label.toLowerCase();
  const problem = l.includes(".")
    ? "is more than one label: give one label, without dots"
    : labelProblem(l);
  if (problem !== null) {
    throw new TunnelRefused(
      "bad_message",
      `subdomain ${JSON.stringify(label)} ${problem} (use ${LABEL_RULE})`,
    );
  }
  return l;
}

/**
 * Validates a full host name (a custom domain) and returns it lower-cased: labels as in
 * {@link validateSubdomain}, at least two, at most 253 characters, no trailing dot, no port or
 * path, not an IP address. Throws a TypeError with a sentence that says what to fix.
 */
export function validateHostName(host: string): string {
  const h = host.toLowerCase();
  const example = "e.g. app.example.org";
  if (h === "") throw new TypeError(`the host name is empty (give one, ${example})`);
  if (h.includes("/")) {
    throw new TypeError(
      `${
        JSON.stringify(host)
      } is not a host name: give the name alone, without scheme or path (${example})`,
    );
  }
  if (/^\[?[0-9a-f:]*:[0-9a-f:.]*\]?$/.test(h) || /^\d+(\.\d+){3}$/.test(h)) {
    throw new TypeError(
      `${JSON.stringify(host)} is an IP address: a domain needs a name (${example})`,
    );
  }
  if (h.includes(":")) {
    throw new TypeError(
      `host name ${JSON.stringify(host)} has a port: give the name alone (${example})`,
    );
  }
  if (h.endsWith(".")) {
    throw new TypeError(`host name ${JSON.stringify(host)} ends with a dot: leave it out`);
  }
  if (h.length > MAX_HOST) {
    throw new TypeError(
      `host name is ${h.length} characters long: at most ${MAX_HOST} are allowed`,
    );
  }
  const labels = h.split(".");
  if (labels.length < 2) {
    throw new TypeError(
      `host name ${JSON.stringify(host)} needs at least two labels (${example})`,
    );
  }
  for (const label of labels) {
    const problem = labelProblem(label);
    if (problem !== null) {
      throw new TypeError(
        `host name ${JSON.stringify(host)} has a label that ${problem} ` +
          `(${JSON.stringify(label)}; labels are ${LABEL_RULE})`,
      );
    }
  }
  if (/^\d+$/.test(labels[labels.length - 1]!)) {
    throw new TypeError(
      `host name ${
        JSON.stringify(host)
      } ends in a numeric label: a domain needs a name (${example})`,
    );
  }
  return h;
}

/** A random subdomain label: {@link RANDOM_LABEL_LENGTH} characters of a-z and 0-9. */
export function randomLabel(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  // 252 = 7 × 36: bytes above it are dropped so that every character is equally likely.
  let out = "";
  while (out.length < RANDOM_LABEL_LENGTH) {
    for (const b of crypto.getRandomValues(new Uint8Array(RANDOM_LABEL_LENGTH * 2))) {
      if (b < 252 && out.length < RANDOM_LABEL_LENGTH) out += alphabet[b % 36];
    }
  }
  return out;
}

/** Options of {@link HostBook}. */
export interface HostBookOptions {
  /** The HTTP domain (`--http-domain`), or null when HTTP tunnels are off. */
  readonly domain: string | null;
  readonly now?: () => number;
  /** A fresh subdomain label (tests); default {@link randomLabel}. */
  readonly random?: () => string;
  /**
   * Subdomain reservations kept per user; a new one beyond it drops the user's least recently
   * used ones (custom domains are never dropped). Default {@link MAX_SUBDOMAINS_PER_USER}.
   */
  readonly maxSubdomainsPerUser?: number;
}

/** Subdomains a user keeps reserved at most: a user cannot hoard the name space. */
export const MAX_SUBDOMAINS_PER_USER = 64;

/** The host names HTTP tunnels are served on; backed by the store. */
export class HostBook {
  readonly #store: Store;
  readonly #domain: string | null;
  readonly #now: () => number;
  readonly #random: () => string;
  readonly #maxPerUser: number;

  constructor(store: Store, opts: HostBookOptions) {
    this.#maxPerUser = opts.maxSubdomainsPerUser ?? MAX_SUBDOMAINS_PER_USER;
    this.#store = store;
    this.#domain = opts.domain === null ? null : opts.domain.toLowerCase();
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? randomLabel;
  }

  /** The HTTP domain (`--http-domain`), or null when HTTP tunnels are off. */
  get domain(): string | null {
    return this.#domain;
  }

  /** True if `host` is the HTTP domain or a name under it. */
  #underDomain(host: string): boolean {
    const d = this.#domain;
    return d !== null && (host === d || host.endsWith(`.${d}`));
  }

  /**
   * Host for a user's HTTP tunnel on a subdomain: the requested label (free or the user's own),
   * else the one reserved for (userId, tunnel), else a fresh random label. Records the
   * reservation (tunnel name, last use). Throws `TunnelRefused`: `host_not_allowed` when the
   * server has no HTTP domain, `bad_message` for an invalid label, `host_taken` for a reserved
   * label or one another user holds.
   */
  async subdomainFor(userId: number, tunnel: string, requested?: string): Promise<string> {
    const domain = this.#domain;
    if (domain === null) {
      throw new TunnelRefused(
        "host_not_allowed",
        "this server has no HTTP domain (start mport-server with --http-domain)",
      );
    }
    if (requested !== undefined) {
      const label = validateSubdomain(requested);
      const host = `${label}.${domain}`;
      if (RESERVED_LABELS.has(label)) {
        throw new TunnelRefused(
          "host_taken",
          `subdomain ${host} is reserved by the server (choose another --subdomain)`,
        );
      }
      if (host.length > MAX_HOST) {
        throw new TunnelRefused(
          "bad_message",
          `host name ${host} is longer than ${MAX_HOST} characters (choose a shorter --subdomain)`,
        );
      }
      const r = await this.#reserve(userId, host, tunnel);
      if (!r) {
        throw new TunnelRefused(
          "host_taken",
          `subdomain ${host} is taken by another user (choose another --subdomain)`,
        );
      }
      await this.#trim(userId, host);
      return host;
    }
    const own = await this.#store.hostForTunnel(userId, tunnel);
    // One under an earlier --http-domain is left alone. Renewing fails only if an admin released
    // it and another user took it meanwhile.
    if (own && own.host.endsWith(`.${domain}`) && await this.#reserve(userId, own.host, tunnel)) {
      return own.host;
    }
    for (let i = 0; i < RANDOM_TRIES; i++) {
      const label = this.#random();
      if (RESERVED_LABELS.has(label) || labelProblem(label) !== null) continue;
      const host = `${label}.${domain}`;
      // A fresh label must be free, not merely the user's: it would take another tunnel's.
      if (await this.#store.hostByName(host) !== null) continue;
      if (await this.#reserve(userId, host, tunnel)) {
        await this.#trim(userId, host);
        return host;
      }
    }
    throw new Error(`no free random subdomain of ${domain} found in ${RANDOM_TRIES} tries`);
  }

  /**
   * A custom domain for a user's HTTP tunnel: it must be assigned to the user (kind `domain`).
   * Records the tunnel and last use; returns the host lower-cased. Throws `TunnelRefused`:
   * `bad_message` for an invalid host name, `host_not_allowed` for a name under the HTTP domain
   * or one not assigned to the user.
   */
  async domainFor(userId: number, host: string, tunnel: string): Promise<string> {
    let h: string;
    try {
      h = validateHostName(host);
    } catch (e) {
      if (e instanceof TypeError) throw new TunnelRefused("bad_message", e.message);
      throw e;
    }
    if (this.#underDomain(h)) {
      throw new TunnelRefused(
        "host_not_allowed",
        `${h} is under this server's HTTP domain ${this.#domain}: ask for it with --subdomain`,
      );
    }
    const held = await this.#store.hostByName(h);
    if (
      held === null || held.userId !== userId || held.kind !== "domain" ||
      !await this.#reserve(userId, h, tunnel, "domain")
    ) {
      throw new TunnelRefused(
        "host_not_allowed",
        `domain ${h} is not assigned to you (an admin runs: mport-server domain add ${h} --user NAME)`,
      );
    }
    return h;
  }

  /**
   * Admin: assigns a custom domain to a user. Throws a TypeError for an invalid host name, one
   * under the HTTP domain, or one another user holds (naming them).
   */
  async assignDomain(host: string, userId: number): Promise<HostReservation> {
    const h = validateHostName(host);
    if (this.#underDomain(h)) {
      throw new TypeError(
        `${h} is under the HTTP domain ${this.#domain}: its subdomains go to tunnels that ask ` +
          "for them (--subdomain), they are not assigned",
      );
    }
    const r = await this.#store.reserveHost({
      host: h,
      userId,
      kind: "domain",
      tunnel: null,
      at: this.#now(),
    });
    if (!r.ok) {
      const holder = await this.#store.userById(r.heldBy);
      throw new TypeError(
        `domain ${h} is already held by ${holder?.name ?? `user ${r.heldBy}`} ` +
          `(free it first: mport-server domain remove ${h})`,
      );
    }
    return r.reservation;
  }

  /** Drops the user's least recently used subdomains beyond the cap (never `keep`). */
  async #trim(userId: number, keep: string): Promise<void> {
    const mine = (await this.#store.listHosts(userId))
      .filter((h) => h.kind === "subdomain" && h.host !== keep)
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
    const excess = mine.length + 1 - this.#maxPerUser;
    for (const h of mine.slice(0, Math.max(0, excess))) await this.#store.releaseHost(h.host);
  }

  /** Reserves `host` for the user's tunnel now; false when another user holds it. */
  async #reserve(
    userId: number,
    host: string,
    tunnel: string,
    kind: "subdomain" | "domain" = "subdomain",
  ): Promise<boolean> {
    const r = await this.#store.reserveHost({ host, userId, kind, tunnel, at: this.#now() });
    return r.ok;
  }
}
