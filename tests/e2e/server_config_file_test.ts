// End to end: mport-server --config FILE, its keys under the command line's flags, and its errors.
import assert from "node:assert/strict";
import { runServerMain } from "./accounts_harness.ts";
import { startServer, TEST_TOKEN } from "./harness.ts";

Deno.test("mport-server --config serves what the file says, and flags still win", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-config-" });
  try {
    const path = `${dir}/server.toml`;
    await Deno.writeTextFile(
      path,
      `# mport-server settings
path-prefix = "/tunnel"
trusted-proxy = ["127.0.0.1/32"]
grace = 5
listen = "127.0.0.1:1"  # replaced by the test's --listen 127.0.0.1:0
`,
    );
    const server = await startServer(["--config", path]);
    try {
      assert.match(
        server.output(),
        /listening on http:\/\/127\.0\.0\.1:\d+ \(control \/tunnel\/v2\/control/,
      );
      const r = await runServerMain([
        "tunnels",
        "--server",
        `${server.httpUrl}/tunnel`,
        "--token",
        TEST_TOKEN,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "no open tunnels\n");
    } finally {
      await server.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mport-server --config names the file and line of a mistake", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-config-" });
  try {
    const path = `${dir}/server.toml`;
    await Deno.writeTextFile(path, 'listen = "127.0.0.1:0"\n\nmax-pendin = 5\n');
    const r = await runServerMain(["--config", path]);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      `mport-server: ${path}:3: unknown key "max-pendin": did you mean max-pending?\n` +
        "Run `mport-server --help` for usage.\n",
    );
    await Deno.writeTextFile(path, 'listen = "127.0.0.1:0"\ngrace = "later"\n');
    const bad = await runServerMain(["--config", path]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, new RegExp(`^mport-server: ${path}:2: invalid --grace "later"`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("admin commands with --config use the server's store, port range and public URL", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-config-" });
  try {
    const path = `${dir}/server.toml`;
    await Deno.writeTextFile(
      path,
      `db = "${dir}/mport.db"\nport-range = "30000-30009"\npublic-url = "wss://vps.example.com"\n`,
    );
    const added = await runServerMain(
      ["user", "add", "alice", "--password-stdin", "--config", path],
      { stdin: "correct-horse-battery\n" },
    );
    assert.equal(added.code, 0, added.stderr);
    assert.ok((await Deno.stat(`${dir}/mport.db`)).isFile);
    const outside = await runServerMain([
      "port",
      "reserve",
      "10001",
      "--user",
      "alice",
      "--config",
      path,
    ]);
    assert.equal(outside.code, 2);
    assert.match(outside.stderr, /port 10001 is outside the server's port range 30000-30009/);
    const inside = await runServerMain([
      "port",
      "reserve",
      "30001",
      "--user",
      "alice",
      "--config",
      path,
    ]);
    assert.equal(inside.stdout, "port 30001 reserved for alice\n", inside.stderr);
    const token = await runServerMain(["token", "create", "--user", "alice", "--config", path]);
    assert.equal(token.code, 0, token.stderr);
    const lines = token.stdout.trimEnd().split("\n");
    assert.equal(lines.at(-1), `  mport tcp 22 --server wss://vps.example.com --token ${lines[1]}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
