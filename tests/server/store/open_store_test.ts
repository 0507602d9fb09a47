// Choosing the store from a --db value, refusing unknown forms, and redacting passwords for logs.

import assert from "node:assert/strict";
import { openStore, parseDbTarget, redactDbUrl } from "../../../server/store/open_store.ts";

const VALID: [string, ReturnType<typeof parseDbTarget>][] = [
  ["postgres://u:p@db.example:5432/mport", {
    kind: "postgres",
    url: "postgres://u:p@db.example:5432/mport",
  }],
  ["postgresql://localhost/mport", { kind: "postgres", url: "postgresql://localhost/mport" }],
  ["postgres://127.0.0.1:1/db", { kind: "postgres", url: "postgres://127.0.0.1:1/db" }],
  ["sqlite:./data/mport.db", { kind: "sqlite", path: "./data/mport.db" }],
  ["sqlite:/var/lib/mport/mport.db", { kind: "sqlite", path: "/var/lib/mport/mport.db" }],
  ["sqlite:///var/lib/mport.db", { kind: "sqlite", path: "/var/lib/mport.db" }],
  ["sqlite::memory:", { kind: "sqlite", path: ":memory:" }],
  ["./data/mport.db", { kind: "sqlite", path: "./data/mport.db" }],
  ["/abs/mport.db", { kind: "sqlite", path: "/abs/mport.db" }],
  ["mport.db", { kind: "sqlite", path: "mport.db" }],
  [":memory:", { kind: "sqlite", path: ":memory:" }],
];

const INVALID: [string, RegExp][] = [
  ["mysql://x", /Unsupported database mysql:\/\/x/],
  ["postgres://", /has no host/],
  ["postgresql://", /has no host/],
  ["postgres://[::1", /Invalid PostgreSQL URL/],
  ["", /Database is empty/],
  ["   ", /Database is empty/],
  ["sqlite:", /sqlite: needs a path/],
  ["redis://u:hunter2@h/0", /Unsupported database redis:\/\/u:\*\*\*@h\/0/],
];

for (const [input, want] of VALID) {
  Deno.test(`parseDbTarget accepts ${JSON.stringify(input)}`, () => {
    assert.deepEqual(parseDbTarget(input), want);
  });
}

for (const [input, message] of INVALID) {
  Deno.test(`openStore refuses ${JSON.stringify(input)} with a TypeError naming the forms`, async () => {
    await assert.rejects(openStore(input), (e: unknown) => {
      assert.ok(e instanceof TypeError, `expected TypeError, got ${e}`);
      assert.match(e.message, message);
      assert.match(e.message, /postgres:\/\/user:password@host:port\/database/);
      assert.match(e.message, /sqlite:PATH or a file path/);
      assert.doesNotMatch(e.message, /hunter2/);
      return true;
    });
  });
}

Deno.test("openStore opens an SQLite store for sqlite: and plain paths", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-open-store-" });
  try {
    for (const db of [`sqlite:${dir}/a.db`, `${dir}/b.db`]) {
      const store = await openStore(db);
      try {
        assert.match(store.description, /^sqlite:/);
        assert.equal((await store.createUser({ name: "n", role: "user" })).name, "n");
      } finally {
        await store.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("redactDbUrl hides passwords and leaves everything else", () => {
  const cases: [string, string][] = [
    ["postgres://mport:s3cret@db:5432/mport", "postgres://mport:***@db:5432/mport"],
    ["postgres://mport@db/mport", "postgres://mport@db/mport"],
    ["postgresql://a:p%40ss@h/d?sslmode=require", "postgresql://a:***@h/d?sslmode=require"],
    ["sqlite:./data/mport.db", "sqlite:./data/mport.db"],
    ["./data/mport.db", "./data/mport.db"],
    ["postgres://u:pw@[::1", "postgres://u:***@[::1"],
  ];
  for (const [input, want] of cases) assert.equal(redactDbUrl(input), want, input);
});
