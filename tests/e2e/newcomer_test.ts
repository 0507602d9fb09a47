// End to end: a newcomer's first use — `deno task install` (offline, into a temporary
// DENO_INSTALL_ROOT), the installed mport-server's first start in its own directory, `mport login`
// with the printed token, and `mport tcp PORT` with no --server or --token.
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { ROOT } from "../../scripts/mport_procs.ts";
import { assertReaches, startTaggedEcho, stopped, Teardown } from "./accounts_harness.ts";
import { Proc, tunnelPort } from "./harness.ts";
import { randomBytes } from "./scripted_services.ts";
import { type Ran, runToExit } from "../support/processes.ts";

const REPO = new URL(".", ROOT).pathname;
/** Longest any one command of this test may run. */
const COMMAND_TIMEOUT_MS = 30_000;

/** Runs `program ARGS` in `cwd` with `env` (over the inherited one) until it exits. */
function run(
  program: string,
  args: string[],
  cwd: string,
  env: Record<string, string>,
): Promise<Ran> {
  return runToExit(program, args, { cwd, env, timeoutMs: COMMAND_TIMEOUT_MS });
}

/** Starts a long-running `program ARGS` in `cwd`. */
function start(program: string, args: string[], cwd: string, env: Record<string, string>): Proc {
  return new Proc(
    new Deno.Command(program, {
      args,
      cwd,
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
}

Deno.test({
  name:
    "a newcomer installs mport offline, starts the installed server, logs in with the printed token and publishes a port with no flags",
  // The installed commands are POSIX shell scripts (on Windows they are .cmd files).
  ignore: Deno.build.os === "windows",
  fn: async () => {
    const top = await Deno.makeTempDir({ prefix: "mport-newcomer-" });
    const t = new Teardown();
    try {
      const bin = `${top}/install/bin`;
      const vps = `${top}/vps`; // where the operator starts the server
      const laptop = `${top}/laptop`; // where the user runs the client
      await Deno.mkdir(vps);
      await Deno.mkdir(laptop);
      // The Deno cache of this test run, whatever HOME says below.
      const info = await run(Deno.execPath(), ["info", "--json"], REPO, {});
      const denoDir: string = JSON.parse(info.stdout).denoDir;
      const env = {
        DENO_DIR: denoDir,
        // The installed scripts run `deno`: the one running this test.
        PATH: `${bin}:${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
        HOME: `${top}/home`,
        XDG_CONFIG_HOME: `${top}/config`,
        NO_PROXY: "127.0.0.1,localhost",
      };

      // Dependencies cached once (a no-op on a warm cache); then the install needs no network:
      // every proxy points at a closed port.
      const cached = await run(
        Deno.execPath(),
        [
          "cache",
          "--config",
          "deno.json",
          "server/main.ts",
          "client/main.ts",
        ],
        REPO,
        env,
      );
      assert.equal(cached.code, 0, cached.stderr);
      const offline = {
        ...env,
        DENO_INSTALL_ROOT: `${top}/install`,
        HTTPS_PROXY: "http://127.0.0.1:9",
        HTTP_PROXY: "http://127.0.0.1:9",
        ALL_PROXY: "http://127.0.0.1:9",
        NO_PROXY: "",
      };
      const installed = await run(Deno.execPath(), ["task", "install"], REPO, offline);
      assert.equal(installed.code, 0, `${installed.stdout}\n${installed.stderr}`);
      for (const name of ["mport", "mport-server"]) {
        assert.ok(Deno.statSync(`${bin}/${name}`).isFile, `${name} in ${bin}`);
      }

      const version = await run("mport", ["--version"], laptop, env);
      assert.equal(version.code, 0, version.stderr);
      assert.equal(version.stdout, `mport 0.2.0 (protocol v2, Deno ${Deno.version.deno})\n`);
      const help = await run("mport-server", ["--help"], vps, env);
      assert.equal(help.code, 0, help.stderr);
      assert.match(help.stdout, /--data-dir DIR/);

      // The first start on a busy port creates nothing; the store lives under the start directory.
      const low = 20000 + Math.floor(Math.random() * 120) * 100;
      const serverArgs = ["--bind", "127.0.0.1", "--port-range", `${low}-${low + 99}`];
      const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      let refused: Ran;
      try {
        refused = await run(
          "mport-server",
          [
            "--listen",
            `127.0.0.1:${busy.addr.port}`,
            ...serverArgs,
          ],
          vps,
          env,
        );
      } finally {
        busy.close();
      }
      assert.equal(refused.code, 1, refused.stdout);
      assert.match(refused.stderr, /address already in use \(choose another --listen\)/);
      assert.doesNotMatch(refused.stdout, /mp_/);
      const users = await run("mport-server", ["user", "list", "--json"], vps, env);
      assert.equal(users.code, 0, users.stderr);
      assert.deepEqual(JSON.parse(users.stdout), [], "no user after the failed start");

      const server = t.proc(
        start(
          "mport-server",
          ["--listen", "127.0.0.1:0", "--stats-interval", "0", ...serverArgs],
          vps,
          env,
        ),
      );
      const [, port] = await server.stdout.wait(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      assert.ok(Deno.statSync(`${vps}/data/mport.db`).isFile, "store relative to the start dir");
      const login = server.stdout.lines.find((l) => l.startsWith("  mport login "))?.trim();
      const token = server.stdout.lines.find((l) => /^ {2}mp_\S+$/.test(l))?.trim();
      assert.ok(token, server.output());
      assert.equal(login, `mport login ${token} --server ws://127.0.0.1:${port}`);

      // `mport login` as printed, from the client's directory.
      const saved = await run("mport", login!.split(" ").slice(1), laptop, env);
      assert.equal(saved.code, 0, saved.stderr);
      const loginFile = `${top}/config/mport/config.toml`;
      assert.match(saved.stdout, new RegExp(`saved the token for ws://127.0.0.1:${port} in `));
      assert.equal(Deno.statSync(loginFile).mode! & 0o777, 0o600);

      // Then `mport tcp PORT` with neither --server nor --token.
      const svc = startTaggedEcho("newcomer:");
      t.onClose(() => svc.close());
      const client = t.proc(start("mport", ["tcp", String(svc.port)], laptop, env));
      await assertReaches(await tunnelPort(client), "newcomer:", randomBytes(256 * 1024));
      assert.equal((await stopped(client)).code, 0, client.output());
      assert.doesNotMatch(client.stderr.lines.join("\n"), /warning/, client.output());
      assert.equal((await stopped(server)).code, 0, server.output());
    } finally {
      await t.run();
      await Deno.remove(top, { recursive: true });
    }
  },
});
