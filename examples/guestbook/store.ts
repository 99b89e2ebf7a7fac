// The guestbook's entries: one JSON file in the data directory, replaced atomically (write a
// temporary file, then rename) and written by one writer at a time.

export interface Entry {
  name: string;
  message: string;
  at: string;
}

export const MAX_ENTRIES = 1000;
const FILE = "entries.json";

let queue: Promise<unknown> = Promise.resolve();

export async function readEntries(dataPath: string): Promise<Entry[]> {
  try {
    const entries = JSON.parse(await Deno.readTextFile(`${dataPath}/${FILE}`));
    return Array.isArray(entries) ? entries : [];
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
}

async function writeEntries(dataPath: string, entries: Entry[]): Promise<void> {
  const tmp = `${dataPath}/.${FILE}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(entries));
  await Deno.rename(tmp, `${dataPath}/${FILE}`);
}

export function addEntry(dataPath: string, entry: Entry): Promise<void> {
  const next = queue.then(async () => {
    const entries = await readEntries(dataPath);
    entries.unshift(entry);
    await writeEntries(dataPath, entries.slice(0, MAX_ENTRIES));
  });
  queue = next.catch(() => {});
  return next;
}

/** Schema 1: the file exists (an empty guestbook). */
export async function createStore(dataPath: string): Promise<void> {
  await writeEntries(dataPath, await readEntries(dataPath));
}

export async function removeStore(dataPath: string): Promise<void> {
  await Deno.remove(`${dataPath}/${FILE}`).catch(() => {});
}
