// Token generation and hashing, and scrypt password hashing (node:crypto).
import { createHash, randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** Prefix that makes mport tokens recognisable (e.g. to secret scanners). */
export const TOKEN_PREFIX = "mp_";

/** A new random client token: 192 bits, base64url. */
export function newToken(): string {
  return TOKEN_PREFIX + randomBytes(24).toString("base64url");
}

/** SHA-256 of a token, lowercase hex: the only form a token is stored in. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

const SCRYPT = { N: 16384, r: 8, p: 1, keyLen: 32 } as const;

function scryptAsync(
  password: string,
  salt: Buffer,
  N: number,
  r: number,
  p: number,
  keyLen: number,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      password,
      salt,
      keyLen,
      { N, r, p, maxmem: 256 * N * r },
      (err, key) => err ? reject(err) : resolve(key),
    );
  });
}

/** Hashes a password as `scrypt$N$r$p$saltB64$hashB64`. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, SCRYPT.N, SCRYPT.r, SCRYPT.p, SCRYPT.keyLen);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString("base64")}$${
    key.toString("base64")
  }`;
}

/** Checks a password against a hash from `hashPassword`, in constant time. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return false;
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  if (![N, r, p].every((v) => Number.isSafeInteger(v) && v > 0) || N > 1 << 20) return false;
  const salt = Buffer.from(parts[4]!, "base64");
  const want = Buffer.from(parts[5]!, "base64");
  const got = await scryptAsync(password, salt, N, r, p, want.length);
  return got.length === want.length && timingSafeEqual(got, want);
}
