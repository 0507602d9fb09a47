// A real WebSocket pair over loopback for tests: a `Deno.serve` upgrade and a client `WebSocket`.

const LOOPBACK = "127.0.0.1";

/**
 * Resolves with the `close` event of `ws`. Uses addEventListener, so a StreamBridge that sets
 * `onclose` later does not replace it.
 */
export function closed(ws: WebSocket): Promise<CloseEvent> {
  return new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.OPEN) return resolve();
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", () => reject(new Error("websocket failed to open")), {
      once: true,
    });
  });
}

/** A real WebSocket pair over loopback: a `Deno.serve` upgrade and a client `WebSocket`. */
export interface WsPair {
  readonly server: WebSocket;
  readonly client: WebSocket;
  readonly serverClosed: Promise<CloseEvent>;
  readonly clientClosed: Promise<CloseEvent>;
  /** Waits for both sockets to close (closing them if needed) and stops the HTTP server. */
  close(): Promise<void>;
}

/** Opens a WebSocket pair on 127.0.0.1 port 0; both ends are open when it resolves. */
export async function wsPair(): Promise<WsPair> {
  const { promise: serverSocket, resolve } = Promise.withResolvers<WebSocket>();
  const http = Deno.serve({ hostname: LOOPBACK, port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    resolve(socket);
    return response;
  });
  const client = new WebSocket(`ws://${LOOPBACK}:${http.addr.port}/`);
  client.binaryType = "arraybuffer";
  const clientClosed = closed(client);
  const server = await serverSocket;
  const serverClosed = closed(server);
  await Promise.all([opened(client), opened(server)]);
  return {
    server,
    client,
    serverClosed,
    clientClosed,
    async close() {
      for (const ws of [server, client]) {
        if (ws.readyState < WebSocket.CLOSING) ws.close();
      }
      await Promise.all([serverClosed, clientClosed]);
      await http.shutdown();
    },
  };
}
