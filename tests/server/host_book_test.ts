// Host names of HTTP tunnels: label and host name validation, stable subdomains, custom domains.
import assert from "node:assert/strict";
import {
  HostBook,
  randomLabel,
  RESERVED_LABELS,
  validateHostName,
  validateSubdomain,
} from "../../server/accounts/host_book.ts";
import { TunnelRefused } from "../../server/listeners/port_allocator.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import type { Store } from "../../server/store/store.ts";

const DOMAIN = "t.example.com";
const T0 = Date.UTC(2026, 10, 22, 12);

const VALID_LABELS: [string, string][] = [
  ["myapp", "myapp"],
  ["MyApp", "myapp"],
  ["a", "a"],
  ["0", "0"],
  ["my-app-2", "my-app-2"],
  ["x".repeat(63), "x".repeat(63)],
];

const INVALID_LABELS: [string, string][] = [
  ["", 'subdomain "" is empty'],
  ["x".repeat(64), "is 64 characters long (at most 63)"],
  ["my_app", "may only contain a-z, 0-9 and '-'"],
  ["my app", "may only contain a-z, 0-9 and '-'"],
  ["café", "may only contain a-z, 0-9 and '-'"],
  ["-app", "may not start or end with '-'"],
  ["app-", "may not start or end with '-'"],
  ["a.b", "is more than one label: give one label, without dots"],
];

Deno.test("validateSubdomain accepts DNS labels and lower-cases them", () => {
  for (const [input, want] of VALID_LABELS) assert.equal(validateSubdomain(input), want, input);
});

Deno.test("validateSubdomain refuses invalid labels with bad_message saying what is wrong", () => {
  for (const [input, part] of INVALID_LABELS) {
    assert.throws(() => validateSubdomain(input), (e: unknown) => {
      assert.ok(e instanceof TunnelRefused, input);
      assert.equal(e.code, "bad_message", input);
      assert.ok(e.message.includes(part), `${input}: ${e.message}`);
      assert.match(e.message, /\(use 1-63 characters of a-z, 0-9 and '-'/);
      return true;
    });
  }
});

const VALID_HOSTS: [string, string][] = [
  ["app.example.org", "app.example.org"],
  ["App.Example.ORG", "app.example.org"],
  ["a.b.c.d.example.co.uk", "a.b.c.d.example.co.uk"],
  ["xn--bcher-kva.example", "xn--bcher-kva.example"],
  ["1.2.3.example", "1.2.3.example"],
  [`${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`, "253 chars"],
];

const INVALID_HOSTS: [string, string][] = [
  ["", "the host name is empty (give one, e.g. app.example.org)"],
  ["localhost", 'host name "localhost" needs at least two labels (e.g. app.example.org)'],
  ["app.example.org.", 'host name "app.example.org." ends with a dot: leave it out'],
  ["app.example.org:8080", 'host name "app.example.org:8080" has a port: give the name alone'],
  ["https://app.example.org", "is not a host name: give the name alone, without scheme or path"],
  ["app.example.org/x", "is not a host name"],
  ["10.0.0.1", '"10.0.0.1" is an IP address: a domain needs a name'],
  ["::1", '"::1" is an IP address'],
  ["[2001:db8::1]", "is an IP address"],
  ["a..example.org", "has a label that is empty"],
  ["-a.example.org", "has a label that may not start or end with '-'"],
  ["*.example.org", "has a label that may only contain a-z, 0-9 and '-'"],
  ["a_b.example.org", "has a label that may only contain a-z, 0-9 and '-'"],
  [`${"x".repeat(64)}.example.org`, "has a label that is 64 characters long (at most 63)"],
  [`${"a.".repeat(127)}org`, "host name is 257 characters long: at most 253 are allowed"],
  ["app.example.123", "ends in a numeric label: a domain needs a name"],
];

Deno.test("validateHostName accepts host names and lower-cases them", () => {
  for (const [input, want] of VALID_HOSTS) {
    const got = validateHostName(input);
    if (want === "253 chars") assert.equal(got.length, 253);
    else assert.equal(got, want, input);
  }
});

Deno.test("validateHostName refuses invalid host names with a TypeError saying what to fix", () => {
  for (const [input, part] of INVALID_HOSTS) {
    assert.throws(() => validateHostName(input), (e: unknown) => {
      assert.ok(e instanceof TypeError, input);
      assert.ok(e.message.includes(part), `${input}: ${e.message}`);
      return true;
    });
  }
});

/** Runs `fn` with a fresh store holding users alice and bob. */
async function withUsers(
  fn: (store: Store, alice: number, bob: number) => Promise<void>,
): Promise<void> {
  const store = await openSqliteStore(":memory:");
  try {
    const alice = (await store.createUser({ name: "alice", role: "user" })).id;
    const bob = (await store.createUser({ name: "bob", role: "user" })).id;
    await fn(store, alice, bob);
  } finally {
    await store.close();
  }
}

/** Asserts that `p` rejects with a TunnelRefused of `code` and exactly `message`. */
async function refused(p: Promise<unknown>, code: string, message: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof TunnelRefused, String(e));
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  });
}

Deno.test("a tunnel keeps its random subdomain across calls and a server restart", async () => {
  await withUsers(async (store, alice) => {
    const book = new HostBook(store, { domain: DOMAIN, now: () => T0 });
    const web = await book.subdomainFor(alice, "web");
    assert.match(web, /^[a-z0-9]{8}\.t\.example\.com$/);
    assert.equal(await book.subdomainFor(alice, "web"), web);
    const api = await book.subdomainFor(alice, "api");
    assert.notEqual(api, web);
    // A restart: a new book on the same store.
    const later = new HostBook(store, { domain: DOMAIN, now: () => T0 + 60_000 });
    assert.equal(await later.subdomainFor(alice, "web"), web);
    assert.equal(await later.subdomainFor(alice, "api"), api);
    const r = await store.hostByName(web);
    assert.deepEqual(
      [r?.userId, r?.kind, r?.tunnel, r?.createdAt, r?.lastUsedAt],
      [alice, "subdomain", "web", T0, T0 + 60_000],
    );
  });
});

Deno.test("a requested subdomain is the user's to keep; it becomes the tunnel's subdomain", async () => {
  await withUsers(async (store, alice) => {
    const book = new HostBook(store, { domain: "T.Example.COM", now: () => T0 });
    assert.equal(book.domain, DOMAIN);
    assert.equal(await book.subdomainFor(alice, "web", "MyApp"), `myapp.${DOMAIN}`);
    assert.equal(await book.subdomainFor(alice, "web", "myapp"), `myapp.${DOMAIN}`);
    // Asked for nothing later, the tunnel gets the one it used last.
    assert.equal(
      await new HostBook(store, { domain: DOMAIN }).subdomainFor(alice, "web"),
      `myapp.${DOMAIN}`,
    );
  });
});

Deno.test("a subdomain another user holds is refused with host_taken and what to do", async () => {
  await withUsers(async (store, alice, bob) => {
    const book = new HostBook(store, { domain: DOMAIN });
    await book.subdomainFor(alice, "web", "myapp");
    await refused(
      book.subdomainFor(bob, "web", "myapp"),
      "host_taken",
      "subdomain myapp.t.example.com is taken by another user (choose another --subdomain)",
    );
    assert.equal((await store.hostByName(`myapp.${DOMAIN}`))?.userId, alice);
  });
});

Deno.test("reserved labels are refused when asked for and never handed out", async () => {
  await withUsers(async (store, alice) => {
    for (const label of ["www", "api", "admin", "dashboard", "mport", "mail", "ns", "localhost"]) {
      assert.ok(RESERVED_LABELS.has(label), label);
    }
    const book = new HostBook(store, { domain: DOMAIN });
    await refused(
      book.subdomainFor(alice, "web", "WWW"),
      "host_taken",
      "subdomain www.t.example.com is reserved by the server (choose another --subdomain)",
    );
    const labels = ["www", "admin", "bad_label", "fine1234"];
    const picky = new HostBook(store, { domain: DOMAIN, random: () => labels.shift()! });
    assert.equal(await picky.subdomainFor(alice, "web"), `fine1234.${DOMAIN}`);
  });
});

Deno.test("random subdomains are unique: a taken label is skipped, not shared", async () => {
  await withUsers(async (store, alice, bob) => {
    const book = new HostBook(store, { domain: DOMAIN });
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) seen.add(await book.subdomainFor(i % 2 ? alice : bob, `t${i}`));
    assert.equal(seen.size, 50);
    // The generator repeating itself: the second tunnel never gets the first one's host, even of
    // the same user.
    const labels = ["same0000", "same0000", "other000"];
    const repeat = new HostBook(store, { domain: DOMAIN, random: () => labels.shift()! });
    assert.equal(await repeat.subdomainFor(alice, "one"), `same0000.${DOMAIN}`);
    assert.equal(await repeat.subdomainFor(alice, "two"), `other000.${DOMAIN}`);
    const stuck = new HostBook(store, { domain: DOMAIN, random: () => "same0000" });
    await assert.rejects(stuck.subdomainFor(bob, "three"), /no free random subdomain/);
    for (let i = 0; i < 100; i++) assert.match(randomLabel(), /^[a-z0-9]{8}$/);
  });
});

Deno.test("without an HTTP domain subdomains are refused with host_not_allowed", async () => {
  await withUsers(async (store, alice) => {
    const book = new HostBook(store, { domain: null });
    assert.equal(book.domain, null);
    await refused(
      book.subdomainFor(alice, "web"),
      "host_not_allowed",
      "this server has no HTTP domain (start mport-server with --http-domain)",
    );
  });
});

Deno.test("an invalid requested label is refused with bad_message", async () => {
  await withUsers(async (store, alice) => {
    const book = new HostBook(store, { domain: DOMAIN });
    await assert.rejects(book.subdomainFor(alice, "web", "my_app"), { code: "bad_message" });
    assert.deepEqual(await store.listHosts(), []);
  });
});

Deno.test("a custom domain serves only the user it is assigned to", async () => {
  await withUsers(async (store, alice, bob) => {
    const book = new HostBook(store, { domain: DOMAIN, now: () => T0 });
    const assigned = await book.assignDomain("App.Example.org", alice);
    assert.deepEqual(assigned, {
      host: "app.example.org",
      userId: alice,
      kind: "domain",
      tunnel: null,
      createdAt: T0,
      lastUsedAt: T0,
    });
    const later = new HostBook(store, { domain: DOMAIN, now: () => T0 + 5 });
    assert.equal(await later.domainFor(alice, "APP.example.org", "web"), "app.example.org");
    const r = await store.hostByName("app.example.org");
    assert.deepEqual([r?.kind, r?.tunnel, r?.lastUsedAt], ["domain", "web", T0 + 5]);
    await refused(
      book.domainFor(bob, "app.example.org", "web"),
      "host_not_allowed",
      "domain app.example.org is not assigned to you (an admin runs: mport-server domain add app.example.org --user NAME)",
    );
    await refused(
      book.domainFor(alice, "other.example.org", "web"),
      "host_not_allowed",
      "domain other.example.org is not assigned to you (an admin runs: mport-server domain add other.example.org --user NAME)",
    );
    // A subdomain alice holds is not a domain she may name in full.
    await book.subdomainFor(alice, "web", "mine");
    await refused(
      book.domainFor(alice, `mine.${DOMAIN}`, "web"),
      "host_not_allowed",
      "mine.t.example.com is under this server's HTTP domain t.example.com: ask for it with --subdomain",
    );
    await assert.rejects(book.domainFor(alice, "bad host", "web"), { code: "bad_message" });
  });
});

Deno.test("assignDomain refuses hosts under the HTTP domain and another user's domain", async () => {
  await withUsers(async (store, alice, bob) => {
    const book = new HostBook(store, { domain: DOMAIN });
    await book.assignDomain("app.example.org", alice);
    // Assigning it again to the same user is fine.
    assert.equal((await book.assignDomain("app.example.org", alice)).userId, alice);
    await assert.rejects(book.assignDomain("app.example.org", bob), {
      name: "TypeError",
      message:
        "domain app.example.org is already held by alice (free it first: mport-server domain remove app.example.org)",
    });
    for (const host of [DOMAIN, `x.${DOMAIN}`]) {
      await assert.rejects(book.assignDomain(host, bob), {
        name: "TypeError",
        message:
          `${host} is under the HTTP domain ${DOMAIN}: its subdomains go to tunnels that ask for them (--subdomain), they are not assigned`,
      });
    }
    await assert.rejects(book.assignDomain("localhost", bob), TypeError);
    // Without an HTTP domain nothing is "under" it.
    assert.equal(
      (await new HostBook(store, { domain: null }).assignDomain(`x.${DOMAIN}`, bob)).kind,
      "domain",
    );
  });
});

Deno.test("a user's subdomain reservations are capped: the least recently used go first, custom domains stay", async () => {
  const store = await openSqliteStore(":memory:");
  try {
    const alice = await store.createUser({ name: "alice", role: "user" });
    let t = 1_000;
    const book = new HostBook(store, { domain: "t.test", now: () => t, maxSubdomainsPerUser: 3 });
    await book.assignDomain("app.example.org", alice.id);
    for (const name of ["a", "b", "c", "d"]) {
      t += 1_000;
      await book.subdomainFor(alice.id, `tunnel-${name}`, `sub-${name}`);
    }
    const hosts = (await store.listHosts(alice.id)).map((h) => h.host).sort();
    assert.deepEqual(hosts, ["app.example.org", "sub-b.t.test", "sub-c.t.test", "sub-d.t.test"]);
  } finally {
    await store.close();
  }
});
