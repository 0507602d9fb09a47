// Tests of the saved login file of `mport login`: written 0600 in a 0700 directory, read back.
import assert from "node:assert/strict";
import { parseLoginFile, saveLogin } from "../../client/login.ts";
import { Secret } from "../../shared/secret.ts";

Deno.test("saveLogin writes server and token readable only by the user, and replaces them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-login-" });
  try {
    const path = `${dir}/cfg/mport/config.toml`;
    saveLogin(path, { server: "ws://127.0.0.1:8080", token: new Secret("mp_first-token") });
    saveLogin(path, { server: "wss://vps.example.com/t", token: new Secret('mp_"second"') });
    const text = Deno.readTextFileSync(path);
    const back = parseLoginFile(text, path);
    assert.equal(back.server, "wss://vps.example.com/t");
    assert.equal(back.token.reveal(), 'mp_"second"');
    assert.doesNotMatch(text, /first/);
    if (Deno.build.os !== "windows") {
      assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
      assert.equal(Deno.statSync(`${dir}/cfg/mport`).mode! & 0o777, 0o700);
    }
    assert.deepEqual([...Deno.readDirSync(`${dir}/cfg/mport`)].map((e) => e.name), [
      "config.toml",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("saveLogin says which file it could not write", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-login-" });
  try {
    Deno.writeTextFileSync(`${dir}/file`, "");
    assert.throws(
      () => saveLogin(`${dir}/file/config.toml`, { server: "ws://h", token: new Secret("t") }),
      (e: unknown) => {
        assert.match((e as Error).message, /^cannot save the login to .*\/file\/config\.toml: /);
        return true;
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseLoginFile refuses a file that does not parse, naming it", () => {
  assert.throws(
    () => parseLoginFile("server = ", "/c/config.toml"),
    /^TypeError: \/c\/config\.toml: cannot parse it: /,
  );
});
