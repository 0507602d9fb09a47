// The REST API /api/v1: one OpenAPIHono app whose route definitions validate requests and make
// the OpenAPI 3.1 document at /api/v1/openapi.json.
import { OpenAPIHono, z } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { AuthLimiter } from "../auth.ts";
import type { EndpointDeps } from "../endpoints.ts";
import { ConflictError } from "../store/store.ts";
import { type ApiEnv, ApiError, authenticate, errorResponse } from "./api_auth.ts";
import type { EventBus } from "./events_bus.ts";
import { registerAccountRoutes, registerLoginRoutes } from "./routes_accounts.ts";
import { registerLiveRoutes } from "./routes_live.ts";
import { registerObjectRoutes } from "./routes_objects.ts";
import { ServiceError } from "./service.ts";
import type { ManagementService } from "./service.ts";
import type { WebSessions } from "./web_sessions.ts";

/** What the API needs from the running server. */
export interface ApiDeps {
  /** The tunnel endpoints' dependencies: accounts, store, registry, sessions, stats, limiter, log. */
  readonly endpoint: EndpointDeps;
  readonly service: ManagementService;
  readonly webSessions: WebSessions;
  /** Failed dashboard logins, per address and per user name (apart from tunnel logins). */
  readonly loginLimiter: AuthLimiter;
  readonly bus: EventBus;
  readonly now: () => number;
}

/** Largest request body accepted. */
export const MAX_API_BODY_BYTES = 64 * 1024;

/** Names the fields a failed validation is about: `password: Too small: …; limits.maxTunnels: …`. */
function describeIssues(error: z.ZodError): string {
  return error.issues.slice(0, 5).map((i) => {
    const field = i.path.length > 0 ? i.path.join(".") : "body";
    return `${field}: ${i.message}`;
  }).join("; ");
}

/** Builds the API app, to be mounted at `/api/v1`. */
export function buildApi(deps: ApiDeps): OpenAPIHono<ApiEnv> {
  const api = new OpenAPIHono<ApiEnv>({
    defaultHook: (result) => {
      if (!result.success) {
        return errorResponse(400, "bad_request", describeIssues(result.error));
      }
    },
  });
  api.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "A token of scope api or admin (mport-server token create --scope api)",
  });
  api.openAPIRegistry.registerComponent("securitySchemes", "session", {
    type: "apiKey",
    in: "cookie",
    name: "mport_session",
    description: "From POST /login; state-changing requests also need the x-csrf-token header",
  });
  api.use(
    "*",
    bodyLimit({
      maxSize: MAX_API_BODY_BYTES,
      onError: () =>
        errorResponse(413, "too_large", `request body larger than ${MAX_API_BODY_BYTES} bytes`),
    }),
  );
  api.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "mport REST API",
      version: "1",
      description: "Manage users, tokens, ports, domains and live tunnels of an mport server.",
    },
    servers: [{ url: "/api/v1" }],
    security: [{ bearer: [] }, { session: [] }],
  });
  // Login comes before authentication; everything after it needs a caller.
  registerLoginRoutes(api, deps);
  api.use("*", authenticate({ endpoint: deps.endpoint, webSessions: deps.webSessions }));
  registerAccountRoutes(api, deps);
  registerObjectRoutes(api, deps);
  registerLiveRoutes(api, deps);
  // Mounted with route(), the sub-app's notFound is not consulted: answer unknown paths here.
  api.all("*", () => errorResponse(404, "not_found", "no such API endpoint"));
  api.onError((err) => {
    if (err instanceof ApiError) {
      return errorResponse(err.status, err.code, err.message, err.headers);
    }
    if (err instanceof ServiceError) {
      const status = { bad_request: 400, not_found: 404, conflict: 409, forbidden: 403 }[err.code];
      return errorResponse(status, err.code, err.message);
    }
    if (err instanceof ConflictError) return errorResponse(409, "conflict", err.message);
    if (err instanceof HTTPException) {
      return errorResponse(err.status, err.status === 400 ? "bad_request" : "error", err.message);
    }
    deps.endpoint.stats.error("api");
    deps.endpoint.log.error("API request failed: {error}", { error: String(err) });
    return errorResponse(500, "internal", "internal error (see the server log)");
  });
  return api;
}
