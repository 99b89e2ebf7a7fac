// Notes page: loads the notes, adds and deletes them through the JSON API, and listens on a
// WebSocket so every open tab shows changes at once. No inline code: the appspace's CSP is
// `default-src 'self'`.
(function () {
  "use strict";
  const list = document.getElementById("notes");
  const form = document.getElementById("add");
  const input = document.getElementById("text");
  const status = document.getElementById("status");
  let me = null;

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response.status === 204 ? null : response.json();
  }

  function render(notes) {
    list.replaceChildren(...notes.map((note) => {
      const item = document.createElement("li");
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = note.text;
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = note.author + " · " + new Date(note.created).toLocaleString();
      if (note.done) item.classList.add("done");
      if (note.mine && me && me.canEdit) {
        const box = document.createElement("input");
        box.type = "checkbox";
        box.checked = note.done;
        box.setAttribute("aria-label", "Done: " + note.text.slice(0, 40));
        box.addEventListener("change", () =>
          act(() => api("PATCH", "/api/notes/" + note.id, { done: box.checked })));
        item.append(box);
      }
      item.append(text, meta);
      if (note.mine && me && me.canEdit) {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "link";
        remove.textContent = "Delete";
        remove.setAttribute("aria-label", "Delete note: " + note.text.slice(0, 40));
        remove.addEventListener("click", () => act(() => api("DELETE", "/api/notes/" + note.id, {})));
        item.append(remove);
      }
      return item;
    }));
    if (!notes.length) status.textContent = "No notes yet.";
  }

  async function refresh() {
    render(await api("GET", "/api/notes"));
  }

  async function act(work) {
    status.textContent = "";
    try {
      await work();
      await refresh();
    } catch (error) {
      status.textContent = "That did not work: " + error.message;
    }
  }

  function listen(delay) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/api/live");
    socket.addEventListener("open", () => { delay = 1000; });
    socket.addEventListener("message", () => { refresh().catch(() => {}); });
    socket.addEventListener("close", () => {
      window.setTimeout(() => listen(Math.min(delay * 2, 30000)), delay);
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    act(async () => {
      await api("POST", "/api/notes", { text });
      input.value = "";
    });
  });

  (async function start() {
    try {
      me = await api("GET", "/api/me");
      document.getElementById("who").textContent = "Signed in as " + me.displayName + ".";
      form.hidden = !me.canEdit;
      document.getElementById("read-only").hidden = me.canEdit;
      await refresh();
      listen(1000);
    } catch (error) {
      status.textContent = "Could not load the notes: " + error.message;
    }
  })();
})();
