// Appspace page, enhanced: the log shows its newest lines, and "Refresh the log" reloads it in
// place. Without JavaScript the link opens the log as plain text.
(function () {
  "use strict";
  const log = document.querySelector("pre[data-log-url]");
  const refresh = document.querySelector("[data-log-refresh]");
  if (!log) return;
  log.scrollTop = log.scrollHeight;
  if (!refresh || !window.fetch) return;
  refresh.addEventListener("click", async function (event) {
    event.preventDefault();
    try {
      const response = await fetch(log.dataset.logUrl, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      const text = await response.text();
      log.textContent = text || "Nothing yet.";
      log.scrollTop = log.scrollHeight;
    } catch (error) {
      log.textContent += "\n(Could not load the log: " + error.message + ")";
    }
  });
})();
