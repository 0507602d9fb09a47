// The inspector page's HTML, a constant so `deno compile` builds it in (script and style: own files).

/**
 * The page at `/`: a skeleton that `/app.js` fills in (the CSP allows no inline script). The status
 * panel shows when the client runs a SOCKS proxy or VPN, the request list when it captures.
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mport inspector</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
<script src="/status.js" defer></script>
</head>
<body>
<header class="top">
  <h1>mport <span id="page-kind">inspector</span></h1>
  <ul id="tunnels" class="tunnels" aria-label="Tunnels"></ul>
  <span id="live" class="live" title="Live updates">connecting…</span>
</header>
<div id="notice" class="notice" role="status" hidden></div>
<section id="egress" class="pane egress" aria-label="Connection status" hidden>
  <div class="egress-head">
    <h2 id="egress-kind"></h2>
    <span id="egress-state" class="state"></span>
    <button id="disconnect" type="button" class="danger" hidden>Disconnect</button>
  </div>
  <p id="egress-problem" class="error" hidden></p>
  <p id="egress-stopped" class="stopped" hidden>The client stopped: it is disconnected from the
    server and its proxy is closed. Start it again from the command line.</p>
  <dl id="egress-facts" class="facts"></dl>
</section>
<main id="layout" class="layout" hidden>
  <section id="list-pane" class="pane list-pane" aria-label="Requests">
    <div class="toolbar">
      <input id="filter" type="search" autocomplete="off" spellcheck="false"
        placeholder="Filter: text, method:POST, status:4xx, tunnel:web" aria-label="Filter requests">
      <button id="clear" type="button" class="quiet">Clear</button>
    </div>
    <table id="requests" class="requests">
      <thead><tr>
        <th class="c-time">Time</th><th class="c-method">Method</th><th class="c-path">Path</th>
        <th class="c-status">Status</th><th class="c-dur">Duration</th><th class="c-size">Size</th>
      </tr></thead>
      <tbody></tbody>
    </table>
    <p id="empty" class="empty">No requests yet. Requests through your HTTP tunnels show up here as they arrive.</p>
  </section>
  <section id="detail-pane" class="pane detail-pane" aria-label="Request detail" hidden>
    <div class="detail-head">
      <button id="back" type="button" class="quiet back">← Requests</button>
      <h2 id="detail-title"></h2>
      <p id="detail-meta" class="meta"></p>
      <div class="actions">
        <button id="replay" type="button">Replay</button>
        <button id="edit-replay" type="button" class="quiet">Edit and replay</button>
      </div>
    </div>
    <form id="edit" class="edit" hidden>
      <div class="edit-line">
        <label>Method <input id="edit-method" name="method" required spellcheck="false"></label>
        <label class="grow">Path <input id="edit-target" name="target" required spellcheck="false"></label>
      </div>
      <label>Headers <small>(one "Name: value" per line)</small>
        <textarea id="edit-headers" name="headers" rows="6" spellcheck="false"></textarea></label>
      <label>Body <textarea id="edit-body" name="body" rows="8" spellcheck="false"></textarea></label>
      <div class="actions">
        <button id="edit-send" type="submit">Send</button>
        <button id="edit-cancel" type="button" class="quiet">Cancel</button>
      </div>
    </form>
    <p id="detail-error" class="error" hidden></p>
    <div id="detail-body"></div>
  </section>
</main>
</body>
</html>
`;

/** The page's icon, the same for both web pages. */
export { FAVICON_SVG } from "../../shared/web_ui.ts";
