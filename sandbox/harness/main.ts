// The harness entry point: installs the net guard, imports the app, then runs one mode.
//
//   deno run ... /dropserver/main.ts '<config json>'
// config: {mode: "app-init"|"appspace"|"migrate", entry: "file:///app/app.ts",
//          socket?, data?, meta?, from?, to?, relay?: {socket, hosts}}

import { registry } from "./app.ts";
import { emit } from "./events.ts";
import { installNetGuard } from "./netguard.ts";
import { installRelay, type RelayConfig } from "./relay.ts";
import { runMigrations } from "./migrate.ts";
import { AppDefinitionError, describeApp, normalizeApp } from "./routes.ts";
import { serveAppspace } from "./serve.ts";

interface Config {
  mode: "app-init" | "appspace" | "migrate";
  entry: string;
  socket?: string;
  data?: string | null;
  meta?: string | null;
  from?: number;
  to?: number;
  relay?: RelayConfig;
}

function failed(error: string): never {
  emit({ event: "result", ok: false, error: error.slice(0, 4000) });
  Deno.exit(1);
}

const config: Config = JSON.parse(Deno.args[0]);
installRelay(config.relay);
installNetGuard();

try {
  await import(config.entry);
} catch (err) {
  console.error("the app failed to load:", err);
  failed(`the app failed to load: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
}

let app;
try {
  app = normalizeApp(registry);
} catch (err) {
  if (!(err instanceof AppDefinitionError)) throw err;
  failed(`bad createApp() definition: ${err.message}`);
}

switch (config.mode) {
  case "app-init":
    emit({ event: "result", ok: true, ...describeApp(app) });
    Deno.exit(0);
    break;
  case "migrate": {
    const result = await runMigrations(app, config.from ?? 0, config.to ?? 0, config.data ?? "");
    emit({ event: "result", ...result });
    Deno.exit(result.ok ? 0 : 1);
    break;
  }
  case "appspace":
    await serveAppspace(app, { socket: config.socket!, data: config.data ?? "", meta: config.meta ?? null });
    break;
  default:
    failed(`unknown mode ${(config as { mode: unknown }).mode}`);
}
