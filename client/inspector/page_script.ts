// The inspector page's script (served as /app.js), a constant so `deno compile` builds it in.
//
// Plain DOM code, no framework. Everything from a request is put into the page as text
// (textContent), never as HTML. It is written without backticks or "${" so it can live in a
// String.raw template; its one substitution brings in the notice banner (shared/web_ui.ts).
import { NOTICE_SCRIPT } from "../../shared/web_ui.ts";

/**
 * The page's behaviour: list, filter, detail, replay, edit and replay, clear, live updates. Its
 * helpers are shared with the status panel's script as `window.mportPage`.
 */
export const PAGE_SCRIPT = String.raw`"use strict";
(function () {
  var state = { items: [], selected: null, detail: null, listSeq: 0, detailSeq: 0 };
  var $ = function (id) { return document.getElementById(id); };
  var tbody = $("requests").querySelector("tbody");

  function el(tag, props, children) {
    var node = document.createElement(tag);
    if (props) {
      for (var k in props) {
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

  function api(method, path, body) {
    var init = { method: method, headers: {} };
    if (method !== "GET") {
      init.headers["content-type"] = "application/json";
      init.body = body === undefined ? "" : JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      if (res.status === 204) return null;
      return res.json().catch(function () { return null; }).then(function (data) {
        if (!res.ok) {
          var err = new Error(data && data.error ? data.error.message : "HTTP " + res.status);
          err.status = res.status;
          throw err;
        }
        return data;
      });
    });
  }

${NOTICE_SCRIPT}

  function size(n) {
    if (n === null || n === undefined) return "";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }
  function duration(ms) {
    if (ms === null || ms === undefined) return "…";
    return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(2) + " s";
  }
  function clock(ms) {
    var d = new Date(ms);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map(function (x) {
      return String(x).padStart(2, "0");
    }).join(":");
  }
  function statusClass(item) {
    if (item.error) return "s-err";
    if (item.status === null) return "s-pending";
    return "s-" + String(item.status).charAt(0);
  }
  function statusText(item) {
    if (item.status !== null) return String(item.status);
    if (item.error) return "error";
    return item.durationMs === null ? "…" : "—";
  }

  // The filter box: "method:POST status:4xx tunnel:web" and free text.
  function filterQuery() {
    var params = new URLSearchParams();
    var words = [];
    $("filter").value.trim().split(/\s+/).forEach(function (w) {
      var m = /^(method|status|tunnel):(.+)$/i.exec(w);
      if (m) params.set(m[1].toLowerCase(), m[2]);
      else if (w) words.push(w);
    });
    if (words.length) params.set("q", words.join(" "));
    var s = params.toString();
    return s ? "?" + s : "";
  }

  function loadList() {
    var seq = ++state.listSeq;
    return api("GET", "/api/requests" + filterQuery()).then(function (data) {
      if (seq !== state.listSeq) return;
      state.items = data.requests;
      renderList();
    }, function (e) {
      if (seq === state.listSeq) notice(e.message, true);
    });
  }

  function renderList() {
    var rows = state.items.map(function (item) {
      var path = el("td", { className: "c-path", title: item.target }, [
        item.replayOf ? el("span", { className: "tag", text: "replay" }) : null,
        item.target,
      ]);
      var tr = el("tr", { "data-id": item.id, tabindex: "0" }, [
        el("td", { className: "c-time", text: clock(item.startedAt) }),
        el("td", { className: "c-method", text: item.method }),
        path,
        el("td", { className: "c-status " + statusClass(item), text: statusText(item), title: item.error || item.statusText || "" }),
        el("td", { className: "c-dur", text: duration(item.durationMs) }),
        el("td", { className: "c-size", text: size(item.responseBytes) }),
      ]);
      if (item.id === state.selected) tr.className = "selected";
      return tr;
    });
    tbody.replaceChildren.apply(tbody, rows);
    var empty = $("empty");
    empty.hidden = rows.length > 0;
    empty.textContent = $("filter").value.trim()
      ? "No requests match this filter."
      : "No requests yet. Requests through your HTTP tunnels show up here as they arrive.";
  }

  function select(id) {
    state.selected = id;
    state.detail = null;
    $("edit").hidden = true;
    document.body.classList.toggle("has-detail", id !== null);
    $("detail-pane").hidden = id === null;
    Array.prototype.forEach.call(tbody.rows, function (tr) {
      tr.className = tr.getAttribute("data-id") === id ? "selected" : "";
    });
    if (id !== null) loadDetail();
  }

  function loadDetail() {
    var id = state.selected;
    var seq = ++state.detailSeq;
    return api("GET", "/api/requests/" + encodeURIComponent(id)).then(function (d) {
      if (seq !== state.detailSeq || id !== state.selected) return;
      state.detail = d;
      renderDetail(d);
    }, function (e) {
      if (seq !== state.detailSeq) return;
      if (e.status === 404) {
        select(null);
        notice("That request is gone (cleared, or evicted to make room).", true);
      } else notice(e.message, true);
    });
  }

  function headersTable(headers) {
    if (!headers.length) return el("p", { className: "note", text: "No headers" });
    return el("table", { className: "headers" }, [el("tbody", null, headers.map(function (h) {
      return el("tr", null, [el("td", { text: h[0] }), el("td", { text: h[1] })]);
    }))]);
  }

  function bodyBlock(b) {
    var out = [];
    if (b.kind === "empty") return [el("p", { className: "note", text: "No body" })];
    if (b.kind === "form") {
      out.push(headersTable(b.form));
      out.push(el("pre", { className: "body", text: b.text }));
    } else if (b.kind === "binary") {
      out.push(el("p", {
        className: "note",
        text: "Binary" + (b.contentType ? " (" + b.contentType + ")" : "") + ": first " +
          size(b.hexBytes) + " of " + size(b.bytes) + " as hex",
      }));
      out.push(el("pre", { className: "body hex", text: b.hex }));
    } else {
      out.push(el("pre", { className: "body", text: b.text }));
    }
    if (b.truncated) {
      out.push(el("p", {
        className: "note trunc",
        text: "Truncated: " + size(b.kept) + " of " + size(b.bytes) + " kept",
      }));
    }
    return out;
  }

  function renderDetail(d) {
    $("detail-title").textContent = d.method + " " + d.target;
    var meta = $("detail-meta");
    var parts = [
      d.status !== null ? d.status + " " + (d.statusText || "") : (d.error ? "failed" : "in flight"),
      duration(d.durationMs),
      d.replayOf ? "replayed" : "from " + d.remote,
      d.tunnel + " → " + d.local,
      new Date(d.startedAt).toLocaleString(),
    ];
    meta.replaceChildren(parts.join(" · "));
    if (d.replayOf) {
      var link = el("a", { href: "#", text: "the original" });
      link.addEventListener("click", function (ev) { ev.preventDefault(); select(d.replayOf); });
      meta.append(" · replay of ", link);
    }
    var err = $("detail-error");
    err.hidden = !d.error;
    err.textContent = d.error || "";

    var rq = d.request;
    var sections = [el("section", { className: "msg", "aria-label": "Request" }, [
      el("h3", { text: "Request" }),
      el("p", { className: "line", text: rq.method + " " + rq.target + " " + rq.version }),
      headersTable(rq.headers),
      el("h3", { text: "Request body" }),
    ].concat(bodyBlock(rq.body)))];
    var rs = d.response;
    if (rs) {
      sections.push(el("section", { className: "msg", "aria-label": "Response" }, [
        el("h3", { text: "Response" }),
        el("p", { className: "line", text: rq.version + " " + rs.status + " " + rs.statusText }),
        headersTable(rs.headers),
        el("h3", { text: "Response body" }),
      ].concat(bodyBlock(rs.body))));
    } else {
      sections.push(el("section", { className: "msg", "aria-label": "Response" }, [
        el("h3", { text: "Response" }),
        el("p", { className: "note", text: d.durationMs === null ? "Waiting for the local service…" : "No response" }),
      ]));
    }
    $("detail-body").replaceChildren.apply($("detail-body"), sections);
  }

  function replay(edits) {
    var id = state.selected;
    var buttons = [$("replay"), $("edit-send")];
    buttons.forEach(function (b) { b.disabled = true; });
    return api("POST", "/api/requests/" + encodeURIComponent(id) + "/replay", edits).then(function (r) {
      notice("Replayed as a new request");
      $("edit").hidden = true;
      select(r.id);
      return loadList();
    }, function (e) {
      notice("Replay failed: " + e.message, true);
    }).then(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  var SKIPPED = ["content-length", "transfer-encoding"];
  function openEditor() {
    var d = state.detail;
    if (!d) return;
    $("edit-method").value = d.request.method;
    $("edit-target").value = d.request.target;
    $("edit-headers").value = d.request.headers.filter(function (h) {
      return SKIPPED.indexOf(h[0].toLowerCase()) < 0;
    }).map(function (h) { return h[0] + ": " + h[1]; }).join("\n");
    var b = d.request.body;
    var body = $("edit-body");
    // A truncated body cannot be sent as captured: the user types the one to send instead.
    body.disabled = b.kind === "binary" && !b.truncated;
    body.value = body.disabled || b.truncated ? "" : (b.text || "");
    body.placeholder = body.disabled
      ? "Binary body: sent as captured"
      : b.truncated
      ? "Only " + size(b.kept) + " of " + size(b.bytes) + " of the body were kept, so it cannot be sent as captured: type the body to send"
      : "";
    $("edit").hidden = false;
    $("edit-method").focus();
  }

  function submitEditor(ev) {
    ev.preventDefault();
    var headers = [];
    var lines = $("edit-headers").value.split("\n");
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].trim();
      if (!line) continue;
      var at = line.indexOf(":");
      if (at <= 0) {
        notice("Header line " + (i + 1) + " needs the form Name: value", true);
        return;
      }
      headers.push([line.slice(0, at).trim(), line.slice(at + 1).trim()]);
    }
    var edits = {
      method: $("edit-method").value.trim(),
      target: $("edit-target").value.trim(),
      headers: headers,
    };
    if (!$("edit-body").disabled) edits.body = $("edit-body").value;
    replay(edits);
  }

  function loadStatus() {
    return api("GET", "/api/status").then(function (s) {
      var list = $("tunnels");
      list.replaceChildren.apply(list, s.tunnels.map(function (t) {
        var a = el("a", { href: t.url, target: "_blank", rel: "noopener noreferrer", text: t.url });
        return el("li", null, [el("b", { text: t.name }), " ", a, " → " + t.local]);
      }));
      return s;
    }, function () { return null; });
  }

  // Live updates: refresh at most every 150 ms however many changes arrive.
  var listTimer = null;
  var detailTimer = null;
  function soonList() {
    if (listTimer === null) listTimer = setTimeout(function () { listTimer = null; loadList(); }, 150);
  }
  function soonDetail() {
    if (detailTimer === null) detailTimer = setTimeout(function () { detailTimer = null; if (state.selected) loadDetail(); }, 150);
  }
  var source = null;
  function connect() {
    var live = $("live");
    source = new EventSource("/api/events");
    source.addEventListener("open", function () {
      live.textContent = "live";
      live.className = "live on";
      loadStatus();
      soonList();
      if (state.selected) soonDetail();
    });
    source.addEventListener("error", function () {
      live.textContent = "reconnecting…";
      live.className = "live";
    });
    source.addEventListener("request", function (ev) {
      soonList();
      var item = JSON.parse(ev.data);
      if (item.id === state.selected) soonDetail();
    });
    source.addEventListener("clear", function () {
      select(null);
      soonList();
    });
  }

  tbody.addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr");
    if (tr) select(tr.getAttribute("data-id"));
  });
  tbody.addEventListener("keydown", function (ev) {
    var tr = ev.target.closest("tr");
    if (!tr) return;
    if (ev.key === "Enter") select(tr.getAttribute("data-id"));
    if (ev.key === "ArrowDown" && tr.nextElementSibling) tr.nextElementSibling.focus();
    if (ev.key === "ArrowUp" && tr.previousElementSibling) tr.previousElementSibling.focus();
  });
  var filterTimer = null;
  $("filter").addEventListener("input", function () {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(loadList, 200);
  });
  $("clear").addEventListener("click", function () {
    api("DELETE", "/api/requests").then(function () {
      select(null);
      loadList();
    }, function (e) { notice(e.message, true); });
  });
  $("back").addEventListener("click", function () { select(null); });
  $("replay").addEventListener("click", function () { replay(undefined); });
  $("edit-replay").addEventListener("click", openEditor);
  $("edit-cancel").addEventListener("click", function () { $("edit").hidden = true; });
  $("edit").addEventListener("submit", submitEditor);

  $("egress").addEventListener("mport:stopped", function () {
    if (source) source.close();
  });

  var started = loadStatus();
  started.then(function (s) {
    // Without an answer, show the request list as before.
    var capturing = !s || s.capture !== null;
    $("layout").hidden = !capturing;
    if (capturing) {
      loadList();
      connect();
    } else {
      $("page-kind").textContent = "status";
      document.title = "mport status";
    }
  });
  // For /status.js (the SOCKS/VPN panel), which runs next.
  window.mportPage = { el: el, api: api, notice: notice, status: started };
})();
`;
