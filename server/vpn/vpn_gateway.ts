// The server's VPN gateway: one TUN device for every VPN client, a virtual address per client
// installation, packets checked (the client's own source address, the egress rules for the
// destination) and written to the device; what the device gives back is routed to the client
// whose address it is for, dropped when that client's stream is full.
import type { Logger } from "@logtape/logtape";
import {
  ipv4ToU32,
  isIpv4,
  packetDestination,
  packetDestinationPort,
  packetSource,
  u32ToIpv4,
} from "../../shared/ipv4.ts";
import type { Mux } from "../../shared/mux.ts";
import type { MuxStream } from "../../shared/mux_stream.ts";
import { PacketLink } from "../../shared/packet_link.ts";
import type { VpnLease } from "../../shared/protocol.ts";
import { TunDevice } from "../../shared/tun.ts";
import { formatSize } from "../../shared/units.ts";
import type { UsageMeter } from "../accounts/usage.ts";
import type { EgressPolicy, EgressVerdict } from "../egress/policy.ts";
import type { UserLimits } from "../store/store.ts";
import { ServerHostSetup } from "./host_setup.ts";
import { type VpnPool } from "./vpn_pool.ts";

/** Name used for VPN traffic in usage rows. */
export const VPN_USAGE_NAME = "vpn";
/** Destinations remembered per check (allowed or not) before the cache starts over. */
const VERDICT_CACHE_SIZE = 8192;
/** Denied destinations written to the audit log per client session at most. */
const AUDITED_DENIALS_PER_SESSION = 32;
/** How often connected clients' quotas are looked at. */
const QUOTA_CHECK_MS = 30_000;

/** Who asks: the session's user and installation. */
export interface VpnUser {
  readonly userId: number;
  readonly userName: string;
  readonly limits: UserLimits;
  /** `user set NAME --vpn` (static tokens always may). */
  readonly mayVpn: boolean;
  readonly clientId: string;
  readonly remote: string;
}

/** What the gateway needs. */
export interface VpnGatewayDeps {
  readonly pool: VpnPool;
  readonly device: string;
  readonly mtu: number;
  readonly dns: readonly string[];
  readonly policy: EgressPolicy;
  readonly usage: UsageMeter;
  readonly monthlyQuotaBytes: number | null;
  readonly log: Logger;
  readonly audit: (kind: string, userId: number | null, detail: Record<string, unknown>) => void;
  /** Where the forwarding setting before the first start is kept (crash cleanup). */
  readonly stateFile: string;
}

/** Counters for /metrics. */
export class VpnStats {
  packetsFromClients = 0;
  packetsToClients = 0;
  bytesFromClients = 0;
  bytesToClients = 0;
  /** Not from the client's own address. */
  spoofed = 0;
  /** The egress rules refused the destination. */
  denied = 0;
  /** For an address no connected client has, or the client's stream was full. */
  undeliverable = 0;
  clients = 0;

  prometheus(): string[] {
    return [
      "# HELP mport_vpn_packets_total IP packets through the VPN (in: from clients).",
      "# TYPE mport_vpn_packets_total counter",
      `mport_vpn_packets_total{direction="in"} ${this.packetsFromClients}`,
      `mport_vpn_packets_total{direction="out"} ${this.packetsToClients}`,
      "# HELP mport_vpn_bytes_total Bytes of IP packets through the VPN.",
      "# TYPE mport_vpn_bytes_total counter",
      `mport_vpn_bytes_total{direction="in"} ${this.bytesFromClients}`,
      `mport_vpn_bytes_total{direction="out"} ${this.bytesToClients}`,
      "# HELP mport_vpn_packets_dropped_total Packets dropped, by reason.",
      "# TYPE mport_vpn_packets_dropped_total counter",
      `mport_vpn_packets_dropped_total{reason="spoofed"} ${this.spoofed}`,
      `mport_vpn_packets_dropped_total{reason="denied"} ${this.denied}`,
      `mport_vpn_packets_dropped_total{reason="undeliverable"} ${this.undeliverable}`,
      "# HELP mport_vpn_clients VPN clients connected now.",
      "# TYPE mport_vpn_clients gauge",
      `mport_vpn_clients ${this.clients}`,
    ];
  }
}

interface Client {
  readonly user: VpnUser;
  readonly address: number;
  /** Set right after the client is made (its packet handler needs the client). */
  link: PacketLink;
  readonly opened: number;
  denied: number;
  audited: Set<string>;
}

/** The gateway; `start()` creates the device and the host's rules. */
export class VpnGateway {
  readonly stats = new VpnStats();
  readonly #d: VpnGatewayDeps;
  readonly #tun: TunDevice;
  readonly #host: ServerHostSetup;
  readonly #clients = new Map<number, Client>();
  readonly #verdicts = new Map<number, EgressVerdict>();
  readonly #touched = new Set<Client>();
  readonly #loop: Promise<void>;
  readonly #quotaTimer: ReturnType<typeof setInterval>;
  #closed = false;

  private constructor(deps: VpnGatewayDeps, tun: TunDevice, host: ServerHostSetup) {
    this.#d = deps;
    this.#tun = tun;
    this.#host = host;
    this.#loop = tun.readLoop((p) => this.#fromDevice(p), () => this.#flushTouched(), 128)
      .catch((e) => {
        deps.log.error("VPN device {dev} stopped: {error}", {
          dev: tun.name,
          error: (e as Error).message,
        });
      });
    this.#quotaTimer = setInterval(() => this.#checkQuotas(), QUOTA_CHECK_MS);
  }

  /** Creates the device, sets the host up (cleaning what a crashed server left) and starts. */
  static async start(deps: VpnGatewayDeps): Promise<VpnGateway> {
    if (Deno.build.os !== "linux") {
      throw new Error(
        `--vpn-pool needs Linux (TUN devices, nftables); this is ${Deno.build.os}`,
      );
    }
    const tun = TunDevice.open(deps.device);
    const host = new ServerHostSetup(tun.name, deps.stateFile);
    try {
      const cleaned = await host.apply(deps.pool.range, deps.pool.gateway, deps.mtu);
      if (cleaned.found) {
        deps.log.warn("cleaned up after a VPN gateway that did not exit cleanly");
      }
    } catch (e) {
      tun.close();
      await host.undo();
      throw new Error(`cannot set up the VPN gateway: ${(e as Error).message}`);
    }
    deps.log.info("VPN gateway on {dev}: pool {pool}, server address {gw}", {
      dev: tun.name,
      pool: deps.pool.range.text,
      gw: u32ToIpv4(deps.pool.gateway),
    });
    return new VpnGateway(deps, tun, host);
  }

  /** Why `user` gets no VPN, or null. */
  unavailable(user: VpnUser): string | null {
    if (!user.mayVpn) {
      return `user ${user.userName} may not use the VPN (an admin runs: mport-server user set ${user.userName} --vpn)`;
    }
    const quota = user.limits.monthlyQuotaBytes ?? this.#d.monthlyQuotaBytes;
    if (quota !== null && this.#d.usage.monthBytesCached(user.userId) >= quota) {
      return `monthly transfer quota of ${formatSize(quota)} reached for user ${user.userName}`;
    }
    return null;
  }

  /** A hello asked for the VPN: the lease (held until `release`), or why not. */
  lease(user: VpnUser): VpnLease | string {
    const why = this.unavailable(user);
    if (why) return why;
    const address = this.#d.pool.acquire(user.userId, user.clientId);
    if (typeof address === "string") return address;
    return {
      address: u32ToIpv4(address),
      prefix: this.#d.pool.range.prefix,
      gateway: u32ToIpv4(this.#d.pool.gateway),
      mtu: this.#d.mtu,
      dns: [...this.#d.dns],
    };
  }

  /** The session that held a lease ended (the address stays reserved for the client). */
  release(user: VpnUser): void {
    this.#d.pool.release(user.userId, user.clientId);
  }

  /** A client opened its packet stream. */
  handle(mux: Mux, stream: MuxStream, user: VpnUser, address: string | null): void {
    const d = this.#d;
    if (this.#closed) {
      stream.reset("egress_denied", "the VPN gateway is shutting down");
      return;
    }
    const why = this.unavailable(user);
    if (why) {
      stream.reset("egress_denied", why);
      return;
    }
    if (address === null) {
      stream.reset("egress_denied", "ask for the VPN in hello before opening its stream");
      return;
    }
    const addr = ipv4ToU32(address) ?? 0;
    const old = this.#clients.get(addr);
    if (old) {
      // The same client reconnected: the new stream takes over.
      old.link.close();
      this.#forget(old);
    }
    mux.sendConnected(stream.id, address);
    const meter = d.usage.meter(user.userId, user.userName, VPN_USAGE_NAME);
    const client = {
      user,
      address: addr,
      opened: Date.now(),
      denied: 0,
      audited: new Set<string>(),
    } as Client;
    client.link = new PacketLink(stream, (p) => this.#fromClient(client, p), "drop", {
      onSent: (n) => meter.bytesOut(n),
      onReceived: (n) => meter.bytesIn(n),
    });
    const link = client.link;
    this.#clients.set(addr, client);
    this.stats.clients = this.#clients.size;
    d.usage.connection(user.userId, VPN_USAGE_NAME);
    d.audit("vpn_connected", user.userId, { address, client: user.remote });
    d.log.info("VPN client {user} ({remote}) is {address}", {
      user: user.userName,
      remote: user.remote,
      address,
    });
    link.done.then(() => {
      if (this.#clients.get(addr) === client) this.#forget(client);
      const c = link.counters;
      d.audit("vpn_disconnected", user.userId, {
        address,
        client: user.remote,
        packetsFromClient: c.packetsIn,
        packetsToClient: c.packetsOut,
        bytesFromClient: c.bytesIn,
        bytesToClient: c.bytesOut,
        denied: client.denied,
        seconds: Math.round((Date.now() - client.opened) / 1000),
      });
    });
  }

  /** Ends the packet stream of the client at `address` (its permission was withdrawn). */
  cut(address: string, why: string): void {
    const client = this.#clients.get(ipv4ToU32(address) ?? 0);
    client?.link.stream.reset("egress_denied", why);
  }

  /** Tears everything down: streams, device, table, forwarding. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#quotaTimer);
    for (const c of [...this.#clients.values()]) c.link.close();
    this.#clients.clear();
    this.#tun.close();
    await this.#loop;
    const problems = await this.#host.undo();
    for (const p of problems) this.#d.log.warn("VPN cleanup: {problem}", { problem: p });
  }

  #forget(client: Client): void {
    this.#clients.delete(client.address);
    this.#touched.delete(client);
    this.stats.clients = this.#clients.size;
  }

  #fromClient(client: Client, p: Uint8Array): void {
    const s = this.stats;
    if (!isIpv4(p) || packetSource(p) !== client.address) {
      s.spoofed++;
      return;
    }
    const dst = packetDestination(p);
    const port = packetDestinationPort(p);
    if (!this.#allowed(client, dst, port)) return;
    s.packetsFromClients++;
    s.bytesFromClients += p.byteLength;
    if (!this.#tun.write(p)) s.undeliverable++;
  }

  #allowed(client: Client, dst: number, port: number): boolean {
    const key = dst * 65_536 + port;
    let verdict = this.#verdicts.get(key);
    if (verdict === undefined) {
      verdict = this.#d.policy.checkAddress(u32ToIpv4(dst), port);
      if (this.#verdicts.size >= VERDICT_CACHE_SIZE) this.#verdicts.clear();
      this.#verdicts.set(key, verdict);
    }
    if (verdict.ok) return true;
    this.stats.denied++;
    client.denied++;
    const dest = port ? `${u32ToIpv4(dst)}:${port}` : u32ToIpv4(dst);
    if (client.audited.size < AUDITED_DENIALS_PER_SESSION && !client.audited.has(dest)) {
      client.audited.add(dest);
      this.#d.audit("vpn_refused", client.user.userId, {
        destination: dest,
        address: u32ToIpv4(client.address),
        message: verdict.reason,
      });
    }
    return false;
  }

  #fromDevice(p: Uint8Array): void {
    if (!isIpv4(p)) return;
    const client = this.#clients.get(packetDestination(p));
    if (!client) {
      this.stats.undeliverable++;
      return;
    }
    this.stats.packetsToClients++;
    this.stats.bytesToClients += p.byteLength;
    client.link.queue(p);
    this.#touched.add(client);
  }

  #flushTouched(): void {
    for (const c of this.#touched) {
      const before = c.link.counters.dropped;
      c.link.flush();
      this.stats.undeliverable += c.link.counters.dropped - before;
    }
    this.#touched.clear();
  }

  #checkQuotas(): void {
    for (const c of [...this.#clients.values()]) {
      const quota = c.user.limits.monthlyQuotaBytes ?? this.#d.monthlyQuotaBytes;
      if (quota !== null && this.#d.usage.monthBytesCached(c.user.userId) >= quota) {
        c.link.stream.reset(
          "quota_exceeded",
          `monthly transfer quota of ${formatSize(quota)} reached for user ${c.user.userName}`,
        );
      }
    }
  }
}
