// A throwaway PKI for the VPN benchmark (EC P-256, made with openssl): a CA, OpenVPN's server and
// client certificates, and mport-server's wss:// certificate for an IP address.

/** Paths of the PEM files {@link makePki} wrote. */
export interface Pki {
  readonly caCert: string;
  readonly openvpnServerCert: string;
  readonly openvpnServerKey: string;
  readonly openvpnClientCert: string;
  readonly openvpnClientKey: string;
  /** mport-server's certificate, valid for the address clients dial. */
  readonly mportCert: string;
  readonly mportKey: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Issues a leaf for `cn` signed by the CA in `dir`, with the extensions in `ext`. */
async function leaf(dir: string, name: string, cn: string, ext: string[], serial: number) {
  await Deno.writeTextFile(`${dir}/${name}.ext`, ext.join("\n") + "\n");
  await openssl(dir, [
    "req",
    "-new",
    ...EC,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${cn}`,
  ]);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-set_serial",
    String(serial),
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.crt`,
  ]);
}

/** Writes the CA and the leaves into `dir` (which the caller removes). `mportIp` goes in a SAN. */
export async function makePki(dir: string, mportIp: string): Promise<Pki> {
  await openssl(dir, [
    "req",
    "-x509",
    ...EC,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=mport bench CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const common = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"];
  await leaf(dir, "ovpn-server", "openvpn-server", [
    ...common,
    "extendedKeyUsage=serverAuth",
  ], 2);
  await leaf(dir, "ovpn-client", "openvpn-client", [
    ...common,
    "extendedKeyUsage=clientAuth",
  ], 3);
  await leaf(dir, "mport", mportIp, [
    ...common,
    "extendedKeyUsage=serverAuth",
    `subjectAltName=IP:${mportIp}`,
  ], 4);
  return {
    caCert: `${dir}/ca.crt`,
    openvpnServerCert: `${dir}/ovpn-server.crt`,
    openvpnServerKey: `${dir}/ovpn-server.key`,
    openvpnClientCert: `${dir}/ovpn-client.crt`,
    openvpnClientKey: `${dir}/ovpn-client.key`,
    mportCert: `${dir}/mport.crt`,
    mportKey: `${dir}/mport.key`,
  };
}
