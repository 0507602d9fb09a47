// What mport-server prints once its port is bound: the first start's token and client command, or how to get a token.
import { formatHostPort } from "../shared/address.ts";
import { DEFAULT_PATH_PREFIX } from "../shared/protocol.ts";
import { type Accounts, FIRST_TOKEN_LABEL } from "./accounts/accounts.ts";
import { SERVER_DEFAULTS, type ServerConfig } from "./config.ts";
import { redactDbUrl } from "./store/open_store.ts";
import type { Store } from "./store/store.ts";

/** Quotes `word` for a POSIX shell when it holds anything but plainly safe characters. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./~-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The `--server` URL a client should use: `--public-url` when given, else a guess from the bound
 * port, `--public-host` (or the listen host, `localhost` for a wildcard), TLS and the path prefix.
 */
export function clientServerUrl(config: ServerConfig, addr: Deno.NetAddr): string {
  if (config.publicUrl !== null) return config.publicUrl;
  const wildcard = config.listenHost === "0.0.0.0" || config.listenHost === "::";
  const host = config.publicHost ?? (wildcard ? "localhost" : config.listenHost);
  const scheme = config.tlsCert !== null ? "wss" : "ws";
  const defaultPort = scheme === "wss" ? 443 : 80;
  const hostPort = addr.port === defaultPort
    ? (host.includes(":") ? `[${host}]` : host)
    : formatHostPort(host, addr.port);
  const prefix = config.pathPrefix === DEFAULT_PATH_PREFIX ? "" : config.pathPrefix;
  return `${scheme}://${hostPort}${prefix}`;
}

/** A copy-pasteable client command line that publishes local port 22 with `token`. */
export function clientCommand(config: ServerConfig, addr: Deno.NetAddr, token: string): string {
  return `mport tcp 22 --server ${shellQuote(clientServerUrl(config, addr))} --token ${
    shellQuote(token)
  }`;
}

/** `mport login TOKEN --server URL`, which saves both for later client runs. */
export function loginCommand(config: ServerConfig, addr: Deno.NetAddr, token: string): string {
  return `mport login ${shellQuote(token)} --server ${shellQuote(clientServerUrl(config, addr))}`;
}

/** ` --db …` for an admin command to reach the server's store ("" when the default reaches it). */
function dbFlag(db: string, envDb: string | undefined): string {
  if (db === envDb || (envDb === undefined && db === SERVER_DEFAULTS.db)) return "";
  return ` --db ${shellQuote(redactDbUrl(db))}`;
}

/**
 * Runs after the server bound its port. On an empty store: creates the `admin` user and, unless
 * static `--token`s are configured (then they act as admin and no secret is printed), a first
 * client token, and returns the lines that show it once with a client command. On a store with
 * users but no usable token (none created yet, or all revoked or expired), returns a line saying
 * how to create one. `envDb` is `MPORT_DB`, which admin commands read too.
 */
export async function firstStartLines(
  accounts: Accounts,
  config: ServerConfig,
  addr: Deno.NetAddr,
  envDb: string | undefined,
  now: number = Date.now(),
): Promise<string[]> {
  const staticTokens = config.tokens.length > 0;
  const created = await accounts.bootstrap(!staticTokens);
  if (created?.token === null) {
    return [
      `mport-server: new store: created the admin user "${created.user}"; the --token tokens act as it`,
    ];
  }
  if (created) {
    return [
      `mport-server: new store: created the admin user "${created.user}" and a client token, shown only this once:`,
      `  ${created.token}`,
      "Connect a client (next to the service to publish; 22 is its local port):",
      `  ${clientCommand(config, addr, created.token)}`,
      ...(config.publicUrl === null
        ? [
          "  (the --server URL is a guess: start mport-server with --public-url wss://HOST[:PORT][/PREFIX] to print the one clients use)",
        ]
        : []),
      "Or save the server and token once (then `mport tcp 22` needs neither flag):",
      `  ${loginCommand(config, addr, created.token)}`,
    ];
  }
  if (staticTokens) return [];
  return await tokenHint(accounts.store, config.db, envDb, now);
}

async function tokenHint(
  store: Store,
  db: string,
  envDb: string | undefined,
  now: number,
): Promise<string[]> {
  const enabled = (await store.listUsers()).filter((u) => !u.disabled);
  const owner = enabled.find((u) => u.role === "admin") ?? enabled[0];
  if (!owner) return [];
  const ids = new Set(enabled.map((u) => u.id));
  const usable = (await store.listTokens()).filter((t) =>
    ids.has(t.userId) && t.revokedAt === null && (t.expiresAt === null || t.expiresAt > now)
  );
  const command = `mport-server token create --user ${shellQuote(owner.name)}${dbFlag(db, envDb)}`;
  if (usable.length === 0) {
    return [`mport-server: no client token yet: create one with \`${command}\``];
  }
  // An older version could create the first token and then fail to bind before printing it.
  if (usable.every((t) => t.label === FIRST_TOKEN_LABEL && t.lastUsedAt === null)) {
    return [
      `mport-server: the first client token was never used; if it was lost, create another with \`${command}\``,
    ];
  }
  return [];
}
