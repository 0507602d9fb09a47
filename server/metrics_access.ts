// Who may read /metrics: a bearer token (--metrics-token) or an address in --metrics-allow.
import { BlockList, isIP } from "node:net";
import { secretsEqual } from "./auth.ts";
import { normalizeIp, parseCidr } from "./client_address.ts";
import type { Secret } from "../shared/secret.ts";

/** `--metrics-allow` when none is given: loopback only. */
export const DEFAULT_METRICS_ALLOW: readonly string[] = ["127.0.0.0/8", "::1/128"];

/** A refusal to serve /metrics: the status and a one-line reason. */
export interface MetricsRefusal {
  readonly status: 401 | 403;
  readonly reason: string;
}

/**
 * Decides /metrics requests. A request carrying `Authorization: Bearer …` is judged by the token
 * alone when one is configured (a wrong token is a 401 even from an allowed address, so a
 * scraper's typo shows up at once); otherwise the client address (the real one behind a
 * --trusted-proxy, as the caller resolves it) must fall in an allowed block.
 */
export class MetricsAccess {
  readonly #allow = new BlockList();
  readonly #token: Secret | null;

  /** `allow` as `--metrics-allow` takes them (throws a TypeError on a bad block). */
  constructor(allow: readonly string[], token: Secret | null) {
    for (const text of allow) {
      const c = parseCidr(text, "--metrics-allow");
      this.#allow.addSubnet(c.address, c.prefix, c.family);
    }
    this.#token = token;
  }

  /** Null when `ip` with this `authorization` header may read the metrics, else the refusal. */
  check(authorization: string | null, ip: string): MetricsRefusal | null {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "")?.[1];
    if (this.#token !== null && authorization !== null) {
      if (bearer !== undefined && secretsEqual(bearer, this.#token.reveal())) return null;
      return { status: 401, reason: "wrong metrics token (expected Authorization: Bearer TOKEN)" };
    }
    const addr = normalizeIp(ip);
    if (addr !== null && this.#allow.check(addr, isIP(addr) === 4 ? "ipv4" : "ipv6")) return null;
    return {
      status: 403,
      reason: `metrics are not served to ${ip}: allow it with --metrics-allow CIDR` +
        (this.#token === null ? " or set --metrics-token" : " or send the --metrics-token"),
    };
  }
}
