// The status panel's script (served as /status.js) for `mport socks` / `mport vpn`, a constant
// so `deno compile` builds it in. Like /app.js: plain DOM code, every value from the status put in
// as text, written without backticks or "${" so it can live in a String.raw template.

/**
 * The SOCKS/VPN status panel: polls /api/egress each second, computes rates from successive
 * samples, and stops the client with Disconnect (after a confirmation). Runs after /app.js and
 * uses its helpers (`window.mportPage`).
 */
export const STATUS_SCRIPT = String.raw`"use strict";
(function () {
  var page = window.mportPage;
  var el = page.el, api = page.api, notice = page.notice;
  var $ = function (id) { return document.getElementById(id); };
  var egress = { samples: [], timer: null, stopped: false, drivesLive: false };
  var EGRESS_POLL_MS = 1000;
  /** Rates are measured over the samples of about the last two seconds. */
  var RATE_WINDOW_MS = 2000;

  function bytes(n) {
    if (n < 1024) return n + " B";
    var units = ["KiB", "MiB", "GiB", "TiB"];
    var v = n / 1024;
    var i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(1) + " " + units[i];
  }
  function count(n) { return Number(n).toLocaleString("en-US"); }
  function since(ms) {
    var s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    var text = d ? d + " d " + h + " h" : h ? h + " h " + m + " min" : m ? m + " min " + (s % 60) + " s" : s + " s";
    return text + " (since " + new Date(ms).toLocaleString() + ")";
  }

  /** Bytes per second up and down from the kept samples (null until there are two). */
  function rates(s) {
    var now = performance.now();
    var list = egress.samples;
    var last = list[list.length - 1];
    // Counters that went down belong to another run of the client: start over.
    if (last && (s.bytesUp < last.up || s.bytesDown < last.down)) list.length = 0;
    list.push({ t: now, up: s.bytesUp, down: s.bytesDown });
    while (list.length > 2 && now - list[1].t >= RATE_WINDOW_MS) list.shift();
    if (list.length < 2) return null;
    var first = list[0];
    var secs = (now - first.t) / 1000;
    if (secs <= 0) return null;
    return { up: (s.bytesUp - first.up) / secs, down: (s.bytesDown - first.down) / secs };
  }

  function fact(name, value, className) {
    return [el("dt", { text: name }), el("dd", { text: value, className: className || "" })];
  }

  function renderEgress(s) {
    var vpn = s.kind === "vpn";
    $("egress").hidden = false;
    $("egress-kind").textContent = vpn ? "VPN" : "SOCKS proxy";
    var state = $("egress-state");
    var problem = $("egress-problem");
    if (s.connected) {
      state.textContent = "connected";
      state.className = "state ok";
    } else {
      state.textContent = s.problem ? "reconnecting" : "connecting";
      state.className = "state warn";
    }
    problem.hidden = s.connected || !s.problem;
    problem.textContent = s.connected ? "" : (s.problem || "");
    var r = rates(s);
    var rows = [fact("Server", s.server), fact("Connected", s.since !== null ? since(s.since) : "—")];
    if (!vpn) {
      if (s.listen) rows.push(fact("Listens on", "socks5://" + s.listen + "  http://" + s.listen));
      if (s.connections) {
        rows.push(fact("Connections", count(s.connections.active) + " active · " +
          count(s.connections.opened) + " opened · " + count(s.connections.refused) + " refused"));
      }
    } else {
      rows.push(fact("Virtual IP", s.virtualIp || "—"));
      rows.push(fact("Device", s.device || "—"));
      rows.push(fact("Routes", s.routes && s.routes.length ? s.routes.join(", ") : "—"));
      rows.push(fact("DNS", s.dns && s.dns.length ? s.dns.join(", ") : "unchanged"));
      rows.push(fact("Kill switch", s.killSwitch ? "on" : "off"));
      rows.push(fact("Packets", count(s.packetsUp || 0) + " up · " + count(s.packetsDown || 0) +
        " down · " + count(s.dropped || 0) + " dropped"));
    }
    rows.push(fact("Sent", bytes(s.bytesUp)));
    rows.push(fact("Received", bytes(s.bytesDown)));
    rows.push(fact("Rate up", r ? bytes(Math.round(r.up)) + "/s" : "…", "rate"));
    rows.push(fact("Rate down", r ? bytes(Math.round(r.down)) + "/s" : "…", "rate"));
    var facts = $("egress-facts");
    facts.replaceChildren.apply(facts, [].concat.apply([], rows));
  }

  function pollEgress() {
    egress.timer = null;
    if (egress.stopped) return;
    api("GET", "/api/egress").then(function (s) {
      if (egress.stopped) return;
      renderEgress(s);
      if (egress.drivesLive) setLive(true);
    }, function (e) {
      if (egress.stopped) return;
      if (e.status === 404) $("egress").hidden = true;
      else if (egress.drivesLive) setLive(false);
    }).then(function () {
      if (!egress.stopped) egress.timer = setTimeout(pollEgress, EGRESS_POLL_MS);
    });
  }

  function setLive(on) {
    var live = $("live");
    live.textContent = on ? "live" : "reconnecting…";
    live.className = on ? "live on" : "live";
  }

  function stopped() {
    egress.stopped = true;
    clearTimeout(egress.timer);
    // The request list's live-update stream ends too.
    $("egress").dispatchEvent(new Event("mport:stopped"));
    $("disconnect").hidden = true;
    $("egress-problem").hidden = true;
    $("egress-stopped").hidden = false;
    var state = $("egress-state");
    state.textContent = "stopped";
    state.className = "state off";
    // Nothing is connected or moving any more.
    Array.prototype.forEach.call($("egress-facts").querySelectorAll("dt"), function (dt) {
      if (["Connected", "Rate up", "Rate down"].indexOf(dt.textContent) >= 0) {
        dt.nextElementSibling.textContent = "—";
      }
    });
    var live = $("live");
    live.textContent = "stopped";
    live.className = "live";
  }

  function disconnect() {
    var server = $("egress-facts").querySelector("dd");
    var question = "Disconnect from " + (server ? server.textContent : "the server") +
      "? The client stops; start it again from the command line.";
    if (!window.confirm(question)) return;
    var button = $("disconnect");
    button.disabled = true;
    api("POST", "/api/disconnect").then(stopped, function (e) {
      // No answer at all: the client may already be gone.
      if (e.status === undefined) return stopped();
      button.disabled = false;
      notice("Disconnect failed: " + e.message, true);
    });
  }

  $("disconnect").addEventListener("click", disconnect);
  page.status.then(function (s) {
    if (!s || !s.egress) return;
    // Without the request list's live-update stream, the polling says whether the page is live.
    egress.drivesLive = s.capture === null;
    $("disconnect").hidden = !s.disconnect;
    pollEgress();
  });
})();
`;
