// Migrate mode: run the app's migrations from schema A to B (up or down) and report the result.

import type { NormalApp } from "./routes.ts";

export interface MigrateResult {
  ok: boolean;
  from: number;
  to: number;
  reached: number;
  ran: number[];
  error?: string;
}

export async function runMigrations(app: NormalApp, from: number, to: number, dataPath: string): Promise<MigrateResult> {
  const declared = app.migrations.map((m) => m.schema);
  const result: MigrateResult = { ok: false, from, to, reached: from, ran: [] };
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to < 0) {
    return { ...result, error: "from and to must be non-negative integers" };
  }
  if (to !== 0 && !declared.includes(to)) return { ...result, error: `the app declares no schema ${to}` };
  if (from !== 0 && !declared.includes(from)) return { ...result, error: `the app declares no schema ${from}` };
  const below = (s: number) => Math.max(0, ...declared.filter((d) => d < s));

  if (to >= from) {
    for (const m of app.migrations.filter((m) => m.schema > from && m.schema <= to)) {
      try {
        await m.up({ dataPath, schema: m.schema, direction: "up" });
      } catch (err) {
        return { ...result, error: `up(${m.schema}) failed: ${describe(err)}` };
      }
      result.ran.push(m.schema);
      result.reached = m.schema;
    }
  } else {
    const steps = app.migrations.filter((m) => m.schema <= from && m.schema > to).reverse();
    const missing = steps.filter((m) => typeof m.down !== "function").map((m) => m.schema);
    if (missing.length) return { ...result, error: `no down() for schema ${missing.join(", ")}` };
    for (const m of steps) {
      try {
        await m.down!({ dataPath, schema: m.schema, direction: "down" });
      } catch (err) {
        return { ...result, error: `down(${m.schema}) failed: ${describe(err)}` };
      }
      result.ran.push(m.schema);
      result.reached = below(m.schema);
    }
  }
  return { ...result, ok: true };
}

function describe(err: unknown): string {
  return String(err instanceof Error ? `${err.name}: ${err.message}` : err).slice(0, 2000);
}
