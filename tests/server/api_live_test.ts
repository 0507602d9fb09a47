// REST API live view on SQLite and PostgreSQL: clients and tunnels of a real control session,
// closing them (owner or admin; others get 404), and the Server-Sent Events stream.
import assert from "node:assert/strict";
import { BACKENDS, StoreFactory } from "../e2e/accounts_harness.ts";
import { ControlPeer } from "../e2e/raw_peers.ts";
import { CloseCode } from "../../shared/protocol.ts";
import { withApi } from "./api_harness.ts";

const stores = new StoreFactory();

interface SseEvent {
  event: string;
  data: unknown;
  at: number;
}

/** An open `GET /events/stream`, collecting its events. */
class SseReader {
  readonly events: SseEvent[] = [];
  readonly #abort = new AbortController();
  #done: Promise<void> = Promise.resolve();
  #wake: (() => void) | null = null;

  static async open(url: string, token: string): Promise<SseReader> {
    const r = new SseReader();
    const res = await fetch(url, {
      headers: { authorization: `Bearer ${token}` },
      signal: r.#abort.signal,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    r.#done = r.#read(res.body!);
    await r.next("ready", 5_000);
    return r;
  }

  #reader: ReadableStreamDefaultReader<string> | null = null;

  async #read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    this.#reader = reader;
    let buf = "";
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
          const data = /^data: (.*)$/m.exec(block)?.[1] ?? "null";
          this.events.push({ event, data: JSON.parse(data), at: Date.now() });
          this.#wake?.();
        }
      }
    } catch {
      // aborted
    }
  }

  /** The first event of `type` not taken yet (waits up to `ms`). */
  async next(type: string, ms: number): Promise<SseEvent> {
    const deadline = Date.now() + ms;
    while (true) {
      const i = this.events.findIndex((e) => e.event === type);
      if (i >= 0) return this.events.splice(i, 1)[0]!;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no "${type}" event within ${ms} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.#abort.abort();
    // The abort ends the read; cancelling as well makes sure, and the wait is bounded either way.
    this.#reader?.cancel().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#done,
      new Promise((r) => (timer = setTimeout(r, 5_000))),
    ]);
    clearTimeout(timer);
  }
}

for (const backend of BACKENDS) {
  Deno.test(`API (${backend}) shows, closes and streams live clients and tunnels to their owners`, () =>
    withApi(stores, backend, async (c) => {
      const aliceSse = await SseReader.open(`${c.base}/events/stream`, c.tokens.alice);
      const bobSse = await SseReader.open(`${c.base}/events/stream`, c.tokens.bob);
      try {
        const t0 = Date.now();
        const { peer } = await ControlPeer.welcomed(
          c.proc,
          [{ name: "web" }],
          c.tokens.aliceClient,
        );
        const opened = await aliceSse.next("tunnel.opened", 1_000);
        assert.ok(opened.at - t0 < 1_000, `tunnel.opened after ${opened.at - t0} ms`);
        assert.equal((opened.data as { name: string }).name, "web");
        assert.equal((opened.data as { user: string }).user, "alice");
        await aliceSse.next("client.connected", 1_000);
        await aliceSse.next("rates", 2_500);

        const tunnels = await c.call("GET", "/tunnels", { token: c.tokens.alice });
        assert.equal(tunnels.status, 200);
        assert.equal(tunnels.json.items.length, 1);
        const t = tunnels.json.items[0];
        assert.equal(t.name, "web");
        assert.equal(t.user, "alice");
        assert.equal(typeof t.local, "string");
        assert.equal(typeof t.bytesInPerSecond, "number");
        assert.equal(t.id, (opened.data as { id: string }).id);
        assert.equal(
          (await c.call("GET", "/tunnels", { token: c.tokens.bob })).json.items.length,
          0,
        );
        assert.equal(
          (await c.call("GET", "/tunnels", { token: c.tokens.admin })).json.items.length,
          1,
        );
        const clients = await c.call("GET", "/clients", { token: c.tokens.alice });
        assert.equal(clients.json.items.length, 1);
        assert.equal(clients.json.items[0].user, "alice");
        assert.deepEqual(clients.json.items[0].tunnels, ["web"]);
        // This raw peer says no version; the token it logged in with is named.
        assert.equal(clients.json.items[0].clientVersion, null);
        assert.equal(typeof clients.json.items[0].tokenLabel, "string");
        const clientId = clients.json.items[0].id;
        assert.equal(
          (await c.call("GET", "/clients", { token: c.tokens.bob })).json.items.length,
          0,
        );

        // Bob cannot close alice's tunnel or client: to him they do not exist.
        assert.equal(
          (await c.call("DELETE", `/tunnels/${t.id}`, { token: c.tokens.bob })).status,
          404,
        );
        assert.equal(
          (await c.call("DELETE", `/clients/${clientId}`, { token: c.tokens.bob })).status,
          404,
        );
        const closed = await c.call("DELETE", `/tunnels/${t.id}`, { token: c.tokens.alice });
        assert.equal(closed.status, 200);
        const notice = await peer.take("tunnel_close");
        assert.equal(notice.name, "web");
        const closedEvent = await aliceSse.next("tunnel.closed", 1_000);
        assert.match(String((closedEvent.data as { reason: string }).reason), /closed by its user/);
        assert.equal(
          (await c.call("GET", "/tunnels", { token: c.tokens.admin })).json.items.length,
          0,
        );
        await peer.close();

        // An admin disconnects a client: the channel closes and its tunnels go at once.
        const second = await ControlPeer.welcomed(c.proc, [{ name: "db" }], c.tokens.aliceClient);
        await aliceSse.next("tunnel.opened", 1_000);
        const live = await c.call("GET", "/clients", { token: c.tokens.admin });
        const sid = live.json.items.find((x: { tunnels: string[] }) => x.tunnels.includes("db")).id;
        assert.equal(
          (await c.call("DELETE", `/clients/${sid}`, { token: c.tokens.admin })).status,
          200,
        );
        assert.match(await second.peer.refused(CloseCode.unauthorized), /disconnected by an admin/);
        await aliceSse.next("client.disconnected", 1_000);
        assert.equal(
          (await c.call("GET", "/tunnels", { token: c.tokens.admin })).json.items.length,
          0,
        );
        await second.peer.close();
        assert.equal(
          (await c.call("DELETE", `/clients/${sid}`, { token: c.tokens.admin })).status,
          404,
        );

        // Bob's stream carried rates only, nothing of alice's.
        assert.ok(
          bobSse.events.every((e) => e.event === "rates"),
          bobSse.events.map((e) => e.event).join(","),
        );
        const kinds = (await c.store.events({})).map((e) => e.kind);
        assert.ok(kinds.includes("client_disconnect_requested"), String(kinds));
      } finally {
        await aliceSse.close();
        await bobSse.close();
      }
    }));
}

Deno.test("API live tests cleanup", () => stores.close());
