// Checks what the app passed to createApp() and turns it into the route table the host matches on.

import type { Auth, Handler, Migration, registry as Registry } from "./app.ts";

export interface NormalRoute {
  index: number;
  method: string;
  path: string;
  auth: Auth;
  kind: "function" | "static";
  static: string | null;
  handler: Handler | null;
}

export interface NormalApp {
  routes: NormalRoute[];
  migrations: Migration[];
}

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
const PERMISSION = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const MAX_ROUTES = 1000;
const MAX_MIGRATIONS = 1000;

export class AppDefinitionError extends Error {}

function fail(message: string): never {
  throw new AppDefinitionError(message);
}

function normalizeAuth(auth: unknown, where: string): Auth {
  if (auth === undefined || auth === "user") return "user";
  if (auth === "public") return "public";
  if (auth && typeof auth === "object") {
    const permission = (auth as { permission?: unknown }).permission;
    if (typeof permission === "string" && PERMISSION.test(permission)) return { permission };
  }
  return fail(`${where}: auth must be "public", "user" or {permission: "<key>"}`);
}

export function normalizeApp(reg: typeof Registry): NormalApp {
  if (reg.calls === 0 || !reg.app) fail("the app did not call createApp()");
  const def = reg.app;
  const rawRoutes: unknown = def.routes ?? [];
  const rawMigrations: unknown = def.migrations ?? [];
  if (!Array.isArray(rawRoutes)) fail("routes must be an array");
  if (!Array.isArray(rawMigrations)) fail("migrations must be an array");
  if (rawRoutes.length > MAX_ROUTES) fail(`at most ${MAX_ROUTES} routes`);
  if (rawMigrations.length > MAX_MIGRATIONS) fail(`at most ${MAX_MIGRATIONS} migrations`);

  const routes = rawRoutes.map((raw: unknown, index: number): NormalRoute => {
    const where = `routes[${index}]`;
    if (!raw || typeof raw !== "object") fail(`${where} must be an object`);
    const r = raw as Record<string, unknown>;
    const method = typeof r.method === "string" ? r.method.toUpperCase() : "";
    if (!METHODS.has(method)) fail(`${where}: method must be one of ${[...METHODS].join(", ")}`);
    const path = r.path;
    // deno-lint-ignore no-control-regex
    if (typeof path !== "string" || !path.startsWith("/") || path.length > 1024 || /[\s\x00-\x1f\x7f]/.test(path)) {
      fail(`${where}: path must start with "/" and hold no spaces or control characters`);
    }
    const auth = normalizeAuth(r.auth, where);
    const hasHandler = typeof r.handler === "function";
    const hasStatic = r.static !== undefined;
    if (hasHandler === hasStatic) fail(`${where}: give exactly one of handler or static`);
    if (hasStatic) {
      const dir = r.static;
      if (typeof dir !== "string" || !/^@app(\/[^/]+)*\/?$/.test(dir) || dir.split("/").some((p) => p === ".." || p === ".")) {
        fail(`${where}: static must be "@app/<dir>" inside the app`);
      }
      return { index, method, path, auth, kind: "static", static: dir, handler: null };
    }
    return { index, method, path, auth, kind: "function", static: null, handler: r.handler as Handler };
  });

  const seen = new Set<number>();
  const migrations = rawMigrations.map((raw: unknown, i: number): Migration => {
    const where = `migrations[${i}]`;
    if (!raw || typeof raw !== "object") fail(`${where} must be an object`);
    const m = raw as Record<string, unknown>;
    if (typeof m.schema !== "number" || !Number.isInteger(m.schema) || m.schema < 1 || m.schema > 1_000_000) {
      fail(`${where}: schema must be a positive integer`);
    }
    if (seen.has(m.schema)) fail(`${where}: schema ${m.schema} declared twice`);
    seen.add(m.schema);
    if (typeof m.up !== "function") fail(`${where}: up must be a function`);
    if (m.down !== undefined && typeof m.down !== "function") fail(`${where}: down must be a function`);
    return m as unknown as Migration;
  });
  migrations.sort((a, b) => a.schema - b.schema);
  return { routes, migrations };
}

/** The app-init report: what the host stores and matches on; no functions. */
export function describeApp(app: NormalApp): Record<string, unknown> {
  const schemas = app.migrations.map((m) => m.schema);
  return {
    routes: app.routes.map((r) => ({
      index: r.index,
      method: r.method,
      path: r.path,
      auth: r.auth,
      kind: r.kind,
      static: r.static,
    })),
    migrations: schemas,
    schema: schemas.length ? schemas[schemas.length - 1] : 0,
  };
}
