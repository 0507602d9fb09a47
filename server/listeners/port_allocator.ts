// Binds public TCP listeners: a requested port inside the range, or any free port from it.
import type { PortRange } from "../../shared/address.ts";
import type { ErrorCode } from "../../shared/protocol.ts";

/** A tunnel request the server cannot grant; `code` travels to the client. */
export class TunnelRefused extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "TunnelRefused";
    this.code = code;
  }
}

/** Hands out public ports from a range and binds them. */
export class PortAllocator {
  readonly #range: PortRange;
  readonly #bindHost: string;
  /** Ports held by tunnels (bound, or kept through a grace period). */
  readonly #held = new Set<number>();
  #cursor: number;

  constructor(range: PortRange, bindHost: string, random: () => number = Math.random) {
    this.#range = range;
    this.#bindHost = bindHost;
    this.#cursor = range.low + Math.floor(random() * (range.high - range.low + 1));
  }

  /** True if the port is inside the configured range. */
  inRange(port: number): boolean {
    return port >= this.#range.low && port <= this.#range.high;
  }

  /** True if a tunnel holds the port. */
  held(port: number): boolean {
    return this.#held.has(port);
  }

  /**
   * Binds `requested` (must be in `range` and free) or, for 0, the next free port of `range` that
   * is not in `exclude` (ports reserved for someone else). `range` defaults to the server's;
   * `rangeOwner` words the refusal ("the server's", "your"). Throws `TunnelRefused` with a message
   * that says what to do.
   */
  bind(
    requested: number,
    range: PortRange = this.#range,
    exclude: ReadonlySet<number> = new Set(),
    rangeOwner = "the server's",
  ): Deno.TcpListener {
    return this.#bind(requested, range, exclude, rangeOwner, (p) => this.#tryListen(p));
  }

  /** As {@link bind}, for a UDP socket (UDP tunnels; needs Deno's `--unstable-net`). */
  bindUdp(
    requested: number,
    range: PortRange = this.#range,
    exclude: ReadonlySet<number> = new Set(),
    rangeOwner = "the server's",
  ): Deno.DatagramConn {
    if (typeof Deno.listenDatagram !== "function") {
      throw new TunnelRefused(
        "internal",
        "UDP tunnels need Deno's --unstable-net flag on the server (deno task server has it)",
      );
    }
    return this.#bind(requested, range, exclude, rangeOwner, (p) => this.#tryUdp(p));
  }

  #bind<T>(
    requested: number,
    range: PortRange,
    exclude: ReadonlySet<number>,
    rangeOwner: string,
    open: (port: number) => T | null,
  ): T {
    const { low, high } = range;
    if (requested !== 0) {
      if (requested < low || requested > high) {
        throw new TunnelRefused(
          "port_out_of_range",
          `port ${requested} is outside ${rangeOwner} allowed range ${low}-${high} (choose a port in that range, or none)`,
        );
      }
      if (this.#held.has(requested)) {
        throw new TunnelRefused(
          "port_taken",
          `port ${requested} is already used by another tunnel (choose another --remote-port)`,
        );
      }
      const l = open(requested);
      if (!l) {
        throw new TunnelRefused(
          "port_taken",
          `cannot bind public port ${requested}: address already in use (choose another --remote-port)`,
        );
      }
      return l;
    }
    const size = high - low + 1;
    const start = this.#cursor >= low && this.#cursor <= high ? this.#cursor : low;
    for (let i = 0; i < size; i++) {
      const port = low + ((start - low + i) % size);
      if (this.#held.has(port) || exclude.has(port)) continue;
      const l = open(port);
      if (l) {
        this.#cursor = port + 1 > high ? low : port + 1;
        return l;
      }
    }
    throw new TunnelRefused("port_taken", `no free public port left in the range ${low}-${high}`);
  }

  /** Forgets a port when its tunnel is released. */
  release(port: number): void {
    this.#held.delete(port);
  }

  #tryUdp(port: number): Deno.DatagramConn | null {
    try {
      const s = Deno.listenDatagram({ hostname: this.#bindHost, port, transport: "udp" });
      this.#held.add(port);
      return s;
    } catch (e) {
      if (e instanceof Deno.errors.AddrInUse || e instanceof Deno.errors.PermissionDenied) {
        return null;
      }
      throw e;
    }
  }

  #tryListen(port: number): Deno.TcpListener | null {
    try {
      const l = Deno.listen({ hostname: this.#bindHost, port, transport: "tcp" });
      this.#held.add(port);
      return l;
    } catch (e) {
      if (e instanceof Deno.errors.AddrInUse || e instanceof Deno.errors.PermissionDenied) {
        return null;
      }
      throw e;
    }
  }
}
