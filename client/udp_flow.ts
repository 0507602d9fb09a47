// The client's side of a UDP tunnel's flow: datagrams from the stream go to the local UDP
// service from a socket of this flow's own, and what the service answers goes back framed.
import type { Logger } from "@logtape/logtape";
import { DatagramReader, frameDatagram } from "../shared/datagrams.ts";
import { memoryPipe } from "../shared/mem_pipe.ts";
import type { MuxStream } from "../shared/mux_stream.ts";
import { closeQuietly } from "../shared/net.ts";
import { errorText } from "../shared/error_text.ts";

/** Counts what the client's UDP flows carried and dropped (a full stream queue drops replies). */
export interface UdpCounters {
  datagramsToLocal: number;
  datagramsFromLocal: number;
  dropped: number;
}

/** Serves one flow: `stream` carries one public source's datagrams. */
export function serveUdpFlow(
  stream: MuxStream,
  local: { host: string; port: number },
  counters: UdpCounters,
  log: Logger,
): void {
  if (typeof Deno.listenDatagram !== "function") {
    stream.reset("local_dial_failed", "UDP tunnels need Deno's --unstable-net flag on the client");
    return;
  }
  const v6 = local.host.includes(":");
  let socket: Deno.DatagramConn;
  try {
    socket = Deno.listenDatagram({
      transport: "udp",
      hostname: v6 ? "::" : isLoopback(local.host) ? "127.0.0.1" : "0.0.0.0",
      port: 0,
    });
  } catch (e) {
    stream.reset("local_dial_failed", `cannot open a UDP socket: ${errorText(e)}`);
    return;
  }
  const [streamSide, flowSide] = memoryPipe();
  stream.attach(streamSide.asConn());
  const target: Deno.NetAddr = { transport: "udp", hostname: local.host, port: local.port };
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    closeQuietly(socket);
    flowSide.closeWrite().catch(() => {});
    closeQuietly(flowSide);
  };
  // Stream → local service.
  (async () => {
    const reader = new DatagramReader(flowSide.asConn());
    try {
      for (;;) {
        const datagram = await reader.next();
        if (datagram === null) break;
        try {
          await socket.send(datagram, target);
          counters.datagramsToLocal++;
        } catch (e) {
          counters.dropped++;
          log.debug("UDP send to {local} failed: {error}", {
            local: `${local.host}:${local.port}`,
            error: errorText(e),
          });
        }
      }
    } catch {
      // the stream was reset or broke the framing
    }
    finish();
  })();
  // Local service → stream (only what comes from the service itself).
  (async () => {
    // One buffer for every receive (frameDatagram copies): Deno would allocate 64 KiB each.
    const buf = new Uint8Array(65_536);
    try {
      for (;;) {
        const [data, from] = await socket.receive(buf);
        // Replies come from the service's port; anything else reaching this socket is dropped.
        if ((from as Deno.NetAddr).port !== local.port) continue;
        counters.datagramsFromLocal++;
        if (!flowSide.offer(frameDatagram(data))) counters.dropped++;
      }
    } catch {
      // the socket was closed with the flow
    }
    finish();
  })();
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host.startsWith("127.");
}
