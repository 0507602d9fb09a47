// Admin commands for HTTP tunnels' host names: domain add, list and remove.
import assert from "node:assert/strict";
import { adminPreflight, runAdmin } from "../../server/admin/cli.ts";
import { serverConfig } from "../../server/config.ts";
import { HostBook } from "../../server/accounts/host_book.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import { ADMIN_NOW as NOW, withAdminStore as withStore } from "../support/admin_store.ts";

function iso(t: number): string {
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z");
}

Deno.test("domain add assigns a custom domain; domain list shows domains and subdomains", async () => {
  await withStore(async (store, run) => {
    await run("user", "add", "alice");
    await run("user", "add", "bob");
    const alice = (await store.userByName("alice"))!;
    assert.equal(
      await run("domain", "add", "App.Example.org", "--user", "alice"),
      "domain app.example.org assigned to alice",
    );
    const book = new HostBook(store, { domain: "t.example.com", now: () => NOW - 60_000 });
    await book.subdomainFor(alice.id, "web", "myapp");

    const table = (await run("domain", "list")).split("\n");
    assert.match(table[0]!, /^HOST\s+KIND\s+USER\s+TUNNEL\s+LAST USED$/);
    assert.match(table[1]!, /^app\.example\.org\s+domain\s+alice\s+-\s+-$/);
    assert.match(
      table[2]!,
      new RegExp(
        `^myapp\\.t\\.example\\.com\\s+subdomain\\s+alice\\s+web\\s+${iso(NOW - 60_000)}$`,
      ),
    );
    assert.equal(table.length, 3);
    assert.equal((await run("domain", "list", "--user", "bob")).split("\n").length, 1);

    const json = JSON.parse(await run("domain", "list", "--json", "--user", "alice"));
    assert.deepEqual(json[0], {
      host: "app.example.org",
      userId: alice.id,
      kind: "domain",
      tunnel: null,
      createdAt: NOW,
      lastUsedAt: NOW,
      user: "alice",
    });
    const events = await store.events({ userId: alice.id });
    assert.deepEqual(events[0]?.kind, "domain_assigned");
    assert.deepEqual(events[0]?.detail, { host: "app.example.org" });
  });
});

Deno.test("domain add refuses another user's domain, invalid names and a missing user", async () => {
  await withStore(async (_store, run) => {
    await run("user", "add", "alice");
    await run("user", "add", "bob");
    await run("domain", "add", "app.example.org", "--user", "alice");
    const refused: [string[], string][] = [
      [
        ["domain", "add", "app.example.org", "--user", "bob"],
        "domain app.example.org is already held by alice (free it first: mport-server domain remove app.example.org)",
      ],
      [
        ["domain", "add", "app.example.org:443", "--user", "bob"],
        'host name "app.example.org:443" has a port: give the name alone (e.g. app.example.org)',
      ],
      [
        ["domain", "add", "10.1.2.3", "--user", "bob"],
        '"10.1.2.3" is an IP address: a domain needs a name (e.g. app.example.org)',
      ],
      [["domain", "add", "--user", "bob"], "domain add needs a HOST, e.g. app.example.org"],
      [["domain", "add", "x.example.org"], "--user NAME is required"],
      [
        ["domain", "add", "x.example.org", "--user", "carol"],
        'no user named "carol" (see: mport-server user list)',
      ],
      [
        ["domain", "add", "x.t.example.com", "--user", "bob", "--http-domain", "t.example.com"],
        "x.t.example.com is under the HTTP domain t.example.com: its subdomains go to tunnels " +
        "that ask for them (--subdomain), they are not assigned",
      ],
      [["domain", "remove"], "domain remove needs a HOST (see: domain list)"],
    ];
    for (const [args, message] of refused) {
      await assert.rejects(run(...args), { name: "TypeError", message }, args.join(" "));
    }
  });
});

Deno.test("domain add reads the HTTP domain from the server's config when it has one", async () => {
  const store = await openSqliteStore(":memory:");
  try {
    await store.createUser({ name: "alice", role: "user" });
    const server = { ...serverConfig({ tokens: [] }), httpDomain: "t.example.com" };
    await assert.rejects(
      runAdmin(["domain", "add", "a.t.example.com", "--user", "alice"], store, {
        out: () => {},
        readPassword: () => Promise.resolve(""),
        now: () => NOW,
        server,
      }),
      /is under the HTTP domain t\.example\.com/,
    );
  } finally {
    await store.close();
  }
});

Deno.test("domain remove frees a domain or a subdomain and says when there was none", async () => {
  await withStore(async (store, run) => {
    await run("user", "add", "alice");
    await run("user", "add", "bob");
    const alice = (await store.userByName("alice"))!;
    await run("domain", "add", "app.example.org", "--user", "alice");
    await new HostBook(store, { domain: "t.example.com" }).subdomainFor(alice.id, "web", "myapp");
    assert.equal(
      await run("domain", "remove", "APP.example.org"),
      "domain app.example.org removed",
    );
    assert.equal(
      await run("domain", "remove", "myapp.t.example.com"),
      "subdomain myapp.t.example.com removed",
    );
    assert.equal(
      await run("domain", "remove", "app.example.org"),
      "app.example.org was not reserved (see: mport-server domain list)",
    );
    assert.deepEqual(await store.listHosts(), []);
    assert.deepEqual(
      (await store.events({ userId: alice.id, limit: 2 })).map((e) => [e.kind, e.detail]),
      [
        ["host_released", { host: "myapp.t.example.com", kind: "subdomain" }],
        ["host_released", { host: "app.example.org", kind: "domain" }],
      ],
    );
    // Freed, the domain can go to someone else.
    assert.equal(
      await run("domain", "add", "app.example.org", "--user", "bob"),
      "domain app.example.org assigned to bob",
    );
  });
});

Deno.test("domain help and usage errors are answered before any store is opened", () => {
  assert.match(adminPreflight(["domain", "--help"])!, /^Usage: mport-server domain ACTION/);
  assert.match(adminPreflight(["domain", "add", "-h"])!, /^Usage: mport-server domain add HOST /);
  assert.equal(adminPreflight(["domain", "list", "--json"]), null);
  assert.throws(() => adminPreflight(["domain"]), {
    message: '"domain" needs an action: add, remove, list',
  });
  assert.throws(() => adminPreflight(["domain", "ad", "x.example.org"]), {
    message: 'unknown command "domain ad": did you mean domain add?',
  });
});
