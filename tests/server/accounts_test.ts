// Tests for token → user resolution against a real (in-memory SQLite) store.
import assert from "node:assert/strict";
import { Accounts } from "../../server/accounts/accounts.ts";
import {
  hashPassword,
  hashToken,
  newToken,
  verifyPassword,
} from "../../server/accounts/secrets.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import { Secret } from "../../shared/secret.ts";

const STATIC = "static-token-0123456789";

async function setup(now = () => 1_700_000_000_000) {
  const store = await openSqliteStore(":memory:");
  const accounts = new Accounts(store, [new Secret(STATIC)], now);
  const boot = await accounts.bootstrap();
  assert.ok(boot?.token);
  return { store, accounts, boot: { ...boot, token: boot.token } };
}

Deno.test("first start on an empty store creates admin with a working token, only once", async () => {
  const { store, accounts, boot } = await setup();
  try {
    assert.equal(boot.user, "admin");
    assert.match(boot.token, /^mp_[A-Za-z0-9_-]{32}$/);
    const r = await accounts.authenticate(boot.token);
    assert.ok(r.ok);
    assert.equal(r.principal.userName, "admin");
    const admin = await store.userByName("admin");
    assert.equal(admin?.role, "admin");
    // No password is made up and printed: nothing logs in with one yet.
    assert.equal(admin?.passwordHash, null);
    assert.equal(await accounts.bootstrap(), null);
    // The token itself is not stored, only its hash.
    const tokens = await store.listTokens();
    assert.equal(tokens.length, 1);
    assert.equal(tokens[0]!.hash, hashToken(boot.token));
    assert.ok(!JSON.stringify(tokens).includes(boot.token));
  } finally {
    await store.close();
  }
});

Deno.test("with static --token tokens the first start creates admin but no stored token", async () => {
  const store = await openSqliteStore(":memory:");
  try {
    const boot = await new Accounts(store, [new Secret(STATIC)]).bootstrap(false);
    assert.deepEqual(boot, { user: "admin", token: null });
    assert.equal((await store.userByName("admin"))?.role, "admin");
    assert.deepEqual(await store.listTokens(), []);
  } finally {
    await store.close();
  }
});

Deno.test("a password is stored as an scrypt hash that verifies only the same password", async () => {
  const hash = await hashPassword("password1");
  assert.match(hash, /^scrypt\$/);
  assert.ok(await verifyPassword("password1", hash));
  assert.ok(!(await verifyPassword("password2", hash)));
});

Deno.test("a static --token authenticates as the admin user", async () => {
  const { store, accounts } = await setup();
  try {
    const r = await accounts.authenticate(STATIC);
    assert.ok(r.ok);
    assert.equal(r.principal.userName, "admin");
    assert.equal(r.principal.tokenId, null);
  } finally {
    await store.close();
  }
});

Deno.test("each static --token is an owner of its own, all acting as the admin user", async () => {
  const store = await openSqliteStore(":memory:");
  const second = "static-token-second-0123";
  const accounts = new Accounts(store, [new Secret(STATIC), new Secret(second)]);
  try {
    const token = (await accounts.bootstrap())?.token;
    assert.ok(token);
    const a = await accounts.authenticate(STATIC);
    const b = await accounts.authenticate(second);
    const stored = await accounts.authenticate(token);
    assert.ok(a.ok && b.ok && stored.ok);
    const admin = await store.userByName("admin");
    assert.equal(a.principal.userId, admin!.id);
    assert.equal(b.principal.userId, admin!.id);
    assert.equal(b.principal.userName, "admin");
    const owners = new Set([a.principal.owner, b.principal.owner, stored.principal.owner]);
    assert.equal(owners.size, 3, `owners: ${[...owners].join(", ")}`);
    // The same static token is the same owner every time (its client resumes its tunnels).
    const again = await accounts.authenticate(second);
    assert.ok(again.ok);
    assert.equal(again.principal.owner, b.principal.owner);
  } finally {
    await store.close();
  }
});

Deno.test("wrong, revoked and expired tokens and disabled users are refused with a reason", async () => {
  let t = 1_700_000_000_000;
  const { store, accounts } = await setup(() => t);
  try {
    const alice = await store.createUser({
      name: "alice",
      role: "user",
      passwordHash: await hashPassword("password1"),
    });
    const good = newToken();
    const rec = await store.createToken({
      userId: alice.id,
      label: "laptop",
      hash: hashToken(good),
      expiresAt: t + 1000,
    });
    const ok = await accounts.authenticate(good);
    assert.ok(ok.ok);
    assert.equal(ok.principal.owner, `u${alice.id}`);
    assert.equal(ok.principal.tokenLabel, "laptop");
    assert.equal((await store.tokenById(rec.id))?.lastUsedAt, t);

    const wrong = await accounts.authenticate("mp_not-a-token");
    assert.deepEqual(wrong, {
      ok: false,
      message: "the server rejected the token (wrong or revoked): check --token / MPORT_TOKEN",
    });

    t += 1000;
    const expired = await accounts.authenticate(good);
    assert.ok(!expired.ok);
    assert.match(expired.message, /^this token expired on 2023-11-14T22:13:21\.000Z/);
    assert.equal((await accounts.recheck(ok.principal)).reason, "this token expired");

    const other = newToken();
    const rec2 = await store.createToken({
      userId: alice.id,
      label: "",
      hash: hashToken(other),
      expiresAt: null,
    });
    const p2 = await accounts.authenticate(other);
    assert.ok(p2.ok);
    assert.equal((await accounts.recheck(p2.principal)).reason, null);
    await store.revokeToken(rec2.id, t);
    assert.equal(
      (await accounts.authenticate(other) as { message: string }).message,
      "this token was revoked: ask the operator for a new one",
    );
    assert.equal((await accounts.recheck(p2.principal)).reason, "this token was revoked");

    const third = newToken();
    await store.createToken({
      userId: alice.id,
      label: "",
      hash: hashToken(third),
      expiresAt: null,
    });
    await store.setUserDisabled(alice.id, true);
    assert.equal(
      (await accounts.authenticate(third) as { message: string }).message,
      "user alice is disabled: ask the operator",
    );
  } finally {
    await store.close();
  }
});

Deno.test("recheck returns the user's current limits", async () => {
  const { store, accounts } = await setup();
  try {
    const bob = await store.createUser({ name: "bob", role: "user" });
    const tok = newToken();
    await store.createToken({ userId: bob.id, label: "", hash: hashToken(tok), expiresAt: null });
    const r = await accounts.authenticate(tok);
    assert.ok(r.ok);
    assert.equal(r.principal.limits.maxTunnels, null);
    await store.setUserLimits(bob.id, { maxTunnels: 2 });
    assert.equal((await accounts.recheck(r.principal)).limits.maxTunnels, 2);
  } finally {
    await store.close();
  }
});

Deno.test("a static --token keeps logging in as the last known admin while the store fails or hangs", async () => {
  const { store, accounts } = await setup();
  let mode: "up" | "failing" | "hanging" = "up";
  const flaky = new Proxy(store, {
    get(target, key) {
      const v = Reflect.get(target, key, target);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) =>
        mode === "failing"
          ? Promise.reject(new Error("database unavailable"))
          : mode === "hanging"
          ? new Promise(() => {})
          : v.apply(target, args);
    },
  });
  const viaFlaky = new Accounts(flaky, [new Secret(STATIC)]);
  try {
    const up = await viaFlaky.authenticate(STATIC);
    assert.ok(up.ok);
    mode = "failing";
    const failing = await viaFlaky.authenticate(STATIC);
    assert.ok(failing.ok && failing.principal.userId === up.principal.userId);
    mode = "hanging";
    const t0 = performance.now();
    const hanging = await viaFlaky.authenticate(STATIC);
    assert.ok(hanging.ok && hanging.principal.userName === "admin");
    assert.ok(performance.now() - t0 < 3_000);
    // A stored token still needs the store.
    await assert.rejects(
      Promise.race([
        viaFlaky.authenticate("mp_not-a-static-token-000000000000000"),
        new Promise((_, reject) => setTimeout(() => reject(new Error("waits for the store")), 50)),
      ]),
      /waits for the store/,
    );
  } finally {
    mode = "up";
    await store.close();
    void accounts;
  }
});

Deno.test("a static --token may use egress and the VPN; the admin user's own token only when granted", async () => {
  const { store, accounts, boot } = await setup();
  try {
    const viaStatic = await accounts.authenticate(STATIC);
    assert.ok(viaStatic.ok);
    assert.deepEqual([viaStatic.principal.egress, viaStatic.principal.vpn], [true, true]);
    const viaStored = await accounts.authenticate(boot.token);
    assert.ok(viaStored.ok);
    assert.equal(viaStored.principal.userName, "admin");
    assert.deepEqual([viaStored.principal.egress, viaStored.principal.vpn], [false, false]);

    const admin = await store.userByName("admin");
    await store.setUserPermissions(admin!.id, { egress: true });
    const granted = await accounts.authenticate(boot.token);
    assert.ok(granted.ok);
    assert.deepEqual([granted.principal.egress, granted.principal.vpn], [true, false]);
  } finally {
    await store.close();
  }
});

Deno.test("recheck returns the user's current permissions; a static token keeps all of them", async () => {
  const { store, accounts } = await setup();
  try {
    const bob = await store.createUser({ name: "bob", role: "user" });
    const tok = newToken();
    await store.createToken({ userId: bob.id, label: "", hash: hashToken(tok), expiresAt: null });
    const r = await accounts.authenticate(tok);
    assert.ok(r.ok);
    assert.deepEqual((await accounts.recheck(r.principal)).permissions, {
      egress: false,
      vpn: false,
    });
    await store.setUserPermissions(bob.id, { egress: true, vpn: true });
    assert.deepEqual((await accounts.recheck(r.principal)).permissions, {
      egress: true,
      vpn: true,
    });
    await store.setUserPermissions(bob.id, { egress: false });
    assert.deepEqual((await accounts.recheck(r.principal)).permissions, {
      egress: false,
      vpn: true,
    });

    const s = await accounts.authenticate(STATIC);
    assert.ok(s.ok);
    const again = await accounts.recheck(s.principal);
    assert.equal(again.reason, null);
    assert.deepEqual(again.permissions, { egress: true, vpn: true });
  } finally {
    await store.close();
  }
});
