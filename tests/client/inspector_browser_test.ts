// The inspector page in a real headless Chromium: the list, the detail with its body, and Replay
// reaching the local service again. Also saves the screenshot for the README.
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";
import { Capture, type CapturedExchange } from "../../client/inspector/capture.ts";
import { type ReplayEdits, startInspector } from "../../client/inspector/server.ts";
import { Notifier } from "../support/wait.ts";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT = new URL("../../docs/images/inspector.png", import.meta.url);

function chromiumInstalled(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

/** What the local service behind the tunnel received. */
interface Received {
  readonly method: string;
  readonly path: string;
  readonly body: string;
}

/** The inspector with a real local service behind it. */
interface InspectorRig {
  /** The inspector page's URL. */
  readonly page: string;
  readonly received: Received[];
  /** Notified whenever the local service receives a request. */
  readonly arrivals: Notifier;
  /** Sends a visitor's request through "the tunnel" (captured as the engine would). */
  visit(method: string, path: string, body?: unknown): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a local HTTP service that records requests, a Capture and the inspector. The forwarding
 * here (capture + fetch) stands in for the tunnel's HTTP engine: replace this function with one
 * that starts a real server, client and tunnel once the engine is wired.
 */
async function startRig(): Promise<InspectorRig> {
  const received: Received[] = [];
  const arrivals = new Notifier();
  const service = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      received.push({
        method: req.method,
        path: url.pathname + url.search,
        body: await req.text(),
      });
      arrivals.notify();
      if (url.pathname === "/api/login") {
        return Response.json({ error: "wrong password" }, { status: 401 });
      }
      if (url.pathname.endsWith(".png")) {
        return new Response(
          new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]),
          {
            headers: { "content-type": "image/png" },
          },
        );
      }
      return Response.json({ ok: true, seen: received.length }, {
        status: req.method === "POST" ? 201 : 200,
      });
    },
  );
  const local = `http://127.0.0.1:${service.addr.port}`;
  const capture = new Capture();

  /** Forwards one request to the local service, capturing it as the engine does. */
  async function forward(
    request: { method: string; target: string; headers: [string, string][]; body: string },
    remote: string,
    replayOf?: string,
  ): Promise<string> {
    const handle = capture.begin({
      tunnel: "web",
      remote,
      local,
      request: {
        method: request.method,
        target: request.target,
        version: "HTTP/1.1",
        headers: request.headers,
      },
      replayOf,
    });
    const id = capture.list()[0]!.id;
    const body = request.body === "" ? undefined : new TextEncoder().encode(request.body);
    if (body) handle.requestBody(body);
    try {
      const res = await fetch(local + request.target, {
        method: request.method,
        headers: request.headers.filter(([k]) =>
          !["host", "content-length"].includes(k.toLowerCase())
        ),
        body,
      });
      handle.response({
        status: res.status,
        statusText: res.statusText,
        headers: [...res.headers],
      });
      handle.responseBody(new Uint8Array(await res.arrayBuffer()));
      handle.end();
    } catch (e) {
      handle.end(`local service failed: ${(e as Error).message}`);
      throw e;
    }
    return id;
  }

  const inspector = await startInspector({
    hostname: "127.0.0.1",
    port: 0,
    capture,
    replay: (entry: CapturedExchange, edits?: ReplayEdits) =>
      forward(
        {
          method: edits?.method ?? entry.request.method,
          target: edits?.target ?? entry.request.target,
          headers: (edits?.headers ?? entry.request.headers).map(([k, v]) => [k, v]),
          body: edits?.body ?? new TextDecoder().decode(entry.request.body),
        },
        "replay",
        entry.id,
      ),
    status: () => ({ tunnels: [{ name: "web", url: "https://web.mport.example", local }] }),
  });
  let visitor = 50000;
  return {
    page: `http://127.0.0.1:${inspector.addr.port}/`,
    received,
    arrivals,
    async visit(method, path, body) {
      const text = body === undefined ? "" : JSON.stringify(body);
      const headers: [string, string][] = [
        ["Host", "web.mport.example"],
        ["User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"],
        ["Accept", "application/json"],
      ];
      if (text) headers.push(["Content-Type", "application/json"]);
      await forward({ method, target: path, headers, body: text }, `198.51.100.23:${visitor++}`);
    },
    async close() {
      await inspector.close();
      await service.shutdown();
    },
  };
}

Deno.test({
  name:
    "the inspector page lists a request, shows its body, and Replay sends it to the local service again",
  ignore: !chromiumInstalled() && Deno.env.get("CI") !== "true",
  // Puppeteer keeps a child process, pipes and a WebSocket to Chromium whose ops Deno's
  // sanitizers see as leaked across its internal event handling even after browser.close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const rig = await startRig();
    const profile = await Deno.makeTempDir({ prefix: "mport-chromium-" });
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir: profile,
      defaultViewport: { width: 1200, height: 800 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      await rig.visit("GET", "/");
      await rig.visit("GET", "/static/logo.png");
      await rig.visit("POST", "/api/login", { user: "ann", password: "hunter2" });
      await rig.visit("POST", "/api/orders?notify=1", { item: "book", quantity: 2, gift: true });
      assert.equal(rig.received.length, 4);

      const page = await browser.newPage();
      const problems: string[] = [];
      page.on("pageerror", (e) => problems.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text());
      });
      await page.goto(rig.page, { waitUntil: "load" });

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

      // Replay reaches the local service again with the same body, and the list shows the replay.
      await page.click("#replay");
      await rig.arrivals.until(
        "the local service receives the replay",
        () => rig.received.length === 5,
        10_000,
      );
      assert.deepEqual(rig.received[4], {
        method: "POST",
        path: "/api/orders?notify=1",
        body: '{"item":"book","quantity":2,"gift":true}',
      });
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
      await browser.close();
      await rig.close();
      await Deno.remove(profile, { recursive: true });
    }
  },
});
