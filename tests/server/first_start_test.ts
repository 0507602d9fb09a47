// Tests for what the server prints once bound: the first token and client command, or a hint.
import assert from "node:assert/strict";
import { Accounts } from "../../server/accounts/accounts.ts";
import { hashToken, newToken } from "../../server/accounts/secrets.ts";
import { type ServerConfig, serverConfig } from "../../server/config.ts";
import { clientServerUrl, firstStartLines, shellQuote } from "../../server/first_start.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import type { Store } from "../../server/store/store.ts";
import { Secret } from "../../shared/secret.ts";

const NOW = 1_700_000_000_000;
const ADDR: Deno.NetAddr = { transport: "tcp", hostname: "0.0.0.0", port: 8080 };
const HINT = "mport-server: no client token yet: create one with " +
  "`mport-server token create --user admin`";

async function withStore(fn: (store: Store) => Promise<void>): Promise<void> {
  const store = await openSqliteStore(":memory:");
  try {
    await fn(store);
  } finally {
    await store.close();
  }
}

function lines(
  store: Store,
  fields: Partial<ServerConfig> = {},
  envDb?: string,
): Promise<string[]> {
  const config = serverConfig({ tokens: [], ...fields });
  return firstStartLines(new Accounts(store, config.tokens), config, ADDR, envDb, NOW);
}

Deno.test("first start shows the new admin token once, with a client command", async () => {
  await withStore(async (store) => {
    const out = await lines(store);
    assert.match(out[0]!, /^mport-server: new store: created the admin user "admin" and a client/);
    const token = out[1]!.trim();
    assert.match(token, /^mp_/);
    assert.equal(out[3], `  mport tcp 22 --server ws://localhost:8080 --token ${token}`);
    assert.match(out[4]!, /is a guess: start mport-server with --public-url/);
    assert.equal(out[6], `  mport login ${token} --server ws://localhost:8080`);
    assert.equal((await store.listTokens()).length, 1);
    // Never again; until a client uses it, a restart says how to replace it if it was lost.
    const again = await lines(store);
    assert.match(again.join("\n"), /^mport-server: the first client token was never used;/);
    assert.ok(!again.join("\n").includes(token));
  });
});

Deno.test("first start with static tokens creates admin and prints no secret", async () => {
  await withStore(async (store) => {
    const out = await lines(store, { tokens: [new Secret("static-token-1234")] });
    assert.deepEqual(out, [
      'mport-server: new store: created the admin user "admin"; the --token tokens act as it',
    ]);
    assert.deepEqual(await store.listTokens(), []);
    // Later starts with static tokens need no hint; without them, there is one.
    assert.deepEqual(await lines(store, { tokens: [new Secret("static-token-1234")] }), []);
    assert.deepEqual(await lines(store), [HINT]);
  });
});

Deno.test("a store whose tokens are all revoked or expired gets the hint, with the --db to use", async () => {
  await withStore(async (store) => {
    const admin = await store.createUser({ name: "admin", role: "admin" });
    const add = (expiresAt: number | null) =>
      store.createToken({ userId: admin.id, label: "x", hash: hashToken(newToken()), expiresAt });
    const revoked = await add(null);
    await store.revokeToken(revoked.id, NOW - 1);
    await add(NOW - 1);
    assert.deepEqual(await lines(store), [HINT]);
    assert.deepEqual(await lines(store, { db: "/var/lib/mport/mport.db" }), [
      "mport-server: no client token yet: create one with " +
      "`mport-server token create --user admin --db /var/lib/mport/mport.db`",
    ]);
    assert.deepEqual(await lines(store, { db: "/srv/my db" }, "/srv/my db"), [HINT]);
    await add(NOW + 60_000);
    assert.deepEqual(await lines(store), []);
  });
});

Deno.test("a first token that was never used may have been lost: say how to make another", async () => {
  await withStore(async (store) => {
    const admin = await store.createUser({ name: "root", role: "admin" });
    const rec = await store.createToken({
      userId: admin.id,
      label: "first token",
      hash: hashToken(newToken()),
      expiresAt: null,
    });
    assert.deepEqual(await lines(store), [
      "mport-server: the first client token was never used; if it was lost, create another " +
      "with `mport-server token create --user root`",
    ]);
    await store.touchToken(rec.id, NOW);
    assert.deepEqual(await lines(store), []);
  });
});

Deno.test("the printed --server URL is --public-url, else a guess that keeps port and prefix", () => {
  const url = (fields: Partial<ServerConfig>, port = 8080) =>
    clientServerUrl(serverConfig({ tokens: [], ...fields }), { ...ADDR, port });
  assert.equal(url({}), "ws://localhost:8080");
  assert.equal(url({ listenHost: "::" }), "ws://localhost:8080");
  assert.equal(
    url({ listenHost: "127.0.0.1", pathPrefix: "/t/_mport" }),
    "ws://127.0.0.1:8080/t/_mport",
  );
  assert.equal(url({ listenHost: "::1" }), "ws://[::1]:8080");
  assert.equal(url({ publicHost: "vps.example.com" }, 80), "ws://vps.example.com");
  assert.equal(
    url({ publicHost: "vps.example.com", tlsCert: "C", tlsKey: new Secret("K") }, 443),
    "wss://vps.example.com",
  );
  assert.equal(
    url({ publicUrl: "wss://vps.example.com/edge/_mport", publicHost: "other" }),
    "wss://vps.example.com/edge/_mport",
  );
});

Deno.test("shellQuote leaves plain words alone and quotes the rest", () => {
  assert.equal(shellQuote("wss://vps.example.com:443/_mport"), "wss://vps.example.com:443/_mport");
  assert.equal(shellQuote("/srv/my db"), "'/srv/my db'");
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
});
