// HTTP tunnel options: the local URL, the host name asked for and the rules, from flags or a
// [[tunnels]] table with type = "http".
import { formatHostPort, parseHostPort } from "../shared/address.ts";
import { IpRules } from "../shared/ip_cidr.ts";
import { parseSize } from "../shared/units.ts";
import type { HttpRules } from "./http/engine.ts";
import type { LocalTarget } from "./http/local_pool.ts";
import {
  parseBasicAuth,
  parseHeaderLine,
  parseHeaderName,
  parseHostHeaderMode,
} from "./http/rules.ts";

/** What an HTTP tunnel needs beyond a name. */
export interface HttpSpec {
  readonly target: LocalTarget;
  /** The subdomain label asked for, or null for the user's stable one. */
  readonly subdomain: string | null;
  /** A custom domain assigned to the user, or null. */
  readonly domain: string | null;
  readonly rules: HttpRules;
}

/** The raw option values, as flags or TOML keys give them. */
export interface HttpOptionValues {
  readonly subdomain?: string;
  readonly domain?: string;
  readonly hostHeader?: string;
  readonly basicAuth?: readonly string[];
  readonly allowIp?: readonly string[];
  readonly denyIp?: readonly string[];
  readonly requestHeaderAdd?: readonly string[];
  readonly requestHeaderRemove?: readonly string[];
  readonly responseHeaderAdd?: readonly string[];
  readonly securityHeaders?: boolean;
  readonly maxBody?: string;
  readonly localInsecure?: boolean;
}

/** Flag names of the HTTP options (for "belongs to mport http" errors). */
export const HTTP_FLAGS = [
  "subdomain",
  "domain",
  "host-header",
  "basic-auth",
  "allow-ip",
  "deny-ip",
  "request-header-add",
  "request-header-remove",
  "response-header-add",
  "security-headers",
  "max-body",
  "local-insecure",
] as const;

/** TOML keys of an http [[tunnels]] table, by option. */
export const HTTP_TOML_KEYS: Readonly<Record<string, keyof HttpOptionValues>> = {
  subdomain: "subdomain",
  domain: "domain",
  host_header: "hostHeader",
  basic_auth: "basicAuth",
  allow_ip: "allowIp",
  deny_ip: "denyIp",
  request_header_add: "requestHeaderAdd",
  request_header_remove: "requestHeaderRemove",
  response_header_add: "responseHeaderAdd",
  security_headers: "securityHeaders",
  max_body: "maxBody",
  local_insecure: "localInsecure",
};

/**
 * The local service of `mport http`: `3000`, `host:3000`, `http://host:3000` or
 * `https://host[:port]` (default ports 80 and 443). No path: requests keep theirs.
 */
export function parseHttpLocal(
  text: string,
): { scheme: "http" | "https"; host: string; port: number } {
  const m = /^(https?):\/\/(.+)$/i.exec(text.trim());
  if (!m) {
    const { host, port } = parseHostPort(text, "127.0.0.1");
    return { scheme: "http", host, port };
  }
  const scheme = m[1]!.toLowerCase() as "http" | "https";
  let url: URL;
  try {
    url = new URL(`${scheme}://${m[2]}`);
  } catch {
    throw new TypeError(`invalid local URL "${text}": use http://HOST:PORT or https://HOST:PORT`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) {
    throw new TypeError(
      `invalid local URL "${text}": give no path (requests keep the path visitors ask for)`,
    );
  }
  if (url.username || url.password) {
    throw new TypeError(`invalid local URL "${text}": credentials belong in --request-header-add`);
  }
  const port = url.port ? Number(url.port) : scheme === "https" ? 443 : 80;
  return { scheme, host: url.hostname.replace(/^\[|\]$/g, ""), port };
}

/** `http://127.0.0.1:3000` as the ready line shows it. */
export function localUrl(t: { scheme: string; host: string; port: number }): string {
  return `${t.scheme}://${formatHostPort(t.host, t.port)}`;
}

/** Builds and validates an HTTP tunnel's spec; errors name the flag (or key) at fault. */
export function httpSpec(local: string, v: HttpOptionValues): HttpSpec {
  const target = parseHttpLocal(local);
  if (v.localInsecure && target.scheme !== "https") {
    throw new TypeError("--local-insecure is for https:// local services");
  }
  if (v.subdomain !== undefined && v.domain !== undefined) {
    throw new TypeError("--subdomain and --domain both name the public host: pass one of them");
  }
  let subdomain: string | null = null;
  if (v.subdomain !== undefined) {
    subdomain = v.subdomain.toLowerCase();
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(subdomain)) {
      throw new TypeError(
        `invalid --subdomain "${v.subdomain}": use 1-63 letters, digits and '-' (not at either end)`,
      );
    }
  }
  let domain: string | null = null;
  if (v.domain !== undefined) {
    domain = v.domain.toLowerCase().replace(/\.$/, "");
    if (
      !/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
        .test(domain)
    ) {
      throw new TypeError(`invalid --domain "${v.domain}": use a host name like app.example.com`);
    }
  }
  let ipRules: IpRules | null = null;
  if ((v.allowIp?.length ?? 0) + (v.denyIp?.length ?? 0) > 0) {
    // Each list on its own first, so that the error names the flag (and the TOML key) at fault.
    for (const [flag, list] of [["--allow-ip", v.allowIp], ["--deny-ip", v.denyIp]] as const) {
      try {
        new IpRules(list ?? [], []);
      } catch (e) {
        throw new TypeError(`invalid ${flag}: ${(e as Error).message}`);
      }
    }
    ipRules = new IpRules(v.allowIp ?? [], v.denyIp ?? []);
  }
  let maxBodyBytes: number | null = null;
  if (v.maxBody !== undefined && v.maxBody !== "none") {
    try {
      maxBodyBytes = parseSize(v.maxBody);
    } catch (e) {
      throw new TypeError(`invalid --max-body "${v.maxBody}": ${(e as Error).message}`);
    }
  }
  return {
    target: { ...target, insecure: v.localInsecure ?? false },
    subdomain,
    domain,
    rules: {
      hostHeader: parseHostHeaderMode(v.hostHeader ?? "rewrite"),
      basicAuth: (v.basicAuth ?? []).map(parseBasicAuth),
      ipRules,
      requestHeaderAdd: (v.requestHeaderAdd ?? []).map((t) =>
        parseHeaderLine(t, "--request-header-add")
      ),
      requestHeaderRemove: (v.requestHeaderRemove ?? []).map((t) =>
        parseHeaderName(t, "--request-header-remove")
      ),
      responseHeaderAdd: (v.responseHeaderAdd ?? []).map((t) =>
        parseHeaderLine(t, "--response-header-add")
      ),
      securityHeaders: v.securityHeaders ?? false,
      maxBodyBytes,
    },
  };
}
