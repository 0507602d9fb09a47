// Admin commands against a real (in-memory SQLite) store: output, and clear errors for bad input.
import assert from "node:assert/strict";
import { adminHelpCommand, adminPreflight, runAdmin } from "../../server/admin/cli.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import type { Store } from "../../server/store/store.ts";
import { parseDuration, parseSize } from "../../shared/units.ts";

const NOW = Date.UTC(2026, 10, 22, 12);

async function withStore(
  fn: (store: Store, run: (...args: string[]) => Promise<string>) => Promise<void>,
) {
  const store = await openSqliteStore(":memory:");
  const run = async (...args: string[]) => {
    const out: string[] = [];
    await runAdmin(args, store, {
      out: (l) => out.push(l),
      readPassword: () => Promise.resolve("password-1234"),
      now: () => NOW,
    });
    return out.join("\n");
  };
  try {
    await fn(store, run);
  } finally {
    await store.close();
  }
}

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
