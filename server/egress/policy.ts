// Where egress connections may go: the operator's allow and deny rules, and by default nowhere
// inside the server's own networks (loopback, private, link-local: no SSRF through the tunnel).
import { type Cidr, cidrContains, parseCidr, parseIp } from "../../shared/ip_cidr.ts";

/** One `--egress-allow` / `--egress-deny` rule. */
export type EgressRule =
  | {
    readonly kind: "cidr";
    readonly text: string;
    readonly cidr: Cidr;
    readonly ports: readonly [number, number] | null;
  }
  | {
    readonly kind: "domain";
    readonly text: string;
    /** Lower case, without the leading dot. */
    readonly domain: string;
    /** `.example.com` matches the name and every name under it; `example.com` only itself. */
    readonly suffix: boolean;
    readonly ports: readonly [number, number] | null;
  };

/** Blocks refused unless a rule allows them: the server's own and its neighbours' addresses. */
export const DEFAULT_DENIED_BLOCKS: readonly string[] = [
  "0.0.0.0/8", // "this network"
  "10.0.0.0/8",
  "100.64.0.0/10", // CGNAT
  "127.0.0.0/8",
  "169.254.0.0/16", // link-local (cloud metadata services live here)
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15", // benchmarking
  "224.0.0.0/4", // multicast
  "240.0.0.0/4", // reserved, broadcast
  "::/128",
  "::1/128",
  "fc00::/7", // unique local
  "fe80::/10", // link-local
  "ff00::/8", // multicast
];

const DEFAULT_DENIED = DEFAULT_DENIED_BLOCKS.map((b) => parseCidr(b));
const DOMAIN =
  /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Parses a rule: `CIDR`, `CIDR:PORT`, `CIDR:LOW-HIGH` (IPv6 in brackets), or a domain likewise. */
export function parseEgressRule(text: string, flag = "--egress-allow"): EgressRule {
  const t = text.trim();
  const bad = (why: string) => new TypeError(`invalid ${flag} "${text}": ${why}`);
  let target = t;
  let portText: string | null = null;
  const bracket = /^\[([^\]]+)\](?::(.+))?$/.exec(t);
  if (bracket) {
    target = bracket[1]!;
    portText = bracket[2] ?? null;
  } else if ((t.match(/:/g) ?? []).length === 1) {
    [target, portText] = t.split(":") as [string, string];
  } else if (t.includes(":") && parseIp(t) === null && !/^[0-9a-f:.]+\/\d+$/i.test(t)) {
    throw bad("put an IPv6 address in brackets to give a port, e.g. [2001:db8::/32]:443");
  }
  let ports: [number, number] | null = null;
  if (portText !== null) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(portText);
    const low = m ? Number(m[1]) : NaN;
    const high = m ? Number(m[2] ?? m[1]) : NaN;
    if (!m || low < 1 || high > 65535 || low > high) {
      throw bad("the port must be N or LOW-HIGH within 1-65535");
    }
    ports = [low, high];
  }
  if (/^[0-9.]+(\/\d+)?$/.test(target) || target.includes(":")) {
    try {
      return { kind: "cidr", text: t, cidr: parseCidr(target), ports };
    } catch (e) {
      throw bad((e as Error).message);
    }
  }
  const suffix = target.startsWith(".");
  const domain = (suffix ? target.slice(1) : target).toLowerCase();
  if (!DOMAIN.test(domain) || !domain.includes(".") && !suffix) {
    throw bad("use a CIDR block (10.0.0.0/8, 203.0.113.7) or a domain (.example.com)");
  }
  return { kind: "domain", text: t, domain, suffix, ports };
}

/** Why a destination was refused, as a sentence for the user. */
export type EgressVerdict = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** The operator's egress rules. */
export class EgressPolicy {
  readonly #allow: readonly EgressRule[];
  readonly #deny: readonly EgressRule[];

  constructor(allow: readonly string[], deny: readonly string[]) {
    this.#allow = allow.map((r) => parseEgressRule(r, "--egress-allow"));
    this.#deny = deny.map((r) => parseEgressRule(r, "--egress-deny"));
  }

  /**
   * Checks a host name before it is resolved: a deny rule for it refuses it; an allow rule for
   * it lets every address it resolves to through (the operator named it on purpose).
   */
  checkName(host: string, port: number): EgressVerdict | "allowed" {
    const name = host.toLowerCase().replace(/\.$/, "");
    const denied = this.#deny.find((r) => r.kind === "domain" && nameMatches(r, name, port));
    if (denied) return { ok: false, reason: `${host} is denied by --egress-deny ${denied.text}` };
    if (this.#allow.some((r) => r.kind === "domain" && nameMatches(r, name, port))) {
      return "allowed";
    }
    return { ok: true };
  }

  /** Checks an address a connection would go to (after resolution). */
  checkAddress(ip: string, port: number, nameAllowed = false): EgressVerdict {
    const denied = this.#deny.find((r) => r.kind === "cidr" && addressMatches(r, ip, port));
    if (denied) {
      return { ok: false, reason: `${ip}:${port} is denied by --egress-deny ${denied.text}` };
    }
    if (nameAllowed) return { ok: true };
    if (this.#allow.some((r) => r.kind === "cidr" && addressMatches(r, ip, port))) {
      return { ok: true };
    }
    const own = DEFAULT_DENIED.find((c) => cidrContains(c, ip));
    if (own) {
      return {
        ok: false,
        reason:
          `${ip} is in ${own.text}, which egress does not reach unless the operator allows it ` +
          "(--egress-allow)",
      };
    }
    return { ok: true };
  }
}

function portMatches(ports: readonly [number, number] | null, port: number): boolean {
  return ports === null || (port >= ports[0] && port <= ports[1]);
}

function nameMatches(rule: EgressRule & { kind: "domain" }, name: string, port: number): boolean {
  if (!portMatches(rule.ports, port)) return false;
  return name === rule.domain || (rule.suffix && name.endsWith(`.${rule.domain}`));
}

function addressMatches(rule: EgressRule & { kind: "cidr" }, ip: string, port: number): boolean {
  return portMatches(rule.ports, port) && cidrContains(rule.cidr, ip);
}
