"""The app every gateway test runs: one route per behaviour the gateway must get right."""

APP_TS = r"""
import { createApp, requestNetwork } from "@dropserver/app";

let hanging = 0;
let pulled = 0;
const json = (value, init = {}) =>
  new Response(JSON.stringify(value), {
    ...init,
    headers: { "content-type": "application/json", ...(init.headers ?? {}) },
  });
const seen = (ctx) => {
  const out = {
    user: ctx.user,
    params: ctx.params,
    url: ctx.request.url,
    method: ctx.request.method,
    headers: Object.fromEntries(ctx.request.headers),
  };
  // test_relay.py reads what arrived from the appspace's log, on the host.
  if (ctx.request.headers.has("x-relay-test")) console.log("relay-seen " + JSON.stringify(out));
  return out;
};

createApp({
  routes: [
    { method: "GET", path: "/", auth: "public", handler: () => new Response("home") },
    { method: "GET", path: "/echo", auth: "public", handler: (ctx) => json(seen(ctx)) },
    {
      method: "POST", path: "/echo", auth: "public",
      handler: async (ctx) => {
        const body = new Uint8Array(await ctx.request.arrayBuffer());
        const digest = await crypto.subtle.digest("SHA-256", body);
        const hex = [...new Uint8Array(digest)]
          .map((b) => b.toString(16).padStart(2, "0"))
          .join("");
        return json({ ...seen(ctx), length: body.length, sha256: hex });
      },
    },
    { method: "GET", path: "/user", auth: "user", handler: (ctx) => json(seen(ctx)) },
    {
      method: "GET", path: "/edit", auth: { permission: "edit" },
      handler: (ctx) => json(seen(ctx)),
    },
    { method: "GET", path: "/items/:id", auth: "public", handler: (ctx) => json(seen(ctx)) },
    {
      method: "GET", path: "/loose", auth: "public",
      handler: () => {
        const h = new Headers({
          "content-type": "text/html",
          "access-control-allow-origin": "*",
          "access-control-allow-credentials": "true",
          "content-security-policy": "default-src *; report-uri https://collector.example/r",
          "x-frame-options": "ALLOWALL",
          "x-dropserver-user-id": "forged",
          "x-app-header": "kept",
          "reporting-endpoints": 'default="https://collector.example/r"',
        });
        h.append("set-cookie", "app_pref=dark; Path=/; HttpOnly");
        h.append("set-cookie", "wide=1; Domain=localhost; Path=/");
        h.append("set-cookie", "ds_appspace=forged; Path=/");
        h.append("set-cookie", "ds_panel=forged; Path=/");
        return new Response("<p>loose</p>", { headers: h });
      },
    },
    { method: "GET", path: "/hang", auth: "public",
      handler: () => { hanging += 1; return new Promise(() => {}); } },
    { method: "GET", path: "/hanging", auth: "public", handler: () => json({ hanging }) },
    {
      method: "GET", path: "/stream", auth: "public",
      handler: (ctx) => {
        const n = Number(new URL(ctx.request.url).searchParams.get("n") ?? "3");
        let i = 0;
        const body = new ReadableStream({
          async pull(controller) {
            if (i >= n) { controller.close(); return; }
            controller.enqueue(new TextEncoder().encode(`chunk${i++};`));
            await new Promise((r) => setTimeout(r, 5));
          },
        });
        return new Response(body, { headers: { "content-type": "text/plain" } });
      },
    },
    {
      method: "GET", path: "/stream-big", auth: "public",
      handler: (ctx) => {
        const n = Number(new URL(ctx.request.url).searchParams.get("n") ?? "1");
        const chunk = new Uint8Array(65536);
        let i = 0;
        const body = new ReadableStream({
          pull(controller) {
            if (i >= n) { controller.close(); return; }
            i += 1;
            pulled += 1;
            controller.enqueue(chunk);
          },
        });
        return new Response(body, { headers: { "content-type": "application/octet-stream" } });
      },
    },
    { method: "GET", path: "/pulled", auth: "public", handler: () => json({ pulled }) },
    { method: "POST", path: "/submit", auth: "user", handler: () => new Response("submitted") },
    {
      method: "GET", path: "/ws", auth: "public",
      handler: (ctx) => {
        const { socket, response } = Deno.upgradeWebSocket(ctx.request);
        socket.onmessage = (e) => {
          if (typeof e.data === "string" && e.data.startsWith("close:")) {
            socket.close(Number(e.data.slice(6)), "bye");
          } else if (typeof e.data === "string" && e.data.startsWith("big:")) {
            socket.send("x".repeat(Number(e.data.slice(4))));
          } else if (typeof e.data === "string" && e.data === "who") {
            socket.send(JSON.stringify(ctx.user));
          } else {
            socket.send(e.data);
          }
        };
        return response;
      },
    },
    {
      method: "GET", path: "/ws-user", auth: "user",
      handler: (ctx) => {
        const { socket, response } = Deno.upgradeWebSocket(ctx.request);
        socket.onopen = () => socket.send(JSON.stringify(ctx.user));
        return response;
      },
    },
    // For revocation tests: a long response and a socket that need the "edit" permission.
    {
      method: "GET", path: "/stream-edit", auth: { permission: "edit" },
      handler: () => {
        let i = 0;
        const body = new ReadableStream({
          async pull(controller) {
            if (i >= 600) {
              controller.enqueue(new TextEncoder().encode("done"));
              controller.close();
              return;
            }
            await new Promise((r) => setTimeout(r, 50));
            controller.enqueue(new TextEncoder().encode(`tick${i++};`));
          },
        });
        return new Response(body, { headers: { "content-type": "text/plain" } });
      },
    },
    {
      method: "GET", path: "/ws-edit", auth: { permission: "edit" },
      handler: (ctx) => {
        const { socket, response } = Deno.upgradeWebSocket(ctx.request);
        socket.onmessage = (e) => socket.send(e.data);
        return response;
      },
    },
    { method: "GET", path: "/assets/*", auth: "public", static: "@app/public" },
    { method: "GET", path: "/private/*", auth: "user", static: "@app/private" },
    { method: "GET", path: "/logo.txt", auth: "public", static: "@app/public/logo.txt" },
    {
      method: "GET", path: "/nobody", auth: { permission: "admin" },
      handler: () => new Response("x"),
    },
    // test_relay.py: reach out as the test says (fetch a URL, open a TCP connection, or
    // write raw bytes to the relay socket) and tell what happened.
    {
      method: "POST", path: "/outbound", auth: "public",
      handler: async (ctx) => {
        const q = await ctx.request.json();
        try {
          if (q.raw !== undefined) {
            // `hold` connections that never finish their request head, open meanwhile.
            const held = [];
            for (let i = 0; i < (q.hold ?? 0); i++) {
              const c = await Deno.connect({ transport: "unix", path: "/run/ds/relay.sock" });
              await c.write(new TextEncoder().encode("GET http://"));
              held.push(c);
            }
            const conn = await Deno.connect({ transport: "unix", path: "/run/ds/relay.sock" });
            await conn.write(new TextEncoder().encode(q.raw));
            const chunks = [];
            for (;;) {
              const buf = new Uint8Array(65536);
              const n = await conn.read(buf);
              if (n === null) break;
              chunks.push(buf.slice(0, n));
            }
            conn.close();
            held.forEach((c) => c.close());
            return json({ raw: await new Blob(chunks).text() });
          }
          if (q.connect !== undefined) {
            const conn = await Deno.connect(q.connect);
            conn.close();
            return json({ connected: true });
          }
          const r = await fetch(q.url, {
            method: q.method ?? "GET",
            headers: q.headers ?? {},
            body: q.body,
            redirect: "manual",
          });
          return json({
            status: r.status,
            location: r.headers.get("location"),
            relay: r.headers.get("x-dropserver-relay"),
            body: await r.text(),
          });
        } catch (err) {
          return json({ error: `${err?.name}: ${err?.message}` });
        }
      },
    },
    {
      method: "POST", path: "/ask", auth: "public",
      handler: async (ctx) => {
        try {
          requestNetwork(await ctx.request.json());
        } catch (err) {
          return json({ error: String(err) }, { status: 400 });
        }
        return json({ asked: true });
      },
    },
  ],
});
"""

MANIFEST_PERMISSIONS = [
    {"key": "edit", "name": "Edit", "description": "Change things"},
    {"key": "admin", "name": "Administer", "description": "Everything"},
]

BIG = bytes(range(256)) * 1500  # 384000 bytes: over the in-memory limit, streamed from disk

FILES = {
    "app.ts": APP_TS,
    "secret.txt": "app-root-secret\n",
    "public/index.html": "<!doctype html><title>static</title><h1>static page</h1>\n",
    "public/app.js": "console.log('static js');\n",
    "public/style.css": "body { color: red; }\n",
    "public/logo.txt": "logo\n",
    # Loads an image and a script from the origins in its query (test_csp_browser.py).
    "public/network.html": (
        '<!doctype html><title>network</title><p id="img">pending</p><p id="js">pending</p>'
        '<script src="network.js"></script>\n'
    ),
    "public/network.js": (
        "const q = new URLSearchParams(location.search);\n"
        "const img = new Image();\n"
        "img.onload = () => { document.getElementById('img').textContent = 'loaded'; };\n"
        "img.onerror = () => { document.getElementById('img').textContent = 'blocked'; };\n"
        "img.src = q.get('img') + '/pixel.gif';\n"
        "const s = document.createElement('script');\n"
        "s.onload = () => { document.getElementById('js').textContent = 'loaded'; };\n"
        "s.onerror = () => { document.getElementById('js').textContent = 'blocked'; };\n"
        "s.src = q.get('js') + '/lib.js';\n"
        "document.body.appendChild(s);\n"
    ),
    "public/sub/deep.json": '{"deep": true}\n',
    "private/secret.txt": "members only\n",
}
BINARY_FILES = {"public/big.bin": BIG}
