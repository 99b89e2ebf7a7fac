// The module apps import as "@dropserver/app": createApp() and the types of the app API (fixed contract).

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

// Read by the harness after the app module has been evaluated.
export const registry: { app: AppDefinition | null; calls: number } = { app: null, calls: 0 };

export function createApp(definition: AppDefinition): void {
  registry.calls += 1;
  if (registry.calls > 1) {
    throw new Error("createApp() may be called only once");
  }
  registry.app = definition;
}
