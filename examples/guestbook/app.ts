// Guestbook 1.0.0: a public page anyone can sign, rendered on the server (no JavaScript), with
// its stylesheet and icon served by a static route straight from the app's files.

import { type Context, createApp } from "@dropserver/app";
import { addEntry, createStore, type Entry, readEntries, removeStore } from "./store.ts";

const MAX_NAME = 60;
const MAX_MESSAGE = 1000;

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(entries: Entry[], error = "", form = { name: "", message: "" }): Response {
  const items = entries.map((e) => `
      <li><strong>${escape(e.name)}</strong> <span class="muted">${escape(new Date(e.at).toUTCString())}</span>
        <p>${escape(e.message)}</p></li>`).join("");
  const html = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Guestbook</title>
  <link rel="stylesheet" href="/assets/guestbook.css">
</head>
<body>
  <main>
    <header><img src="/assets/icon.svg" alt=""><h1>Guestbook</h1></header>
    <form method="post" action="/">
      <h2>Sign the guestbook</h2>
      ${error ? `<p class="error" role="alert">${escape(error)}</p>` : ""}
      <label for="name">Your name</label>
      <input id="name" name="name" maxlength="${MAX_NAME}" required value="${escape(form.name)}">
      <label for="message">Message</label>
      <textarea id="message" name="message" maxlength="${MAX_MESSAGE}" required>${escape(form.message)}</textarea>
      <button type="submit">Sign</button>
    </form>
    <h2>${entries.length ? "Entries" : "No entries yet: be the first!"}</h2>
    <ol>${items}
    </ol>
  </main>
</body>
</html>`;
  return new Response(html, {
    status: error ? 400 : 200,
    headers: { "content-type": "text/html; charset=utf-8" },
  });
}

async function show(ctx: Context): Promise<Response> {
  return page(await readEntries(ctx.dataPath));
}

async function sign(ctx: Context): Promise<Response> {
  // A public form: anyone may sign, but only from this page (not from a form on another site).
  const origin = ctx.request.headers.get("origin");
  if (origin !== null && origin !== new URL(ctx.request.url).origin) {
    return new Response("Sign the guestbook from its own page.", { status: 403 });
  }
  let data: FormData;
  try {
    data = await ctx.request.formData();
  } catch {
    return new Response("Send the guestbook form.", { status: 400 });
  }
  const name = String(data.get("name") ?? "").trim();
  const message = String(data.get("message") ?? "").trim();
  const entries = await readEntries(ctx.dataPath);
  if (!name || name.length > MAX_NAME) {
    return page(entries, `Give a name of at most ${MAX_NAME} characters.`, { name, message });
  }
  if (!message || message.length > MAX_MESSAGE) {
    return page(entries, `Write a message of at most ${MAX_MESSAGE} characters.`, { name, message });
  }
  await addEntry(ctx.dataPath, { name, message, at: new Date().toISOString() });
  return new Response(null, { status: 303, headers: { location: "/" } });
}

createApp({
  routes: [
    { method: "GET", path: "/", auth: "public", handler: show },
    { method: "POST", path: "/", auth: "public", handler: sign },
    { method: "GET", path: "/assets/*", auth: "public", static: "@app/assets" },
  ],
  migrations: [
    { schema: 1, up: ({ dataPath }) => createStore(dataPath), down: ({ dataPath }) => removeStore(dataPath) },
  ],
});
