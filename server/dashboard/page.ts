// The dashboard's HTML, a constant so `deno compile` builds it in (script and style: own files).

/** Values the server puts into the page (HTML-escaped here): how clients reach the server. */
export interface PageSettings {
  /** `--public-url`, or null: the page derives `ws[s]://HOST` from its own address. */
  readonly serverUrl: string | null;
  /** The tunnel path prefix when it is not the default (clients need it in --server). */
  readonly pathPrefix: string;
}

function attr(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

/**
 * The page at `/`: a skeleton of every view that `assets/app.js` fills in and switches between
 * (the CSP allows no inline script). Links are relative, so the page works under a sub-path.
 */
export function pageHtml(s: PageSettings): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="mport-server-url" content="${attr(s.serverUrl ?? "")}">
<meta name="mport-path-prefix" content="${attr(s.pathPrefix)}">
<title>mport dashboard</title>
<link rel="icon" href="assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="assets/app.css">
<script src="assets/app.js" defer></script>
</head>
<body class="signed-out">
<header class="top">
  <h1>mport <span>dashboard</span></h1>
  <nav id="nav" class="nav" aria-label="Pages">
    <a href="#/overview" data-page="overview">Overview</a>
    <a href="#/tunnels" data-page="tunnels">Tunnels</a>
    <a href="#/clients" data-page="clients">Clients</a>
    <a href="#/usage" data-page="usage">Usage</a>
    <a href="#/tokens" data-page="tokens">Tokens</a>
    <a href="#/users" data-page="users" class="admin-only">Users</a>
    <a href="#/events" data-page="events">Events</a>
  </nav>
  <span id="live" class="live" title="Live updates">offline</span>
  <span class="who"><span id="who"></span>
    <button id="logout" type="button" class="quiet small">Sign out</button></span>
</header>
<div id="notice" class="notice" role="status" hidden></div>
<main class="main">

<section id="page-login" class="page login" hidden>
  <form id="login-form" class="card login-card" autocomplete="on">
    <h2>Sign in</h2>
    <label>User name <input id="login-user" name="username" autocomplete="username" required
      autocapitalize="none" spellcheck="false"></label>
    <label>Password <input id="login-password" name="password" type="password"
      autocomplete="current-password" required></label>
    <p id="login-error" class="error" role="alert" hidden></p>
    <button id="login-submit" type="submit">Sign in</button>
  </form>
</section>

<section id="page-overview" class="page" hidden>
  <div class="cards">
    <div class="card stat"><span class="k">Connected clients</span><b id="ov-clients">–</b></div>
    <div class="card stat"><span class="k">Open tunnels</span><b id="ov-tunnels">–</b></div>
    <div class="card stat"><span class="k">Active connections</span><b id="ov-conns">–</b></div>
    <div class="card stat"><span class="k">Throughput now</span><b id="ov-rate" class="pair">–</b></div>
    <div class="card stat"><span class="k">Transferred</span><b id="ov-bytes" class="pair">–</b></div>
    <div class="card stat"><span class="k">Errors / refusals</span><b id="ov-problems">–</b></div>
  </div>
  <div class="card">
    <h2>Throughput <small>live, up to the last 2 minutes</small></h2>
    <svg id="ov-spark" class="chart spark" viewBox="0 0 600 80" preserveAspectRatio="none"
      role="img" aria-label="Throughput"></svg>
    <p class="legend"><span class="sw in"></span>in <span class="sw out"></span>out
      <span id="ov-spark-max" class="muted"></span></p>
  </div>
  <div class="two">
    <div class="card"><h2>Errors and refusals</h2><ul id="ov-problem-list" class="plain"></ul>
      <p id="ov-problem-empty" class="empty">None since the server started.</p></div>
    <div class="card"><h2>Recent events</h2><ul id="ov-events" class="plain"></ul></div>
  </div>
</section>

<section id="page-tunnels" class="page" hidden>
  <div class="card">
    <h2>Tunnels</h2>
    <div class="scroll"><table id="tunnels-table" class="grid">
      <thead><tr><th>Name</th><th>Type</th><th>Public address</th><th class="c-local">Local</th>
        <th class="admin-only">Owner</th><th class="num">Conns</th><th class="num">In/s</th>
        <th class="num">Out/s</th><th class="num">Total</th><th>Since</th><th></th></tr></thead>
      <tbody></tbody>
    </table></div>
    <p id="tunnels-empty" class="empty">No open tunnels. Start one with the command on the Tokens page.</p>
  </div>
</section>

<section id="page-tunnel" class="page" hidden>
  <div class="card">
    <a href="#/tunnels" class="back">← Tunnels</a>
    <h2 id="tunnel-title"></h2>
    <dl id="tunnel-fields" class="fields"></dl>
    <h3>Traffic <small>since this page opened</small></h3>
    <svg id="tunnel-chart" class="chart" viewBox="0 0 600 160" preserveAspectRatio="none"
      role="img" aria-label="Traffic of this tunnel"></svg>
    <p class="legend"><span class="sw in"></span>in <span class="sw out"></span>out
      <span id="tunnel-chart-max" class="muted"></span></p>
    <p id="tunnel-gone" class="note" hidden>This tunnel is closed.</p>
    <div class="actions"><button id="tunnel-close" type="button" class="danger">Close tunnel</button></div>
  </div>
</section>

<section id="page-clients" class="page" hidden>
  <div class="card">
    <h2>Connected clients</h2>
    <div class="scroll"><table id="clients-table" class="grid">
      <thead><tr><th>Client</th><th class="admin-only">User</th><th>Address</th><th>Token</th><th>Version</th><th class="num">Tunnels</th>
        <th class="num">Data connections</th><th>Connected</th><th></th></tr></thead>
      <tbody></tbody>
    </table></div>
    <p id="clients-empty" class="empty">No clients connected.</p>
  </div>
</section>

<section id="page-usage" class="page" hidden>
  <div class="card">
    <div class="row">
      <h2 class="grow">Usage <small>last 30 days or 48 hours</small></h2>
      <label class="inline">Per <select id="usage-granularity">
        <option value="day">day</option><option value="hour">hour</option></select></label>
    </div>
    <svg id="usage-chart" class="chart" viewBox="0 0 600 180" preserveAspectRatio="none"
      role="img" aria-label="Transfer per period"></svg>
    <div id="usage-chart-axis" class="axis-row"></div>
    <p class="legend"><span class="sw in"></span>in <span class="sw out"></span>out
      <span id="usage-chart-max" class="muted"></span></p>
    <div id="quotas" class="quotas"></div>
    <div class="scroll"><table id="usage-table" class="grid">
      <thead><tr><th>User</th><th class="num">In</th><th class="num">Out</th>
        <th class="num">Connections</th><th>Quota</th></tr></thead>
      <tbody></tbody>
    </table></div>
    <p id="usage-empty" class="empty">No usage recorded yet.</p>
  </div>
</section>

<section id="page-tokens" class="page" hidden>
  <div class="card">
    <h2>New token</h2>
    <form id="token-form" class="row wrap">
      <label class="grow">Label <input id="token-label" name="label" maxlength="100"
        placeholder="laptop, phone, CI…" spellcheck="false"></label>
      <label>Scope <select id="token-scope" name="scope">
        <option value="client">client (open tunnels)</option>
        <option value="api">api (also the REST API)</option>
        <option value="admin" class="admin-only">admin (API)</option>
      </select></label>
      <button id="token-create" type="submit">Create token</button>
    </form>
    <div id="token-new" class="secret-box" hidden>
      <p><b>Copy this token now.</b> It is shown only once; the server keeps only its hash.</p>
      <div class="copy-line"><code id="token-secret"></code>
        <button id="token-copy" type="button" class="quiet small">Copy</button></div>
      <p class="muted">Publish a local web app on port 3000:</p>
      <div class="copy-line"><code id="token-command"></code>
        <button id="command-copy" type="button" class="quiet small">Copy</button></div>
    </div>
  </div>
  <div class="card">
    <h2>Tokens</h2>
    <div class="scroll"><table id="tokens-table" class="grid">
      <thead><tr><th>Label</th><th>Scope</th><th class="admin-only">User</th><th>Created</th>
        <th>Last used</th><th></th></tr></thead>
      <tbody></tbody>
    </table></div>
    <p id="tokens-empty" class="empty">No tokens yet.</p>
  </div>
</section>

<section id="page-users" class="page" hidden>
  <div class="card">
    <h2>Users and limits</h2>
    <div class="scroll"><table id="users-table" class="grid">
      <thead><tr><th>User</th><th>Role</th><th>Status</th><th class="num">Max tunnels</th>
        <th class="num">Max connections</th><th>Monthly quota</th><th></th></tr></thead>
      <tbody></tbody>
    </table></div>
    <form id="user-form" class="card inset" hidden>
      <h3 id="user-form-title"></h3>
      <div class="row wrap">
        <label>Max tunnels <input id="user-max-tunnels" type="number" min="1" step="1"></label>
        <label>Max connections <input id="user-max-connections" type="number" min="1" step="1"></label>
        <label>Monthly quota (GB, empty: none) <input id="user-quota" type="number" min="0" step="any"></label>
        <label class="check"><input id="user-disabled" type="checkbox"> Disabled</label>
      </div>
      <p id="user-form-error" class="error" hidden></p>
      <div class="actions"><button type="submit">Save</button>
        <button id="user-cancel" type="button" class="quiet">Cancel</button></div>
    </form>
  </div>
</section>

<section id="page-events" class="page" hidden>
  <div class="card">
    <h2>Events</h2>
    <form id="events-filter" class="row wrap">
      <label>Kind <input id="events-kind" list="event-kinds" placeholder="any" spellcheck="false"></label>
      <datalist id="event-kinds"></datalist>
      <label class="admin-only">User <input id="events-user" placeholder="any" spellcheck="false"></label>
      <label>Since <select id="events-since"><option value="">any time</option>
        <option value="3600000">last hour</option><option value="86400000">last day</option>
        <option value="604800000">last week</option></select></label>
      <button type="submit">Filter</button>
    </form>
    <div class="scroll"><table id="events-table" class="grid">
      <thead><tr><th>Time</th><th>Kind</th><th>User</th><th>Detail</th></tr></thead>
      <tbody></tbody>
    </table></div>
    <p id="events-empty" class="empty">No events match.</p>
  </div>
</section>

</main>
</body>
</html>
`;
}

/** The page's icon, the same for both web pages. */
export { FAVICON_SVG } from "../../shared/web_ui.ts";
