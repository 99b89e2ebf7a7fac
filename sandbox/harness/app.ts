// The module apps import as "@dropserver/app": createApp() and the types of the app API (fixed contract).

import { emit } from "./events.ts";

export type Auth = "public" | "user" | { permission: string };

export interface User {
  id: string;
  displayName: string;
  permissions: string[];
}

export interface Context {
  /** The request as the browser sent it: original URL, no X-Dropserver-* headers. */
  request: Request;
  params: Record<string, string>;
  user: User | null;
  /** The appspace's data directory; also `Deno.cwd()`. */
  dataPath: string;
  appspace: { users(): Promise<User[]> };
}

export type Handler = (ctx: Context) => Response | Promise<Response>;

export interface FunctionRoute {
  method: string;
  path: string;
  auth?: Auth;
  handler: Handler;
}

export interface StaticRoute {
  method: string;
  path: string;
  auth?: Auth;
  /** "@app/<dir>": files of the app package, served by the host. */
  static: string;
}

export type Route = FunctionRoute | StaticRoute;

export interface MigrationContext {
  dataPath: string;
  schema: number;
  direction: "up" | "down";
}

export interface Migration {
  schema: number;
  up(ctx: MigrationContext): void | Promise<void>;
  down?(ctx: MigrationContext): void | Promise<void>;
}

export interface AppDefinition {
  routes?: Route[];
  migrations?: Migration[];
}

export interface NetworkRequestInput {
  /** Hosts for the app's server code, as in dropapp.json: "api.example.com", "*.example.org:443". */
  server?: string[];
  /** Origins for the app's pages: "https://tiles.example.com". */
  browser?: string[];
  /** Why the app needs them, shown to the owner (at most 300 characters, plain text). */
  reason?: string;
}

const MAX_ASKED = 20;

/**
 * Ask the owner for network access. Nothing is granted here: the request waits on the
 * appspace's page with the reason, for the owner to allow or dismiss (entries the platform never
 * allows, such as private addresses, are shown to the owner as refused, with why). Once allowed,
 * server entries apply when the appspace restarts (the platform restarts it), browser origins
 * on the next page load. Throws TypeError on a malformed request.
 */
export function requestNetwork(request: NetworkRequestInput): void {
  const list = (value: unknown, name: string): string[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
      throw new TypeError(`requestNetwork: ${name} must be an array of strings`);
    }
    return value.map((v) => v.slice(0, 300));
  };
  const server = list(request?.server, "server");
  const browser = list(request?.browser, "browser");
  if (server.length + browser.length === 0) {
    throw new TypeError("requestNetwork: ask for at least one server host or browser origin");
  }
  if (server.length + browser.length > MAX_ASKED) {
    throw new TypeError(`requestNetwork: at most ${MAX_ASKED} entries per request`);
  }
  const reason = typeof request.reason === "string" ? request.reason.slice(0, 1000) : "";
  emit({ event: "network_request", server, browser, reason });
}

// Read by the harness after the app module has been evaluated.
export const registry: { app: AppDefinition | null; calls: number } = { app: null, calls: 0 };

export function createApp(definition: AppDefinition): void {
  registry.calls += 1;
  if (registry.calls > 1) {
    throw new Error("createApp() may be called only once");
  }
  registry.app = definition;
}
