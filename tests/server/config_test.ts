// Table-driven tests for mport-server's command line, token sources, validation and redaction.
import assert from "node:assert/strict";
import {
  parseServerArgs,
  SERVER_DEFAULTS,
  type ServerConfig,
  serverConfig,
} from "../../server/config.ts";
import { Secret } from "../../shared/secret.ts";

const TOKEN = "tok-aaaa-1111";
const FILES: Record<string, string> = {
  "tokens.txt": "# client tokens\r\nfile-token-1\r\n\r\n  file-token-2  \n#file-token-3\n",
  "cert.pem": "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n",
  "key.pem": "-----BEGIN PRIVATE KEY-----\nSUPER-SECRET-KEY\n-----END PRIVATE KEY-----\n",
};

function readFile(path: string): string {
  const text = FILES[path];
  if (text === undefined) throw new Deno.errors.NotFound(`no such file: ${path}`);
  return text;
}

function parse(args: string[], env: Record<string, string> = {}): ServerConfig {
  const r = parseServerArgs(args, env, readFile);
  assert.equal(r.help, false);
  return (r as { config: ServerConfig }).config;
}

const tokensOf = (c: ServerConfig) => c.tokens.map((t) => t.reveal());

Deno.test("server config with only a token has every default", () => {
  const c = parse(["--token", TOKEN]);
  const { tokens, tlsCert, tlsKey, ...rest } = c;
  assert.deepEqual(rest, SERVER_DEFAULTS);
  assert.deepEqual(tokens.map((t) => t.reveal()), [TOKEN]);
  assert.equal(tlsCert, null);
  assert.equal(tlsKey, null);
});

const VALID: { args: string[]; env?: Record<string, string>; want: Partial<ServerConfig> }[] = [
  { args: ["--listen", "127.0.0.1:0"], want: { listenHost: "127.0.0.1", listenPort: 0 } },
  { args: ["--listen", "9000"], want: { listenHost: "0.0.0.0", listenPort: 9000 } },
  { args: ["--listen", "[::]:443"], want: { listenHost: "::", listenPort: 443 } },
  { args: ["--path-prefix", "/tunnel/"], want: { pathPrefix: "/tunnel" } },
  { args: ["--path-prefix", "/a/b.c_d-e~"], want: { pathPrefix: "/a/b.c_d-e~" } },
  { args: ["--path-prefix", "/"], want: { pathPrefix: "" } },
  { args: ["--port-range", "20000-20099"], want: { portRange: { low: 20000, high: 20099 } } },
  { args: ["--port-range", "5555"], want: { portRange: { low: 5555, high: 5555 } } },
  { args: ["--bind", "127.0.0.1"], want: { bindHost: "127.0.0.1" } },
  { args: ["--public-host", "vps.example.com"], want: { publicHost: "vps.example.com" } },
  {
    args: ["--public-url", "wss://vps.example.com/tunnel/_mport/"],
    want: { publicUrl: "wss://vps.example.com/tunnel/_mport" },
  },
  {
    args: ["--public-url", "https://vps.example.com:443"],
    want: { publicUrl: "wss://vps.example.com" },
  },
  {
    args: ["--public-url", "http://[::1]:8080/_mport"],
    want: { publicUrl: "ws://[::1]:8080/_mport" },
  },
  { args: ["--grace", "1.5"], want: { graceMs: 1500 } },
  { args: ["--grace", "0"], want: { graceMs: 0 } },
  { args: ["--hold-timeout", "0.2"], want: { holdTimeoutMs: 200 } },
  { args: ["--max-tunnels-per-client", "2"], want: { maxTunnelsPerClient: 2 } },
  { args: ["--max-connections-per-client", "1"], want: { maxConnectionsPerClient: 1 } },
  { args: ["--tunnels-per-minute", "5"], want: { tunnelsPerMinute: 5 } },
  { args: ["--max-pending", "3"], want: { maxPending: 3 } },
  { args: ["--drain", "0"], want: { drainMs: 0 } },
  { args: ["--heartbeat", "0.05"], want: { heartbeatMs: 50 } },
  { args: ["--handshake-timeout", "2"], want: { handshakeTimeoutMs: 2000 } },
  { args: ["--auth-failures-per-minute", "3"], want: { authFailuresPerMinute: 3 } },
  { args: ["--trusted-proxy", "127.0.0.1/32"], want: { trustedProxies: ["127.0.0.1/32"] } },
  {
    args: [
      "--trusted-proxy",
      "10.0.0.0/8",
      "--trusted-proxy",
      "::1",
      "--trusted-proxy",
      "FD00::/8",
    ],
    want: { trustedProxies: ["10.0.0.0/8", "::1/128", "fd00::/8"] },
  },
  { args: ["--stats-interval", "0"], want: { statsIntervalMs: 0 } },
  { args: ["--log-level", "warn"], want: { logLevel: "warning" } },
  { args: ["--log-level", "DEBUG"], want: { logLevel: "debug" } },
  { args: ["--log-file", "/var/log/mport.jsonl"], want: { logFile: "/var/log/mport.jsonl" } },
  { args: [], want: { db: "./data/mport.db" } },
  { args: ["--data-dir", "/var/lib/mport"], want: { db: "/var/lib/mport/mport.db" } },
  { args: ["--data-dir", "state/"], want: { db: "state/mport.db" } },
  { args: ["--data-dir", "/"], want: { db: "/mport.db" } },
  {
    args: ["--data-dir", "/var/lib/mport"],
    env: { MPORT_DB: "/elsewhere.db" },
    want: { db: "/var/lib/mport/mport.db" },
  },
  { args: ["--db", "/x.db"], env: { MPORT_DB: "/elsewhere.db" }, want: { db: "/x.db" } },
  {
    args: ["--tls-cert", "cert.pem", "--tls-key", "key.pem"],
    want: { tlsCert: FILES["cert.pem"] },
  },
  {
    args: ["--metrics-allow", "10.0.0.0/8", "--metrics-allow", "::1", "--metrics-allow", "1.2.3.4"],
    want: { metricsAllow: ["10.0.0.0/8", "::1/128", "1.2.3.4/32"] },
  },
  { args: ["--metrics-allow", "none"], want: { metricsAllow: [] } },
];

for (const c of VALID) {
  Deno.test(`server config accepts ${c.args.join(" ")}`, () => {
    const got = parse(["--token", TOKEN, ...c.args], c.env);
    for (const [k, v] of Object.entries(c.want)) {
      assert.deepEqual(got[k as keyof ServerConfig], v, k);
    }
  });
}

Deno.test("server config reads the TLS key through readFile and keeps it wrapped", () => {
  const c = parse(["--token", TOKEN, "--tls-cert", "cert.pem", "--tls-key", "key.pem"]);
  assert.ok(c.tlsKey instanceof Secret);
  assert.equal(c.tlsKey.reveal(), FILES["key.pem"]);
});

Deno.test("server tokens come from --token, --tokens-file and MPORT_TOKENS together", () => {
  const c = parse(
    ["--token", TOKEN, "--token", "tok-bbbb-2222", "--tokens-file", "tokens.txt"],
    { MPORT_TOKENS: " env-token-1 ,env-token-2,," },
  );
  assert.deepEqual(tokensOf(c), [
    TOKEN,
    "tok-bbbb-2222",
    "file-token-1",
    "file-token-2",
    "env-token-1",
    "env-token-2",
  ]);
});

Deno.test("server tokens can come from the tokens file or the environment alone", () => {
  assert.deepEqual(tokensOf(parse(["--tokens-file", "tokens.txt"])), [
    "file-token-1",
    "file-token-2",
  ]);
  assert.deepEqual(tokensOf(parse([], { MPORT_TOKENS: "only-env-token" })), ["only-env-token"]);
});

Deno.test("server needs no static tokens, since accounts live in the store", () => {
  assert.deepEqual(tokensOf(parse([])), []);
  assert.deepEqual(tokensOf(parse([], { MPORT_TOKENS: " , ," })), []);
});

Deno.test("server --help asks for help instead of a config", () => {
  assert.deepEqual(parseServerArgs(["--help"], {}, readFile), { help: true });
  assert.deepEqual(parseServerArgs(["-h", "--token", "x"], {}, readFile), { help: true });
});

Deno.test("server --version asks for the version instead of a config", () => {
  assert.deepEqual(parseServerArgs(["--version"], {}, readFile), { help: false, version: true });
});

const INVALID: { args: string[]; env?: Record<string, string>; message: string }[] = [
  {
    args: ["--vpn-pool", "10.8.0.0/31"],
    message:
      'invalid --vpn-pool "10.8.0.0/31": give an IPv4 block from /8 to /30, e.g. 10.8.0.0/24',
  },
  {
    args: ["--vpn-pool", "10.8.0.0/24", "--vpn-dns", "dns.google"],
    message: 'invalid --vpn-dns "dns.google": give an IPv4 address, e.g. 1.1.1.1',
  },
  {
    args: ["--vpn-pool", "10.8.0.0/24", "--vpn-mtu", "100"],
    message: 'invalid --vpn-mtu "100": give a number from 576 to 9000',
  },
  { args: ["--token", "short"], message: "every token must be at least 8 characters long" },
  {
    args: ["--metrics-allow", "everyone"],
    message: 'invalid --metrics-allow "everyone": expected an IPv4 or IPv6 address or CIDR ' +
      "block, such as 127.0.0.1/32, 10.0.0.0/8 or ::1/128",
  },
  {
    args: ["--metrics-token", "short"],
    message: "--metrics-token must be at least 16 characters long",
  },
  {
    args: ["--db", "/x.db", "--data-dir", "/var/lib/mport"],
    message: "--db and --data-dir both name the store: give one of them",
  },
  { args: ["--data-dir", " "], message: "--data-dir needs a directory" },
  {
    args: ["--token", TOKEN],
    env: { MPORT_TOKENS: "tiny" },
    message: "every token must be at least 8 characters long",
  },
  {
    args: ["--token", TOKEN, "--tokens-file", "missing.txt"],
    message: "no such file: missing.txt",
  },
  {
    args: ["--token", TOKEN, "--tls-cert", "cert.pem"],
    message: "--tls-cert and --tls-key must be given together",
  },
  {
    args: ["--token", TOKEN, "--tls-key", "key.pem"],
    message: "--tls-cert and --tls-key must be given together",
  },
  {
    args: ["--token", TOKEN, "--path-prefix", "tunnel"],
    message: 'invalid --path-prefix "tunnel": use a path like /_mport (no trailing slash)',
  },
  {
    args: ["--token", TOKEN, "--path-prefix", "/a b"],
    message: 'invalid --path-prefix "/a b": use a path like /_mport (no trailing slash)',
  },
  {
    args: ["--token", TOKEN, "--path-prefix", "/a//b"],
    message: 'invalid --path-prefix "/a//b": use a path like /_mport (no trailing slash)',
  },
  {
    args: ["--token", TOKEN, "--listen", "localhost"],
    message: 'invalid address "localhost": expected HOST:PORT or PORT',
  },
  {
    args: ["--token", TOKEN, "--port-range", "10999-10000"],
    message: 'invalid port range "10999-10000": 10999 is greater than 10000',
  },
  {
    args: ["--token", TOKEN, "--grace=-1"],
    message: 'invalid --grace "-1": expected a number of seconds',
  },
  {
    args: ["--token", TOKEN, "--grace", "soon"],
    message: 'invalid --grace "soon": expected a number of seconds',
  },
  {
    args: ["--token", TOKEN, "--hold-timeout", "Infinity"],
    message: 'invalid --hold-timeout "Infinity": expected a number of seconds',
  },
  {
    args: ["--token", TOKEN, "--heartbeat", "0"],
    message: 'invalid --heartbeat "0": expected a number of seconds',
  },
  {
    // Would round to a 0 ms interval.
    args: ["--token", TOKEN, "--heartbeat", "0.0001"],
    message: 'invalid --heartbeat "0.0001": expected a number of seconds',
  },
  {
    args: ["--token", TOKEN, "--handshake-timeout", "0"],
    message: 'invalid --handshake-timeout "0": expected a number of seconds',
  },
  {
    args: ["--token", TOKEN, "--max-pending", "0"],
    message: 'invalid --max-pending "0": expected a whole number >= 1',
  },
  {
    args: ["--token", TOKEN, "--max-tunnels-per-client", "1.5"],
    message: 'invalid --max-tunnels-per-client "1.5": expected a whole number >= 1',
  },
  {
    args: ["--token", TOKEN, "--tunnels-per-minute", "many"],
    message: 'invalid --tunnels-per-minute "many": expected a whole number >= 1',
  },
  {
    args: ["--token", TOKEN, "--auth-failures-per-minute=-3"],
    message: 'invalid --auth-failures-per-minute "-3": expected a whole number >= 1',
  },
  {
    args: ["--token", TOKEN, "--trusted-proxy", "nginx"],
    message: 'invalid --trusted-proxy "nginx": expected an IPv4 or IPv6 address or CIDR block, ' +
      "such as 127.0.0.1/32, 10.0.0.0/8 or ::1/128",
  },
  {
    args: ["--token", TOKEN, "--trusted-proxy", "127.0.0.1/33"],
    message: 'invalid --trusted-proxy "127.0.0.1/33": expected an IPv4 or IPv6 address or CIDR ' +
      "block, such as 127.0.0.1/32, 10.0.0.0/8 or ::1/128",
  },
  {
    args: ["--token", TOKEN, "--log-level", "loud"],
    message: 'invalid log level "loud": use one of trace, debug, info, warning, error, fatal',
  },
  { args: ["--token", TOKEN, "--bogus"], message: "unknown flag --bogus" },
  { args: ["--lisen", "9000"], message: "unknown flag --lisen: did you mean --listen?" },
  { args: ["--tokens=a"], message: "unknown flag --tokens: did you mean --token?" },
  {
    args: ["--max-tunnels", "3"],
    message: "unknown flag --max-tunnels: did you mean --max-tunnels-per-client?",
  },
  { args: ["--token", TOKEN, "--listen"], message: "--listen needs a value" },
  {
    args: ["--token", "--listen", "9000"],
    message: '--token needs a value, and "--listen" looks like a flag ' +
      "(write --token=--listen if it is the value)",
  },
  { args: ["--help=yes"], message: "--help takes no value" },
  { args: ["--token", TOKEN, "extra"], message: 'unexpected argument "extra"' },
  {
    args: ["--public-url", "vps.example.com"],
    message: 'invalid --public-url "vps.example.com": expected wss://host[:port][/prefix], ' +
      "e.g. wss://vps.example.com/_mport",
  },
  {
    args: ["--public-url", "ftp://vps.example.com"],
    message: 'invalid --public-url "ftp://vps.example.com": expected wss://host[:port][/prefix], ' +
      "e.g. wss://vps.example.com/_mport",
  },
  {
    args: ["--public-url", "wss://vps.example.com/?token=x"],
    message: 'invalid --public-url "wss://vps.example.com/?token=x": no user, password, query ' +
      "or fragment, e.g. wss://vps.example.com/_mport",
  },
  {
    args: ["--public-url", "wss://vps.example.com/a b"],
    message: 'invalid --public-url "wss://vps.example.com/a b": the path must be like /_mport, ' +
      "e.g. wss://vps.example.com/_mport",
  },
];

for (const c of INVALID) {
  Deno.test(`server config rejects ${c.args.join(" ") || "no arguments"}`, () => {
    assert.throws(() => parseServerArgs(c.args, c.env ?? {}, readFile), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.equal(e.message, c.message);
      return true;
    });
  });
}

Deno.test("serverConfig validates fields given directly, as tests and embedders do", () => {
  const tokens = [new Secret(TOKEN)];
  assert.equal(serverConfig({ tokens, listenPort: 0 }).listenPort, 0);
  // Static tokens are optional: users and their tokens live in the store.
  assert.deepEqual(serverConfig({ tokens: [] }).tokens, []);
  for (
    const [field, flag] of [
      ["maxTunnelsPerClient", "--max-tunnels-per-client"],
      ["maxConnectionsPerClient", "--max-connections-per-client"],
      ["tunnelsPerMinute", "--tunnels-per-minute"],
      ["maxPending", "--max-pending"],
    ] as const
  ) {
    assert.throws(() => serverConfig({ tokens, [field]: 0 }), {
      name: "TypeError",
      message: `${flag} must be a whole number >= 1`,
    });
  }
});

Deno.test("server config never prints its tokens or TLS key", () => {
  const c = parse(
    [
      "--token",
      TOKEN,
      "--tokens-file",
      "tokens.txt",
      "--tls-cert",
      "cert.pem",
      "--tls-key",
      "key.pem",
    ],
    { MPORT_TOKENS: "env-token-1" },
  );
  const printed = [JSON.stringify(c), Deno.inspect(c, { depth: 10 }), String(c.tokens)];
  for (const text of printed) {
    for (const secret of [TOKEN, "file-token-1", "file-token-2", "env-token-1", "SUPER-SECRET"]) {
      assert.ok(!text.includes(secret), `${secret} appears in ${text}`);
    }
    assert.ok(text.includes("***"));
  }
});

/** `parse` with a `server.toml` holding `toml` next to the fixed files. */
function parseWithFile(
  toml: string,
  args: string[] = [],
  env: Record<string, string> = {},
): ServerConfig {
  const r = parseServerArgs(
    ["--config", "server.toml", ...args],
    env,
    (p) => p === "server.toml" ? toml : readFile(p),
  );
  assert.equal(r.help, false);
  return (r as { config: ServerConfig }).config;
}

const VALID_FILES: {
  name: string;
  toml: string;
  args?: string[];
  env?: Record<string, string>;
  want: Partial<ServerConfig>;
  tokens?: string[];
}[] = [
  {
    name: "every kind of key",
    toml: `# /etc/mport/server.toml
listen = "127.0.0.1:8080"
trusted-proxy = ["127.0.0.1/32", "10.0.0.0/8"]
port-range = "20000-20099"
grace = 30
reservation-ttl = "12h"
max-pending = 8
buffer-budget = "4MiB"
public-url = "wss://vps.example.com/_mport"
log-level = "debug"
`,
    want: {
      listenHost: "127.0.0.1",
      listenPort: 8080,
      trustedProxies: ["127.0.0.1/32", "10.0.0.0/8"],
      portRange: { low: 20000, high: 20099 },
      graceMs: 30_000,
      reservationTtlMs: 12 * 3_600_000,
      maxPending: 8,
      bufferBudgetBytes: 4 * 1024 * 1024,
      publicUrl: "wss://vps.example.com/_mport",
      logLevel: "debug",
    },
  },
  {
    name: "a single string for a repeatable key",
    toml: 'trusted-proxy = "192.168.0.0/16"',
    want: { trustedProxies: ["192.168.0.0/16"] },
  },
  {
    name: "flags over the file",
    toml: 'listen = "127.0.0.1:8080"\ngrace = 30\ntrusted-proxy = ["10.0.0.0/8"]',
    args: ["--listen", "127.0.0.1:9090", "--trusted-proxy", "127.0.0.1/32"],
    want: { listenPort: 9090, graceMs: 30_000, trustedProxies: ["127.0.0.1/32"] },
  },
  {
    name: "the file's db over MPORT_DB",
    toml: 'db = "/var/lib/mport/mport.db"',
    env: { MPORT_DB: "/elsewhere.db" },
    want: { db: "/var/lib/mport/mport.db" },
  },
  {
    name: "MPORT_DB when the file names no store",
    toml: "grace = 5",
    env: { MPORT_DB: "/elsewhere.db" },
    want: { db: "/elsewhere.db" },
  },
  {
    name: "--db over the file's data-dir",
    toml: 'data-dir = "/var/lib/mport"',
    args: ["--db", "/tmp/x.db"],
    want: { db: "/tmp/x.db" },
  },
  {
    name: "tokens from the file, the tokens file and MPORT_TOKENS",
    toml: 'token = ["file-static-1"]\ntokens-file = "tokens.txt"',
    env: { MPORT_TOKENS: "env-token-1" },
    want: {},
    tokens: ["file-static-1", "file-token-1", "file-token-2", "env-token-1"],
  },
  { name: "an empty file", toml: "", want: {} },
];

for (const c of VALID_FILES) {
  Deno.test(`server config file: ${c.name}`, () => {
    const got = parseWithFile(c.toml, c.args, c.env);
    for (const [k, v] of Object.entries(c.want)) {
      assert.deepEqual(got[k as keyof ServerConfig], v, k);
    }
    if (c.tokens) assert.deepEqual(tokensOf(got), c.tokens);
  });
}

const INVALID_FILES: { name: string; toml: string; args?: string[]; message: string }[] = [
  {
    name: "a TOML syntax error",
    toml: 'listen = "127.0.0.1:8080"\ngrace = = 3',
    message: "cannot parse server.toml:2:9: invalid value",
  },
  {
    name: "an unknown key",
    toml: '# comment\nlisten = "127.0.0.1:8080"\n\nlisen = "x"',
    message: 'server.toml:4: unknown key "lisen": did you mean listen?',
  },
  {
    name: "a table",
    toml: 'listen = "127.0.0.1:8080"\n[limits]\nx = 1',
    message: 'server.toml:2: unknown key "limits"',
  },
  {
    name: "help as a key",
    toml: "help = true",
    message: 'server.toml:1: unknown key "help"',
  },
  {
    name: "a boolean for a string",
    toml: 'db = "x.db"\nlisten = true',
    message: 'server.toml:2: "listen" must be a string or a number',
  },
  {
    name: "an array for a single value",
    toml: "grace = [1, 2]",
    message: 'server.toml:1: "grace" must be a string or a number',
  },
  {
    name: "a number in a list of CIDRs",
    toml: '\n"trusted-proxy" = ["127.0.0.1/32", true]',
    message: 'server.toml:2: "trusted-proxy" must be a string or an array of strings',
  },
  {
    name: "a bad value",
    toml: 'listen = "127.0.0.1:8080"\ngrace = "soon"',
    message: 'server.toml:2: invalid --grace "soon": expected a number of seconds',
  },
  {
    name: "a bad value that a flag does not replace",
    toml: "max-pending = 0\ngrace = 3",
    args: ["--grace", "4"],
    message: 'server.toml:1: invalid --max-pending "0": expected a whole number >= 1',
  },
];

for (const c of INVALID_FILES) {
  Deno.test(`server config file rejects ${c.name}`, () => {
    assert.throws(() => parseWithFile(c.toml, c.args), (e: unknown) => {
      assert.ok(e instanceof TypeError);
      assert.equal(e.message, c.message);
      return true;
    });
  });
}

Deno.test("server config file that a flag fixes is accepted", () => {
  assert.equal(parseWithFile('grace = "soon"', ["--grace", "4"]).graceMs, 4000);
});

Deno.test("server --metrics-token is kept wrapped, and is a config-file key too", () => {
  const c = parse(["--metrics-token", "scrape-me-0123456789"]);
  assert.equal(c.metricsToken?.reveal(), "scrape-me-0123456789");
  assert.equal(JSON.stringify(c.metricsToken), '"***"');
  assert.deepEqual(c.metricsAllow, ["127.0.0.0/8", "::1/128"]);
  const r = parseServerArgs(
    ["--config", "m.toml"],
    {},
    (p) =>
      p === "m.toml"
        ? 'metrics-token = "scrape-me-0123456789"\nmetrics-allow = ["10.0.0.0/8"]\n'
        : readFile(p),
  );
  const cfg = (r as { config: ServerConfig }).config;
  assert.equal(cfg.metricsToken?.reveal(), "scrape-me-0123456789");
  assert.deepEqual(cfg.metricsAllow, ["10.0.0.0/8"]);
});
