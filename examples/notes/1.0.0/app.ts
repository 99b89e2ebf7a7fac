// Notes 1.0.0: a shared list of notes in SQLite with live updates over a WebSocket.
//
// Everyone the owner let into the appspace reads the notes; writing needs the app's "edit"
// permission, and people delete only the notes they wrote themselves (ctx.user.id).

import { type Context, createApp } from "@dropserver/app";
import { notesDb, withDb } from "./db.ts";
import { isSameOriginWrite, json, problem } from "./http.ts";
import { announce, openLiveSocket } from "./live.ts";

const MAX_TEXT = 500;

interface NoteRow {
  id: number;
  user_id: string;
  author: string;
  text: string;
  created: string;
}

function me(ctx: Context): Response {
  const user = ctx.user!;
  return json({
    id: user.id,
    displayName: user.displayName,
    canEdit: user.permissions.includes("edit"),
  });
}

function listNotes(ctx: Context): Response {
  const rows = notesDb(ctx.dataPath)
    .prepare("SELECT id, user_id, author, text, created FROM notes ORDER BY id DESC LIMIT 500")
    .all() as unknown as NoteRow[];
  return json(rows.map((row) => ({
    id: row.id,
    author: row.author,
    text: row.text,
    created: row.created,
    mine: row.user_id === ctx.user!.id,
  })));
}

async function addNote(ctx: Context): Promise<Response> {
  if (!isSameOriginWrite(ctx.request)) return problem(415, "send JSON from this app's page");
  let body: { text?: unknown };
  try {
    body = await ctx.request.json();
  } catch {
    return problem(400, "the body is not JSON");
  }
  const text = typeof body.text === "string" ? body.text.trim() : "";
  if (!text || text.length > MAX_TEXT) return problem(400, `a note has 1 to ${MAX_TEXT} characters`);
  const user = ctx.user!;
  const result = notesDb(ctx.dataPath)
    .prepare("INSERT INTO notes (user_id, author, text, created) VALUES (?, ?, ?, ?)")
    .run(user.id, user.displayName, text, new Date().toISOString());
  announce({ type: "added", id: Number(result.lastInsertRowid) });
  return json({ id: Number(result.lastInsertRowid) }, 201);
}

function deleteNote(ctx: Context): Response {
  if (!isSameOriginWrite(ctx.request)) return problem(415, "send JSON from this app's page");
  const id = Number(ctx.params.id);
  if (!Number.isInteger(id)) return problem(404, "no such note");
  const result = notesDb(ctx.dataPath)
    .prepare("DELETE FROM notes WHERE id = ? AND user_id = ?")
    .run(id, ctx.user!.id);
  if (result.changes === 0) return problem(404, "no such note of yours");
  announce({ type: "deleted", id });
  return new Response(null, { status: 204 });
}

createApp({
  routes: [
    { method: "GET", path: "/", auth: "user", static: "@app/public/index.html" },
    { method: "GET", path: "/static/*", auth: "user", static: "@app/public" },
    { method: "GET", path: "/api/me", auth: "user", handler: me },
    { method: "GET", path: "/api/notes", auth: "user", handler: listNotes },
    { method: "POST", path: "/api/notes", auth: { permission: "edit" }, handler: addNote },
    { method: "DELETE", path: "/api/notes/:id", auth: { permission: "edit" }, handler: deleteNote },
    { method: "GET", path: "/api/live", auth: "user", handler: (ctx) => openLiveSocket(ctx.request) },
  ],
  migrations: [
    {
      schema: 1,
      up: ({ dataPath }) =>
        withDb(dataPath, (db) =>
          db.exec(`CREATE TABLE notes (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            author TEXT NOT NULL,
            text TEXT NOT NULL,
            created TEXT NOT NULL
          )`)
        ),
      down: ({ dataPath }) => withDb(dataPath, (db) => db.exec("DROP TABLE notes")),
    },
  ],
});
