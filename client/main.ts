// Entrypoint of the mport client: flags, environment and config file → running client; signals → stop.
import { formatHostPort } from "../shared/address.ts";
import { resetSupport } from "../shared/tcp_reset.ts";
import { containStrayErrors, log, setupLogging, teardownLogging } from "../shared/log.ts";
import { printable } from "../shared/sanitize.ts";
import { versionLine } from "../shared/version.ts";
import { runClient } from "./client.ts";
import { loadClientId } from "./client_id.ts";
import { CLIENT_USAGE, parseClientArgs } from "./config.ts";
import { saveLogin } from "./login.ts";
import { localUrl } from "./http_config.ts";

/** The adb daemon's port: tunnels to it also print a ready-to-paste `adb connect`. */
const ADB_PORT = 5555;
/** Longest line the client prints about a problem (several quoted server texts fit). */
const MAX_LINE_CHARS = 1000;

/** A file's permission bits, or null where they mean nothing (Windows) or it cannot be read. */
function fileMode(path: string): number | null {
  if (Deno.build.os === "windows") return null;
  try {
    return Deno.statSync(path).mode;
  } catch {
    return null;
  }
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseClientArgs(
      Deno.args,
      Deno.env.toObject(),
      (p) => Deno.readTextFileSync(p),
      fileMode,
    );
  } catch (e) {
    console.error(`mport: ${(e as Error).message}\nRun \`mport --help\` for usage.`);
    return 2;
  }
  if (parsed.help) {
    console.log(CLIENT_USAGE);
    return 0;
  }
  if (parsed.version) {
    console.log(versionLine("mport"));
    return 0;
  }
  if (parsed.login) {
    const { file, login } = parsed.login;
    try {
      saveLogin(file, login);
    } catch (e) {
      console.error(`mport: ${(e as Error).message}`);
      return 1;
    }
    console.log(
      `mport: saved the token for ${login.server} in ${file} (readable only by you); ` +
        "`mport tcp PORT` now needs no --server or --token",
    );
    return 0;
  }
  const config = parsed.config;
  for (const warning of parsed.warnings) console.error(`mport: warning: ${warning}`);
  let clientId: string;
  try {
    clientId = loadClientId(config.clientIdFile);
  } catch (e) {
    console.error(`mport: ${(e as Error).message}`);
    return 1;
  }
  await setupLogging(config.logLevel, null);
  const reset = resetSupport();
  if (!reset.ok) {
    // Aborted transfers then end with a FIN; say so once rather than let users guess.
    log("tcp").warning("aborted connections cannot be reset (RST): {why}", { why: reset.why });
  }
  const client = runClient(config, {
    // Everything printed below may quote the server: `printable` keeps its escapes off the terminal.
    ready(grant, spec) {
      const url = printable(grant.url);
      if (spec.http) {
        console.log(`${spec.name} ${url} -> ${localUrl(spec.http.target)}`);
        return;
      }
      if (spec.udp) {
        console.log(`${spec.name} ${url} -> ${formatHostPort(spec.localHost, spec.localPort)}`);
        return;
      }
      const hostPort = url.replace(/^tcp:\/\//, "");
      console.log(`${spec.name} ${url} -> ${formatHostPort(spec.localHost, spec.localPort)}`);
      if (spec.localPort === ADB_PORT) console.log(`adb connect ${hostPort}`);
    },
    inspector(url) {
      console.log(`inspector ${url}`);
    },
    egress(addr) {
      const at = formatHostPort(addr.hostname, addr.port);
      console.log(`socks socks5://${at} http://${at} -> ${printable(config.server.host)}`);
    },
    vpn(line) {
      console.log(printable(line, MAX_LINE_CHARS));
    },
    problem(message) {
      console.error(`mport: ${printable(message, MAX_LINE_CHARS)}`);
    },
  }, clientId);
  const onSignal = () => client.close();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const { fatal } = await client.done;
  await teardownLogging();
  if (fatal) {
    console.error(`mport: ${printable(fatal, MAX_LINE_CHARS)}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  containStrayErrors("client");
  Deno.exit(await main());
}
