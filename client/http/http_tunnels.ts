// The client's HTTP tunnels: their local pools and rules, serving the streams the server opens
// for visitors, and replaying captured requests for the inspector.
import type { Logger } from "@logtape/logtape";
import { memoryPipe } from "../../shared/mem_pipe.ts";
import type { MuxStream } from "../../shared/mux_stream.ts";
import { closeQuietly } from "../../shared/net.ts";
import type { OpenExtra, TunnelGrant } from "../../shared/protocol.ts";
import type { TunnelSpec } from "../config.ts";
import type { Capture, CapturedExchange } from "../inspector/capture.ts";
import type { ReplayEdits } from "../inspector/server.ts";
import { type HttpTunnel, serveVisitor } from "./engine.ts";
import { LocalPool, targetUrl } from "./local_pool.ts";
import { Watchdog } from "./watchdog.ts";
import { serializeRequestHead } from "./rules.ts";

/** Most response bytes a replay reads back (the inspector keeps what it shows). */
const MAX_REPLAY_RESPONSE_BYTES = 64 * 1024 * 1024;

/** Every HTTP tunnel of the client, by name. */
export class HttpTunnels {
  readonly #tunnels = new Map<string, HttpTunnel>();
  readonly #watchdog = new Watchdog();

  constructor(
    specs: readonly TunnelSpec[],
    dialTimeoutMs: number,
    capture: Capture | null,
    log: Logger,
  ) {
    for (const spec of specs) {
      if (!spec.http) continue;
      this.#tunnels.set(spec.name, {
        name: spec.name,
        rules: spec.http.rules,
        pool: new LocalPool(spec.http.target, dialTimeoutMs),
        hosts: [],
        capture,
        log,
        watchdog: this.#watchdog,
      });
    }
  }

  /** True when there is at least one HTTP tunnel. */
  get any(): boolean {
    return this.#tunnels.size > 0;
  }

  /** The server granted a tunnel: requests for its host are served. */
  granted(grant: TunnelGrant): void {
    const t = this.#tunnels.get(grant.name);
    if (!t) return;
    try {
      t.hosts = [new URL(grant.url).hostname.toLowerCase()];
    } catch {
      t.hosts = [];
    }
  }

  /** Public URL and local service of each tunnel (for the inspector's header). */
  status(urls: ReadonlyMap<string, string>): { name: string; url: string; local: string }[] {
    return [...this.#tunnels.values()].map((t) => ({
      name: t.name,
      url: urls.get(t.name) ?? "",
      local: targetUrl(t.pool.target),
    }));
  }

  /** Serves a stream the server opened for a visitor of tunnel `name`; false if there is none. */
  serve(stream: MuxStream, name: string, remote: string, extra: OpenExtra | undefined): boolean {
    const t = this.#tunnels.get(name);
    if (!t) return false;
    const [streamSide, engineSide] = memoryPipe();
    stream.attach(streamSide.asConn());
    serveVisitor(engineSide.asConn(), { remote, extra }, t);
    return true;
  }

  /**
   * Sends a captured request (edited, if asked) to its local service again, through the
   * tunnel's rules, as the inspector's Replay; resolves with the new exchange's id once the
   * local service answered (or after `MAX_REPLAY_RESPONSE_BYTES` of its response).
   */
  async replay(entry: CapturedExchange, edits?: ReplayEdits): Promise<string> {
    const t = this.#tunnels.get(entry.tunnel);
    if (!t) throw new Error(`tunnel ${entry.tunnel} is not running in this client`);
    const req = entry.request;
    if (req.truncated && edits?.body === undefined) {
      throw new Error(
        `the captured body was kept only up to ${req.body.byteLength} of ${req.bodyBytes} bytes, ` +
          "so it cannot be sent again as it was (Edit & Replay with a body of your own)",
      );
    }
    const method = edits?.method ?? req.method;
    const target = edits?.target ?? req.target;
    const headers = new Headers();
    for (const [k, v] of edits?.headers ?? req.headers) headers.append(k, v);
    const body = edits?.body !== undefined ? new TextEncoder().encode(edits.body) : req.body;
    headers.delete("content-length");
    headers.delete("transfer-encoding");
    headers.delete("connection");
    if (body.byteLength > 0 || !["GET", "HEAD", "DELETE", "OPTIONS"].includes(method)) {
      headers.set("content-length", String(body.byteLength));
    }
    headers.set("connection", "close");
    if (!headers.has("host") && t.hosts[0]) headers.set("host", t.hosts[0]);
    const head = serializeRequestHead(method, target, headers);
    const [ours, engine] = memoryPipe();
    let newId: string | null = null;
    const served = serveVisitor(engine.asConn(), {
      remote: "replay",
      extra: { proto: "https" },
      replayOf: entry.id,
      captured: (id) => (newId ??= id),
    }, t);
    // The request is written while the response is read: a refusal may come before the body.
    const sent = (async () => {
      await ours.write(head);
      if (body.byteLength > 0) await ours.write(body);
      await ours.closeWrite();
    })().catch(() => {});
    let firstLine = "";
    try {
      const buf = new Uint8Array(64 * 1024);
      let total = 0;
      for (;;) {
        const n = await ours.read(buf).catch(() => null);
        if (n === null) break;
        if (total === 0) firstLine = new TextDecoder().decode(buf.subarray(0, Math.min(n, 200)));
        total += n;
        // Past this, stop reading: closing our end below makes the engine give up too.
        if (total > MAX_REPLAY_RESPONSE_BYTES) break;
      }
    } finally {
      closeQuietly(ours);
      await sent;
      await served;
    }
    if (newId === null) {
      const status = firstLine.split("\r\n")[0] ?? "";
      throw new Error(
        `the tunnel did not pass the replayed request to the local service` +
          (status.startsWith("HTTP/") ? ` (it answered ${status.replace(/^HTTP\/\S+ /, "")})` : ""),
      );
    }
    return newId;
  }

  /** Closes the idle local connections. */
  close(): void {
    for (const t of this.#tunnels.values()) t.pool.close();
    this.#watchdog.close();
  }
}
