// Server statistics (the first Mport's set) and their Prometheus text rendering.

/** Counters and gauges for the whole server; cheap to update on the hot path. */
export class Stats {
  readonly startedAt: number;
  connectionsTotal = 0;
  connectionsActive = 0;
  connectionsPeak = 0;
  /** Bytes received from public users (towards the client). */
  bytesIn = 0;
  /** Bytes sent to public users (from the client). */
  bytesOut = 0;
  tunnelsCreated = 0;
  tunnelsActive = 0;
  tunnelsReleased = 0;
  clientsConnected = 0;
  /** Streams (user connections) opened on data connections. */
  streamsOpened = 0;
  /** Data connections (WebSockets that carry streams) opened. */
  dataConnsOpened = 0;
  readonly errors = new Map<string, number>();
  readonly refusals = new Map<string, number>();
  /** Connections opened per hour, keyed by the hour's start (ms); the last 48 hours. */
  readonly connectionsPerHour = new Map<number, number>();
  readonly #now: () => number;
  readonly #extra: () => string[];
  readonly #dataConns: () => number;

  /**
   * Values that live elsewhere are read when rendered: `dataConns` counts open data connections, `extra`
   * adds metric lines (per-user bytes).
   */
  constructor(
    now: () => number = Date.now,
    live: { dataConns?: () => number; extra?: () => string[] } = {},
  ) {
    this.#now = now;
    this.#extra = live.extra ?? (() => []);
    this.#dataConns = live.dataConns ?? (() => 0);
    this.startedAt = now();
  }

  /** A public connection was accepted. */
  connectionOpened(): void {
    this.connectionsTotal++;
    this.connectionsActive++;
    if (this.connectionsActive > this.connectionsPeak) {
      this.connectionsPeak = this.connectionsActive;
    }
    const hour = Math.floor(this.#now() / 3_600_000) * 3_600_000;
    this.connectionsPerHour.set(hour, (this.connectionsPerHour.get(hour) ?? 0) + 1);
    if (this.connectionsPerHour.size > 48) {
      const oldest = Math.min(...this.connectionsPerHour.keys());
      this.connectionsPerHour.delete(oldest);
    }
  }

  /** A public connection was closed. */
  connectionClosed(): void {
    this.connectionsActive--;
  }

  /** Counts an error of `kind` (e.g. `protocol`, `local_dial`, `reset`). */
  error(kind: string): void {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
  }

  /** Counts a refusal for `reason` (e.g. `unauthorized`, `port_taken`). */
  refusal(reason: string): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  /** Seconds since start. */
  uptimeSeconds(): number {
    return (this.#now() - this.startedAt) / 1000;
  }

  /** A plain object for JSON APIs and the periodic log line. */
  snapshot(): Record<string, unknown> {
    return {
      uptimeSeconds: Math.round(this.uptimeSeconds()),
      connectionsTotal: this.connectionsTotal,
      connectionsActive: this.connectionsActive,
      connectionsPeak: this.connectionsPeak,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      tunnelsCreated: this.tunnelsCreated,
      tunnelsActive: this.tunnelsActive,
      clientsConnected: this.clientsConnected,
      errors: Object.fromEntries(this.errors),
      refusals: Object.fromEntries(this.refusals),
      connectionsPerHour: Object.fromEntries(
        [...this.connectionsPerHour].map((
          [hour, n],
        ) => [new Date(hour).toISOString().slice(0, 13) + "h", n]),
      ),
    };
  }

  /** Prometheus text exposition format (version 0.0.4). */
  prometheus(): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, lines: string[]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    const single = (name: string, type: string, help: string, v: number) =>
      metric(name, type, help, [`${name} ${v}`]);
    single(
      "mport_uptime_seconds",
      "gauge",
      "Seconds since the server started.",
      this.uptimeSeconds(),
    );
    single(
      "mport_connections_total",
      "counter",
      "Public connections accepted.",
      this.connectionsTotal,
    );
    single(
      "mport_connections_active",
      "gauge",
      "Public connections open now.",
      this.connectionsActive,
    );
    single(
      "mport_connections_peak",
      "gauge",
      "Most public connections open at once.",
      this.connectionsPeak,
    );
    single("mport_bytes_in_total", "counter", "Bytes received from public users.", this.bytesIn);
    single("mport_bytes_out_total", "counter", "Bytes sent to public users.", this.bytesOut);
    single("mport_tunnels_created_total", "counter", "Tunnels created.", this.tunnelsCreated);
    single(
      "mport_tunnels_released_total",
      "counter",
      "Tunnels whose ports were released.",
      this.tunnelsReleased,
    );
    single(
      "mport_tunnels_active",
      "gauge",
      "Tunnels with a bound public port.",
      this.tunnelsActive,
    );
    single(
      "mport_clients_connected",
      "gauge",
      "Clients with an open control channel.",
      this.clientsConnected,
    );
    single(
      "mport_data_connections",
      "gauge",
      "Open data connections (WebSockets that carry streams).",
      this.#dataConns(),
    );
    single(
      "mport_data_connections_opened_total",
      "counter",
      "Data connections opened.",
      this.dataConnsOpened,
    );
    single(
      "mport_streams_opened_total",
      "counter",
      "Streams (user connections) opened on data connections.",
      this.streamsOpened,
    );
    const labelled = (m: Map<string, number>, label: string) =>
      [...m].sort().map(([k, v]) => `${label}="${k.replace(/["\\\n]/g, "_")}"} ${v}`);
    metric(
      "mport_errors_total",
      "counter",
      "Errors by kind.",
      labelled(this.errors, "kind").map((l) => `mport_errors_total{${l}`),
    );
    metric(
      "mport_refusals_total",
      "counter",
      "Refused requests by reason.",
      labelled(this.refusals, "reason").map((l) => `mport_refusals_total{${l}`),
    );
    out.push(...this.#extra());
    return out.join("\n") + "\n";
  }
}
