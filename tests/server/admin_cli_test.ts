// Admin commands against a real (in-memory SQLite) store: output, and clear errors for bad input.
import assert from "node:assert/strict";
import { adminHelpCommand, adminPreflight, runAdmin } from "../../server/admin/cli.ts";
import { serverConfig } from "../../server/config.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import { ADMIN_NOW as NOW, withAdminStore as withStore } from "../support/admin_store.ts";
import { parseDuration, parseSize } from "../../shared/units.ts";

const INVALID: { args: string[]; message: string | RegExp }[] = [
  { args: ["user", "add"], message: "user add needs a NAME of letters, digits, '.', '_' or '-'" },
  {
    args: ["user", "add", "bad name"],
    message: "user add needs a NAME of letters, digits, '.', '_' or '-'",
  },
  {
    args: ["user", "add", "carol", "--max-tunnels", "two"],
    message: 'invalid --max-tunnels "two": expected a whole number',
  },
  { args: ["user", "add", "carol", "--quota", "lots"], message: /^invalid size "lots"/ },
  {
    args: ["user", "add", "carol", "--port-range", "9-1"],
    message: 'invalid port range "9-1": 9 is greater than 1',
  },
  { args: ["user", "add", "alice"], message: /alice/ },
  { args: ["user", "set", "alice"], message: /^user set needs at least one of/ },
  {
    args: ["user", "set", "alice", "--egress", "--no-egress"],
    message: "--egress and --no-egress contradict each other: give one of them",
  },
  {
    args: ["user", "add", "carol", "--vpn", "--no-vpn"],
    message: "--vpn and --no-vpn contradict each other: give one of them",
  },
  {
    args: ["user", "disable", "nobody"],
    message: 'no user named "nobody" (see: mport-server user list)',
  },
  { args: ["user", "frobnicate"], message: /^unknown command "user frobnicate"/ },
  { args: ["token", "create"], message: "--user NAME is required" },
  {
    args: ["token", "create", "--user", "alice", "--expires", "soon"],
    message: /^invalid duration "soon"/,
  },
  { args: ["token", "revoke", "abc"], message: "token revoke needs a token ID (see: token list)" },
  { args: ["token", "revoke", "999"], message: "no token with ID 999" },
  { args: ["port", "reserve", "70000", "--user", "alice"], message: "port reserve needs a PORT" },
  { args: ["usage", "--since", "yesterday-ish"], message: /^invalid --since "yesterday-ish"/ },
  { args: ["events", "--limit", "0"], message: 'invalid --limit "0"' },
];

Deno.test("admin commands refuse bad input with a message that says what to fix", async () => {
  await withStore(async (_store, run) => {
    await run("user", "add", "alice");
    for (const { args, message } of INVALID) {
      await assert.rejects(run(...args), (e: Error) => {
        if (typeof message === "string") assert.equal(e.message, message, args.join(" "));
        else assert.match(e.message, message, args.join(" "));
        return true;
      });
    }
  });
});

Deno.test("admin help and usage errors are answered before any store is opened", () => {
  assert.match(adminPreflight(["user", "add", "--help"])!, /^Usage: mport-server user add NAME /);
  assert.match(adminPreflight(["user", "-h"])!, /^Usage: mport-server user ACTION/);
  assert.match(adminPreflight(["usage", "--help"])!, /^Usage: mport-server usage /);
  assert.equal(adminPreflight(["user", "list", "--json"]), null);
  assert.equal(adminPreflight(["events", "--since", "24h"]), null);
  const refused: [string[], string][] = [
    [["user"], '"user" needs an action: add, set, list, disable, enable'],
    [["user", "ad", "bob"], 'unknown command "user ad": did you mean user add?'],
    [["port", "frob"], 'unknown command "port frob": use reserve, release, list'],
    [["user", "add", "bob", "--emial", "b@x"], "unknown flag --emial: did you mean --email?"],
    [["token", "create", "--user"], "--user needs a value"],
  ];
  for (const [args, message] of refused) {
    assert.throws(() => adminPreflight(args), { name: "UsageError", message }, args.join(" "));
  }
  assert.equal(adminHelpCommand(["user", "add", "bob"]), "mport-server user add --help");
  assert.equal(adminHelpCommand(["user", "ad"]), "mport-server user --help");
  assert.equal(adminHelpCommand(["events"]), "mport-server events --help");
});

Deno.test("a port reserved for one user cannot be reserved for another", async () => {
  await withStore(async (_store, run) => {
    await run("user", "add", "alice");
    await run("user", "add", "bob");
    assert.equal(
      await run("port", "reserve", "10022", "--user", "alice", "--tunnel", "ssh"),
      "port 10022 reserved for alice (tunnel ssh)",
    );
    await assert.rejects(run("port", "reserve", "10022", "--user", "bob"), {
      message: "port 10022 is already reserved by alice",
    });
  });
});

Deno.test("token create shows the token once; token list never shows it", async () => {
  await withStore(async (_store, run) => {
    await run("user", "add", "alice");
    const created = await run(
      "token",
      "create",
      "--user",
      "alice",
      "--label",
      "laptop",
      "--expires",
      "30d",
    );
    const token = created.split("\n")[1]!;
    assert.match(token, /^mp_/);
    assert.match(created, /expires 2026-12-22T12:00:00Z/);
    const list = await run("token", "list");
    assert.ok(!list.includes(token) && !list.includes(token.slice(3)));
    assert.match(list.split("\n")[0]!, /^ID\s+USER\s+LABEL\s+STATE/);
  });
});

Deno.test("duration and size parsers accept the documented forms", () => {
  assert.equal(parseDuration("30d"), 30 * 86_400_000);
  assert.equal(parseDuration("90s"), 90_000);
  assert.equal(parseSize("10GB"), 10e9);
  assert.equal(parseSize("512MiB"), 512 * 1024 * 1024);
  assert.throws(() => parseDuration("0d"), {
    message: 'invalid duration "0d": must be greater than zero',
  });
  assert.throws(() => parseSize("5 parsecs"), /^TypeError: invalid size "5 parsecs"/);
});

Deno.test("port reserve refuses a port outside the server's range, naming the range", async () => {
  await withStore(async (_store, run) => {
    await run("user", "add", "alice");
    await assert.rejects(run("port", "reserve", "22", "--user", "alice"), {
      name: "TypeError",
      message: "port 22 is outside the server's port range 10000-10999: choose a port in it " +
        "(if the server runs with another --port-range, pass it here or --config FILE)",
    });
    // The server's range as given to the command (or from its config file).
    assert.equal(
      await run("port", "reserve", "20005", "--user", "alice", "--port-range", "20000-20099"),
      "port 20005 reserved for alice",
    );
    await assert.rejects(
      run("port", "reserve", "10005", "--user", "alice", "--port-range", "20000-20099"),
      { message: /^port 10005 is outside the server's port range 20000-20099:/ },
    );
    await run("user", "add", "bob", "--port-range", "10100-10199");
    await assert.rejects(run("port", "reserve", "10005", "--user", "bob"), {
      message: "port 10005 is outside bob's port range 10100-10199 " +
        "(change it with: mport-server user set bob --port-range LOW-HIGH)",
    });
  });
});

Deno.test("port reserve takes the server's range from its config file", async () => {
  const store = await openSqliteStore(":memory:");
  try {
    const out: string[] = [];
    const io = {
      out: (l: string) => out.push(l),
      readPassword: () => Promise.resolve("password-1234"),
      now: () => NOW,
      server: serverConfig({ tokens: [], portRange: { low: 30000, high: 30009 } }),
    };
    await runAdmin(["user", "add", "alice"], store, io);
    await runAdmin(["port", "reserve", "30001", "--user", "alice"], store, io);
    assert.equal(out.at(-1), "port 30001 reserved for alice");
    await assert.rejects(runAdmin(["port", "reserve", "10001", "--user", "alice"], store, io), {
      message: /outside the server's port range 30000-30009/,
    });
  } finally {
    await store.close();
  }
});

Deno.test("events and usage tables show human times and sizes; --json keeps raw values", async () => {
  await withStore(async (store, run) => {
    await run("user", "add", "alice");
    const alice = (await store.userByName("alice"))!;
    await store.addEvent({
      at: NOW - 3 * 60_000,
      kind: "tunnel_opened",
      userId: alice.id,
      detail: { tunnel: "web" },
    });
    const hour = NOW - 3_600_000;
    await store.addUsage([{
      hour,
      userId: alice.id,
      tunnel: "web",
      bytesIn: 1536 * 1024,
      bytesOut: 512,
      connections: 3,
      errors: 0,
    }]);
    const events = (await run("events", "--user", "alice")).split("\n");
    assert.match(events[0]!, /^TIME\s+AGO\s+EVENT\s+USER\s+DETAIL$/);
    assert.match(events[1]!, /^2026-11-22 12:00 UTC\s+just now\s+user_created\s+alice\s/);
    assert.match(
      events[2]!,
      /^2026-11-22 11:57 UTC\s+3 min ago\s+tunnel_opened\s+alice\s+tunnel=web$/,
    );
    const usage = (await run("usage")).split("\n");
    assert.match(usage[0]!, /^HOUR\s+USER\s+TUNNEL\s+BYTES IN\s+BYTES OUT\s+CONNS\s+ERRORS$/);
    assert.match(usage[1]!, /^2026-11-22 11:00 UTC\s+alice\s+web\s+1\.5 MiB\s+512 B\s+3\s+0$/);
    const raw = JSON.parse(await run("usage", "--json")) as { hour: number; bytesIn: number }[];
    assert.deepEqual([raw[0]!.hour, raw[0]!.bytesIn], [hour, 1536 * 1024]);
    const rawEvents = JSON.parse(await run("events", "--json")) as { at: number }[];
    assert.ok(rawEvents.some((e) => e.at === NOW - 3 * 60_000));
  });
});

Deno.test("token create prints a ready client command", async () => {
  await withStore(async (_store, run) => {
    await run("user", "add", "alice");
    const guessed = (await run("token", "create", "--user", "alice")).split("\n");
    const token = guessed[1]!;
    assert.equal(
      guessed[2],
      "This token is shown only once; store it now. Connect a client with it:",
    );
    assert.equal(guessed[3], `  mport tcp 22 --server ws://localhost:8080 --token ${token}`);
    assert.match(guessed[4]!, /^ {2}\(the --server URL is a guess: pass --public-url/);
    const given = (await run(
      "token",
      "create",
      "--user",
      "alice",
      "--public-url",
      "https://vps.example.com/tunnel/",
    )).split("\n");
    assert.equal(
      given[3],
      `  mport tcp 22 --server wss://vps.example.com/tunnel --token ${given[1]}`,
    );
    assert.equal(given.length, 4);
    // --json stays as it was: the token and its record only.
    const json = JSON.parse(await run("token", "create", "--user", "alice", "--json"));
    assert.deepEqual(Object.keys(json).sort(), ["expiresAt", "id", "label", "token", "user"]);
  });
});

Deno.test("user set grants and withdraws egress and vpn; user list shows them in a column and --json", async () => {
  await withStore(async (store, run) => {
    await run("user", "add", "alice");
    await run("user", "add", "root", "--admin");
    await run("user", "add", "bob", "--egress");
    const header = (await run("user", "list")).split("\n")[0]!;
    assert.match(header, /\sRESERVED\s+PERMISSIONS\s+CREATED\s/);
    const perms = async () =>
      Object.fromEntries(
        (JSON.parse(await run("user", "list", "--json")) as {
          name: string;
          egress: boolean;
          vpn: boolean;
        }[]).map((u) => [u.name, [u.egress, u.vpn]]),
      );
    // An admin user gets nothing implicitly; bob was granted egress at user add.
    assert.deepEqual(await perms(), {
      alice: [false, false],
      root: [false, false],
      bob: [true, false],
    });

    const set = await run("user", "set", "alice", "--egress", "--vpn");
    assert.match(set.split("\n")[1]!, /^\d+\s+alice\s.*\segress,vpn\s/);
    await run("user", "set", "bob", "--no-egress", "--max-tunnels", "4");
    assert.deepEqual(await perms(), {
      alice: [true, true],
      root: [false, false],
      bob: [false, false],
    });
    assert.equal((await store.userByName("bob"))?.limits.maxTunnels, 4);
    await run("user", "set", "alice", "--no-vpn");
    const table = (await run("user", "list")).split("\n");
    assert.match(table.find((l) => /\salice\s/.test(l))!, /\segress\s/);
    assert.match(table.find((l) => /\sbob\s/.test(l))!, /\s-\s+\d{4}-/);

    const events = (await store.events({})).filter((e) => e.kind === "user_permissions_changed");
    assert.deepEqual(events.map((e) => e.detail).reverse(), [
      { name: "alice", egress: true, vpn: true },
      { name: "bob", egress: false },
      { name: "alice", vpn: false },
    ]);
    const bobCreated = (await store.events({})).find((e) =>
      e.kind === "user_created" && e.detail.name === "bob"
    );
    assert.deepEqual(bobCreated?.detail, { name: "bob", role: "user", egress: true });
  });
});

Deno.test("user add and user set --help document the permission flags", () => {
  for (const action of ["add", "set"]) {
    const help = adminPreflight(["user", action, "--help"])!;
    assert.match(help, /--egress, --no-egress\s+grant or withdraw connections out/);
    assert.match(help, /--vpn, --no-vpn\s+grant or withdraw the VPN/);
  }
  assert.equal(adminPreflight(["user", "set", "alice", "--no-egress", "--vpn"]), null);
});
