// Entrypoint of the mport client: flags, environment and config file → running client; signals → stop.
import { formatHostPort } from "../shared/address.ts";
import { resetSupport } from "../shared/tcp_reset.ts";
import { containStrayErrors, log, setupLogging, teardownLogging } from "../shared/log.ts";
import { runClient } from "./client.ts";
import { CLIENT_USAGE, parseClientArgs } from "./config.ts";

/** The adb daemon's port: tunnels to it also print a ready-to-paste `adb connect`. */
const ADB_PORT = 5555;

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseClientArgs(Deno.args, Deno.env.toObject(), (p) => Deno.readTextFileSync(p));
  } catch (e) {
    console.error(`mport: ${(e as Error).message}\nRun mport --help for usage.`);
    return 2;
  }
  if (parsed.help) {
    console.log(CLIENT_USAGE);
    return 0;
  }
  const config = parsed.config;
  await setupLogging(config.logLevel, null);
  const reset = resetSupport();
  if (!reset.ok) {
    // Aborted transfers then end with a FIN; say so once rather than let users guess.
    log("tcp").warning("aborted connections cannot be reset (RST): {why}", { why: reset.why });
  }
  const client = runClient(config, {
    ready(grant, spec) {
      const hostPort = grant.url.replace(/^tcp:\/\//, "");
      console.log(
        `${grant.name} ${grant.url} -> ${formatHostPort(spec.localHost, spec.localPort)}`,
      );
      if (spec.localPort === ADB_PORT) console.log(`adb connect ${hostPort}`);
    },
    problem(message) {
      console.error(`mport: ${message}`);
    },
  });
  const onSignal = () => client.close();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const { fatal } = await client.done;
  await teardownLogging();
  if (fatal) {
    console.error(`mport: ${fatal}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  containStrayErrors("client");
  Deno.exit(await main());
}
