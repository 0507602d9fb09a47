// Hand-driven protocol peers for the e2e abuse tests: upgrades that show HTTP refusals, a raw
// control channel and a raw data connection (mux frames by hand) over our own RFC 6455 client.
import assert from "node:assert/strict";
import {
  controlPath,
  MAX_CONTROL_MESSAGE_BYTES,
  MUX_HEADER_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  MuxType,
  PROTOCOL_VERSION,
  streamPath,
  SUBPROTOCOL,
  writeMuxHeader,
} from "../../shared/protocol.ts";
import { type WsCloseInfo, WsConn } from "../../shared/ws_conn.ts";
import { errorText, readEach } from "../support/ws_reader.ts";
import { clientHandshake, WsHandshakeError } from "../../shared/ws_handshake.ts";
import { RawPeer as MuxPeer } from "../support/mux_pair.ts";
import { randomBytes } from "../support/tcp_services.ts";
import { Notifier, within } from "../support/wait.ts";
import { connect, metric, roundTrip, type ServerProc, sha256, TEST_TOKEN } from "./harness.ts";

export { MuxPeer };

/** The v2 control endpoint under the default prefix. */
export const CONTROL = controlPath("/_mport");
/** The v2 data-connection endpoint under the default prefix. */
export const STREAM = streamPath("/_mport");

/** A refused upgrade as the server answered it. */
export interface HttpRefusal {
  readonly status: number;
  /** The whole body (the server's one line, newline included). */
  readonly body: string;
  /** The `x-mport-error` header. */
  readonly code: string | null;
}

/** Either an open WebSocket or the server's HTTP refusal. */
export type Upgrade =
  | { readonly ok: true; readonly ws: WsConn }
  | ({ readonly ok: false } & HttpRefusal);

/**
 * Upgrades `path` on the server with `Authorization: Bearer credential` (none when null) and any
 * `headers`, offering the v2 subprotocol. Returns the open WebSocket, or the HTTP status, body
 * and error code of a refusal.
 */
export async function upgrade(
  server: ServerProc,
  path: string,
  credential: string | null,
  maxMessageBytes: number,
  headers: Record<string, string> = {},
): Promise<Upgrade> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const res = await clientHandshake(conn, {
      host: `127.0.0.1:${server.port}`,
      path,
      headers: credential === null
        ? headers
        : { ...headers, authorization: `Bearer ${credential}` },
      protocols: [SUBPROTOCOL],
      timeoutMs: 5_000,
    });
    return {
      ok: true,
      ws: new WsConn(conn, { role: "client", maxMessageBytes, leftover: res.leftover }),
    };
  } catch (e) {
    // clientHandshake has closed conn.
    if (e instanceof WsHandshakeError && e.status !== 0) {
      return {
        ok: false,
        status: e.status,
        body: e.body,
        code: e.headers.get("x-mport-error"),
      };
    }
    throw e;
  }
}

/** Upgrades `path` (with any extra `headers`) and expects a refusal; returns it. */
export async function refusedUpgrade(
  server: ServerProc,
  path: string,
  credential: string | null,
  headers: Record<string, string> = {},
): Promise<HttpRefusal> {
  const r = await upgrade(server, path, credential, MAX_CONTROL_MESSAGE_BYTES, headers);
  if (r.ok) {
    await r.ws.close(1000);
    assert.fail(`the upgrade of ${path} was accepted`);
  }
  return { status: r.status, body: r.body, code: r.code };
}

/** Opens a data connection with a session credential and wraps it in a raw mux peer. */
export async function openData(server: ServerProc, credential: string): Promise<MuxPeer> {
  const r = await upgrade(server, STREAM, credential, MUX_MAX_MESSAGE_BYTES);
  if (!r.ok) assert.fail(`data connection refused: HTTP ${r.status} ${r.code}: ${r.body}`);
  return new MuxPeer(r.ws);
}

/** Closes a raw mux peer's data connection (if still open) and waits until it is over. */
export async function closeData(peer: MuxPeer): Promise<WsCloseInfo> {
  peer.ws.close(1000, "test over").catch(() => {});
  await within(peer.finished(), 5_000, "data connection reader ends");
  return await within(peer.ws.closed, 5_000, "data connection closes");
}

type Json = Record<string, unknown>;

/** A control channel spoken (or abused) by hand: JSON text frames in, `error` + close out. */
export class ControlPeer {
  readonly ws: WsConn;
  /** Text messages received and not taken yet. */
  readonly messages: Json[] = [];
  /** Non-JSON or binary input, and how the reader ended. */
  readonly problems: string[] = [];
  readonly changed = new Notifier();
  #ended = false;
  readonly #loop: Promise<void>;

  constructor(ws: WsConn) {
    this.ws = ws;
    this.#loop = this.#read();
  }

  async #read(): Promise<void> {
    const failed = await readEach(this.ws, (msg) => {
      if (!msg.text) {
        this.problems.push(`binary message of ${msg.data.byteLength} bytes`);
        return;
      }
      const text = new TextDecoder().decode(msg.data);
      try {
        this.messages.push(JSON.parse(text));
      } catch {
        this.problems.push(`not JSON: ${text.slice(0, 80)}`);
      }
      this.changed.notify();
    });
    if (failed) this.problems.push(`reader: ${errorText(failed.error)}`);
    this.#ended = true;
    this.changed.notify();
  }

  /** Opens a control channel with `token`. */
  static async open(server: ServerProc, token = TEST_TOKEN): Promise<ControlPeer> {
    const r = await upgrade(server, CONTROL, token, MAX_CONTROL_MESSAGE_BYTES);
    if (!r.ok) assert.fail(`control channel refused: HTTP ${r.status} ${r.code}: ${r.body}`);
    return new ControlPeer(r.ws);
  }

  /**
   * Control channel plus a completed hello (with `clientId` when given; without one the server
   * treats the peer as a client of its own); returns the peer, the `welcome` and the credential.
   */
  static async welcomed(
    server: ServerProc,
    tunnels: { name: string; remotePort?: number }[],
    token = TEST_TOKEN,
    clientId?: string,
  ): Promise<{ peer: ControlPeer; welcome: Json; credential: string }> {
    const peer = await ControlPeer.open(server, token);
    peer.sendHello(tunnels, clientId);
    const welcome = await peer.take("welcome");
    return { peer, welcome, credential: `${welcome.sessionId}.${welcome.sessionSecret}` };
  }

  /** Sends a `hello` for `tunnels` (all to 127.0.0.1:9), with `clientId` when given. */
  sendHello(tunnels: { name: string; remotePort?: number }[], clientId?: string): void {
    this.sendJson({
      type: "hello",
      version: PROTOCOL_VERSION,
      host: "127.0.0.1",
      tunnels: tunnels.map((t) => ({
        name: t.name,
        kind: "tcp",
        local: "127.0.0.1:9",
        remotePort: t.remotePort ?? 0,
      })),
      ...(clientId === undefined ? {} : { clientId }),
    });
  }

  sendJson(msg: unknown): void {
    this.ws.sendText(JSON.stringify(msg));
  }

  /** The next text message of `type` not taken before (waits up to `ms` for it). */
  async take(type: string, ms = 5_000): Promise<Json> {
    let found: Json | undefined;
    await this.changed.until(`a "${type}" message`, () => {
      const i = this.messages.findIndex((m) => m.type === type);
      if (i >= 0) found = this.messages.splice(i, 1)[0];
      return found !== undefined || this.#ended;
    }, ms);
    if (!found) {
      const info = await this.ws.closed;
      throw new Error(
        `the control channel closed (code ${info.code}, "${info.reason}") without a "${type}" ` +
          `message; problems: ${this.problems.join("; ")}`,
      );
    }
    return found;
  }

  /** Expects an `error` message, then a close with `code`; returns the error's text. */
  async refused(code: number): Promise<string> {
    const err = await this.take("error");
    const close = await within(this.ws.closed, 5_000, `close ${code}`);
    assert.equal(close.code, code, `close code (reason: ${close.reason})`);
    return String(err.message);
  }

  /** Closes (if still open) and waits until the reader is done. */
  async close(): Promise<WsCloseInfo> {
    this.ws.close(1000).catch(() => {});
    await within(this.#loop, 5_000, "control reader ends");
    return await within(this.ws.closed, 5_000, "control channel closes");
  }
}

/** Resolves once the server has closed `conn`: "eof" or "reset" (reads and discards data). */
export async function closedByServer(conn: Deno.Conn, timeoutMs = 5000): Promise<"eof" | "reset"> {
  const buf = new Uint8Array(256 * 1024);
  const drain = async (): Promise<"eof" | "reset"> => {
    try {
      while ((await conn.read(buf)) !== null) {
        // discard what was already in flight
      }
      return "eof";
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionReset) return "reset";
      throw e;
    }
  };
  return await within(drain(), timeoutMs, "server closing the user connection");
}

/** Sends `n` bytes through the tunnel on `port` (an echo) and checks the reply's hash. */
export async function echoRoundTrip(port: number, n = 256 * 1024): Promise<void> {
  const data = randomBytes(n);
  const conn = await connect(port);
  try {
    const got = await within(roundTrip(conn, data), 10_000, "echo round trip");
    assert.equal(await sha256(got), await sha256(data));
  } finally {
    conn.close();
  }
}

/** Waits until a metric reaches `value` (the server updates it after the event we saw). */
export async function metricReaches(
  server: ServerProc,
  series: string,
  value: number,
): Promise<void> {
  const deadline = Date.now() + 5000;
  let last = await metric(server, series);
  while (last !== value) {
    if (Date.now() > deadline) assert.equal(last, value, `${series} never reached ${value}`);
    await new Promise((r) => setTimeout(r, 20));
    last = await metric(server, series);
  }
}

/** A raw mux `DATA` frame as one binary message. */
export function dataFrame(id: number, payload: Uint8Array): Uint8Array {
  const msg = new Uint8Array(MUX_HEADER_BYTES + payload.byteLength);
  writeMuxHeader(msg, 0, MuxType.data, id);
  msg.set(payload, MUX_HEADER_BYTES);
  return msg;
}

/** The server's close of a raw data connection: waits for it and returns code and reason. */
export async function serverClose(peer: MuxPeer): Promise<{ code: number; reason: string }> {
  const info = await within(peer.ws.closed, 5_000, "the server closes the data connection");
  await within(peer.finished(), 5_000, "data connection reader ends");
  return { code: info.code, reason: info.reason };
}
