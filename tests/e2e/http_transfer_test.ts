// End-to-end: bodies through an HTTP tunnel — 1 GiB streamed each way in bounded server memory,
// chunked and Content-Length bodies, HEAD/204/304 without a body, 100-continue, and SSE/long polls
// delivered as they are written.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startHttpTunnel, startLocalHttp } from "./http_harness.ts";
import { HttpConn } from "../support/http_client.ts";
import { sampleRss } from "../support/processes.ts";
import { randomBytes } from "../support/tcp_services.ts";
import { within } from "../support/wait.ts";

const MiB = 1024 * 1024;
/** What one transfer moves each way. */
const TRANSFER_BYTES = 1024 * MiB;
/** The server streams; its whole process stays under this while 1 GiB passes through it. */
const SERVER_RSS_LIMIT = 150 * MiB;

/**
 * The `i`-th MiB of a transfer: the same random MiB with its index in the first 8 bytes, so a
 * lost, repeated or reordered piece changes the hash. A fresh buffer each time (streams hold it).
 */
function piece(base: Uint8Array, i: number): Uint8Array {
  const p = base.slice();
  new DataView(p.buffer).setBigUint64(0, BigInt(i));
  return p;
}

Deno.test("a 1 GiB chunked upload and a 1 GiB download stream through an HTTP tunnel intact, the server staying under 150 MB", async () => {
  const base = randomBytes(MiB);
  const pieces = TRANSFER_BYTES / MiB;
  const local = startLocalHttp(async (req) => {
    if (req.method === "POST") {
      // Hash as the body arrives: nothing holds the upload.
      const hash = createHash("sha256");
      let bytes = 0;
      for await (const chunk of req.body!) {
        hash.update(chunk);
        bytes += chunk.byteLength;
      }
      return Response.json({ bytes, sha256: hash.digest("hex") });
    }
    let i = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (i === pieces) controller.close();
        else controller.enqueue(piece(base, i++));
      },
    }, { highWaterMark: 2 });
    return new Response(body, { headers: { "content-length": String(TRANSFER_BYTES) } });
  });
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "big"],
  });
  const rss = sampleRss(rig.server.child.pid!);
  try {
    const conn = await HttpConn.open(rig.port);
    try {
      const upStart = performance.now();
      await conn.sendHead({ host: rig.grant.host, method: "POST", path: "/upload", chunked: 1 });
      const sent = createHash("sha256");
      for (let i = 0; i < pieces; i++) {
        const p = piece(base, i);
        sent.update(p);
        await conn.writeChunk(p);
      }
      await conn.endChunks();
      const up = await within(conn.response("POST"), 30_000, "upload response");
      const upMs = performance.now() - upStart;
      assert.equal(up.status, 200, up.text());
      assert.deepEqual(up.json(), { bytes: TRANSFER_BYTES, sha256: sent.digest("hex") });

      // The same visitor connection then downloads 1 GiB, hashed as it is read.
      const downStart = performance.now();
      await conn.send({ host: rig.grant.host, path: "/download" });
      const head = await conn.head();
      assert.equal(head.status, 200);
      const got = createHash("sha256");
      let gotBytes = 0;
      await within(
        conn.body("GET", head, (d) => {
          got.update(d);
          gotBytes += d.byteLength;
        }, false),
        60_000,
        "download body",
      );
      const downMs = performance.now() - downStart;
      const expected = createHash("sha256");
      for (let i = 0; i < pieces; i++) expected.update(piece(base, i));
      assert.equal(gotBytes, TRANSFER_BYTES);
      assert.equal(got.digest("hex"), expected.digest("hex"));
      const peak = rss.stop();
      assert.ok(
        peak < SERVER_RSS_LIMIT,
        `server RSS peaked at ${(peak / MiB).toFixed(1)} MiB (limit ${SERVER_RSS_LIMIT / MiB})`,
      );
      console.log(
        `upload ${(upMs / 1000).toFixed(1)} s, download ${(downMs / 1000).toFixed(1)} s, ` +
          `server peak RSS ${(peak / MiB).toFixed(1)} MiB`,
      );
    } finally {
      conn.close();
    }
  } finally {
    rss.stop();
    await rig.close();
    await local.close();
  }
});

Deno.test("chunked and Content-Length bodies arrive intact both ways; HEAD, 204 and 304 carry no body and the connection stays usable", async () => {
  const local = startLocalHttp(async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/echo-chunked") {
      // A response body of unknown length goes out chunked.
      const data = new Uint8Array(await req.arrayBuffer());
      let off = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          pull(c) {
            if (off >= data.byteLength) return c.close();
            c.enqueue(data.slice(off, off + 7919));
            off += 7919;
          },
        }),
        { headers: { "x-request-te": req.headers.get("transfer-encoding") ?? "" } },
      );
    }
    if (path === "/echo-length") {
      const data = new Uint8Array(await req.arrayBuffer());
      return new Response(data, {
        headers: { "x-request-length": req.headers.get("content-length") ?? "" },
      });
    }
    if (path === "/doc") return new Response("twelve bytes");
    if (path === "/nothing") return new Response(null, { status: 204 });
    if (path === "/cached") {
      return new Response(null, { status: 304, headers: { etag: '"v1"' } });
    }
    return new Response("not here", { status: 404 });
  });
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  const host = rig.grant.host;
  const conn = await HttpConn.open(rig.port);
  try {
    const data = randomBytes(300_000);

    const chunked = await conn.request({
      host,
      method: "POST",
      path: "/echo-chunked",
      body: data,
      chunked: 4096,
    });
    assert.equal(chunked.status, 200);
    assert.equal(chunked.headers.get("x-request-te"), "chunked");
    assert.equal(chunked.headers.get("transfer-encoding"), "chunked");
    assert.deepEqual(chunked.body, data);

    const length = await conn.request({ host, method: "PUT", path: "/echo-length", body: data });
    assert.equal(length.status, 200);
    assert.equal(length.headers.get("x-request-length"), String(data.byteLength));
    assert.equal(length.headers.get("content-length"), String(data.byteLength));
    assert.deepEqual(length.body, data);

    const head = await conn.request({ host, method: "HEAD", path: "/doc" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "12");
    assert.equal(head.body.byteLength, 0);

    const none = await conn.request({ host, path: "/nothing" });
    assert.equal(none.status, 204);
    assert.equal(none.body.byteLength, 0);

    const cached = await conn.request({
      host,
      path: "/cached",
      headers: [["if-none-match", '"v1"']],
    });
    assert.equal(cached.status, 304);
    assert.equal(cached.headers.get("etag"), '"v1"');
    assert.equal(cached.body.byteLength, 0);

    // Had a body been expected after any of these, this would read it as the next response.
    const after = await conn.request({ host, path: "/doc" });
    assert.equal(after.status, 200);
    assert.equal(after.text(), "twelve bytes");
    assert.equal(local.requests.length, 6, "one connection carried all six requests");
  } finally {
    conn.close();
    await rig.close();
    await local.close();
  }
});

Deno.test("a visitor sending Expect: 100-continue gets 100 Continue from the local service before sending its body", async () => {
  const local = startLocalHttp(async (req) => {
    const data = new Uint8Array(await req.arrayBuffer());
    return Response.json({
      bytes: data.byteLength,
      sha256: createHash("sha256").update(data).digest("hex"),
    });
  });
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  const conn = await HttpConn.open(rig.port);
  try {
    const data = randomBytes(200_000);
    await conn.sendHead({
      host: rig.grant.host,
      method: "POST",
      path: "/upload",
      headers: [["expect", "100-continue"]],
      length: data.byteLength,
    });
    // Nothing of the body is sent until the local service said to go on.
    const cont = await conn.head(10_000);
    assert.equal(cont.status, 100, cont.head);
    await conn.writeRaw(data);
    const res = await conn.response("POST");
    assert.equal(res.status, 200, res.text());
    assert.deepEqual(res.json(), {
      bytes: data.byteLength,
      sha256: createHash("sha256").update(data).digest("hex"),
    });
  } finally {
    conn.close();
    await rig.close();
    await local.close();
  }
});

Deno.test("a Server-Sent Event reaches the visitor while the response is still open, and a long poll is answered when the local service answers", async () => {
  const enc = new TextEncoder();
  const release = Promise.withResolvers<void>();
  const pollSeen = Promise.withResolvers<void>();
  const pollAnswer = Promise.withResolvers<string>();
  let secondWritten = false;
  const local = startLocalHttp(async (req) => {
    if (new URL(req.url).pathname === "/poll") {
      pollSeen.resolve();
      return new Response(await pollAnswer.promise);
    }
    return new Response(
      new ReadableStream<Uint8Array>({
        async start(c) {
          c.enqueue(enc.encode("id: 1\ndata: first\n\n"));
          await release.promise;
          secondWritten = true;
          c.enqueue(enc.encode("id: 2\ndata: second\n\n"));
          c.close();
        },
      }),
      { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } },
    );
  });
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  const host = rig.grant.host;
  const conn = await HttpConn.open(rig.port);
  try {
    await conn.send({ host, path: "/events", headers: [["accept", "text/event-stream"]] });
    const head = await conn.head();
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-type"), "text/event-stream");
    const firstEvent = Promise.withResolvers<void>();
    let text = "";
    const body = conn.body("GET", head, (d) => {
      text += new TextDecoder().decode(d);
      if (text.includes("data: first\n\n")) firstEvent.resolve();
    });
    await within(firstEvent.promise, 10_000, "the first event");
    assert.equal(secondWritten, false, "event 1 must arrive before event 2 is written");
    assert.equal(text, "id: 1\ndata: first\n\n");
    release.resolve();
    await within(body, 10_000, "the end of the event stream");
    assert.equal(text, "id: 1\ndata: first\n\nid: 2\ndata: second\n\n");

    // A long poll on the same connection: the response waits for the local service's answer.
    await conn.send({ host, path: "/poll" });
    await within(pollSeen.promise, 10_000, "the poll reaching the local service");
    pollAnswer.resolve("news");
    const poll = await within(conn.response(), 10_000, "the poll's answer");
    assert.equal(poll.status, 200);
    assert.equal(poll.text(), "news");
  } finally {
    release.resolve();
    pollAnswer.resolve("");
    conn.close();
    await rig.close();
    await local.close();
  }
});

Deno.test("keep-alive on both sides: 20 requests on one visitor connection use one local connection, and the next visitor connection reuses it", async () => {
  const localPorts: number[] = [];
  const local = startLocalHttp((req, info) => {
    localPorts.push(info.remoteAddr.port);
    return new Response(`#${localPorts.length} ${new URL(req.url).pathname}`);
  });
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  const host = rig.grant.host;
  try {
    const first = await HttpConn.open(rig.port);
    try {
      for (let i = 1; i <= 20; i++) {
        const r = await first.request({ host, path: `/r${i}` });
        assert.equal(r.status, 200);
        assert.equal(r.text(), `#${i} /r${i}`);
      }
    } finally {
      first.close();
    }
    assert.equal(localPorts.length, 20);
    assert.equal(new Set(localPorts).size, 1, `local connections from ports ${localPorts}`);

    const second = await HttpConn.open(rig.port);
    try {
      const r = await second.request({ host, path: "/again" });
      assert.equal(r.text(), "#21 /again");
    } finally {
      second.close();
    }
    assert.equal(localPorts[20], localPorts[0], "the second visitor connection reused the pool's");
  } finally {
    await rig.close();
    await local.close();
  }
});
