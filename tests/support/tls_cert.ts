// A self-signed TLS certificate for localhost and 127.0.0.1 (and extra names), made with openssl.

/** Files of a self-signed certificate made by {@link makeCert}. */
export interface TestCert {
  /** Path of the PEM certificate. */
  certFile: string;
  /** Path of the PEM private key (unencrypted). */
  keyFile: string;
  /** The certificate's PEM text, for `Deno.createHttpClient({ caCerts: [certPem] })`. */
  certPem: string;
}

/**
 * Writes a self-signed certificate for `localhost` / `127.0.0.1` into `dir` using `openssl`, valid
 * for `extraDnsNames` too (e.g. a wildcard `*.t.test` for HTTP tunnels).
 * It is a leaf (`basicConstraints=critical,CA:FALSE`), which is what lets Deno (rustls) accept it
 * as its own trust anchor.
 */
export async function makeCert(
  dir: string,
  extraDnsNames: readonly string[] = [],
): Promise<TestCert> {
  for (const name of extraDnsNames) {
    if (!/^(\*\.)?[a-z0-9.-]+$/.test(name)) throw new TypeError(`Invalid DNS name "${name}"`);
  }
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  const configFile = `${dir}/openssl.cnf`;
  // An explicit config, so the system openssl.cnf (which adds CA:TRUE) plays no part.
  await Deno.writeTextFile(
    configFile,
    [
      "[req]",
      "distinguished_name = dn",
      "x509_extensions = ext",
      "prompt = no",
      "[dn]",
      "CN = localhost",
      "[ext]",
      "basicConstraints = critical,CA:FALSE",
      `subjectAltName = ${
        ["DNS:localhost", "IP:127.0.0.1", ...extraDnsNames.map((n) => `DNS:${n}`)]
          .join(",")
      }`,
      "keyUsage = critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage = serverAuth",
      "subjectKeyIdentifier = hash",
      "",
    ].join("\n"),
  );
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "2",
      "-config",
      configFile,
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr);
    throw new Error(`openssl could not make a test certificate (exit ${out.code}): ${stderr}`);
  }
  return { certFile, keyFile, certPem: await Deno.readTextFile(certFile) };
}
