// The dashboard's script (served as assets/app.js), a constant so `deno compile` builds it in.
//
// Plain DOM code, no framework. Everything from the API goes into the page as text
// (textContent), never as HTML. Written without backticks or "${" so it can live in a
// String.raw template; its one substitution brings in the notice banner (shared/web_ui.ts).
import { NOTICE_SCRIPT } from "../../shared/web_ui.ts";

/** Sign-in, the views, live updates over SSE, charts drawn as SVG. */
export const PAGE_SCRIPT = String.raw`"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var SVG = "http://www.w3.org/2000/svg";
  var PAGES = ["login", "overview", "tunnels", "tunnel", "clients", "usage", "tokens", "users", "events"];
  var state = {
    me: null, csrf: null, page: null, arg: null, source: null,
    samples: [], tunnelSamples: {}, tunnels: [], lastStats: 0, refreshTimer: null,
    pendingRefresh: false
  };
  var SAMPLES = 120;

  // ---- helpers ----
  function el(tag, props, children) {
    var node = document.createElement(tag);
    if (props) {
      for (var k in props) {
        if (props[k] === undefined || props[k] === null) continue;
        if (k === "text") node.textContent = props[k];
        else if (k === "className") node.className = props[k];
        else node.setAttribute(k, props[k]);
      }
    }
    (children || []).forEach(function (c) {
      if (c !== null && c !== undefined) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function svgEl(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
  function pick(o, names) {
    if (!o) return undefined;
    for (var i = 0; i < names.length; i++) if (o[names[i]] !== undefined && o[names[i]] !== null) return o[names[i]];
    return undefined;
  }
  function bytes(n) {
    n = num(n);
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }
  function rate(n) { return bytes(n) + "/s"; }
  function when(v) {
    if (v === undefined || v === null || v === "") return "";
    var d = new Date(typeof v === "number" ? v : String(v));
    if (isNaN(d.getTime())) return String(v);
    return d.toLocaleString();
  }
  function ago(v) {
    if (v === undefined || v === null) return "";
    var t = new Date(typeof v === "number" ? v : String(v)).getTime();
    if (isNaN(t)) return "";
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function itemsOf(data, key) {
    if (!data) return [];
    if (Array.isArray(data)) return data;
    if (Array.isArray(data.items)) return data.items;
    if (key && Array.isArray(data[key])) return data[key];
    return [];
  }
  function isAdmin() { return !!(state.me && state.me.role === "admin"); }

${NOTICE_SCRIPT}
  function failed(what) {
    return function (e) {
      if (e && e.status === 401) return;
      notice(what + ": " + (e && e.message ? e.message : String(e)), true);
    };
  }

  // ---- API ----
  function api(method, path, body) {
    var init = { method: method, headers: { accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET") {
      if (state.csrf) init.headers["x-csrf-token"] = state.csrf;
      if (body !== undefined) {
        init.headers["content-type"] = "application/json";
        init.body = JSON.stringify(body);
      }
    }
    return fetch("api/v1/" + path, init).then(function (res) {
      if (res.status === 204) return null;
      return res.json().catch(function () { return null; }).then(function (data) {
        if (!res.ok) {
          var err = new Error(data && data.error && data.error.message ? data.error.message : "HTTP " + res.status);
          err.status = res.status;
          err.code = data && data.error ? data.error.code : null;
          if (res.status === 401 && path !== "login" && path !== "me") signedOut();
          throw err;
        }
        return data;
      });
    });
  }

  // ---- sign-in ----
  function signedIn(data) {
    var user = data && data.user ? data.user : {};
    state.me = {
      name: user.name || user.username || "",
      role: data && data.admin === true ? "admin" : user.role || "user",
      limits: user.limits || null
    };
    state.csrf = data && data.csrfToken ? data.csrfToken : null;
    document.body.classList.remove("signed-out");
    document.body.classList.toggle("admin", isAdmin());
    $("who").textContent = state.me.name + (isAdmin() ? " (admin)" : "");
    connectLive();
    route();
  }
  function signedOut() {
    state.me = null;
    state.csrf = null;
    if (state.source) { state.source.close(); state.source = null; }
    setLive(false, "offline");
    document.body.classList.add("signed-out");
    document.body.classList.remove("admin");
    show("login");
  }
  $("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var err = $("login-error");
    err.hidden = true;
    $("login-submit").disabled = true;
    api("POST", "login", { username: $("login-user").value, password: $("login-password").value })
      .then(function (data) {
        $("login-password").value = "";
        if (!data || !data.csrfToken) return api("GET", "me");
        return data;
      })
      .then(signedIn)
      .catch(function (e) {
        err.textContent = e.status === 401 || e.status === 403
          ? "Wrong user name or password."
          : (e.status === 429 ? "Too many attempts: " + e.message : "Cannot sign in: " + e.message);
        err.hidden = false;
        $("login-password").select();
      })
      .then(function () { $("login-submit").disabled = false; });
  });
  $("logout").addEventListener("click", function () {
    api("POST", "logout").catch(function () {}).then(function () {
      signedOut();
      location.hash = "#/overview";
    });
  });

  // ---- live updates ----
  function setLive(on, text) {
    var l = $("live");
    l.textContent = text;
    l.className = on ? "live on" : "live";
  }
  function connectLive() {
    if (state.source || typeof EventSource === "undefined") return;
    var src = new EventSource("api/v1/events/stream");
    state.source = src;
    src.onopen = function () { setLive(true, "live"); };
    src.onerror = function () {
      if (src.readyState === EventSource.CLOSED) {
        state.source = null;
        setLive(false, "offline");
        // Perhaps the session ended: ask, and reconnect if it did not.
        api("GET", "me").then(function () { setTimeout(connectLive, 3000); }, function (e) {
          if (e.status === 401) signedOut(); else setTimeout(connectLive, 3000);
        });
      } else {
        setLive(false, "reconnecting…");
      }
    };
    ["client.connected", "client.disconnected", "tunnel.opened", "tunnel.closed"].forEach(function (type) {
      src.addEventListener(type, function (ev) {
        var d = parse(ev.data);
        recentEvent(type, d);
        scheduleRefresh();
      });
    });
    src.addEventListener("rates", function (ev) { onRates(parse(ev.data)); });
  }
  function parse(text) { try { return JSON.parse(text); } catch (_) { return {}; } }

  function onRates(d) {
    var rin = num(pick(d, ["bytesInPerSecond", "rateIn"]));
    var rout = num(pick(d, ["bytesOutPerSecond", "rateOut"]));
    state.samples.push({ at: Date.now(), rin: rin, rout: rout });
    if (state.samples.length > SAMPLES) state.samples.shift();
    if (state.page === "overview") {
      setText("ov-clients", pick(d, ["clientsConnected"]));
      setText("ov-tunnels", pick(d, ["tunnelsActive"]));
      setText("ov-conns", pick(d, ["connectionsActive"]));
      $("ov-rate").textContent = "in " + rate(rin) + "\nout " + rate(rout);
      drawSpark();
      if (Date.now() - state.lastStats > 2000) loadStats();
    }
    // Per-tunnel rates come with the tunnel list: refresh it while a tunnel view is open.
    if (state.page === "tunnels" || state.page === "tunnel") loadTunnels();
  }
  function setText(id, v) { if (v !== undefined && v !== null) $(id).textContent = String(v); }

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(function () { load(state.page); }, 150);
  }

  function recentEvent(type, d) {
    var list = $("ov-events");
    var what = type === "tunnel.opened" ? "Tunnel opened"
      : type === "tunnel.closed" ? "Tunnel closed"
      : type === "client.connected" ? "Client connected" : "Client disconnected";
    var subject = d.name || d.url || d.address || d.session || "";
    var li = el("li", null, [
      el("span", { className: "muted", text: new Date().toLocaleTimeString() }), " ",
      el("b", { text: what }), " ", subject, d.user ? " (" + d.user + ")" : "",
      d.reason ? el("span", { className: "muted", text: " — " + d.reason }) : null
    ]);
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 8) list.removeChild(list.lastChild);
  }

  // ---- charts ----
  function lineChart(svg, series, height) {
    clear(svg);
    var w = 600, h = height;
    var max = 1;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v > max) max = v; }); });
    [0.25, 0.5, 0.75].forEach(function (f) {
      svg.appendChild(svgEl("line", { x1: 0, x2: w, y1: h * f, y2: h * f, "class": "gridline" }));
    });
    series.forEach(function (s) {
      var n = s.values.length;
      if (n === 0) return;
      // Up to two minutes; a short history is spread over at least half a minute.
      var step = w / Math.max(1, Math.min(SAMPLES, Math.max(30, n)) - 1);
      var x0 = w - (n - 1) * step;
      var pts = s.values.map(function (v, i) {
        return (x0 + i * step).toFixed(1) + "," + (h - 3 - (v / max) * (h - 7)).toFixed(1);
      });
      if (n === 1) pts.push(w + "," + pts[0].split(",")[1]);
      svg.appendChild(svgEl("polyline", { points: pts.join(" "), "class": "line " + s.cls }));
    });
    return max;
  }
  function drawSpark() {
    var max = lineChart($("ov-spark"), [
      { cls: "in", values: state.samples.map(function (s) { return s.rin; }) },
      { cls: "out", values: state.samples.map(function (s) { return s.rout; }) }
    ], 80);
    $("ov-spark-max").textContent = "· peak " + rate(max === 1 ? 0 : max);
  }
  function barChart(svg, buckets, labelOf) {
    clear(svg);
    var w = 600, h = 180, top = 6, bottom = 0;
    var max = 1;
    buckets.forEach(function (b) { if (b.bin + b.bout > max) max = b.bin + b.bout; });
    var n = Math.max(1, buckets.length);
    var bw = w / n;
    buckets.forEach(function (b, i) {
      var hin = (b.bin / max) * (h - top - bottom);
      var hout = (b.bout / max) * (h - top - bottom);
      var x = i * bw + Math.min(2, bw * 0.1);
      var width = Math.max(1, bw - Math.min(4, bw * 0.2));
      var r1 = svgEl("rect", { x: x, y: h - bottom - hin, width: width, height: hin, "class": "bar in" });
      var r2 = svgEl("rect", { x: x, y: h - bottom - hin - hout, width: width, height: hout, "class": "bar out" });
      var title = labelOf(b) + ": in " + bytes(b.bin) + ", out " + bytes(b.bout);
      r1.appendChild(svgEl("title", {})).textContent = title;
      r2.appendChild(svgEl("title", {})).textContent = title;
      svg.appendChild(r1);
      svg.appendChild(r2);
    });
    // Labels in HTML below the chart: SVG text would stretch with the chart's width.
    var axis = $(svg.id + "-axis");
    clear(axis);
    if (buckets.length) {
      var picks = buckets.length < 3 ? buckets : [buckets[0], buckets[Math.floor((buckets.length - 1) / 2)], buckets[buckets.length - 1]];
      picks.forEach(function (b) { axis.appendChild(el("span", { text: labelOf(b) })); });
    }
    return max;
  }

  // ---- confirm-by-second-click buttons (no native dialogs) ----
  // Tables re-render on live updates, so which button is armed is kept here, by key.
  var armed = { key: null, until: 0 };
  function actionButton(label, confirmLabel, key, run) {
    var b = el("button", { type: "button", className: "quiet small danger-text", text: label });
    var isArmed = function () { return armed.key === key && Date.now() < armed.until; };
    var look = function () {
      b.textContent = isArmed() ? confirmLabel : label;
      b.classList.toggle("armed", isArmed());
    };
    look();
    if (isArmed()) setTimeout(look, armed.until - Date.now());
    b.addEventListener("click", function () {
      if (!isArmed()) {
        armed = { key: key, until: Date.now() + 4000 };
        look();
        setTimeout(look, 4000);
        return;
      }
      armed = { key: null, until: 0 };
      b.disabled = true;
      b.textContent = label;
      b.classList.remove("armed");
      run().catch(function (e) {
        b.disabled = false;
        failed(label)(e);
      });
    });
    return b;
  }

  // ---- views ----
  function show(page) {
    PAGES.forEach(function (p) { $("page-" + p).hidden = p !== page; });
    state.page = page;
    var navPage = page === "tunnel" ? "tunnels" : page;
    Array.prototype.forEach.call(document.querySelectorAll("#nav a"), function (a) {
      if (a.getAttribute("data-page") === navPage) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    document.title = (page === "login" ? "Sign in" : navPage.charAt(0).toUpperCase() + navPage.slice(1)) + " · mport";
  }
  function route() {
    if (!state.me) { show("login"); return; }
    var parts = location.hash.replace(/^#\/?/, "").split("/");
    var page = parts[0] || "overview";
    if (PAGES.indexOf(page) < 0 || page === "login") page = "overview";
    if (page === "users" && !isAdmin()) page = "overview";
    state.arg = parts[1] ? decodeURIComponent(parts[1]) : null;
    if (page === "tunnels" && state.arg) page = "tunnel";
    if (page !== "tokens") hideSecret();
    show(page);
    load(page);
  }
  window.addEventListener("hashchange", route);

  function load(page) {
    if (!state.me) return;
    if (page === "overview") { loadStats(); drawSpark(); }
    else if (page === "tunnels" || page === "tunnel") loadTunnels();
    else if (page === "clients") loadClients();
    else if (page === "usage") loadUsage();
    else if (page === "tokens") loadTokens();
    else if (page === "users") loadUsers();
    else if (page === "events") loadEvents();
  }

  // Overview
  function loadStats() {
    state.lastStats = Date.now();
    api("GET", "stats").then(function (s) {
      s = s && s.stats ? s.stats : (s || {});
      setText("ov-clients", pick(s, ["clientsConnected"]));
      setText("ov-tunnels", pick(s, ["tunnelsActive"]));
      setText("ov-conns", pick(s, ["connectionsActive"]));
      $("ov-bytes").textContent = "in " + bytes(s.bytesIn) + "\nout " + bytes(s.bytesOut);
      var problems = [];
      [["errors", "error"], ["refusals", "refused"]].forEach(function (kind) {
        var m = s[kind[0]] || {};
        Object.keys(m).forEach(function (k) { problems.push({ kind: kind[1], name: k, n: num(m[k]) }); });
      });
      var total = problems.reduce(function (a, p) { return a + p.n; }, 0);
      $("ov-problems").textContent = String(total);
      problems.sort(function (a, b) { return b.n - a.n; });
      var ul = $("ov-problem-list");
      clear(ul);
      problems.slice(0, 10).forEach(function (p) {
        ul.appendChild(el("li", null, [el("span", { className: "pill " + (p.kind === "error" ? "bad" : "warn"), text: p.kind }), " ", p.name.replace(/_/g, " "), el("b", { className: "right", text: String(p.n) })]));
      });
      $("ov-problem-empty").hidden = problems.length > 0;
    }).catch(failed("Statistics"));
  }

  // Tunnels
  var loadingTunnels = false;
  function loadTunnels() {
    if (loadingTunnels) return;
    loadingTunnels = true;
    api("GET", "tunnels").then(function (data) {
      state.tunnels = itemsOf(data, "tunnels");
      var t = Date.now();
      state.tunnels.forEach(function (tu) {
        var list = state.tunnelSamples[tu.id] || (state.tunnelSamples[tu.id] = []);
        if (!list.length || t - list[list.length - 1].at > 500) {
          list.push({ at: t, rin: rateIn(tu), rout: rateOut(tu) });
          if (list.length > SAMPLES) list.shift();
        }
      });
      if (state.page === "tunnels") renderTunnels();
      if (state.page === "tunnel") renderTunnel();
    }).catch(failed("Tunnels")).then(function () { loadingTunnels = false; });
  }
  function rateIn(t) { return num(pick(t, ["rateIn", "bytesInPerSecond"])); }
  function rateOut(t) { return num(pick(t, ["rateOut", "bytesOutPerSecond"])); }
  function closeTunnel(id) {
    return api("DELETE", "tunnels/" + encodeURIComponent(id)).then(function () {
      notice("Tunnel closed.");
      loadTunnels();
    });
  }
  function renderTunnels() {
    var tbody = $("tunnels-table").querySelector("tbody");
    clear(tbody);
    // The local address shows only when the API reports it.
    $("tunnels-table").classList.toggle("no-local", !state.tunnels.some(function (t) { return !!t.local; }));
    state.tunnels.forEach(function (t) {
      var link = el("a", { href: "#/tunnels/" + encodeURIComponent(t.id), text: t.name || t.id });
      var url = t.url || "";
      var addr = /^https?:/.test(url) ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: url }) : el("code", { text: url });
      tbody.appendChild(el("tr", { "data-id": t.id }, [
        el("td", null, [link]), el("td", { text: pick(t, ["type", "kind"]) || "" }), el("td", { className: "mono" }, [addr]),
        el("td", { className: "mono c-local", text: t.local || "" }), el("td", { className: "admin-only", text: pick(t, ["owner", "user"]) || "" }),
        el("td", { className: "num", text: String(num(t.activeConnections)) }),
        el("td", { className: "num", text: rate(rateIn(t)) }), el("td", { className: "num", text: rate(rateOut(t)) }),
        el("td", { className: "num", text: bytes(num(t.bytesIn) + num(t.bytesOut)) }),
        el("td", { className: "muted", text: ago(t.since), title: when(t.since) }),
        el("td", { className: "act" }, [actionButton("Close", "Confirm close", "tunnel:" + t.id, function () { return closeTunnel(t.id); })])
      ]));
    });
    $("tunnels-empty").hidden = state.tunnels.length > 0;
  }
  var lastTunnel = null;
  function renderTunnel() {
    var t = null;
    state.tunnels.forEach(function (x) { if (String(x.id) === state.arg) t = x; });
    $("tunnel-gone").hidden = !!t;
    $("tunnel-close").hidden = !t;
    if (t) lastTunnel = t;
    var shown = t || (lastTunnel && String(lastTunnel.id) === state.arg ? lastTunnel : null);
    $("tunnel-title").textContent = shown ? (shown.name || shown.id) : "Tunnel " + state.arg;
    var dl = $("tunnel-fields");
    clear(dl);
    if (shown) {
      [["Type", pick(shown, ["type", "kind"])], ["Public address", shown.url], ["Local", shown.local],
        ["Owner", pick(shown, ["owner", "user"])], ["Client address", shown.clientAddress],
        ["Active connections", String(num(shown.activeConnections))],
        ["Now", "in " + rate(rateIn(shown)) + " · out " + rate(rateOut(shown))],
        ["Transferred", "in " + bytes(shown.bytesIn) + " · out " + bytes(shown.bytesOut)],
        ["Open since", when(shown.since)]].forEach(function (f) {
        if (f[1] === undefined || f[1] === null || f[1] === "") return;
        dl.appendChild(el("dt", { text: f[0] }));
        dl.appendChild(el("dd", { text: String(f[1]) }));
      });
    }
    var samples = state.tunnelSamples[state.arg] || [];
    var max = lineChart($("tunnel-chart"), [
      { cls: "in", values: samples.map(function (s) { return s.rin; }) },
      { cls: "out", values: samples.map(function (s) { return s.rout; }) }
    ], 160);
    $("tunnel-chart-max").textContent = "· peak " + rate(max === 1 ? 0 : max);
  }
  $("tunnel-close").addEventListener("click", function () {
    var b = $("tunnel-close");
    if (!b.classList.contains("armed")) {
      b.classList.add("armed");
      b.textContent = "Confirm close";
      setTimeout(function () { b.classList.remove("armed"); b.textContent = "Close tunnel"; }, 4000);
      return;
    }
    b.classList.remove("armed");
    b.textContent = "Close tunnel";
    closeTunnel(state.arg).catch(failed("Close tunnel"));
  });

  // Clients
  function loadClients() {
    api("GET", "clients").then(function (data) {
      var list = itemsOf(data, "clients");
      var tbody = $("clients-table").querySelector("tbody");
      clear(tbody);
      list.forEach(function (c) {
        var tunnels = pick(c, ["tunnels", "tunnelCount"]);
        var count = Array.isArray(tunnels) ? tunnels.length : num(tunnels);
        tbody.appendChild(el("tr", { "data-id": c.id }, [
          el("td", { className: "mono", text: pick(c, ["clientId", "name", "id"]) || "" }),
          el("td", { className: "admin-only", text: pick(c, ["user", "owner"]) || "" }),
          el("td", { className: "mono", text: pick(c, ["address", "remote", "ip"]) || "" }),
          el("td", { text: c.tokenLabel || "" }),
          el("td", { className: "mono", text: c.clientVersion || "?" }),
          el("td", { className: "num", text: String(count), title: Array.isArray(tunnels) ? tunnels.join(", ") : null }),
          el("td", { className: "num", text: String(num(c.dataConnections)) }),
          el("td", { className: "muted", text: ago(pick(c, ["since", "connectedAt"])), title: when(pick(c, ["since", "connectedAt"])) }),
          el("td", { className: "act" }, [actionButton("Disconnect", "Confirm disconnect", "client:" + c.id, function () {
            return api("DELETE", "clients/" + encodeURIComponent(c.id)).then(function () {
              notice("Client disconnected.");
              loadClients();
            });
          })])
        ]));
      });
      $("clients-empty").hidden = list.length > 0;
    }).catch(failed("Clients"));
  }

  // Usage
  $("usage-granularity").addEventListener("change", loadUsage);
  function monthStart() {
    var d = new Date();
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  }
  function sumByUser(rows) {
    var users = {};
    rows.forEach(function (r) {
      var name = pick(r, ["user", "owner"]) || (state.me ? state.me.name : "");
      var u = users[name] || (users[name] = { name: name, bin: 0, bout: 0, conns: 0 });
      u.bin += num(r.bytesIn);
      u.bout += num(r.bytesOut);
      u.conns += num(r.connections);
    });
    return users;
  }
  // Quotas: admins see every user's (from the users list), others their own (from /me).
  function quotaLimits() {
    if (!isAdmin()) {
      var own = state.me && state.me.limits ? state.me.limits.monthlyQuotaBytes : null;
      var mine = {};
      if (own) mine[state.me.name] = own;
      return Promise.resolve(mine);
    }
    return api("GET", "users?limit=1000").then(function (data) {
      var out = {};
      itemsOf(data, "users").forEach(function (u) {
        var q = u.limits ? u.limits.monthlyQuotaBytes : pick(u, QUOTA);
        if (q) out[u.name] = q;
      });
      return out;
    });
  }
  function loadUsage() {
    var g = $("usage-granularity").value;
    var from = Date.now() - (g === "hour" ? 48 * 3600e3 : 30 * 86400e3);
    var chart = api("GET", "usage?limit=1000&granularity=" + g + "&from=" + from);
    var month = api("GET", "usage?limit=1000&granularity=day&from=" + monthStart());
    Promise.all([chart, month, quotaLimits()]).then(function (res) {
      var rows = itemsOf(res[0], "usage");
      // One slot per hour or UTC day of the window, empty ones too, so a bar's width means time.
      var step = g === "hour" ? 3600e3 : 86400e3;
      var slots = {};
      var list = [];
      for (var at = Math.floor(from / step) * step + step; at <= Date.now(); at += step) {
        slots[at] = { at: at, bin: 0, bout: 0 };
        list.push(slots[at]);
      }
      rows.forEach(function (r) {
        var start = new Date(pick(r, ["start", "at", "period", "hour", "day"])).getTime();
        var b = slots[Math.floor(start / step) * step];
        if (!b) return;
        b.bin += num(r.bytesIn);
        b.bout += num(r.bytesOut);
      });
      var label = function (b) {
        var d = new Date(typeof b.at === "number" ? b.at : String(b.at));
        if (isNaN(d.getTime())) return String(b.at);
        return g === "hour" ? d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit" })
          : d.toLocaleDateString([], { month: "short", day: "numeric" });
      };
      var max = barChart($("usage-chart"), list, label);
      $("usage-chart-max").textContent = list.length ? "· highest " + bytes(max) + " per " + g : "";
      var users = sumByUser(rows);
      var used = sumByUser(itemsOf(res[1], "usage"));
      var limits = res[2];
      var qbox = $("quotas");
      clear(qbox);
      Object.keys(limits).sort().forEach(function (name) {
        var limit = num(limits[name]);
        var u = used[name];
        var spent = u ? u.bin + u.bout : 0;
        var pct = Math.min(100, (spent / limit) * 100);
        var fill = el("div", { className: "fill" + (pct >= 90 ? " bad" : pct >= 75 ? " warn" : "") });
        fill.style.width = pct.toFixed(1) + "%";
        qbox.appendChild(el("div", { className: "quota" }, [
          el("div", { className: "row" }, [el("b", { className: "grow", text: name }),
            el("span", { className: "muted", text: bytes(spent) + " of " + bytes(limit) + " this month (" + Math.round(pct) + " %)" })]),
          el("div", { className: "bar-track", role: "progressbar", "aria-label": "Quota used by " + name, "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(pct)) }, [fill])
        ]));
      });
      var tbody = $("usage-table").querySelector("tbody");
      clear(tbody);
      Object.keys(users).sort().forEach(function (name) {
        var u = users[name];
        tbody.appendChild(el("tr", null, [
          el("td", { text: name }), el("td", { className: "num", text: bytes(u.bin) }),
          el("td", { className: "num", text: bytes(u.bout) }), el("td", { className: "num", text: String(u.conns) }),
          el("td", { className: "muted", text: limits[name] ? bytes(limits[name]) + " / month" : "none" })
        ]));
      });
      $("usage-empty").hidden = rows.length > 0;
    }).catch(failed("Usage"));
  }

  // Tokens
  function serverUrl() {
    var meta = document.querySelector('meta[name="mport-server-url"]').getAttribute("content");
    if (meta) return meta;
    var prefix = document.querySelector('meta[name="mport-path-prefix"]').getAttribute("content") || "";
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + prefix;
  }
  function quote(s) { return /^[A-Za-z0-9_.:\/=+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; }
  function hideSecret() {
    $("token-new").hidden = true;
    $("token-secret").textContent = "";
    $("token-command").textContent = "";
  }
  function copy(text, button) {
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { notice("Select the text and copy it by hand.", true); });
    } else {
      notice("Select the text and copy it by hand (the clipboard needs https).", true);
    }
  }
  $("token-copy").addEventListener("click", function () { copy($("token-secret").textContent, $("token-copy")); });
  $("command-copy").addEventListener("click", function () { copy($("token-command").textContent, $("command-copy")); });
  $("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = { scope: $("token-scope").value };
    var label = $("token-label").value.trim();
    if (label) body.label = label;
    $("token-create").disabled = true;
    api("POST", "tokens", body).then(function (data) {
      var secret = data && (data.secret || data.token && data.token.secret) || "";
      $("token-secret").textContent = secret;
      $("token-command").textContent = "mport http 3000 --server " + quote(serverUrl()) + " --token " + quote(secret);
      $("token-new").hidden = false;
      $("token-label").value = "";
      loadTokens();
    }).catch(failed("Create token")).then(function () { $("token-create").disabled = false; });
  });
  function loadTokens() {
    api("GET", "tokens").then(function (data) {
      var list = itemsOf(data, "tokens");
      var tbody = $("tokens-table").querySelector("tbody");
      clear(tbody);
      list.forEach(function (t) {
        var status = t.state || (pick(t, ["revokedAt", "revoked"]) ? "revoked" : "active");
        var revoked = status !== "active";
        tbody.appendChild(el("tr", { "data-id": t.id, className: revoked ? "revoked" : null }, [
          el("td", { text: pick(t, ["label", "name"]) || "(no label)" }),
          el("td", { text: t.scope || "client" }),
          el("td", { className: "admin-only", text: pick(t, ["user", "owner"]) || "" }),
          el("td", { className: "muted", text: ago(pick(t, ["createdAt", "created"])), title: when(pick(t, ["createdAt", "created"])) }),
          el("td", { className: "muted", text: ago(pick(t, ["lastUsedAt", "lastUsed"])) || "never" }),
          el("td", { className: "act" }, [revoked ? el("span", { className: "muted", text: status })
            : actionButton("Revoke", "Confirm revoke", "token:" + t.id, function () {
              return api("DELETE", "tokens/" + encodeURIComponent(t.id)).then(function () {
                notice("Token revoked: clients using it are disconnected.");
                loadTokens();
              });
            })])
        ]));
      });
      $("tokens-empty").hidden = list.length > 0;
    }).catch(failed("Tokens"));
  }

  // Users (admins)
  var editing = null;
  function limitOf(u, names) {
    var v = pick(u, names);
    if (v === undefined && u.limits) v = pick(u.limits, names);
    return v;
  }
  var TUNNELS = ["maxTunnels"], CONNS = ["maxConnections"], QUOTA = ["monthlyQuotaBytes", "quotaBytes", "quota"];
  function loadUsers() {
    api("GET", "users").then(function (data) {
      var list = itemsOf(data, "users");
      var tbody = $("users-table").querySelector("tbody");
      clear(tbody);
      list.forEach(function (u) {
        var quota = limitOf(u, QUOTA);
        var disabled = !!pick(u, ["disabled", "disabledAt"]);
        var edit = el("button", { type: "button", className: "quiet small", text: "Edit" });
        edit.addEventListener("click", function () { editUser(u); });
        tbody.appendChild(el("tr", { "data-name": u.name }, [
          el("td", { text: u.name }), el("td", { text: u.role || "user" }),
          el("td", { className: disabled ? "bad" : "ok", text: disabled ? "disabled" : "active" }),
          el("td", { className: "num", text: String(limitOf(u, TUNNELS) ?? "default") }),
          el("td", { className: "num", text: String(limitOf(u, CONNS) ?? "default") }),
          el("td", { text: quota ? bytes(quota) : "none" }),
          el("td", { className: "act" }, [edit])
        ]));
      });
    }).catch(failed("Users"));
  }
  function editUser(u) {
    editing = u.name;
    $("user-form-title").textContent = "Limits of " + u.name;
    var t = limitOf(u, TUNNELS), c = limitOf(u, CONNS), q = limitOf(u, QUOTA);
    $("user-max-tunnels").value = t === undefined || t === null ? "" : t;
    $("user-max-connections").value = c === undefined || c === null ? "" : c;
    $("user-quota").value = q ? String(q / 1e9) : "";
    $("user-disabled").checked = !!pick(u, ["disabled", "disabledAt"]);
    $("user-form-error").hidden = true;
    $("user-form").hidden = false;
    $("user-max-tunnels").focus();
  }
  $("user-cancel").addEventListener("click", function () { $("user-form").hidden = true; editing = null; });
  $("user-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!editing) return;
    var intOrNull = function (id) { var v = $(id).value.trim(); return v === "" ? null : Math.round(Number(v)); };
    var q = $("user-quota").value.trim();
    var body = {
      disabled: $("user-disabled").checked,
      limits: {
        maxTunnels: intOrNull("user-max-tunnels"),
        maxConnections: intOrNull("user-max-connections"),
        monthlyQuotaBytes: q === "" ? null : Math.round(Number(q) * 1e9)
      }
    };
    api("PATCH", "users/" + encodeURIComponent(editing), body).then(function () {
      $("user-form").hidden = true;
      notice("Saved the limits of " + editing + ".");
      editing = null;
      loadUsers();
    }).catch(function (e) {
      $("user-form-error").textContent = e.message;
      $("user-form-error").hidden = false;
    });
  });

  // Events
  $("events-filter").addEventListener("submit", function (ev) { ev.preventDefault(); loadEvents(); });
  var kindsSeen = {};
  function loadEvents() {
    var q = ["limit=200"];
    var kind = $("events-kind").value.trim();
    var user = $("events-user").value.trim();
    var since = $("events-since").value;
    if (kind) q.push("type=" + encodeURIComponent(kind));
    if (user && isAdmin()) q.push("user=" + encodeURIComponent(user));
    if (since) q.push("since=" + encodeURIComponent(new Date(Date.now() - Number(since)).toISOString()));
    api("GET", "events?" + q.join("&")).then(function (data) {
      var list = itemsOf(data, "events");
      var tbody = $("events-table").querySelector("tbody");
      clear(tbody);
      list.forEach(function (e) {
        var type = pick(e, ["type", "kind"]) || "";
        if (type && !kindsSeen[type]) {
          kindsSeen[type] = true;
          $("event-kinds").appendChild(el("option", { value: type }));
        }
        var detail = e.detail && typeof e.detail === "object"
          ? Object.keys(e.detail).map(function (k) {
            var v = e.detail[k];
            return k + "=" + (typeof v === "object" ? JSON.stringify(v) : String(v));
          }).join("  ")
          : String(e.detail || "");
        tbody.appendChild(el("tr", null, [
          el("td", { className: "muted nowrap", text: when(e.at) }),
          el("td", { text: type.replace(/_/g, " ") }),
          el("td", { text: pick(e, ["user", "userName"]) || "" }),
          el("td", { className: "mono wrap", text: detail })
        ]));
      });
      $("events-empty").hidden = list.length > 0;
    }).catch(failed("Events"));
  }

  // ---- start ----
  api("GET", "me").then(signedIn, function (e) {
    signedOut();
    if (e.status !== 401) {
      var err = $("login-error");
      err.textContent = "Cannot reach the server's API: " + e.message;
      err.hidden = false;
    }
  });
})();
`;
