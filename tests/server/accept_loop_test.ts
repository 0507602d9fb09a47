// Tests of the accept loop that never dies (EMFILE itself is exercised in http_front_test.ts).
import assert from "node:assert/strict";
import { AcceptLoop } from "../../server/listeners/accept_loop.ts";
import { FdReserve } from "../../server/listeners/fd_limits.ts";
import { log } from "../../shared/log.ts";
import { ticks } from "../support/wait.ts";

const HOST = "127.0.0.1";

Deno.test("accept loop re-creates its listener on the same port when it is closed under it", async () => {
  const listeners: Deno.Listener[] = [];
  const accepted: Deno.Conn[] = [];
  let restarts = 0;
  let arrived: (() => void) | null = null;
  const reserve = new FdReserve(2);
  const loop = new AcceptLoop({
    listen: (port) => {
      const l = Deno.listen({ hostname: HOST, port });
      listeners.push(l);
      return l;
    },
    port: 0,
    reserve,
    log: log("test", "accept"),
    onRestart: () => restarts++,
    onConn: (conn) => {
      accepted.push(conn);
      arrived?.();
    },
    onShed: (conn) => Promise.resolve(conn.close()),
  });
  const clients: Deno.Conn[] = [];
  const connectAndWait = async () => {
    const got = new Promise<void>((resolve) => (arrived = resolve));
    clients.push(await Deno.connect({ hostname: HOST, port: loop.addr.port }));
    await got;
  };
  try {
    await connectAndWait();
    assert.equal(accepted.length, 1);
    listeners[0]!.close(); // closed by someone else: the loop must notice and listen again
    for (let i = 0; i < 100 && listeners.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(listeners.length, 2);
    assert.equal(restarts, 1);
    assert.equal((listeners[1]!.addr as Deno.NetAddr).port, loop.addr.port);
    await connectAndWait();
    assert.equal(accepted.length, 2);
  } finally {
    loop.stop();
    await loop.done;
    reserve.release();
    for (const c of [...clients, ...accepted]) c.close();
  }
});

Deno.test("accept loop waits at its gate before accepting, and stops while waiting", async () => {
  let open: (() => void) | null = null;
  let gated = true;
  const accepted: Deno.Conn[] = [];
  let arrived: (() => void) | null = null;
  const reserve = new FdReserve(0);
  const loop = new AcceptLoop({
    listen: (port) => Deno.listen({ hostname: HOST, port }),
    port: 0,
    reserve,
    log: log("test", "accept"),
    onRestart: () => {},
    gate: () => (gated ? new Promise<void>((resolve) => (open = resolve)) : null),
    onConn: (conn) => {
      accepted.push(conn);
      arrived?.();
    },
    onShed: (conn) => Promise.resolve(conn.close()),
  });
  const client = await Deno.connect({ hostname: HOST, port: loop.addr.port });
  try {
    // Connected (the kernel's backlog holds it) but not accepted while the gate is shut.
    await ticks(5);
    assert.equal(accepted.length, 0);
    const got = new Promise<void>((resolve) => (arrived = resolve));
    gated = false;
    open!();
    await got;
    assert.equal(accepted.length, 1);
    gated = true;
    await ticks(5);
  } finally {
    loop.stop(); // the loop is waiting at the shut gate: stop() must still end it
    await loop.done;
    client.close();
    for (const c of accepted) c.close();
  }
});
