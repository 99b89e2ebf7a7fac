// Appspace mode: serve the app over the unix socket, one request per matched route the host sends.
//
// The host (gateway) has already matched the route and enforced its auth; it names the route by
// index in X-Dropserver-Route. Every X-Dropserver-* header is removed before the app sees the
// request, and the URL is rebuilt from the original scheme and host (the raw one is http+unix).
// A request whose path the app's URL would read differently gets 400 "bad-path" (sentPath).

import type { Context, User } from "./app.ts";
import { emit } from "./events.ts";
import type { NormalApp } from "./routes.ts";

export interface ServeConfig {
  socket: string;
  data: string;
  meta: string | null;
}

const HOST = /^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

function harnessError(status: number, code: string, detail: string): Response {
  return new Response(`dropserver harness: ${detail}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "x-dropserver-harness-error": code },
  });
}

async function readUsers(meta: string | null): Promise<User[]> {
  if (!meta) return [];
  try {
    const list = JSON.parse(await Deno.readTextFile(`${meta}/users.json`));
    return Array.isArray(list) ? list : [];
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
}

/**
 * The path the host sent, if the URL the app is handed reads exactly that path; else null.
 *
 * Deno builds `raw.url` from the unix socket's scheme, the Host header and the request target
 * as sent (`http+unix://<host><target>`, a non-special URL, so nothing in it is normalised).
 * The app's URL is `<scheme>://<host><path><query>`, a special URL: a WHATWG parser reads `\`
 * as `/`, resolves `..` and `%2e`, strips tabs and newlines. The gateway only sends paths that
 * survive that unchanged (appspaces/routes.py `request_path`); this is the second wall.
 */
function sentPath(raw: Request, hostHeader: string, appBase: string): string | null {
  const prefix = `http+unix://${hostHeader}`;
  if (!raw.url.startsWith(prefix)) return null;
  const rest = raw.url.slice(prefix.length);
  if (!rest.startsWith("/")) return null;
  const end = rest.indexOf("?");
  const path = end === -1 ? rest : rest.slice(0, end);
  try {
    return new URL(`${appBase}${path}`).pathname === path ? path : null;
  } catch {
    return null;
  }
}

function parseUser(h: Headers): User | null | "bad" {
  const id = h.get("x-dropserver-user-id");
  if (id === null) return null;
  try {
    const displayName = decodeURIComponent(h.get("x-dropserver-user-name") ?? "");
    const permissions = JSON.parse(h.get("x-dropserver-user-permissions") ?? "[]");
    if (!Array.isArray(permissions) || !permissions.every((p) => typeof p === "string")) return "bad";
    return { id, displayName, permissions };
  } catch {
    return "bad";
  }
}

function parseParams(h: Headers): Record<string, string> | null {
  const text = h.get("x-dropserver-params");
  if (text === null) return {};
  try {
    const value = JSON.parse(text);
    if (!value || typeof value !== "object" || Array.isArray(value)) return null;
    if (!Object.values(value).every((v) => typeof v === "string")) return null;
    return value;
  } catch {
    return null;
  }
}

export async function serveAppspace(app: NormalApp, cfg: ServeConfig): Promise<void> {
  // One bad promise in one handler must not take the appspace down for everyone.
  addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    console.error("unhandled rejection:", e.reason);
  });

  // The app gets a rebuilt Request; Deno can only upgrade the one Deno.serve produced.
  const originals = new WeakMap<Request, Request>();
  const upgrade = Deno.upgradeWebSocket;
  Object.defineProperty(Deno, "upgradeWebSocket", {
    value: (req: Request, options?: Deno.UpgradeWebSocketOptions) => upgrade(originals.get(req) ?? req, options),
    configurable: true,
    writable: true,
  });

  const handle = async (raw: Request): Promise<Response> => {
    const h = raw.headers;
    const indexText = h.get("x-dropserver-route") ?? "";
    if (!/^\d{1,6}$/.test(indexText)) return harnessError(400, "bad-route", "missing or bad X-Dropserver-Route");
    const route = app.routes[Number(indexText)];
    if (!route) return harnessError(404, "no-route", `no route ${indexText}`);
    if (route.kind !== "function" || !route.handler) {
      return harnessError(404, "static-route", `route ${indexText} is static: the host serves it`);
    }
    const params = parseParams(h);
    if (params === null) return harnessError(400, "bad-params", "bad X-Dropserver-Params");
    const user = parseUser(h);
    if (user === "bad") return harnessError(400, "bad-user", "bad X-Dropserver-User-* headers");
    const host = h.get("x-dropserver-host") ?? "localhost";
    if (!HOST.test(host)) return harnessError(400, "bad-host", "bad X-Dropserver-Host");
    const scheme = h.get("x-dropserver-scheme") === "https" ? "https" : "http";

    const hostHeader = h.get("host") ?? "";
    if (!HOST.test(hostHeader)) return harnessError(400, "bad-host", "bad Host");
    const path = sentPath(raw, hostHeader, `${scheme}://${host}`);
    if (path === null) return harnessError(400, "bad-path", "the app would read another path");

    const headers = new Headers();
    for (const [name, value] of h) {
      if (!name.startsWith("x-dropserver-")) headers.append(name, value);
    }
    headers.set("host", host);
    const target = new URL(raw.url);
    const hasBody = raw.method !== "GET" && raw.method !== "HEAD";
    const request = new Request(`${scheme}://${host}${path}${target.search}`, {
      method: raw.method,
      headers,
      body: hasBody ? raw.body : null,
      redirect: "manual",
    });
    originals.set(request, raw);

    const ctx: Context = {
      request,
      params,
      user,
      dataPath: cfg.data,
      appspace: { users: () => readUsers(cfg.meta) },
    };
    try {
      const response = await route.handler(ctx);
      if (!(response instanceof Response)) {
        console.error(`route ${indexText} (${route.method} ${route.path}) returned no Response`);
        return harnessError(500, "bad-response", "the handler returned no Response");
      }
      return response;
    } catch (err) {
      console.error(`route ${indexText} (${route.method} ${route.path}) threw:`, err);
      return harnessError(500, "handler-error", "the handler threw");
    }
  };

  const server = Deno.serve({ path: cfg.socket, onListen: () => emit({ event: "ready" }) }, handle);

  let stopping = false;
  Deno.addSignalListener("SIGTERM", () => {
    if (stopping) return;
    stopping = true;
    // Finish in-flight requests; the supervisor SIGKILLs the cgroup after its grace period.
    server.shutdown().finally(() => Deno.exit(0));
  });
  await server.finished;
}
