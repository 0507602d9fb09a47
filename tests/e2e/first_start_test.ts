// End to end: the operator's first start (busy port, printed token and client command, static
// tokens), --version of both programs, help of admin commands, and misspelled flags.
import assert from "node:assert/strict";
import { CLIENT_MAIN } from "../../scripts/mport_procs.ts";
import {
  adminJson,
  adminOk,
  type AdminResult,
  assertReaches,
  runServerMain,
  startTaggedEcho,
  stopped,
  Teardown,
} from "./accounts_harness.ts";
import { startClient, startServer, tunnelPort } from "./harness.ts";
import { runToExit } from "../support/processes.ts";
import { randomBytes } from "./scripted_services.ts";

/** Makes the harness start the server without a static token (an empty tokens file). */
const NO_STATIC_TOKENS = ["--tokens-file", "/dev/null"];

/** Runs `mport ARGS` until it exits (killed after 20 s). */
function runClientMain(args: string[]): Promise<AdminResult> {
  return runToExit(Deno.execPath(), ["run", "-A", CLIENT_MAIN, ...args], { timeoutMs: 20_000 });
}

/** A fresh SQLite store path in a temp directory (the file does not exist yet). */
async function withTempDb(body: (db: string, dir: string, t: Teardown) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "mport-first-start-" });
  const t = new Teardown();
  try {
    await body(`${dir}/mport.db`, dir, t);
  } finally {
    await t.run();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("first start on a busy --listen port exits 1 and creates no user; the next start prints a token and a client command that works", async () => {
  await withTempDb(async (db, _dir, t) => {
    const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = busy.addr.port;
    let r: AdminResult;
    try {
      r = await runServerMain([
        "--listen",
        `127.0.0.1:${port}`,
        "--db",
        db,
        "--bind",
        "127.0.0.1",
        "--stats-interval",
        "0",
      ]);
    } finally {
      busy.close();
    }
    assert.equal(r.code, 1, `${r.stdout}\n${r.stderr}`);
    assert.equal(
      r.stderr.trim(),
      `mport-server: cannot listen on 127.0.0.1:${port}: address already in use (choose another --listen)`,
    );
    assert.doesNotMatch(r.stdout, /mp_|created/, r.stdout);
    assert.deepEqual(await adminJson<unknown[]>(db, ["user", "list"]), [], "no user was created");
    assert.deepEqual(await adminJson<unknown[]>(db, ["token", "list"]), [], "nor a token");

    // The next start (here under a path prefix, which the printed command must keep).
    const svc = startTaggedEcho("first:");
    t.onClose(() => svc.close());
    const server = t.proc(
      await startServer(["--db", db, "--path-prefix", "/t/_mport", ...NO_STATIC_TOKENS]),
    );
    const out = server.stdout.lines;
    assert.ok(
      out.some((l) =>
        /^mport-server: new store: created the admin user "admin" and a client token/.test(l)
      ),
      server.output(),
    );
    assert.ok(!out.some((l) => /password/i.test(l)), "no password is printed");
    const tokenLines = out.filter((l) => /^ {2}mp_[A-Za-z0-9_-]+$/.test(l));
    assert.equal(tokenLines.length, 1, server.output());
    const token = tokenLines[0]!.trim();
    const command = out.find((l) => l.startsWith("  mport tcp "))?.trim();
    assert.equal(
      command,
      `mport tcp 22 --server ws://127.0.0.1:${server.port}/t/_mport --token ${token}`,
      server.output(),
    );

    // Run the printed command as it is, but for the local port: a service of the test's own.
    const [program, kind, local, ...flags] = command!.split(" ");
    assert.deepEqual([program, kind, local], ["mport", "tcp", "22"]);
    const client = t.proc(startClient([kind!, String(svc.port), ...flags!]));
    await assertReaches(await tunnelPort(client), "first:", randomBytes(64 * 1024));
    await stopped(client);
    assert.equal((await stopped(server)).code, 0, server.output());

    // Once shown, never again; the token stays the stored one.
    const again = t.proc(await startServer(["--db", db, ...NO_STATIC_TOKENS]));
    assert.doesNotMatch(
      again.stdout.lines.join("\n"),
      /created|mp_|no client token/,
      again.output(),
    );
    const tokens = await adminJson<{ lastUsedAt: number | null }[]>(db, ["token", "list"]);
    assert.equal(tokens.length, 1);
    assert.notEqual(tokens[0]!.lastUsedAt, null, "the printed token is the stored one");
  });
});

Deno.test("--public-url is the --server of the printed client command", async () => {
  await withTempDb(async (db, _dir, t) => {
    const server = t.proc(
      await startServer([
        "--db",
        db,
        "--public-url",
        "https://tunnel.example.com:8443/edge/_mport/",
        ...NO_STATIC_TOKENS,
      ]),
    );
    const command = server.stdout.lines.find((l) => l.startsWith("  mport tcp "));
    assert.match(
      command ?? "",
      /^ {2}mport tcp 22 --server wss:\/\/tunnel\.example\.com:8443\/edge\/_mport --token mp_\S+$/,
      server.output(),
    );
    assert.ok(!server.stdout.lines.some((l) => /is a guess/.test(l)), server.output());
  });
});

Deno.test("a first start with --token prints no secret; without it the next start says how to get a token", async () => {
  await withTempDb(async (db, _dir, t) => {
    const first = t.proc(await startServer(["--db", db])); // the harness adds a static --token
    const printed = first.stdout.lines.join("\n");
    assert.match(printed, /created the admin user "admin"; the --token tokens act as it/);
    assert.doesNotMatch(printed, /mp_|password|mport tcp/, first.output());
    assert.deepEqual(await adminJson<unknown[]>(db, ["token", "list"]), []);
    assert.equal((await stopped(first)).code, 0, first.output());

    const second = t.proc(await startServer(["--db", db, ...NO_STATIC_TOKENS]));
    const hint =
      `mport-server: no client token yet: create one with \`mport-server token create --user admin --db ${db}\``;
    assert.ok(second.stdout.lines.includes(hint), second.output());
    assert.equal((await stopped(second)).code, 0, second.output());

    // Following the hint: the token it creates works, and the hint is gone.
    const created = hint.match(/`mport-server (.*)`/)![1]!.split(" ");
    const token = (await adminOk(db, created)).split("\n").find((l) => l.startsWith("mp_"));
    assert.ok(token);
    const svc = startTaggedEcho("hint:");
    t.onClose(() => svc.close());
    const third = t.proc(await startServer(["--db", db, ...NO_STATIC_TOKENS]));
    assert.ok(!third.stdout.lines.some((l) => /token/.test(l)), third.output());
    const client = t.proc(
      startClient(["tcp", String(svc.port), "--server", third.wsUrl, "--token", token]),
    );
    await assertReaches(await tunnelPort(client), "hint:", randomBytes(1024));
  });
});

Deno.test("--version of both programs names the version, the protocol and Deno", async () => {
  const deno = Deno.version.deno;
  const server = await runServerMain(["--version"]);
  assert.equal(server.code, 0, server.stderr);
  assert.equal(server.stdout, `mport-server 0.2.0 (protocol v2, Deno ${deno})\n`);
  const client = await runClientMain(["--version"]);
  assert.equal(client.code, 0, client.stderr);
  assert.equal(client.stdout, `mport 0.2.0 (protocol v2, Deno ${deno})\n`);
});

Deno.test("admin command help exits 0 with that command's usage and touches no store", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-first-start-" });
  try {
    const db = `${dir}/absent/mport.db`;
    const cases: [string[], RegExp][] = [
      [["user", "add", "--help"], /^Usage: mport-server user add NAME /],
      [["user", "add", "-h"], /^Usage: mport-server user add NAME /],
      [["user", "--help"], /^Usage: mport-server user ACTION/],
      [["token", "create", "--help"], /^Usage: mport-server token create --user NAME/],
      [["events", "--help"], /^Usage: mport-server events /],
      [["help", "port", "reserve"], /^Usage: mport-server port reserve PORT/],
      [["help"], /^mport-server: publish TCP services/],
    ];
    for (const [args, usage] of cases) {
      const r = await runServerMain([...args, "--db", db]);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stdout, usage, args.join(" "));
      assert.equal(r.stderr, "", args.join(" "));
    }
    assert.deepEqual([...Deno.readDirSync(dir)], [], "help created no store");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a misspelled flag or command is one sentence with a suggestion, then where the help is, exit 2", async () => {
  const cases: [Promise<AdminResult>, string][] = [
    [
      runServerMain(["--lisen", "127.0.0.1:0"]),
      "mport-server: unknown flag --lisen: did you mean --listen?\nRun `mport-server --help` for usage.\n",
    ],
    [
      runServerMain(["--public-ulr=wss://x"]),
      "mport-server: unknown flag --public-ulr: did you mean --public-url?\nRun `mport-server --help` for usage.\n",
    ],
    [
      runServerMain(["--listen"]),
      "mport-server: --listen needs a value\nRun `mport-server --help` for usage.\n",
    ],
    [
      runServerMain(["usr", "list"]),
      'mport-server: unknown command "usr": did you mean user?\nRun `mport-server --help` for usage.\n',
    ],
    [
      runServerMain(["user", "add", "bob", "--emial", "b@example.com"]),
      "mport-server: unknown flag --emial: did you mean --email?\nRun `mport-server user add --help` for usage.\n",
    ],
    [
      runServerMain(["token", "craete", "--user", "bob"]),
      'mport-server: unknown command "token craete": did you mean token create?\nRun `mport-server token --help` for usage.\n',
    ],
    [
      runClientMain(["tcp", "22", "--sever", "ws://127.0.0.1:1", "--token", "x"]),
      "mport: unknown flag --sever: did you mean --server?\nRun `mport --help` for usage.\n",
    ],
    [
      runClientMain(["tcp", "22", "--frobnicate"]),
      "mport: unknown flag --frobnicate\nRun `mport --help` for usage.\n",
    ],
  ];
  for (const [run, stderr] of cases) {
    const r = await run;
    assert.equal(r.stderr, stderr);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
  }
});
