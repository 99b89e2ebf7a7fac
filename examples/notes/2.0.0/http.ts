// Small HTTP helpers shared by the handlers.

export function json(data: unknown, status = 200): Response {
  return new Response(JSON.stringify(data), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

export function problem(status: number, message: string): Response {
  return json({ error: message }, status);
}

/** Writes must come from this app's own pages: a JSON body (which another site cannot send
 * without a CORS preflight the platform never allows) and, when the browser says, our origin. */
export function isSameOriginWrite(request: Request): boolean {
  const type = request.headers.get("content-type") ?? "";
  if (!type.startsWith("application/json")) return false;
  const origin = request.headers.get("origin");
  return origin === null || origin === new URL(request.url).origin;
}
