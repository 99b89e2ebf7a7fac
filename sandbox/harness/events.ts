// Harness -> supervisor events: one "@@ds <json>" line on stdout each (ready, result, blocked).
//
// The app shares stdout and could print such lines too; that only misleads the supervisor about
// this same app (its readiness, its own routes, its own blocked hosts), never about another.

const encoder = new TextEncoder();
export const EVENT_PREFIX = "@@ds ";

export function emit(event: Record<string, unknown>): void {
  const bytes = encoder.encode(EVENT_PREFIX + JSON.stringify(event) + "\n");
  let offset = 0;
  while (offset < bytes.length) {
    offset += Deno.stdout.writeSync(bytes.subarray(offset));
  }
}
