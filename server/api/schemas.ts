// Zod schemas of the REST API's bodies, queries and answers: they validate requests and are the
// OpenAPI document's components.
import { z } from "@hono/zod-openapi";

/** `{error:{code,message}}`, the shape of every refusal. */
export const ErrorSchema = z.object({
  error: z.object({
    code: z.string().openapi({ example: "not_found" }),
    message: z.string().openapi({ example: "no token with ID 7" }),
  }),
}).openapi("Error");

const nullableInt = z.number().int().nullable();

export const LimitsSchema = z.object({
  maxTunnels: nullableInt,
  maxConnections: nullableInt,
  portLow: nullableInt,
  portHigh: nullableInt,
  monthlyQuotaBytes: nullableInt,
  maxReservedPorts: nullableInt,
}).openapi("UserLimits");

export const UserSchema = z.object({
  id: z.number().int(),
  name: z.string(),
  email: z.string().nullable(),
  role: z.enum(["admin", "user"]),
  disabled: z.boolean(),
  hasPassword: z.boolean(),
  createdAt: z.number().int(),
  lastSeenAt: nullableInt,
  limits: LimitsSchema,
  /** May open connections out through the server (SOCKS5 egress). */
  egress: z.boolean(),
  /** May use the VPN. */
  vpn: z.boolean(),
}).openapi("User");

export const MeSchema = z.object({
  user: UserSchema,
  /** How this request was authenticated. */
  auth: z.enum(["token", "session"]),
  /** The token's scope (bearer requests), or null for a session. */
  scope: z.enum(["client", "api", "admin"]).nullable(),
  admin: z.boolean(),
  /** The session's CSRF token (cookie requests); null for bearer requests. */
  csrfToken: z.string().nullable(),
}).openapi("Me");

export const LoginBody = z.object({
  username: z.string().min(1).max(64),
  password: z.string().min(1).max(1024),
}).openapi("Login");

export const LoginResult = z.object({
  user: UserSchema,
  csrfToken: z.string(),
}).openapi("LoginResult");

/** Limits a PATCH may set: a number, or null for the server's default. */
const limitField = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable().optional();
const portField = z.number().int().min(1).max(65535);

export const LimitsPatch = z.object({
  maxTunnels: limitField,
  maxConnections: limitField,
  portLow: portField.nullable().optional(),
  portHigh: portField.nullable().optional(),
  monthlyQuotaBytes: limitField,
  maxReservedPorts: z.number().int().min(1).nullable().optional(),
}).strict();

export const UserCreateBody = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, {
    message: "letters, digits, '.', '_' or '-', at most 64",
  }),
  password: z.string().min(8).max(1024),
  role: z.enum(["admin", "user"]).optional(),
  email: z.string().email().max(254).nullable().optional(),
  limits: LimitsPatch.optional(),
  /** Grant egress from the start (default false). */
  egress: z.boolean().optional(),
  /** Grant the VPN from the start (default false). */
  vpn: z.boolean().optional(),
}).strict().openapi("UserCreate");

export const UserPatchBody = z.object({
  disabled: z.boolean().optional(),
  limits: LimitsPatch.optional(),
  /** Grant (true) or withdraw (false) egress. */
  egress: z.boolean().optional(),
  /** Grant (true) or withdraw (false) the VPN. */
  vpn: z.boolean().optional(),
}).strict().openapi("UserPatch");

export const PasswordBody = z.object({
  password: z.string().min(8).max(1024),
}).strict().openapi("PasswordChange");

export const TokenSchema = z.object({
  id: z.number().int(),
  userId: z.number().int(),
  user: z.string().optional(),
  label: z.string(),
  scope: z.enum(["client", "api", "admin"]),
  state: z.enum(["active", "revoked", "expired"]),
  createdAt: z.number().int(),
  expiresAt: nullableInt,
  revokedAt: nullableInt,
  lastUsedAt: nullableInt,
}).openapi("Token");

export const TokenCreateBody = z.object({
  /** Owner; admins only (default: the caller). */
  user: z.string().min(1).max(64).optional(),
  label: z.string().max(200).optional(),
  scope: z.enum(["client", "api", "admin"]).optional(),
  /** Lifetime in seconds; absent: never expires. */
  expiresInSeconds: z.number().int().min(1).max(10 * 365 * 86_400).optional(),
}).strict().openapi("TokenCreate");

export const TokenCreated = z.object({
  token: TokenSchema,
  /** The token itself: shown this once, only its hash is stored. */
  secret: z.string(),
}).openapi("TokenCreated");

export const PortSchema = z.object({
  port: z.number().int(),
  userId: z.number().int(),
  user: z.string().optional(),
  tunnel: z.string().nullable(),
  explicit: z.boolean(),
  createdAt: z.number().int(),
  lastUsedAt: z.number().int(),
  expiresAt: nullableInt,
}).openapi("PortReservation");

export const PortCreateBody = z.object({
  port: portField,
  /** Owner; admins only (default: the caller). */
  user: z.string().min(1).max(64).optional(),
  tunnel: z.string().min(1).max(64).nullable().optional(),
}).strict().openapi("PortReserve");

export const HostSchema = z.object({
  host: z.string(),
  userId: z.number().int(),
  user: z.string().optional(),
  kind: z.enum(["subdomain", "domain"]),
  tunnel: z.string().nullable(),
  createdAt: z.number().int(),
  lastUsedAt: z.number().int(),
}).openapi("HostReservation");

export const DomainCreateBody = z.object({
  host: z.string().min(1).max(253),
  user: z.string().min(1).max(64),
}).strict().openapi("DomainAssign");

export const ClientSchema = z.object({
  id: z.string(),
  clientId: z.string(),
  user: z.string(),
  userId: z.number().int(),
  address: z.string(),
  since: z.number().int(),
  tunnels: z.array(z.string()),
  dataConnections: z.number().int(),
  tokenLabel: z.string(),
  clientVersion: z.string().nullable(),
}).openapi("Client");

export const TunnelSchema = z.object({
  id: z.string(),
  name: z.string(),
  kind: z.enum(["tcp", "http", "udp"]),
  port: z.number().int(),
  url: z.string(),
  local: z.string(),
  user: z.string(),
  userId: z.number().int(),
  session: z.string().nullable(),
  clientAddress: z.string().nullable(),
  activeConnections: z.number().int(),
  pendingConnections: z.number().int(),
  bytesIn: z.number(),
  bytesOut: z.number(),
  bytesInPerSecond: z.number(),
  bytesOutPerSecond: z.number(),
  since: z.number().int(),
}).openapi("Tunnel");

export const UsageSchema = z.object({
  /** Start of the hour or day (UTC, epoch ms). */
  start: z.number().int(),
  userId: z.number().int(),
  user: z.string().optional(),
  tunnel: z.string(),
  bytesIn: z.number(),
  bytesOut: z.number(),
  connections: z.number(),
  errors: z.number(),
}).openapi("Usage");

export const EventSchema = z.object({
  id: z.number().int(),
  at: z.number().int(),
  type: z.string(),
  userId: nullableInt,
  user: z.string().nullable(),
  detail: z.record(z.string(), z.unknown()),
}).openapi("AuditEvent");

export const StatsSchema = z.record(z.string(), z.unknown()).openapi("Stats");

export const OkSchema = z.object({ ok: z.literal(true) }).openapi("Ok");

/** `{items, nextCursor}` of a list endpoint. */
export function page<T extends z.ZodTypeAny>(item: T) {
  return z.object({ items: z.array(item), nextCursor: z.string().nullable() });
}

/** `limit` and `cursor` of a list endpoint. */
export const PageQuery = {
  limit: z.coerce.number().int().min(1).max(1000).optional().openapi({
    param: { name: "limit", in: "query" },
    example: 100,
  }),
  cursor: z.string().max(64).optional().openapi({ param: { name: "cursor", in: "query" } }),
};

/** `?user=NAME`: whose objects (admins any user; others only themselves). */
export const UserQuery = z.string().min(1).max(64).optional().openapi({
  param: { name: "user", in: "query" },
});

/** A time: epoch milliseconds or an ISO 8601 date. */
export const TimeQuery = z.string().max(40).optional().refine(
  (v) => v === undefined || parseTime(v) !== null,
  { message: "expected epoch milliseconds or an ISO 8601 date" },
);

/** Epoch ms of `text` (digits: epoch ms; else an ISO 8601 date), or null. */
export function parseTime(text: string): number | null {
  if (/^\d{1,16}$/.test(text)) return Number(text);
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

const ERROR_TEXT: Record<number, string> = {
  400: "Bad request: the message names the field",
  401: "Not authenticated",
  403: "Not allowed (client-scoped token, missing CSRF token, not an admin)",
  404: "Not found (or another user's)",
  409: "Conflict (taken)",
  429: "Too many failed attempts (Retry-After)",
};

/** Documented error answers of a route. */
export function errors(...statuses: number[]) {
  return Object.fromEntries(statuses.map((s) => [s, {
    description: ERROR_TEXT[s] ?? "Error",
    content: { "application/json": { schema: ErrorSchema } },
  }]));
}

/** A JSON answer of a route. */
export function json<T extends z.ZodTypeAny>(schema: T, description: string) {
  return { description, content: { "application/json": { schema } } };
}

/** A JSON request body of a route. */
export function body<T extends z.ZodTypeAny>(schema: T) {
  return { content: { "application/json": { schema } }, required: true };
}
