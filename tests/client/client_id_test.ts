// Tests for the client's persistent id file: made once with mode 0600, read back, bad files refused.
import assert from "node:assert/strict";
import { loadClientId, newClientId } from "../../client/client_id.ts";
import { validateClientId } from "../../shared/protocol.ts";

/** Runs `fn` with a new temporary directory, removed afterwards. */
function inTempDir(fn: (dir: string) => void): void {
  const dir = Deno.makeTempDirSync();
  try {
    fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a new client id is 128 random bits as 32 hex digits, valid on the wire", () => {
  const a = newClientId();
  assert.match(a, /^[0-9a-f]{32}$/);
  assert.equal(validateClientId(a), a);
  assert.notEqual(newClientId(), a);
});

Deno.test("the first run creates the id file (and its directory) with mode 0600; later runs read the same id", () => {
  inTempDir((dir) => {
    const path = `${dir}/config/mport/client-id`;
    const id = loadClientId(path);
    assert.match(id, /^[0-9a-f]{32}$/);
    assert.equal(Deno.readTextFileSync(path), `${id}\n`);
    if (Deno.build.os !== "windows") {
      assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
      assert.equal(Deno.statSync(`${dir}/config/mport`).mode! & 0o077, 0);
    }
    assert.equal(loadClientId(path), id);
    // Nothing else is left in the directory (the id is written aside, then linked into place).
    assert.deepEqual([...Deno.readDirSync(`${dir}/config/mport`)].map((e) => e.name), [
      "client-id",
    ]);
  });
});

Deno.test("an id file written by hand is used as it is, surrounding whitespace aside", () => {
  inTempDir((dir) => {
    const path = `${dir}/client-id`;
    Deno.writeTextFileSync(path, "  laptop-of-alice-01\r\n");
    assert.equal(loadClientId(path), "laptop-of-alice-01");
  });
});

Deno.test("an id file without a valid id is refused with advice, never silently replaced", () => {
  inTempDir((dir) => {
    const path = `${dir}/client-id`;
    for (const text of ["", "short", "has spaces in the middle of it", "x".repeat(65)]) {
      Deno.writeTextFileSync(path, text);
      assert.throws(() => loadClientId(path), {
        message: `the client id file ${path} holds no valid id (invalid client id: use 16-64 ` +
          "letters, digits, '_' or '-'); delete it to make a new one",
      });
      assert.equal(Deno.readTextFileSync(path), text);
    }
  });
});

Deno.test("without a known config directory the client says to set HOME or pass --client-id-file", () => {
  assert.throws(() => loadClientId(null), {
    message: "cannot tell where to keep this client's id: set HOME (XDG_CONFIG_HOME, or APPDATA " +
      "on Windows) or pass --client-id-file FILE",
  });
});

Deno.test("an id file that cannot be read names the path and what to do", () => {
  inTempDir((dir) => {
    // A regular file where the directory should be.
    Deno.writeTextFileSync(`${dir}/mport`, "");
    const path = `${dir}/mport/client-id`;
    assert.throws(() => loadClientId(path), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.ok(e.message.startsWith(`cannot read the client id file ${path}: `), e.message);
      assert.ok(e.message.endsWith("(fix it or pass --client-id-file FILE)"), e.message);
      return true;
    });
  });
});

Deno.test({
  name: "an id file that cannot be created names the path and what to do",
  // /proc refuses new directories even to root, so this holds whoever runs the tests.
  ignore: Deno.build.os !== "linux",
  fn() {
    const path = "/proc/self/mport-test/client-id";
    assert.throws(() => loadClientId(path), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.ok(e.message.startsWith(`cannot create the client id file ${path}: `), e.message);
      assert.ok(
        e.message.endsWith("(fix its directory's permissions or pass --client-id-file FILE)"),
        e.message,
      );
      return true;
    });
  },
});
