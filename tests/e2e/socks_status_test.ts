// End to end: the status page of `mport socks` on the inspector port, through the real server and
// client processes: its JSON says connected, where the proxy listens and the bytes it carried; in a
// real headless Chromium it shows the server, and its Disconnect button stops the client cleanly.
import assert from "node:assert/strict";
import { launchChromium, skipWithoutChromium } from "../support/chromium.ts";
import type { EgressStatus } from "../../client/egress/egress_types.ts";
import { startServer } from "./harness.ts";
import { startSocksWithStatus } from "./egress_harness.ts";
import { socksConnect } from "../support/socks_client.ts";
import { within } from "../support/wait.ts";
import {
  echo,
  randomBytes,
  readExactly,
  sha256,
  startService,
  writeChunks,
} from "../support/tcp_services.ts";

const MiB = 1024 * 1024;

async function egress(page: string): Promise<EgressStatus> {
  const res = await fetch(`${page}/api/egress`);
  assert.equal(res.status, 200);
  return await res.json() as EgressStatus;
}

/** Sends `data` through the proxy to the echo service and checks it comes back intact. */
async function echoThrough(proxy: number, echoPort: number, data: Uint8Array): Promise<void> {
  const { code, conn } = await socksConnect(proxy, "127.0.0.1", echoPort);
  assert.equal(code, 0);
  try {
    const [, back] = await Promise.all([
      writeChunks(conn, data),
      readExactly(conn, data.byteLength),
    ]);
    assert.equal(sha256(back), sha256(data));
  } finally {
    conn.close();
  }
}

Deno.test("mport socks serves its status on the inspector port: connected, the proxy's address, bytes growing with a transfer, then reconnecting with the reason", async () => {
  const echoService = startService(echo);
  const server = await startServer(["--egress", "--egress-allow", `127.0.0.1:${echoService.port}`]);
  const { client, proxy, page } = await startSocksWithStatus(server.wsUrl);
  try {
    const before = await egress(page);
    assert.equal(before.kind, "socks");
    assert.equal(before.server, new URL(server.wsUrl).origin);
    assert.equal(before.connected, true);
    assert.equal(before.problem, null);
    assert.ok(
      before.since !== null && before.since <= Date.now() && before.since > Date.now() - 60_000,
    );
    assert.equal(before.listen, `127.0.0.1:${proxy}`);
    assert.deepEqual(before.connections, { active: 0, opened: 0, refused: 0 });

    await echoThrough(proxy, echoService.port, randomBytes(2 * MiB));
    const after = await egress(page);
    assert.ok(after.bytesUp - before.bytesUp >= 2 * MiB, `up ${after.bytesUp}`);
    assert.ok(after.bytesDown - before.bytesDown >= 2 * MiB, `down ${after.bytesDown}`);
    assert.equal(after.connections?.opened, 1);
    assert.equal(after.since, before.since, "the same session");

    // A destination the server does not allow counts as refused.
    const denied = await socksConnect(proxy, "127.0.0.1", server.port);
    assert.equal(denied.code, 2);
    assert.equal((await egress(page)).connections?.refused, 1);

    // The page has no request list (no HTTP tunnels), but a status and a Disconnect.
    const status = await (await fetch(`${page}/api/status`)).json();
    assert.deepEqual(status, { tunnels: [], capture: null, egress: true, disconnect: true });

    // The server going away: reconnecting, with the reason, and the totals kept.
    await server.stop();
    const deadline = Date.now() + 10_000;
    let lost = await egress(page);
    while (lost.connected && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      lost = await egress(page);
    }
    assert.equal(lost.connected, false);
    assert.equal(lost.since, null);
    assert.equal(typeof lost.problem, "string");
    assert.ok(lost.problem!.length > 0);
    assert.equal(lost.bytesUp, after.bytesUp);
  } finally {
    const s = await client.stop();
    await server.stop();
    await echoService.close();
    assert.equal(s.code, 0, client.output());
  }
});

Deno.test({
  name:
    "the status page in Chromium shows the server and connected, and Disconnect stops mport socks with exit code 0",
  ignore: skipWithoutChromium(),
  // Puppeteer keeps a child process, pipes and a WebSocket to Chromium whose ops Deno's
  // sanitizers see as leaked across its internal event handling even after browser.close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const echoService = startService(echo);
    const server = await startServer([
      "--egress",
      "--egress-allow",
      `127.0.0.1:${echoService.port}`,
    ]);
    const { client, proxy, page: url } = await startSocksWithStatus(server.wsUrl);
    const chromium = await launchChromium({ viewport: { width: 1000, height: 700 } });
    try {
      const page = await chromium.browser.newPage();
      const problems: string[] = [];
      page.on("pageerror", (e) => problems.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text());
      });
      await page.goto(url + "/", { waitUntil: "load" });

      // Page code is passed as strings: these tests are type-checked without the DOM library.
      const serverOrigin = new URL(server.wsUrl).origin;
      await page.waitForFunction(
        `document.querySelector("#egress-state")?.textContent === "connected" &&
          !document.querySelector("#egress").hidden`,
        { timeout: 10_000 },
      );
      const facts = () =>
        page.evaluate(
          `Object.fromEntries(Array.from(document.querySelectorAll("#egress-facts dt"),
            (dt) => [dt.textContent, dt.nextElementSibling.textContent]))`,
        ) as Promise<Record<string, string>>;
      const shown = await facts();
      assert.equal(shown["Server"], serverOrigin);
      assert.equal(shown["Listens on"], `socks5://127.0.0.1:${proxy}  http://127.0.0.1:${proxy}`);
      assert.equal(
        await page.evaluate(`document.querySelector("#egress-kind").textContent`),
        "SOCKS proxy",
      );
      assert.equal(await page.evaluate(`document.querySelector("#layout").hidden`), true);
      assert.equal(await page.evaluate(`document.title`), "mport status");

      // A transfer shows up in the totals and, while it lasts, as a rate.
      await echoThrough(proxy, echoService.port, randomBytes(4 * MiB));
      await page.waitForFunction(
        `(() => {
          var dd = Array.from(document.querySelectorAll("#egress-facts dt"))
            .find((dt) => dt.textContent === "Received");
          return dd && /MiB$/.test(dd.nextElementSibling.textContent);
        })()`,
        { timeout: 10_000 },
      );
      const rates = await facts();
      assert.match(rates["Sent"]!, /^4\.\d MiB$/);
      assert.match(rates["Rate down"]!, /^\d+(\.\d)? (B|KiB|MiB)\/s$/);
      assert.equal(rates["Connections"], "0 active · 1 opened · 0 refused");

      // Disconnect asks first; dismissing it keeps the client running.
      const dialogs: string[] = [];
      let accept = false;
      page.on("dialog", (d) => {
        dialogs.push(d.message());
        void (accept ? d.accept() : d.dismiss());
      });
      await page.click("#disconnect");
      await page.waitForFunction(`!document.querySelector("#disconnect").disabled`);
      assert.equal(dialogs.length, 1);
      assert.match(
        dialogs[0]!,
        new RegExp(`^Disconnect from ${serverOrigin.replace(/\./g, "\\.")}\\?`),
      );
      assert.equal((await egress(url)).connected, true);

      accept = true;
      await page.click("#disconnect");
      await page.waitForFunction(
        `!document.querySelector("#egress-stopped").hidden &&
          document.querySelector("#egress-state").textContent === "stopped"`,
        { timeout: 10_000 },
      );
      const status = await within(client.status(), 15_000, "mport socks to exit");
      assert.equal(status.code, 0, client.output());
      assert.deepEqual(problems, []);
    } finally {
      await chromium.close();
      await client.stop();
      await server.stop();
      await echoService.close();
    }
  },
});
