// The "internet" of the namespace tests, run inside its namespace: an HTTP service that answers
// with the address it saw, a TCP echo, and a DNS server that answers every A question with
// 203.0.113.1 and prints who asked. Prints `ready` once all three listen.
// With `hold HOST PORT`, it is instead a long-lived connection to an echo: one line out and back
// every 200 ms, `ok N` printed for each, until stdin closes; `error …` and exit 1 if it breaks.
import { dnsAnswer, parseDnsQuery } from "../support/udp.ts";

/** Ports the targets listen on (every address of the namespace). */
export const TARGET_PORTS = { http: 8000, echo: 7007, dns: 53 } as const;
/** The address the DNS server gives for every name but {@link SERVER_NAME}. */
export const DNS_ANSWER = "203.0.113.1";
/** A name for the mport server (203.0.113.2), known only to this DNS server. */
export const SERVER_NAME = "vpn.test";

async function dns(): Promise<void> {
  const sock = Deno.listenDatagram({
    transport: "udp",
    hostname: "0.0.0.0",
    port: TARGET_PORTS.dns,
  });
  const buf = new Uint8Array(2048);
  for (;;) {
    const [data, from] = await sock.receive(buf);
    try {
      const q = parseDnsQuery(data);
      console.log(`dns ${q.name} from ${(from as Deno.NetAddr).hostname}`);
      await sock.send(dnsAnswer(data, q.name === SERVER_NAME ? "203.0.113.2" : DNS_ANSWER), from);
    } catch {
      // not a query
    }
  }
}

async function echo(): Promise<void> {
  const l = Deno.listen({ hostname: "0.0.0.0", port: TARGET_PORTS.echo });
  for await (const c of l) {
    (async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await c.read(buf);
          if (n === null) break;
          let off = 0;
          while (off < n) off += await c.write(buf.subarray(off, n));
        }
      } catch {
        // the peer went away
      }
      try {
        c.close();
      } catch {
        // closed
      }
    })();
  }
}

/** One connection kept busy: proves it survived whatever happened meanwhile. */
async function hold(host: string, port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: host, port });
  let stop = false;
  (async () => {
    for await (const _ of Deno.stdin.readable) {
      // input is ignored; its end stops the loop
    }
    stop = true;
  })();
  const buf = new Uint8Array(64);
  try {
    for (let i = 1; !stop; i++) {
      const line = new TextEncoder().encode(`line ${i}\n`);
      await conn.write(line);
      let got = 0;
      while (got < line.byteLength) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) throw new Error("the echo closed the connection");
        got += n;
      }
      if (new TextDecoder().decode(buf.subarray(0, got)) !== `line ${i}\n`) {
        throw new Error(`wrong echo for line ${i}`);
      }
      console.log(`ok ${i}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (e) {
    console.log(`error ${(e as Error).message}`);
    Deno.exit(1);
  }
  conn.close();
  console.log("done");
  Deno.exit(0);
}

if (import.meta.main && Deno.args[0] === "hold") {
  await hold(Deno.args[1]!, Number(Deno.args[2]));
} else if (import.meta.main) {
  Deno.serve({
    hostname: "0.0.0.0",
    port: TARGET_PORTS.http,
    onListen() {},
  }, (_req, info) => new Response(`you are ${(info.remoteAddr as Deno.NetAddr).hostname}\n`));
  dns();
  echo();
  console.log("ready");
}
