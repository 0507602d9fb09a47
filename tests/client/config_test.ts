// Table-driven tests for the mport client's command line, TOML file, server URL, proxy and redaction.
import assert from "node:assert/strict";
import {
  type ClientConfig,
  defaultClientIdFile,
  noProxyMatches,
  parseClientArgs,
  parseServerUrl,
  type ProxySpec,
  resolveProxy,
} from "../../client/config.ts";

const TOKEN = "client-token-0123";
const FILES: Record<string, string> = {
  "mport.toml": `
server = "wss://vps.example.com/tunnel"
token = "file-token-4567"
pool = 2

[[tunnels]]
name = "adb"
local = "192.168.100.148:5555"
remote_port = 10005

[[tunnels]]
local = 22
type = "tcp"
`,
  "empty.toml": `server = "wss://vps.example.com"\n`,
  "ca.pem": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
};

function readFile(path: string): string {
  const text = FILES[path];
  if (text === undefined) throw new Deno.errors.NotFound(`no such file: ${path}`);
  return text;
}

/** readFile that also serves one extra TOML text as `t.toml`. */
const withToml = (toml: string) => (path: string) => path === "t.toml" ? toml : readFile(path);

function parse(
  args: string[],
  env: Record<string, string> = {},
  read: (path: string) => string = readFile,
): ClientConfig {
  const r = parseClientArgs(args, env, read);
  assert.equal(r.help, false);
  return (r as { config: ClientConfig }).config;
}

const BASE = ["--server", "vps.example.com", "--token", TOKEN];

Deno.test("client `tcp PORT` publishes 127.0.0.1:PORT with defaults", () => {
  const c = parse(["tcp", "5555", ...BASE]);
  assert.equal(c.server.href, "wss://vps.example.com/");
  assert.equal(c.pathPrefix, "/_mport");
  assert.equal(c.token.reveal(), TOKEN);
  assert.deepEqual(c.tunnels, [
    { name: "127.0.0.1-5555", localHost: "127.0.0.1", localPort: 5555, remotePort: 0, http: null },
  ]);
  assert.equal(c.pool, 1);
  assert.equal(c.caCert, null);
  assert.equal(c.proxy, null);
  assert.equal(c.logLevel, "info");
  assert.ok(c.backoffBaseMs > 0 && c.backoffCapMs >= c.backoffBaseMs);
});

const TCP_VALID: { args: string[]; want: Partial<ClientConfig> }[] = [
  {
    args: ["tcp", "192.168.100.148:5555", "--remote-port", "10005", "--name", "phone"],
    want: {
      tunnels: [{
        name: "phone",
        localHost: "192.168.100.148",
        localPort: 5555,
        remotePort: 10005,
        http: null,
      }],
    },
  },
  {
    args: ["tcp", "localhost:8080"],
    want: {
      tunnels: [{
        name: "localhost-8080",
        localHost: "localhost",
        localPort: 8080,
        remotePort: 0,
        http: null,
      }],
    },
  },
  {
    args: ["tcp", "[::1]:22", "--name", "ssh6"],
    want: {
      tunnels: [{ name: "ssh6", localHost: "::1", localPort: 22, remotePort: 0, http: null }],
    },
  },
  { args: ["tcp", "22", "--pool", "1"], want: { pool: 1 } },
  { args: ["tcp", "22", "--pool", "8"], want: { pool: 8 } },
  { args: ["tcp", "22", "--ca", "ca.pem"], want: { caCert: FILES["ca.pem"] } },
  { args: ["tcp", "22", "--log-level", "trace"], want: { logLevel: "trace" } },
  { args: ["tcp", "22"], want: { maxConnections: 256 } },
  { args: ["tcp", "22", "--max-connections", "1"], want: { maxConnections: 1 } },
  { args: ["tcp", "22", "--max-connections", "16384"], want: { maxConnections: 16384 } },
];

for (const c of TCP_VALID) {
  Deno.test(`client accepts ${c.args.join(" ")}`, () => {
    const got = parse([...c.args, ...BASE]);
    for (const [k, v] of Object.entries(c.want)) {
      assert.deepEqual(got[k as keyof ClientConfig], v, k);
    }
  });
}

Deno.test("client `start --config` reads server, token, pool and tunnels from TOML", () => {
  const c = parse(["start", "--config", "mport.toml"]);
  assert.equal(c.server.href, "wss://vps.example.com/");
  assert.equal(c.pathPrefix, "/tunnel");
  assert.equal(c.token.reveal(), "file-token-4567");
  assert.equal(c.pool, 2);
  assert.deepEqual(c.tunnels, [
    { name: "adb", localHost: "192.168.100.148", localPort: 5555, remotePort: 10005, http: null },
    { name: "127.0.0.1-22", localHost: "127.0.0.1", localPort: 22, remotePort: 0, http: null },
  ]);
});

Deno.test("client flags beat the environment, which beats the config file", () => {
  const env = { MPORT_SERVER: "ws://env-host:8080", MPORT_TOKEN: "env-token-89" };
  const fromFile = parse(["start", "-c", "mport.toml"]);
  assert.equal(fromFile.server.href, "wss://vps.example.com/");
  const fromEnv = parse(["start", "-c", "mport.toml"], env);
  assert.equal(fromEnv.server.href, "ws://env-host:8080/");
  assert.equal(fromEnv.pathPrefix, "/_mport");
  assert.equal(fromEnv.token.reveal(), "env-token-89");
  const fromFlags = parse([
    "start",
    "-c",
    "mport.toml",
    "--server",
    "https://flag-host",
    "--token",
    TOKEN,
    "--pool",
    "7",
  ], env);
  assert.equal(fromFlags.server.href, "wss://flag-host/");
  assert.equal(fromFlags.token.reveal(), TOKEN);
  assert.equal(fromFlags.pool, 7);
});

Deno.test("client takes max_connections from the config file and --max-connections over it", () => {
  const read = withToml("max_connections = 40\n[[tunnels]]\nlocal = 22");
  assert.equal(parse(["start", "-c", "t.toml", ...BASE], {}, read).maxConnections, 40);
  assert.equal(
    parse(["start", "-c", "t.toml", "--max-connections", "7", ...BASE], {}, read).maxConnections,
    7,
  );
});

Deno.test("client `tcp` with --config takes the tunnel from the command line only", () => {
  const c = parse(["tcp", "8080", "--config", "mport.toml"]);
  assert.deepEqual(c.tunnels.map((t) => t.name), ["127.0.0.1-8080"]);
  assert.equal(c.token.reveal(), "file-token-4567");
});

Deno.test("client asks for help with no command, `help` or --help, and for its version", () => {
  assert.deepEqual(parseClientArgs([], {}, readFile), { help: true });
  assert.deepEqual(parseClientArgs(["help"], {}, readFile), { help: true });
  assert.deepEqual(parseClientArgs(["tcp", "22", "-h"], {}, readFile), { help: true });
  assert.deepEqual(parseClientArgs(["--version"], {}, readFile), { help: false, version: true });
});

const SERVER_URLS: [string, string, string][] = [
  ["vps.example.com", "wss://vps.example.com/", "/_mport"],
  ["vps.example.com:8443", "wss://vps.example.com:8443/", "/_mport"],
  ["wss://vps.example.com", "wss://vps.example.com/", "/_mport"],
  ["wss://vps.example.com:443/", "wss://vps.example.com/", "/_mport"],
  ["ws://127.0.0.1:8080", "ws://127.0.0.1:8080/", "/_mport"],
  ["https://vps.example.com/tunnels/mport/", "wss://vps.example.com/", "/tunnels/mport"],
  ["http://[::1]:8080/x", "ws://[::1]:8080/", "/x"],
  ["wss://user:pw@vps.example.com/p?q=1#f", "wss://vps.example.com/", "/p"],
];

Deno.test("server URLs become a ws/wss origin and a path prefix", () => {
  for (const [input, origin, prefix] of SERVER_URLS) {
    const { server, pathPrefix } = parseServerUrl(input);
    assert.equal(server.href, origin, input);
    assert.equal(pathPrefix, prefix, input);
  }
});

const INVALID: { args: string[]; env?: Record<string, string>; toml?: string; message: string }[] =
  [
    {
      args: ["tcp", ...BASE],
      message: "usage: mport tcp [HOST:]PORT [--remote-port N] [--name NAME]",
    },
    {
      args: ["tcp", "22", "23", ...BASE],
      message: "usage: mport tcp [HOST:]PORT [--remote-port N] [--name NAME]",
    },
    { args: ["tcp", "0", ...BASE], message: 'invalid port "0": expected a number from 1 to 65535' },
    {
      args: ["tcp", "host", ...BASE],
      message: 'invalid address "host": expected HOST:PORT or PORT',
    },
    {
      args: ["tcp", "22", "--remote-port", "70000", ...BASE],
      message: 'invalid --remote-port "70000": expected a number from 1 to 65535',
    },
    {
      args: ["tcp", "22", "--name", "my phone", ...BASE],
      message: `invalid tunnel name "my phone": use 1-64 letters, digits, '.', '_' or '-'`,
    },
    {
      args: ["tcp", "22", "--token", TOKEN],
      message: "no server: pass --server wss://HOST, set MPORT_SERVER, or save one with " +
        "`mport login TOKEN --server URL`",
    },
    {
      args: ["tcp", "22", "--server", "vps.example.com"],
      message: "no token: pass --token-file FILE (or --token TOKEN), set MPORT_TOKEN, or save " +
        "one with `mport login TOKEN --server URL`",
    },
    {
      args: ["tcp", "22", "--server", "ftp://vps.example.com", "--token", TOKEN],
      message: 'invalid --server "ftp://vps.example.com": the scheme must be wss://, ws://, ' +
        "https:// or http://",
    },
    {
      args: ["tcp", "22", "--server", "wss://", "--token", TOKEN],
      message: 'invalid --server "wss://": expected wss://host[:port] or ws://host[:port]',
    },
    ...["9", "0", "two"].map((v) => ({
      args: ["tcp", "22", "--pool", v, ...BASE],
      message: `invalid --pool "${v}": expected a whole number from 1 to 8`,
    })),
    ...["0", "16385", "1e3", ""].map((v) => ({
      args: ["tcp", "22", "--max-connections", v, ...BASE],
      message: `invalid --max-connections "${v}": expected a whole number from 1 to 16384`,
    })),
    {
      args: ["start", "--config", "t.toml", ...BASE],
      toml: "max_connections = 2.5\n[[tunnels]]\nlocal = 22",
      message: 'invalid --max-connections "2.5": expected a whole number from 1 to 16384',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: 'max_connections = "9"',
      message: 't.toml:1: "max_connections" must be a number',
    },
    {
      args: ["tcp", "22", "--ca", "missing.pem", ...BASE],
      message: "no such file: missing.pem",
    },
    {
      args: ["tcp", "22", "--proxy", "socks5://proxy:1080", ...BASE],
      message: 'invalid proxy "socks5://proxy:1080": only http:// CONNECT proxies are supported',
    },
    {
      args: ["tcp", "22", "--proxy", "http://", ...BASE],
      message: 'invalid proxy "http://": expected http://[user:pass@]host:port',
    },
    { args: ["tcp", "22", "--bogus", ...BASE], message: "unknown flag --bogus" },
    {
      args: ["tcp", "22", "--remote-prot", "10005", ...BASE],
      message: "unknown flag --remote-prot: did you mean --remote-port?",
    },
    { args: ["tcp", "22", "--token"], message: "--token needs a value" },
    { args: ["start", ...BASE], message: "mport start needs --config FILE" },
    {
      args: ["start", "extra", "--config", "mport.toml"],
      message: 'unexpected argument "extra" for mport start',
    },
    {
      args: ["start", "--config", "mport.toml", "--name", "x"],
      message:
        "--remote-port and --name belong to `mport tcp`; set them per tunnel in the config file",
    },
    {
      args: ["start", "--config", "empty.toml", "--token", TOKEN],
      message: "empty.toml lists no [[tunnels]]",
    },
    {
      args: ["serve", ...BASE],
      message:
        'unknown command "serve": use "mport tcp PORT", "mport http PORT", "mport udp PORT", ' +
        '"mport socks", "mport vpn", ' +
        '"mport start --config FILE" or ' +
        '"mport login TOKEN --server URL"',
    },
    { args: ["start", "--config", "t.toml"], toml: "server = ", message: "cannot parse t.toml:1:" },
    {
      args: ["start", "--config", "t.toml"],
      toml: '# client\nserver = "wss://a"\n\ntoken = "abc\n',
      message: "cannot parse t.toml:4:",
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: '# client\nserver = "wss://a"\ntoken = "secret-1"\n  tokn = "x"',
      message: 't.toml:4: unknown key "tokn"',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml:
        'server = "wss://a"\n\n[[tunnels]]\nlocal = 22\n\n[[tunnels]]\nlocal = 23\nremote_port = "x"',
      message: 't.toml:8: invalid remote_port "x": expected a number from 1 to 65535',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: 'server = "wss://a"\n[[tunnels]]\nlocal = 22\n[[tunnels]]\nname = "b"',
      message: 't.toml:4: tunnels[1] needs local = "HOST:PORT"',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: 'servr = "x"',
      message: 't.toml:1: unknown key "servr"',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: "server = 5",
      message: 't.toml:1: "server" must be a string',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: 'pool = "4"',
      message: 't.toml:1: "pool" must be a number',
    },
    {
      args: ["start", "--config", "t.toml", ...BASE],
      toml: "pool = 99\n[[tunnels]]\nlocal = 22",
      message: 'invalid --pool "99": expected a whole number from 1 to 8',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: "tunnels = 5",
      message: 't.toml:1: "tunnels" must be an array of tables ([[tunnels]])',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: "tunnels = [1]",
      message: "t.toml:1: tunnels[0] must be a table",
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: "[[tunnels]]\nlocal = 22\nremote = 5",
      message: 't.toml:3: tunnels[0]: unknown key "remote"',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: '[[tunnels]]\nlocal = 22\n[[tunnels]]\nlocal = 53\ntype = "sctp"',
      message: 't.toml:5: tunnels[1]: type must be "tcp", "http" or "udp"',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: '[[tunnels]]\nname = "x"',
      message: 't.toml:1: tunnels[0] needs local = "HOST:PORT"',
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: "[[tunnels]]\nlocal = 22\nname = 7",
      message: "t.toml:3: tunnels[0]: name must be a string",
    },
    {
      args: ["start", "--config", "t.toml"],
      toml: "[[tunnels]]\nlocal = 22\nremote_port = 65536",
      message: 't.toml:3: invalid remote_port "65536": expected a number from 1 to 65535',
    },
    {
      args: ["start", "--config", "t.toml", ...BASE],
      toml: '[[tunnels]]\nlocal = 22\nname = "a"\n[[tunnels]]\nlocal = 23\nname = "a"',
      message: "tunnel names must be unique",
    },
  ];

for (const c of INVALID) {
  const label = c.toml ? `${c.args.join(" ")} with ${JSON.stringify(c.toml)}` : c.args.join(" ");
  Deno.test(`client rejects ${label}`, () => {
    const read = c.toml === undefined ? readFile : withToml(c.toml);
    assert.throws(() => parseClientArgs(c.args, c.env ?? {}, read), (e: unknown) => {
      assert.ok(e instanceof Error);
      if (c.message.endsWith(":")) assert.ok(e.message.startsWith(c.message), e.message);
      else assert.equal(e.message, c.message);
      return true;
    });
  });
}

/** A ProxySpec with the password revealed, for deepEqual. */
function plain(p: ProxySpec | null) {
  return p && { ...p, password: p.password?.reveal() ?? null };
}

const WSS = new URL("wss://vps.example.com");
const WS = new URL("ws://vps.example.com:8080");
const PROXY = {
  url: "http://proxy:3128",
  host: "proxy",
  port: 3128,
  username: null,
  password: null,
};

/** Every proxy variable set, upper and lower case. */
const EVERY_PROXY_VAR = {
  HTTP_PROXY: "http://proxy:3128",
  http_proxy: "http://proxy:3128",
  HTTPS_PROXY: "http://proxy:3128",
  https_proxy: "http://proxy:3128",
  ALL_PROXY: "http://proxy:3128",
  all_proxy: "http://proxy:3128",
};

const PROXIES: {
  name: string;
  flag?: string;
  server: URL;
  env: Record<string, string>;
  want: ReturnType<typeof plain>;
}[] = [
  { name: "no proxy anywhere", server: WSS, env: {}, want: null },
  {
    name: "--proxy with credentials",
    flag: "http://alice:p%40ss@proxy:3128",
    server: WSS,
    env: {},
    want: { ...PROXY, username: "alice", password: "p@ss" },
  },
  { name: "--proxy without a scheme", flag: "proxy:3128", server: WSS, env: {}, want: PROXY },
  {
    name: "--proxy without a port",
    flag: "http://proxy",
    server: WSS,
    env: {},
    want: { ...PROXY, url: "http://proxy:80", port: 80 },
  },
  {
    name: "--proxy with an IPv6 host",
    flag: "http://[::1]:3128",
    server: WSS,
    env: {},
    want: { ...PROXY, url: "http://[::1]:3128", host: "::1" },
  },
  {
    name: "--proxy none overrides the environment",
    flag: "none",
    server: WSS,
    env: { HTTPS_PROXY: "http://proxy:3128" },
    want: null,
  },
  {
    name: "--proxy none overrides HTTP_PROXY for ws",
    flag: "none",
    server: WS,
    env: { HTTP_PROXY: "http://proxy:3128", http_proxy: "http://proxy:3128" },
    want: null,
  },
  {
    name: "--proxy none overrides ALL_PROXY for ws",
    flag: "none",
    server: WS,
    env: { ALL_PROXY: "http://proxy:3128", all_proxy: "http://proxy:3128" },
    want: null,
  },
  {
    name: "--proxy none overrides ALL_PROXY for wss",
    flag: "none",
    server: WSS,
    env: { ALL_PROXY: "http://proxy:3128" },
    want: null,
  },
  {
    name: "--proxy none overrides every variable at once",
    flag: "none",
    server: WS,
    env: EVERY_PROXY_VAR,
    want: null,
  },
  {
    name: "--proxy NONE in capitals",
    flag: "NONE",
    server: WS,
    env: EVERY_PROXY_VAR,
    want: null,
  },
  {
    name: "--proxy ' None ' with spaces",
    flag: " None ",
    server: WSS,
    env: EVERY_PROXY_VAR,
    want: null,
  },
  { name: "--proxy '' (empty)", flag: "", server: WS, env: EVERY_PROXY_VAR, want: null },
  {
    name: "--proxy none with no environment",
    flag: "none",
    server: WSS,
    env: {},
    want: null,
  },
  {
    name: "HTTP_PROXY=none means no proxy for ws",
    server: WS,
    env: { HTTP_PROXY: "none", ALL_PROXY: "http://proxy:3128" },
    want: null,
  },
  {
    name: "https_proxy=NONE means no proxy for wss",
    server: WSS,
    env: { https_proxy: "NONE", ALL_PROXY: "http://proxy:3128" },
    want: null,
  },
  {
    name: "ALL_PROXY=none means no proxy",
    server: WS,
    env: { ALL_PROXY: "none" },
    want: null,
  },
  {
    name: "an empty HTTPS_PROXY switches the proxy off (ALL_PROXY is not consulted)",
    server: WSS,
    env: { HTTPS_PROXY: "", ALL_PROXY: "http://proxy:3128" },
    want: null,
  },
  {
    name: "--proxy beats HTTPS_PROXY and NO_PROXY",
    flag: "http://other:8080",
    server: WSS,
    env: { HTTPS_PROXY: "http://proxy:3128", NO_PROXY: "*" },
    want: { ...PROXY, url: "http://other:8080", host: "other", port: 8080 },
  },
  {
    name: "HTTPS_PROXY for wss",
    server: WSS,
    env: { HTTPS_PROXY: "http://proxy:3128" },
    want: PROXY,
  },
  {
    name: "https_proxy for wss",
    server: WSS,
    env: { https_proxy: "http://proxy:3128" },
    want: PROXY,
  },
  {
    name: "HTTP_PROXY is not used for wss",
    server: WSS,
    env: { HTTP_PROXY: "http://proxy:3128" },
    want: null,
  },
  { name: "HTTP_PROXY for ws", server: WS, env: { HTTP_PROXY: "http://proxy:3128" }, want: PROXY },
  {
    name: "HTTPS_PROXY is not used for ws",
    server: WS,
    env: { HTTPS_PROXY: "http://proxy:3128" },
    want: null,
  },
  {
    name: "ALL_PROXY as a fallback",
    server: WS,
    env: { ALL_PROXY: "http://proxy:3128" },
    want: PROXY,
  },
  {
    name: "NO_PROXY with the server's domain",
    server: WSS,
    env: { HTTPS_PROXY: "http://proxy:3128", NO_PROXY: "localhost,example.com" },
    want: null,
  },
  {
    name: "no_proxy with the server's host and port",
    server: WS,
    env: { HTTP_PROXY: "http://proxy:3128", no_proxy: "vps.example.com:8080" },
    want: null,
  },
  {
    name: "NO_PROXY for another port",
    server: WS,
    env: { HTTP_PROXY: "http://proxy:3128", NO_PROXY: "vps.example.com:443" },
    want: PROXY,
  },
  {
    name: "NO_PROXY for another domain",
    server: WSS,
    env: { HTTPS_PROXY: "http://proxy:3128", NO_PROXY: "internal.corp" },
    want: PROXY,
  },
];

for (const c of PROXIES) {
  Deno.test(`proxy resolution: ${c.name}`, () => {
    assert.deepEqual(plain(resolveProxy(c.flag, c.server, c.env)), c.want);
  });
}

Deno.test("client config takes the proxy from the environment it is given", () => {
  const c = parse(["tcp", "22", ...BASE], { HTTPS_PROXY: "http://proxy:3128" });
  assert.deepEqual(plain(c.proxy), PROXY);
});

/** `proxy` in the TOML file (none: no key), `--proxy` (none: no flag), environment → expected. */
const PROXY_SOURCES: {
  toml?: string;
  flag?: string;
  server: string;
  env: Record<string, string>;
  want: string | null;
}[] = [
  { toml: "none", server: "ws://vps.example.com:8080", env: EVERY_PROXY_VAR, want: null },
  { toml: "None", server: "wss://vps.example.com", env: EVERY_PROXY_VAR, want: null },
  {
    toml: "none",
    server: "ws://vps.example.com:8080",
    env: { ALL_PROXY: "http://proxy:3128" },
    want: null,
  },
  {
    toml: "http://file-proxy:8080",
    flag: "none",
    server: "wss://vps.example.com",
    env: EVERY_PROXY_VAR,
    want: null,
  },
  {
    toml: "none",
    flag: "http://flag-proxy:1",
    server: "ws://vps.example.com:8080",
    env: EVERY_PROXY_VAR,
    want: "http://flag-proxy:1",
  },
  {
    toml: "http://file-proxy:8080",
    server: "ws://vps.example.com:8080",
    env: EVERY_PROXY_VAR,
    want: "http://file-proxy:8080",
  },
  { flag: "none", server: "ws://vps.example.com:8080", env: EVERY_PROXY_VAR, want: null },
  {
    server: "ws://vps.example.com:8080",
    env: { ALL_PROXY: "http://proxy:3128" },
    want: "http://proxy:3128",
  },
];

for (const c of PROXY_SOURCES) {
  const label = `file ${c.toml ?? "-"}, flag ${c.flag ?? "-"}, ${c.server}, env ${
    Object.keys(c.env).join(",") || "-"
  }`;
  Deno.test(`client proxy from every source: ${label} → ${c.want ?? "direct"}`, () => {
    const toml = (c.toml === undefined ? "" : `proxy = "${c.toml}"\n`) +
      "[[tunnels]]\nlocal = 22\n";
    const args = [
      "start",
      "--config",
      "t.toml",
      "--server",
      c.server,
      "--token",
      TOKEN,
      ...(c.flag === undefined ? [] : ["--proxy", c.flag]),
    ];
    assert.equal(parse(args, c.env, withToml(toml)).proxy?.url ?? null, c.want);
  });
}

const NO_PROXY: [string, string, number, boolean][] = [
  ["*", "anything.example", 443, true],
  ["", "vps.example.com", 443, false],
  ["example.com", "example.com", 443, true],
  ["example.com", "vps.example.com", 443, true],
  ["example.com", "badexample.com", 443, false],
  [".example.com", "vps.example.com", 443, true],
  ["*.example.com", "a.b.example.com", 443, true],
  ["EXAMPLE.com", "Vps.Example.COM", 443, true],
  [" other.org , , example.com ", "vps.example.com", 443, true],
  ["example.com:443", "vps.example.com", 443, true],
  ["example.com:443", "vps.example.com", 8443, false],
  ["127.0.0.1", "127.0.0.1", 80, true],
  ["127.0.0.1", "127.0.0.10", 80, false],
  ["::1", "::1", 80, true],
  ["localhost", "localhost.evil.com", 80, false],
];

Deno.test("noProxyMatches follows the usual NO_PROXY conventions", () => {
  for (const [list, host, port, want] of NO_PROXY) {
    assert.equal(
      noProxyMatches(list, host, port),
      want,
      `${JSON.stringify(list)} vs ${host}:${port}`,
    );
  }
});

Deno.test("client config never prints its token or proxy password", () => {
  const c = parse([
    "tcp",
    "22",
    "--server",
    "wss://vps.example.com",
    "--token",
    TOKEN,
    "--proxy",
    "http://alice:hunter2-secret@proxy:3128",
  ]);
  assert.equal(c.proxy?.password?.reveal(), "hunter2-secret");
  for (const text of [JSON.stringify(c), Deno.inspect(c, { depth: 10 }), c.proxy?.url ?? ""]) {
    assert.ok(!text.includes(TOKEN), `token appears in ${text}`);
    assert.ok(!text.includes("hunter2"), `proxy password appears in ${text}`);
  }
  assert.ok(JSON.stringify(c).includes('"token":"***"'));
});

Deno.test("an IPv6 local address gets a tunnel name that starts with a letter", () => {
  const parsed = parseClientArgs(
    ["tcp", "[::1]:22", "--server", "ws://h", "--token", "t"],
    {},
    () => "",
  );
  if (parsed.help || parsed.version || parsed.login) throw new Error("unexpected help");
  assert.equal(parsed.config.tunnels[0]!.name, "ip6__1-22");
});

Deno.test("NO_PROXY entries in brackets match IPv6 servers, with or without a port", () => {
  assert.equal(noProxyMatches("[::1]", "::1", 80), true);
  assert.equal(noProxyMatches("[::1]:443", "::1", 443), true);
  assert.equal(noProxyMatches("[::1]:443", "::1", 80), false);
  assert.equal(noProxyMatches("[::2]", "::1", 80), false);
});

Deno.test("the client id file is --client-id-file, else in the user's config directory", () => {
  const cases: {
    env: Record<string, string>;
    os: typeof Deno.build.os;
    want: string | null;
  }[] = [
    { env: { HOME: "/home/alice" }, os: "linux", want: "/home/alice/.config/mport/client-id" },
    { env: { HOME: "/Users/alice/" }, os: "darwin", want: "/Users/alice/.config/mport/client-id" },
    {
      env: { HOME: "/home/alice", XDG_CONFIG_HOME: "/srv/cfg/" },
      os: "linux",
      want: "/srv/cfg/mport/client-id",
    },
    // A relative XDG_CONFIG_HOME is invalid by the spec and ignored.
    {
      env: { HOME: "/home/alice", XDG_CONFIG_HOME: "cfg" },
      os: "linux",
      want: "/home/alice/.config/mport/client-id",
    },
    {
      env: { APPDATA: "C:\\Users\\alice\\AppData\\Roaming", HOME: "/ignored" },
      os: "windows",
      want: "C:\\Users\\alice\\AppData\\Roaming\\mport\\client-id",
    },
    {
      env: { USERPROFILE: "C:\\Users\\bob" },
      os: "windows",
      want: "C:\\Users\\bob\\AppData\\Roaming\\mport\\client-id",
    },
    { env: {}, os: "linux", want: null },
    { env: {}, os: "windows", want: null },
  ];
  for (const c of cases) {
    assert.equal(defaultClientIdFile(c.env, c.os), c.want, JSON.stringify(c));
  }
  const flag = parse(["tcp", "22", ...BASE, "--client-id-file", "/tmp/id"], { HOME: "/home/a" });
  assert.equal(flag.clientIdFile, "/tmp/id");
  assert.equal(
    parse(["tcp", "22", ...BASE], { HOME: "/home/a" }).clientIdFile,
    Deno.build.os === "windows" ? null : "/home/a/.config/mport/client-id",
  );
});

// Tokens off the command line: --token-file, `mport login` and its saved file, precedence, and
// the warning for a token about to travel in clear text.

const HOME = "/home/alice";
const LOGIN_PATH = `${HOME}/.config/mport/config.toml`;
const LOGIN_TOML = 'server = "ws://127.0.0.1:8080"\ntoken = "saved-token-0001"\n';
const TOKEN_FILES: Record<string, string> = {
  "tok.txt": "\n  file-flag-token-1  \r\nsecond-line\n",
  "empty.txt": "\n  \n",
};

/** readFile over FILES, the token files, `t.toml` and (when given) the saved login. */
function tokenSources(login?: string, toml?: string, loginPath = LOGIN_PATH) {
  return (path: string): string => {
    if (path === loginPath && login !== undefined) return login;
    if (path === "t.toml" && toml !== undefined) return toml;
    return TOKEN_FILES[path] ?? readFile(path);
  };
}

const TOKEN_PRECEDENCE: {
  name: string;
  args: string[];
  env?: Record<string, string>;
  toml?: string;
  login?: string;
  want: { server: string; token: string };
}[] = [
  {
    name: "--token beats MPORT_TOKEN, --config and the saved login",
    args: ["--server", "ws://127.0.0.1:8080", "--token", "flag-token-01", "-c", "t.toml"],
    env: { MPORT_TOKEN: "env-token-01" },
    toml: 'token = "toml-token-01"',
    login: LOGIN_TOML,
    want: { server: "ws://127.0.0.1:8080/", token: "flag-token-01" },
  },
  {
    name: "--token-file (its first non-empty line) beats MPORT_TOKEN",
    args: ["--server", "ws://127.0.0.1:8080", "--token-file", "tok.txt"],
    env: { MPORT_TOKEN: "env-token-01" },
    login: LOGIN_TOML,
    want: { server: "ws://127.0.0.1:8080/", token: "file-flag-token-1" },
  },
  {
    name: "MPORT_TOKEN beats --config and the saved login",
    args: ["-c", "t.toml"],
    env: { MPORT_TOKEN: "env-token-01" },
    toml: 'server = "ws://127.0.0.1:8080"\ntoken = "toml-token-01"',
    login: LOGIN_TOML,
    want: { server: "ws://127.0.0.1:8080/", token: "env-token-01" },
  },
  {
    name: "--config beats the saved login",
    args: ["-c", "t.toml"],
    toml: 'server = "wss://toml.example.com"\ntoken = "toml-token-01"',
    login: LOGIN_TOML,
    want: { server: "wss://toml.example.com/", token: "toml-token-01" },
  },
  {
    name: "the saved login alone gives server and token",
    args: [],
    login: LOGIN_TOML,
    want: { server: "ws://127.0.0.1:8080/", token: "saved-token-0001" },
  },
  {
    name: "the saved token goes to its server however --server spells it",
    args: ["--server", "http://127.0.0.1:8080/_mport/"],
    login: LOGIN_TOML,
    want: { server: "ws://127.0.0.1:8080/", token: "saved-token-0001" },
  },
  {
    name: "MPORT_SERVER naming the saved server takes the saved token",
    args: [],
    env: { MPORT_SERVER: "ws://127.0.0.1:8080" },
    login: LOGIN_TOML,
    want: { server: "ws://127.0.0.1:8080/", token: "saved-token-0001" },
  },
  {
    name: "a flag token with the saved server",
    args: ["--token", "flag-token-01"],
    login: LOGIN_TOML,
    want: { server: "ws://127.0.0.1:8080/", token: "flag-token-01" },
  },
];

for (const c of TOKEN_PRECEDENCE) {
  Deno.test(`client token precedence: ${c.name}`, () => {
    const r = parseClientArgs(
      ["tcp", "22", ...c.args],
      { HOME, ...c.env },
      tokenSources(c.login, c.toml),
      () => 0o600,
      "linux",
    );
    if (r.help || r.version || r.login) throw new Error("expected a config");
    assert.equal(r.config.server.href, c.want.server);
    assert.equal(r.config.token.reveal(), c.want.token);
  });
}

Deno.test("client reads the saved login from $XDG_CONFIG_HOME/mport/config.toml when set", () => {
  const read = tokenSources(LOGIN_TOML, undefined, "/cfg/mport/config.toml");
  const c = parse(["tcp", "22"], { HOME, XDG_CONFIG_HOME: "/cfg" }, read);
  assert.equal(c.token.reveal(), "saved-token-0001");
  // With flags for both, the saved login is not even read: a broken one does not matter.
  const broken = tokenSources("server = ", undefined);
  assert.equal(parse(["tcp", "22", ...BASE], { HOME }, broken).token.reveal(), TOKEN);
});

const TOKEN_INVALID: {
  args: string[];
  env?: Record<string, string>;
  login?: string;
  message: string;
}[] = [
  {
    args: ["tcp", "22", "--server", "wss://other.example.com"],
    login: LOGIN_TOML,
    message: "no token for wss://other.example.com (the saved login is for " +
      "ws://127.0.0.1:8080): pass --token-file FILE, set MPORT_TOKEN, or run " +
      "`mport login TOKEN --server URL`",
  },
  {
    args: ["tcp", "22", ...BASE, "--token-file", "tok.txt"],
    message: "--token and --token-file both give the token: pass one of them",
  },
  {
    args: ["tcp", "22", "--server", "h", "--token-file", "empty.txt"],
    message: "the token file empty.txt is empty",
  },
  {
    args: ["tcp", "22", "--server", "h", "--token-file", "missing.txt"],
    message: "cannot read the token file missing.txt: no such file: missing.txt",
  },
  {
    args: ["tcp", "22"],
    login: 'server = "ws://h"\ntoken = "t"\nuser = "x"',
    message: `${LOGIN_PATH}: unknown key "user" (run \`mport login TOKEN --server URL\` again ` +
      "to rewrite it)",
  },
  {
    args: ["tcp", "22"],
    login: 'server = "ws://h"',
    message: `${LOGIN_PATH}: "token" must be a string (run \`mport login TOKEN --server URL\` ` +
      "again to rewrite it)",
  },
  {
    args: ["login", "mp_abc"],
    message: "mport login needs --server URL: the server TOKEN is for",
  },
  { args: ["login", "--server", "h"], message: "usage: mport login TOKEN --server URL" },
  {
    args: ["login", "mp_a", "mp_b", "--server", "h"],
    message: "usage: mport login TOKEN --server URL (or --token-file FILE for TOKEN)",
  },
  {
    args: ["login", "mp_abc", "--server", "h"],
    env: { HOME: "" },
    message:
      "cannot tell where to save the login: set HOME (XDG_CONFIG_HOME, or APPDATA on Windows)",
  },
  {
    args: ["login", "mp_abc", "--server", "ftp://h"],
    message: 'invalid --server "ftp://h": the scheme must be wss://, ws://, https:// or http://',
  },
];

for (const c of TOKEN_INVALID) {
  Deno.test(`client rejects ${c.args.join(" ")}${c.login ? " with a saved login" : ""}`, () => {
    assert.throws(
      () => parseClientArgs(c.args, { HOME, ...c.env }, tokenSources(c.login), () => null, "linux"),
      (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.equal(e.message, c.message);
        return true;
      },
    );
  });
}

const LOGINS: {
  args: string[];
  env?: Record<string, string>;
  os?: typeof Deno.build.os;
  want: { file: string; server: string; token: string };
}[] = [
  {
    args: ["login", "mp_abc", "--server", "vps.example.com"],
    want: { file: LOGIN_PATH, server: "wss://vps.example.com", token: "mp_abc" },
  },
  {
    args: ["login", "--token-file", "tok.txt", "--server", "https://vps.example.com:8443/t/"],
    want: { file: LOGIN_PATH, server: "wss://vps.example.com:8443/t", token: "file-flag-token-1" },
  },
  {
    args: ["login", "mp_abc"],
    env: { MPORT_SERVER: "ws://127.0.0.1:8080/_mport", XDG_CONFIG_HOME: "/cfg" },
    want: { file: "/cfg/mport/config.toml", server: "ws://127.0.0.1:8080", token: "mp_abc" },
  },
  {
    args: ["login", "mp_abc", "--server", "wss://vps"],
    env: { APPDATA: "C:\\Users\\alice\\AppData\\Roaming" },
    os: "windows",
    want: {
      file: "C:\\Users\\alice\\AppData\\Roaming\\mport\\config.toml",
      server: "wss://vps",
      token: "mp_abc",
    },
  },
];

for (const c of LOGINS) {
  Deno.test(`client ${c.args.join(" ")} saves the login to ${c.want.file}`, () => {
    const r = parseClientArgs(c.args, { HOME, ...c.env }, tokenSources(), () => 0o600, c.os);
    if (!("login" in r) || !r.login) throw new Error("expected a login");
    assert.equal(r.login.file, c.want.file);
    assert.equal(r.login.login.server, c.want.server);
    assert.equal(r.login.login.token.reveal(), c.want.token);
    assert.doesNotMatch(JSON.stringify(r) + Deno.inspect(r, { depth: 9 }), /mp_abc|file-flag/);
  });
}

const WARNINGS: { args: string[]; mode: number | null; want: string[] }[] = [
  {
    args: ["--server", "ws://vps.example.com:8080", "--token", TOKEN],
    mode: null,
    want: [
      "the token travels unencrypted to vps.example.com over ws://; use wss:// (TLS) for " +
      "anything but a trusted network",
    ],
  },
  { args: ["--server", "ws://127.0.0.1:8080", "--token", TOKEN], mode: null, want: [] },
  { args: ["--server", "ws://127.8.9.10", "--token", TOKEN], mode: null, want: [] },
  { args: ["--server", "ws://localhost:8080", "--token", TOKEN], mode: null, want: [] },
  { args: ["--server", "ws://[::1]:8080", "--token", TOKEN], mode: null, want: [] },
  { args: ["--server", "wss://vps.example.com", "--token", TOKEN], mode: null, want: [] },
  { args: ["--server", "wss://vps", "--token-file", "tok.txt"], mode: 0o100600, want: [] },
  { args: ["--server", "wss://vps", "--token-file", "tok.txt"], mode: 0o100400, want: [] },
  {
    args: ["--server", "wss://vps", "--token-file", "tok.txt"],
    mode: 0o100644,
    want: ["the token file tok.txt is readable by other users (mode 0644): run chmod 600 tok.txt"],
  },
  {
    args: ["--server", "wss://vps", "--token-file", "tok.txt"],
    mode: 0o100640,
    want: ["the token file tok.txt is readable by other users (mode 0640): run chmod 600 tok.txt"],
  },
  { args: ["--server", "wss://vps", "--token-file", "tok.txt"], mode: null, want: [] },
];

for (const c of WARNINGS) {
  const label = `${c.args.join(" ")}${c.mode === null ? "" : ` (mode ${c.mode.toString(8)})`}`;
  Deno.test(`client warns ${c.want.length === 0 ? "nothing" : "once"} for ${label}`, () => {
    const r = parseClientArgs(["tcp", "22", ...c.args], {}, tokenSources(), () => c.mode, "linux");
    if (r.help || r.version || r.login) throw new Error("expected a config");
    assert.deepEqual(r.warnings, c.want);
  });
}

/** The HTTP tunnel of a parsed command line, as plain data. */
function httpOf(c: ClientConfig, i = 0) {
  const t = c.tunnels[i]!;
  assert.ok(t.http, `tunnel ${t.name} is not an HTTP tunnel`);
  return { name: t.name, localHost: t.localHost, localPort: t.localPort, http: t.http };
}

const HTTP_VALID: {
  args: string[];
  toml?: string;
  want: {
    name: string;
    target: string;
    subdomain?: string | null;
    domain?: string | null;
    check?: (h: NonNullable<ClientConfig["tunnels"][number]["http"]>) => unknown;
  };
}[] = [
  { args: ["http", "3000"], want: { name: "http-3000", target: "http://127.0.0.1:3000" } },
  {
    args: ["http", "localhost:8080"],
    want: { name: "http-8080", target: "http://localhost:8080" },
  },
  {
    args: ["http", "https://host:8443"],
    want: { name: "http-8443", target: "https://host:8443" },
  },
  {
    args: ["http", "3000", "--subdomain", "App"],
    want: { name: "app", target: "http://127.0.0.1:3000", subdomain: "app" },
  },
  {
    args: ["http", "3000", "--subdomain", "app", "--name", "web"],
    want: { name: "web", target: "http://127.0.0.1:3000", subdomain: "app" },
  },
  {
    args: ["http", "3000", "--domain", "app.example.com"],
    want: { name: "http-3000", target: "http://127.0.0.1:3000", domain: "app.example.com" },
  },
  {
    args: [
      "http",
      "https://127.0.0.1:8443",
      "--subdomain",
      "app",
      "--host-header",
      "preserve",
      "--basic-auth",
      "ann:pw",
      "--basic-auth",
      "bob:pw2",
      "--allow-ip",
      "10.0.0.0/8",
      "--deny-ip",
      "10.1.0.0/16",
      "--request-header-add",
      "X-Env: staging",
      "--request-header-remove",
      "X-Secret",
      "--response-header-add",
      "X-Served-By: mport",
      "--security-headers",
      "--max-body",
      "5MB",
      "--local-insecure",
    ],
    want: {
      name: "app",
      target: "https://127.0.0.1:8443",
      check: (h) => {
        assert.deepEqual(h.rules.hostHeader, { kind: "preserve" });
        assert.deepEqual(h.rules.basicAuth, [
          { user: "ann", password: "pw" },
          { user: "bob", password: "pw2" },
        ]);
        assert.equal(h.rules.ipRules?.allows("10.2.0.1"), true);
        assert.equal(h.rules.ipRules?.allows("10.1.0.1"), false);
        assert.deepEqual(h.rules.requestHeaderAdd, [["x-env", "staging"]]);
        assert.deepEqual(h.rules.requestHeaderRemove, ["x-secret"]);
        assert.deepEqual(h.rules.responseHeaderAdd, [["x-served-by", "mport"]]);
        assert.equal(h.rules.securityHeaders, true);
        assert.equal(h.rules.maxBodyBytes, 5_000_000);
        assert.equal(h.target.insecure, true);
        return true;
      },
    },
  },
  {
    args: ["start", "--config", "t.toml"],
    toml: `[[tunnels]]
type = "http"
local = "https://127.0.0.1:8443"
subdomain = "app"
host_header = "myapp.local:8080"
basic_auth = ["ann:pw", "bob:pw2"]
allow_ip = "10.0.0.0/8"
deny_ip = ["10.1.0.0/16"]
request_header_add = ["X-Env: staging"]
request_header_remove = "X-Secret"
response_header_add = ["X-Served-By: mport"]
security_headers = true
max_body = 2048
local_insecure = true
`,
    want: {
      name: "app",
      target: "https://127.0.0.1:8443",
      subdomain: "app",
      check: (h) => {
        assert.deepEqual(h.rules.hostHeader, { kind: "value", value: "myapp.local:8080" });
        assert.equal(h.rules.basicAuth.length, 2);
        assert.equal(h.rules.ipRules?.allows("10.2.0.1"), true);
        assert.equal(h.rules.ipRules?.allows("10.1.0.1"), false);
        assert.deepEqual(h.rules.requestHeaderAdd, [["x-env", "staging"]]);
        assert.deepEqual(h.rules.requestHeaderRemove, ["x-secret"]);
        assert.deepEqual(h.rules.responseHeaderAdd, [["x-served-by", "mport"]]);
        assert.equal(h.rules.securityHeaders, true);
        assert.equal(h.rules.maxBodyBytes, 2048);
        assert.equal(h.target.insecure, true);
        return true;
      },
    },
  },
  {
    args: ["start", "--config", "t.toml"],
    toml: '[[tunnels]]\ntype = "http"\nlocal = 5173\nmax_body = "1MiB"\n',
    want: {
      name: "http-5173",
      target: "http://127.0.0.1:5173",
      subdomain: null,
      check: (h) => h.rules.maxBodyBytes === 1_048_576 && h.rules.hostHeader.kind === "rewrite",
    },
  },
];

for (const c of HTTP_VALID) {
  const label = c.toml ? `${c.args.join(" ")} with ${JSON.stringify(c.toml)}` : c.args.join(" ");
  Deno.test(`client accepts the HTTP tunnel ${label}`, () => {
    const config = parse([...c.args, ...BASE], {}, c.toml ? withToml(c.toml) : readFile);
    const t = httpOf(config);
    assert.equal(t.name, c.want.name);
    const { scheme, host, port } = t.http.target;
    assert.equal(`${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`, c.want.target);
    assert.equal(t.localHost, host);
    assert.equal(t.localPort, port);
    if (c.want.subdomain !== undefined) assert.equal(t.http.subdomain, c.want.subdomain);
    if (c.want.domain !== undefined) assert.equal(t.http.domain, c.want.domain);
    if (c.want.check) assert.ok(c.want.check(t.http));
  });
}

Deno.test("a config file mixes tcp and http tunnels", () => {
  const toml = '[[tunnels]]\nlocal = 22\n[[tunnels]]\ntype = "http"\nlocal = 3000\n' +
    'subdomain = "web"\n';
  const c = parse(["start", "--config", "t.toml", ...BASE], {}, withToml(toml));
  assert.equal(c.tunnels[0]!.http, null);
  assert.equal(c.tunnels[1]!.name, "web");
  assert.equal(c.tunnels[1]!.http?.subdomain, "web");
});

const INSPECT: { args: string[]; toml?: string; want: { host: string; port: number } | null }[] = [
  { args: ["http", "3000"], want: { host: "127.0.0.1", port: 4040 } },
  {
    args: ["http", "3000", "--inspect", "127.0.0.1:5050"],
    want: { host: "127.0.0.1", port: 5050 },
  },
  { args: ["http", "3000", "--inspect", "6060"], want: { host: "127.0.0.1", port: 6060 } },
  { args: ["http", "3000", "--no-inspect"], want: null },
  {
    args: ["http", "3000", "--config", "t.toml"],
    toml: "inspect = false\n",
    want: null,
  },
  {
    args: ["http", "3000", "--config", "t.toml"],
    toml: 'inspect = "127.0.0.1:7070"\n',
    want: { host: "127.0.0.1", port: 7070 },
  },
  {
    args: ["http", "3000", "--config", "t.toml", "--inspect", "127.0.0.1:5050"],
    toml: "inspect = false\n",
    want: { host: "127.0.0.1", port: 5050 },
  },
  {
    args: ["http", "3000", "--config", "t.toml", "--no-inspect"],
    toml: 'inspect = "127.0.0.1:7070"\n',
    want: null,
  },
];

for (const c of INSPECT) {
  const label = c.toml ? `${c.args.join(" ")} with ${JSON.stringify(c.toml)}` : c.args.join(" ");
  Deno.test(`client inspector for ${label}: ${c.want ? `${c.want.host}:${c.want.port}` : "off"}`, () => {
    const config = parse([...c.args, ...BASE], {}, c.toml ? withToml(c.toml) : readFile);
    assert.deepEqual(config.inspect, c.want);
  });
}

const HTTP_INVALID: { args: string[]; toml?: string; message: string }[] = [
  {
    args: ["http"],
    message: "usage: mport http [HOST:]PORT|URL [--subdomain NAME | --domain HOST] [--name NAME]",
  },
  {
    args: ["http", "3000", "4000"],
    message: "usage: mport http [HOST:]PORT|URL [--subdomain NAME | --domain HOST] [--name NAME]",
  },
  {
    args: ["http", "3000", "--remote-port", "9000"],
    message: "--remote-port belongs to `mport tcp`",
  },
  {
    args: ["http", "3000", "--local-insecure"],
    message: "--local-insecure is for https:// local services",
  },
  {
    args: ["http", "3000", "--subdomain=-x"],
    message: `invalid --subdomain "-x": use 1-63 letters, digits and '-' (not at either end)`,
  },
  {
    args: ["http", "3000", "--max-body", "big"],
    message: 'invalid --max-body "big": invalid size "big": use a number with B, KB, MB, GB, TB ' +
      "(or KiB, MiB, GiB, TiB)",
  },
  {
    args: ["http", "3000", "--inspect", "x:1", "--no-inspect"],
    message: "--inspect and --no-inspect contradict",
  },
  ...[
    ["--subdomain", "app"],
    ["--domain", "app.example.com"],
    ["--host-header", "preserve"],
    ["--basic-auth", "u:p"],
    ["--allow-ip", "10.0.0.0/8"],
    ["--deny-ip", "10.0.0.0/8"],
    ["--request-header-add", "X-A: b"],
    ["--request-header-remove", "X-A"],
    ["--response-header-add", "X-A: b"],
    ["--security-headers"],
    ["--max-body", "1MB"],
    ["--local-insecure"],
  ].map((flag) => ({
    args: ["tcp", "22", ...flag],
    message: `${flag[0]} belongs to \`mport http\``,
  })),
  {
    args: ["start", "--config", "t.toml", "--subdomain", "app"],
    toml: "[[tunnels]]\nlocal = 22\n",
    message: "--subdomain belongs to `mport http`; set it per tunnel in the config file",
  },
  ...Object.entries({
    subdomain: 'subdomain = "app"',
    host_header: 'host_header = "preserve"',
    basic_auth: 'basic_auth = ["u:p"]',
    allow_ip: 'allow_ip = "10.0.0.0/8"',
    security_headers: "security_headers = true",
    max_body: 'max_body = "1MB"',
    local_insecure: "local_insecure = true",
  }).map(([key, line]) => ({
    args: ["start", "--config", "t.toml"],
    toml: `[[tunnels]]\nlocal = 22\n${line}\n`,
    message: `t.toml:3: tunnels[0]: "${key}" needs type = "http"`,
  })),
  {
    args: ["start", "--config", "t.toml"],
    toml: '[[tunnels]]\ntype = "http"\nlocal = 3000\nremote_port = 9000\n',
    message: 't.toml:4: tunnels[0]: unknown key "remote_port"',
  },
  ...[
    ["subdomain", "subdomain = 5"],
    ["domain", "domain = true"],
    ["host_header", "host_header = 1"],
    ["basic_auth", "basic_auth = [1]"],
    ["allow_ip", "allow_ip = 10"],
    ["deny_ip", "deny_ip = [true]"],
    ["request_header_add", 'request_header_add = { a = "b" }'],
    ["request_header_remove", "request_header_remove = false"],
    ["response_header_add", "response_header_add = 3"],
    ["security_headers", 'security_headers = "yes"'],
    ["max_body", "max_body = true"],
    ["local_insecure", "local_insecure = 1"],
  ].map(([key, line]) => ({
    args: ["start", "--config", "t.toml"],
    toml: `[[tunnels]]\ntype = "http"\nlocal = 3000\n${line}\n`,
    message: `t.toml:4: tunnels[0]: "${key}" has the wrong type`,
  })),
  {
    args: ["start", "--config", "t.toml"],
    toml: '[[tunnels]]\ntype = "http"\nlocal = 3000\nallow_ip = ["10.0.0.0/99"]\n',
    message: 't.toml:4: tunnels[0]: invalid --allow-ip: invalid CIDR "10.0.0.0/99": prefix ' +
      "length 99 is more than 32 for IPv4",
  },
  {
    args: ["start", "--config", "t.toml"],
    toml: '[[tunnels]]\ntype = "http"\nlocal = "http://h/x"\nsubdomain = "a"\n',
    message: 't.toml:3: tunnels[0]: invalid local URL "http://h/x": give no path (requests ' +
      "keep the path visitors ask for)",
  },
  {
    args: ["start", "--config", "t.toml"],
    toml: '[[tunnels]]\ntype = "http"\nlocal = 3000\nmax_body = "huge"\n',
    message: 't.toml:4: tunnels[0]: invalid --max-body "huge": invalid size "huge": use a number ' +
      "with B, KB, MB, GB, TB (or KiB, MiB, GiB, TiB)",
  },
  {
    args: ["start", "--config", "t.toml"],
    toml: 'inspect = 4040\n[[tunnels]]\ntype = "http"\nlocal = 3000\n',
    message: 't.toml:1: "inspect" must be "HOST:PORT" or false',
  },
  {
    args: ["start", "--config", "t.toml"],
    toml: 'inspect = true\n[[tunnels]]\ntype = "http"\nlocal = 3000\n',
    message: 't.toml:1: "inspect" must be "HOST:PORT" or false',
  },
];

for (const c of HTTP_INVALID) {
  const label = c.toml ? `${c.args.join(" ")} with ${JSON.stringify(c.toml)}` : c.args.join(" ");
  Deno.test(`client refuses the HTTP tunnel ${label}`, () => {
    const read = c.toml === undefined ? readFile : withToml(c.toml);
    assert.throws(() => parseClientArgs([...c.args, ...BASE], {}, read), (e: unknown) => {
      assert.ok(e instanceof TypeError, String(e));
      assert.equal(e.message, c.message);
      return true;
    });
  });
}

Deno.test("client `udp PORT` publishes a local UDP service, named udp-PORT unless named", () => {
  const c = parse(["udp", "53", ...BASE]);
  assert.deepEqual(c.tunnels, [{
    name: "udp-53",
    localHost: "127.0.0.1",
    localPort: 53,
    remotePort: 0,
    http: null,
    udp: true,
  }]);
  const named = parse(["udp", "10.0.0.2:51820", "--remote-port", "10007", "--name", "wg", ...BASE]);
  assert.deepEqual(
    named.tunnels.map((t) => [t.name, t.localHost, t.localPort, t.remotePort, t.udp]),
    [
      ["wg", "10.0.0.2", 51820, 10007, true],
    ],
  );
});

Deno.test('client config file: a [[tunnels]] table with type = "udp"', () => {
  const c = parse(
    ["start", "--config", "t.toml"],
    {},
    withToml(
      'server = "wss://vps.example.com"\ntoken = "client-token-0123"\n[[tunnels]]\ntype = "udp"\nlocal = "53"\nname = "dns"\nremote_port = 10053',
    ),
  );
  assert.deepEqual(c.tunnels.map((t) => [t.name, t.localPort, t.remotePort, t.udp]), [
    ["dns", 53, 10053, true],
  ]);
});

Deno.test("client `vpn` routes everything by default, takes the server's DNS and no kill switch", () => {
  const c = parse(["vpn", ...BASE, "--client-id-file", "/etc/mport/client-id"]);
  assert.deepEqual(c.vpn, {
    routes: "default",
    dns: null,
    killSwitch: false,
    device: "mport0",
    journal: "/etc/mport/vpn-mport0.json",
  });
  assert.deepEqual(c.tunnels, []);
});

Deno.test("client `vpn` takes routes, DNS servers, the kill switch and a device name", () => {
  const c = parse([
    "vpn",
    ...BASE,
    "--routes",
    "10.0.0.0/8, 192.0.2.7/24",
    "--dns",
    "1.1.1.1,9.9.9.9",
    "--dns",
    "8.8.8.8",
    "--kill-switch",
    "--device",
    "work0",
  ]);
  assert.deepEqual(
    [c.vpn?.routes, c.vpn?.dns, c.vpn?.killSwitch, c.vpn?.device],
    [["10.0.0.0/8", "192.0.2.0/24"], ["1.1.1.1", "9.9.9.9", "8.8.8.8"], true, "work0"],
  );
  assert.deepEqual(parse(["vpn", ...BASE, "--dns", "none"]).vpn?.dns, []);
});

for (
  const c of [
    {
      args: ["--routes", "everything"],
      message:
        'invalid --routes "everything": give default or IPv4 blocks like 10.0.0.0/8,192.0.2.0/24',
    },
    {
      args: ["--routes", "fd00::/8"],
      message:
        'invalid --routes "fd00::/8": give default or IPv4 blocks like 10.0.0.0/8,192.0.2.0/24',
    },
    { args: ["--routes", ","], message: 'invalid --routes ",": it names no block' },
    {
      args: ["--dns", "one.one.one.one"],
      message: 'invalid --dns "one.one.one.one": give an IPv4 address, e.g. 1.1.1.1 (or none)',
    },
    {
      args: ["--dns", "1.1.1.1,1.0.0.1,8.8.8.8,8.8.4.4"],
      message: "--dns takes at most 3 servers (resolv.conf reads 3)",
    },
    {
      args: ["--device", "a-device-name-too-long"],
      message: `invalid --device "a-device-name-too-long": 1-15 letters, digits, '_', '.' or '-'`,
    },
    { args: ["extra"], message: 'unexpected argument "extra" for mport vpn' },
  ]
) {
  Deno.test(`client \`vpn ${c.args.join(" ")}\` is refused: ${c.message}`, () => {
    assert.throws(() => parse(["vpn", ...BASE, ...c.args]), {
      name: "TypeError",
      message: c.message,
    });
  });
}

Deno.test("VPN flags belong to `mport vpn`", () => {
  assert.throws(() => parse(["tcp", "22", ...BASE, "--kill-switch"]), {
    message: "--kill-switch belongs to `mport vpn`",
  });
});

for (const os of ["windows", "darwin"] as const) {
  Deno.test(`client \`vpn\` on ${os} says it runs on Linux only and what it would take`, () => {
    assert.throws(() => parseClientArgs(["vpn", ...BASE], {}, readFile, () => null, os), {
      name: "TypeError",
      message: `mport vpn runs on Linux only (this is ${os}): on Windows it needs the Wintun ` +
        "driver and on macOS a utun device, which mport does not drive yet; use `mport socks` " +
        "there instead",
    });
  });
}
