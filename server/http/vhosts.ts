// HTTP tunnels' public side: which requests belong to a tunnel (by Host only), and handing a
// visitor's connection to the tunnel's client as one stream, watched for the access log.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../../shared/address.ts";
import { answerAndClose, type ErrorPage } from "../../shared/http_pages.ts";
import { latin1Bytes, requestHost } from "../../shared/http_head.ts";
import { concatBytes } from "../../shared/net.ts";
import type { OpenExtra } from "../../shared/protocol.ts";
import { normalizeIp, type TrustedProxies } from "../client_address.ts";
import type { FrontSlot, RequestHead } from "../listeners/http_front.ts";
import type { Stats } from "../stats.ts";
import type { Broker } from "../streams/broker.ts";
import type { Tunnel, TunnelRegistry } from "../tunnels.ts";
import type { HttpStats } from "./http_stats.ts";
import { type HttpExchange, HttpObserver } from "./observer.ts";
import { VisitorConn } from "./visitor_conn.ts";

/** What the router needs. */
export interface VhostDeps {
  /** `--http-domain`, or null when HTTP tunnels are off. */
  readonly domain: string | null;
  readonly registry: TunnelRegistry;
  readonly broker: Broker;
  readonly proxies: TrustedProxies;
  readonly stats: Stats;
  readonly httpStats: HttpStats;
  readonly log: Logger;
}

/** Routes requests for tunnels' host names. */
export class Vhosts {
  readonly #d: VhostDeps;

  constructor(deps: VhostDeps) {
    this.#d = deps;
  }

  /**
   * True when the request belongs to an HTTP tunnel: its host is one label under the HTTP domain
   * (known or not: an unknown one gets a 404 page), or a custom domain a tunnel serves now. The
   * server's own names never do, so no tunnel can shadow the control plane.
   */
  claims(head: RequestHead): boolean {
    const host = requestHost(head.headers);
    if (host === null) return false;
    return this.#label(host) !== null || this.#d.registry.byHost(host) !== undefined;
  }

  /** Takes over a visitor's connection whose first request head is `head`. */
  serve(head: RequestHead, conn: Deno.Conn, leftover: Uint8Array, slot: FrontSlot): void {
    // A complete head arrived: it is a visitor, not someone still to authenticate.
    slot.authenticated();
    const d = this.#d;
    const host = requestHost(head.headers);
    const tunnel = host === null ? undefined : d.registry.byHost(host);
    const accept = head.headers.get("accept");
    if (!tunnel || tunnel.kind !== "http") {
      d.stats.refusal("http_no_tunnel");
      const label = host === null ? null : this.#label(host);
      this.#answer(conn, slot, accept, {
        status: 404,
        code: "tunnel_not_found",
        title: "Tunnel not found",
        message: host === null
          ? "This request names no host, so it cannot be matched to a tunnel."
          : label !== null
          ? `No tunnel named "${label}" on this server.`
          : `No tunnel serves ${host} on this server.`,
      }, head.method === "HEAD");
      return;
    }
    const peer = head.remote;
    const peerIp = normalizeIp(peer.hostname) ?? peer.hostname;
    const proxied = d.proxies.trusts(peerIp);
    const clientIp = d.proxies.clientIp(head.headers, peer.hostname);
    const forwardedProto = proxied
      ? head.headers.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase()
      : undefined;
    const extra: OpenExtra = {
      proto: head.secure || forwardedProto === "https" ? "https" : "http",
      ...(proxied ? { peer: formatHostPort(peerIp, peer.port) } : {}),
    };
    const remote = proxied ? clientIp : formatHostPort(peerIp, peer.port);
    const observer = new HttpObserver((e) => this.#exchange(tunnel, clientIp, e));
    const first = concatBytes(latin1Bytes(head.raw + "\r\n\r\n"), leftover);
    const visitor = new VisitorConn(conn, first, observer);
    d.broker.onPublicConn(tunnel, visitor.asConn(), {
      remote,
      extra,
      accept,
      onClosed: () => slot.release(),
    });
  }

  /** Answers a request that reached a tunnel-only listener but names no tunnel. */
  notFound(head: RequestHead, conn: Deno.Conn, slot: FrontSlot): void {
    const host = requestHost(head.headers);
    this.#d.stats.refusal("http_no_tunnel");
    this.#answer(conn, slot, head.headers.get("accept"), {
      status: 404,
      code: "tunnel_not_found",
      title: "Tunnel not found",
      message: host === null
        ? "This request names no host, so it cannot be matched to a tunnel."
        : `No tunnel serves ${host} on this server.`,
    }, head.method === "HEAD");
  }

  /** The label of a host one level under the HTTP domain, else null. */
  #label(host: string): string | null {
    const domain = this.#d.domain;
    if (domain === null || !host.endsWith(`.${domain}`)) return null;
    const label = host.slice(0, -domain.length - 1);
    return label.length > 0 && !label.includes(".") ? label : null;
  }

  #exchange(tunnel: Tunnel, clientIp: string, e: HttpExchange): void {
    const d = this.#d;
    d.httpStats.record(tunnel.userName, tunnel.name, tunnel.host ?? "", e);
    d.log.info("{method} {host}{target} {status} {bytesOut} B {durationMs} ms {ip}", {
      method: e.method,
      host: e.host,
      target: e.target,
      status: e.status || "-",
      bytesIn: e.bytesIn,
      bytesOut: e.bytesOut,
      durationMs: e.durationMs,
      ip: clientIp,
      tunnel: tunnel.name,
      user: tunnel.userName,
      upgraded: e.upgraded,
    });
  }

  #answer(
    conn: Deno.Conn,
    slot: FrontSlot,
    accept: string | null,
    page: ErrorPage,
    head: boolean,
  ): void {
    answerAndClose(conn, page, { accept, head }).then(() => slot.release());
  }
}
