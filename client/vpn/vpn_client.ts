// `mport vpn`: the client's TUN device, set up once with the server's lease (address, MTU, routes,
// DNS, kill switch) and kept across reconnects, so connections inside the tunnel survive a short
// drop; each session carries the packets on a stream of its own.
import { lookup } from "node:dns/promises";
import type { Logger } from "@logtape/logtape";
import { ConnectRefused, type Mux } from "../../shared/mux.ts";
import { PacketLink } from "../../shared/packet_link.ts";
import type { VpnLease } from "../../shared/protocol.ts";
import { TunDevice } from "../../shared/tun.ts";
import { parseIp } from "../../shared/ip_cidr.ts";
import { errorText } from "../../shared/error_text.ts";
import { sys } from "../../shared/sys_cmd.ts";
import type { EgressStatus } from "../egress/egress_types.ts";
import { type Endpoint, HostChanges } from "./host_changes.ts";

/** What `mport vpn` was asked for. */
export interface VpnSpec {
  /** `default` (everything: 0.0.0.0/1 and 128.0.0.0/1) or IPv4 CIDR blocks. */
  readonly routes: "default" | readonly string[];
  /** `--dns`: overrides the servers the server suggests; [] leaves DNS alone. null: the server's. */
  readonly dns: readonly string[] | null;
  readonly killSwitch: boolean;
  /** The TUN device's name (`mport0`). */
  readonly device: string;
  /** The journal of host changes (crash cleanup). */
  readonly journal: string;
}

/** Longest wait for a data connection when a session starts. */
const MUX_WAIT_MS = 15_000;

/** The client's VPN across sessions. */
export class VpnClient {
  readonly #spec: VpnSpec;
  readonly #server: { readonly url: string; readonly host: string; readonly port: number };
  readonly #log: Logger;
  readonly #host: HostChanges;
  #tun: TunDevice | null = null;
  #reader: Promise<void> | null = null;
  #lease: VpnLease | null = null;
  #link: PacketLink | null = null;
  #closed = false;
  /** The first set-up while it runs: close() waits for it before it undoes anything. */
  #settingUp: Promise<void> | null = null;
  #connectedAt: number | null = null;
  #problem: string | null = null;
  #dns: readonly string[] = [];
  /** The transport's first endpoint address, resolved when the VPN came up. */
  #pinned: string | null = null;
  /** Totals over every session's link. */
  #past = { packetsUp: 0, packetsDown: 0, bytesUp: 0, bytesDown: 0, dropped: 0 };
  /** Packets read from the device while no link was up. */
  #droppedOffline = 0;

  constructor(
    spec: VpnSpec,
    server: { readonly url: string; readonly host: string; readonly port: number },
    log: Logger,
  ) {
    this.#spec = spec;
    this.#server = server;
    this.#log = log;
    this.#host = new HostChanges(spec.journal);
  }

  /** Before connecting: reverts what a crashed earlier run left. Returns what it reverted. */
  recover(): Promise<string[]> {
    return this.#host.recover();
  }

  /**
   * A session was welcomed with `lease`. The first time, the device is made and the host set
   * up (resolves with the line to print); later, the new session's stream takes over (null).
   * Throws with a sentence when the device or the host cannot be set up.
   */
  async onLease(
    lease: VpnLease,
    pickMux: () => Mux | null,
    lost: (why: string) => void,
  ): Promise<string | null> {
    if (this.#closed) return null;
    let line: string | null = null;
    if (!this.#tun) {
      try {
        this.#settingUp = this.#setUp(lease);
        await this.#settingUp;
      } catch (e) {
        // Retrying cannot give the process a permission or the host a tool it lacks.
        throw Object.assign(new Error(`cannot set up the VPN: ${errorText(e)}`), { fatal: true });
      }
      line = this.readyLine(lease);
    } else if (lease.address !== this.#lease?.address || lease.prefix !== this.#lease?.prefix) {
      // The server forgot us (it restarted): take the new address; the routes stay on the device.
      await sys("ip", ["addr", "flush", "dev", this.#tun.name]);
      await sys("ip", ["addr", "add", `${lease.address}/${lease.prefix}`, "dev", this.#tun.name]);
      this.#log.warn("the server gave a new virtual address: {address}", {
        address: lease.address,
      });
      line = this.readyLine(lease);
    }
    this.#lease = lease;
    await this.#openLink(pickMux, lost);
    return line;
  }

  /** The session ended: packets are dropped until the next one. */
  onSessionEnd(problem: string): void {
    this.#problem = problem;
    this.#connectedAt = null;
    this.#retire();
  }

  /**
   * The address the transport should dial from now on (the one routed outside the tunnel and let
   * through the kill switch), or null before the VPN is up.
   */
  pinnedAddress(): string | null {
    return this.#pinned;
  }

  /** The line `mport vpn` prints once the tunnel is up. */
  readyLine(lease = this.#lease): string {
    if (!lease || !this.#tun) return "";
    const routes = this.#spec.routes === "default" ? "default" : this.#spec.routes.join(",");
    const extras = [
      `routes ${routes}`,
      this.#dns.length > 0 ? `dns ${this.#dns.join(",")}` : "dns unchanged",
      this.#spec.killSwitch ? "kill switch on" : null,
    ].filter((x) => x !== null).join("; ");
    return `vpn ${lease.address}/${lease.prefix} dev ${this.#tun.name} -> ${this.#server.url} (${extras})`;
  }

  /** For the status page. */
  status(): EgressStatus {
    const c = this.#link?.counters;
    const p = this.#past;
    return {
      kind: "vpn",
      server: this.#server.url,
      connected: this.#link !== null && !this.#link.closed,
      since: this.#connectedAt,
      problem: this.#problem,
      bytesUp: p.bytesUp + (c?.bytesOut ?? 0),
      bytesDown: p.bytesDown + (c?.bytesIn ?? 0),
      virtualIp: this.#lease ? `${this.#lease.address}/${this.#lease.prefix}` : null,
      device: this.#tun?.name ?? null,
      routes: this.#spec.routes === "default" ? ["default"] : [...this.#spec.routes],
      dns: [...this.#dns],
      killSwitch: this.#spec.killSwitch,
      packetsUp: p.packetsUp + (c?.packetsOut ?? 0),
      packetsDown: p.packetsDown + (c?.packetsIn ?? 0),
      dropped: p.dropped + (c?.dropped ?? 0) + this.#droppedOffline +
        (this.#tun?.writeErrors ?? 0),
    };
  }

  /** Ends the link, removes the device and reverts every host change. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // A stop that arrives during the set-up undoes what the set-up did, not half of it.
    await this.#settingUp?.catch(() => {});
    this.#retire();
    this.#tun?.close();
    await this.#reader;
    const problems = await this.#host.undoAll();
    for (const p of problems) this.#log.warn("VPN cleanup: {problem}", { problem: p });
  }

  async #setUp(lease: VpnLease): Promise<void> {
    const tun = TunDevice.open(this.#spec.device);
    this.#tun = tun;
    const host = this.#host;
    try {
      await sys("ip", ["addr", "add", `${lease.address}/${lease.prefix}`, "dev", tun.name]);
      await sys("ip", ["link", "set", "dev", tun.name, "mtu", String(lease.mtu), "up"]);
      const endpoints = await this.#endpoints();
      this.#pinned = endpoints[0]?.ip ?? null;
      // The transport's own packets must not enter the tunnel they make.
      for (const e of endpoints) await host.pinOutside(e.ip, tun.name);
      const routes = this.#spec.routes === "default"
        ? ["0.0.0.0/1", "128.0.0.0/1"]
        : this.#spec.routes;
      for (const r of routes) await host.addRoute(r, tun.name);
      this.#dns = this.#spec.dns ?? lease.dns;
      if (this.#dns.length > 0) await host.setDns(this.#dns);
      if (this.#spec.killSwitch) await host.killSwitch(tun.name, endpoints);
    } catch (e) {
      tun.close();
      this.#tun = null;
      await host.undoAll();
      throw e;
    }
    this.#reader = tun.readLoop(
      (p) => {
        const link = this.#link;
        if (link && !link.closed) link.queue(p);
        else this.#droppedOffline++;
      },
      () => this.#link?.flush(),
    ).catch((e) => {
      this.#log.error("reading the VPN device failed: {error}", { error: errorText(e) });
    });
  }

  /** Addresses the client's transport connects to (the server, or the proxy in between). */
  async #endpoints(): Promise<Endpoint[]> {
    const { host, port } = this.#server;
    const bare = host.replace(/^\[|\]$/g, "");
    if (parseIp(bare) !== null) return [{ ip: bare, port }];
    const found = await lookup(bare, { all: true });
    return found.map((a) => ({ ip: a.address, port }));
  }

  /** Opens the session's packet stream; `lost` ends the session if the stream ends first. */
  async #openLink(pickMux: () => Mux | null, lost: (why: string) => void): Promise<void> {
    this.#retire();
    const deadline = Date.now() + MUX_WAIT_MS;
    let mux = pickMux();
    while ((!mux || mux.closed) && Date.now() < deadline && !this.#closed) {
      await new Promise((r) => setTimeout(r, 50));
      mux = pickMux();
    }
    if (!mux || mux.closed || this.#closed) {
      throw new Error("no data connection to carry the VPN's packets");
    }
    const { stream, connected } = mux.connect("", 0, {}, "vpn");
    try {
      await connected;
    } catch (e) {
      const why = e instanceof ConnectRefused ? e.message : errorText(e);
      throw new Error(`the server refused the VPN stream: ${why}`);
    }
    const tun = this.#tun!;
    const link: PacketLink = new PacketLink(stream, (p) => tun.write(p), "wait", {
      // The server ended the stream (a quota, a revoked permission): the session starts over,
      // and its welcome says whether the VPN may go on.
      onEnd: (end) => {
        if (this.#link === link && !this.#closed) {
          lost(`the VPN stream ended: ${end.reason ?? "closed by the server"}`);
        }
      },
    });
    this.#link = link;
    this.#connectedAt = Date.now();
    this.#problem = null;
  }

  /** Folds the current link's counters into the totals and lets it go. */
  #retire(): void {
    const link = this.#link;
    if (!link) return;
    this.#link = null;
    const c = link.counters;
    this.#past.packetsUp += c.packetsOut;
    this.#past.packetsDown += c.packetsIn;
    this.#past.bytesUp += c.bytesOut;
    this.#past.bytesDown += c.bytesIn;
    this.#past.dropped += c.dropped;
    link.close();
  }
}
