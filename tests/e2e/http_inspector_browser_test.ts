// The inspector page in a real headless Chromium, through the real server and client processes:
// a visitor's request is listed, its detail shows the body, and Replay reaches the local service
// again. Also saves the screenshot for the README.
import assert from "node:assert/strict";
import { launchChromium, skipWithoutChromium } from "../support/chromium.ts";
import { httpRequest } from "../support/http_client.ts";
import { type InspectedTunnel, startInspectedTunnel } from "./http_inspector_rig.ts";

const SCREENSHOT = new URL("../../docs/images/inspector.png", import.meta.url);

const visitorHeaders: [string, string][] = [
  ["user-agent", "Mozilla/5.0 (X11; Linux x86_64)"],
  ["accept", "application/json"],
];

/** A visitor's request through the tunnel (a JSON body when `body` is given). */
async function visit(
  rig: InspectedTunnel,
  method: string,
  path: string,
  body?: unknown,
): Promise<number> {
  const res = await httpRequest(rig.tunnel.port, {
    host: rig.tunnel.grant.host,
    method,
    path,
    headers: body === undefined
      ? visitorHeaders
      : [...visitorHeaders, ["content-type", "application/json"]],
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res.status;
}

Deno.test({
  name:
    "the inspector page lists a request, shows its body, and Replay sends it to the local service again",
  ignore: skipWithoutChromium(),
  // Puppeteer keeps a child process, pipes and a WebSocket to Chromium whose ops Deno's
  // sanitizers see as leaked across its internal event handling even after browser.close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const rig = await startInspectedTunnel();
    const chromium = await launchChromium({ viewport: { width: 1200, height: 800 } });
    try {
      assert.equal(await visit(rig, "GET", "/"), 200);
      assert.equal(await visit(rig, "GET", "/static/logo.png"), 200);
      assert.equal(
        await visit(rig, "POST", "/api/login", { user: "ann", password: "hunter2" }),
        401,
      );
      const order = { item: "book", quantity: 2, gift: true };
      assert.equal(await visit(rig, "POST", "/api/orders?notify=1", order), 201);
      assert.equal(rig.received.length, 4);

      const page = await chromium.browser.newPage();
      const problems: string[] = [];
      page.on("pageerror", (e) => problems.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text());
      });
      await page.goto(rig.inspector + "/", { waitUntil: "load" });

      // The list shows the request, newest first. (Page code is passed as strings: these tests
      // are type-checked without the DOM library.)
      await page.waitForFunction(`document.querySelectorAll("#requests tbody tr").length === 4`, {
        timeout: 10_000,
      });
      const firstRow = await page.evaluate(
        `Array.from(document.querySelectorAll("#requests tbody tr:first-child td"), (td) => td.textContent)`,
      ) as string[];
      assert.deepEqual(firstRow.slice(1, 4), ["POST", "/api/orders?notify=1", "201"]);

      // Clicking it shows the detail with the pretty-printed JSON body.
      await page.click("#requests tbody tr");
      await page.waitForFunction(
        `document.querySelector("#detail-body pre.body")?.textContent.includes('"item": "book"')`,
        { timeout: 10_000 },
      );
      assert.equal(
        await page.evaluate(`document.querySelector("#detail-title").textContent`),
        "POST /api/orders?notify=1",
      );
      assert.equal(
        await page.evaluate(`document.querySelector("#detail-body pre.body").textContent`),
        JSON.stringify(order, null, 2),
      );

      // Replay reaches the local service again with the same body, and the list shows the replay.
      await page.click("#replay");
      await rig.arrivals.until(
        "the local service receives the replay",
        () => rig.received.length === 5,
        10_000,
      );
      const [original, replayed] = [rig.received[3]!, rig.received[4]!];
      assert.deepEqual(
        [replayed.method, replayed.path, replayed.body],
        ["POST", "/api/orders?notify=1", JSON.stringify(order)],
      );
      assert.deepEqual(
        [replayed.method, replayed.path, replayed.body, replayed.headers.get("content-type")],
        [original.method, original.path, original.body, original.headers.get("content-type")],
      );
      await page.waitForFunction(
        `document.querySelectorAll("#requests tbody tr").length === 5 &&
          document.querySelector("#requests tbody tr .tag")?.textContent === "replay" &&
          document.querySelector("#detail-meta").textContent.includes("replay of")`,
        { timeout: 10_000 },
      );
      assert.deepEqual(problems, []);

      await Deno.mkdir(new URL(".", SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT.pathname as `${string}.png`, fullPage: true });
      assert.ok(Deno.statSync(SCREENSHOT).size > 10_000);
    } finally {
      await chromium.close();
      await rig.close();
    }
  },
});
