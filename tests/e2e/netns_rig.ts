// The namespace tests' rig (for the topology of scripts/netns.ts): Deno programs, mport-server and
// mport clients as processes inside the namespaces, curl from inside one, and the server's REST
// API through curl inside the server namespace.
import { CLIENT_MAIN, SERVER_MAIN } from "../../scripts/mport_procs.ts";
import { NET, type Topology } from "../../scripts/netns.ts";
import { Proc } from "./harness.ts";

/** mport-server's port on every address of the server namespace (203.0.113.2 for clients). */
export const SERVER_PORT = 8080;
/** The server as a client in the client namespace reaches it. */
export const SERVER_URL = `ws://${NET.server}:${SERVER_PORT}`;

/** A Deno program run inside `ns`, its output read line by line. */
export function denoIn(
  topo: Topology,
  ns: string,
  main: string,
  args: string[],
  env: Record<string, string> = {},
): Proc {
  return new Proc(
    topo.command(ns, Deno.execPath(), ["run", "-A", "--unstable-net", main, ...args], { env })
      .spawn(),
  );
}

/** Waits for a line of `p` matching `re`; kills it and throws with its output if none comes. */
export async function waitLine(
  p: Proc,
  re: RegExp,
  what: string,
  ms = 30_000,
): Promise<RegExpMatchArray> {
  try {
    return await p.stdout.wait(re, ms);
  } catch (e) {
    await p.stop("SIGKILL");
    throw new Error(`${what}: ${(e as Error).message}\n${p.output()}`);
  }
}

/** mport-server in the server namespace on 0.0.0.0:{@link SERVER_PORT} with `token` and `args`. */
export async function startServerIn(topo: Topology, token: string, args: string[]): Promise<Proc> {
  const p = denoIn(topo, topo.server, SERVER_MAIN, [
    "--listen",
    `0.0.0.0:${SERVER_PORT}`,
    "--token",
    token,
    "--stats-interval",
    "0",
    ...args,
  ]);
  await waitLine(p, /listening on http:\/\//, "mport-server");
  return p;
}

/** An mport client (`args` from the command on) in the client namespace, not waited for. */
export function clientIn(topo: Topology, args: string[], env: Record<string, string> = {}): Proc {
  return denoIn(topo, topo.client, CLIENT_MAIN, args, env);
}

/** curl in `ns`: the body, or the error text (curl's exit code and message) when it failed. */
export async function curlIn(
  topo: Topology,
  ns: string,
  url: string,
  extra: string[] = [],
): Promise<{ ok: boolean; text: string }> {
  const out = await topo.command(ns, "curl", ["-sS", "--max-time", "4", ...extra, url]).output();
  const dec = new TextDecoder();
  return { ok: out.success, text: out.success ? dec.decode(out.stdout) : dec.decode(out.stderr) };
}

/**
 * The server's REST API, called with `token` by curl inside the server namespace; throws with
 * curl's message when the answer is not 2xx.
 */
export async function serverApiIn(
  topo: Topology,
  token: string,
  path: string,
  method = "GET",
  body?: unknown,
): Promise<unknown> {
  const args = [
    "-sS",
    "--fail-with-body",
    "--max-time",
    "5",
    "-X",
    method,
    "-H",
    `authorization: Bearer ${token}`,
    "-H",
    "content-type: application/json",
    ...(body === undefined ? [] : ["--data", JSON.stringify(body)]),
    `http://127.0.0.1:${SERVER_PORT}/api/v1${path}`,
  ];
  return JSON.parse(await topo.run(topo.server, "curl", args));
}

/** Polls `check` every 100 ms until it returns true; throws `what` after `ms`. */
export async function until(check: () => Promise<boolean>, what: string, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
