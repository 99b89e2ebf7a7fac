// The notes database: one SQLite file in the appspace's data directory (node:sqlite).
//
// The data directory exists only while the appspace runs (not when the platform reads the
// routes at install time), so nothing is opened at import: handlers call notesDb(ctx.dataPath).

import { DatabaseSync } from "node:sqlite";

let shared: DatabaseSync | null = null;

function open(dataPath: string): DatabaseSync {
  const db = new DatabaseSync(`${dataPath}/notes.db`);
  db.exec("PRAGMA busy_timeout = 2000");
  return db;
}

/** The appspace's connection, opened on first use and kept for the life of the sandbox. */
export function notesDb(dataPath: string): DatabaseSync {
  shared ??= open(dataPath);
  return shared;
}

/** A short-lived connection for a migration (it runs in a process of its own). */
export function withDb<T>(dataPath: string, work: (db: DatabaseSync) => T): T {
  const db = open(dataPath);
  try {
    return work(db);
  } finally {
    db.close();
  }
}
