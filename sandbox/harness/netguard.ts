// Reports outbound connections that Deno's permissions refused, for the owner's approval UI.
//
// Not a security layer: Deno (and the network namespace) enforce; this only tells the host which
// host:port the app wanted, deduplicated and rate-limited so an app cannot flood the supervisor.

import { emit } from "./events.ts";

const DENIED = /Requires net access to "([^"]+)"/;
const DEDUPE_MS = 10_000;
const MAX_PER_MINUTE = 30;

const lastReported = new Map<string, number>();
let windowStart = 0;
let inWindow = 0;

function messages(err: unknown): string[] {
  const out: string[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current; depth++) {
    const e = current as { message?: unknown; cause?: unknown };
    out.push(String(e.message ?? ""));
    current = e.cause;
  }
  return out;
}

export function reportIfBlocked(err: unknown): void {
  for (const text of messages(err)) {
    const match = DENIED.exec(text);
    if (match) {
      report(match[1]);
      return;
    }
  }
}

function report(target: string): void {
  if (target.startsWith("unix:")) return;
  let host: string;
  let port: number | null = null;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(target);
  if (bracket) {
    host = bracket[1];
    port = bracket[2] ? Number(bracket[2]) : null;
  } else {
    const colon = target.lastIndexOf(":");
    host = colon > 0 ? target.slice(0, colon) : target;
    port = colon > 0 ? Number(target.slice(colon + 1)) : null;
  }
  const now = Date.now();
  const key = `${host}:${port}`;
  if (now - (lastReported.get(key) ?? -Infinity) < DEDUPE_MS) return;
  if (now - windowStart > 60_000) {
    windowStart = now;
    inWindow = 0;
  }
  if (inWindow >= MAX_PER_MINUTE) return;
  inWindow += 1;
  if (lastReported.size > 1000) lastReported.clear();
  lastReported.set(key, now);
  emit({ event: "blocked", host: host.slice(0, 255), port });
}

function wrapAsync<T extends (...args: never[]) => Promise<unknown>>(original: T): T {
  return async function (this: unknown, ...args: Parameters<T>) {
    try {
      return await original.apply(this, args);
    } catch (err) {
      reportIfBlocked(err);
      throw err;
    }
  } as T;
}

/** Installed before the app is imported, so the app only ever sees the wrapped functions. */
export function installNetGuard(): void {
  globalThis.fetch = wrapAsync(globalThis.fetch.bind(globalThis));
  for (const name of ["connect", "connectTls"] as const) {
    const original = Deno[name].bind(Deno) as (...args: never[]) => Promise<unknown>;
    Object.defineProperty(Deno, name, {
      value: wrapAsync(original),
      configurable: true,
      writable: true,
    });
  }
}
