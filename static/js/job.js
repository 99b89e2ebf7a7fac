// Live job progress: polls the job's status and updates the bar; reloads once it settles
// so the server renders the final page. Without JavaScript the page refreshes itself.
(function () {
  "use strict";
  const card = document.querySelector("[data-job-status-url]");
  if (!card) return;
  const url = card.dataset.jobStatusUrl;
  const bar = card.querySelector("progress");
  const field = (name) => card.querySelector(`[data-job-field="${name}"]`);
  let lastState = card.dataset.jobState;
  if (lastState === "confirm" || ["succeeded", "failed", "cancelled"].includes(lastState)) return;

  async function poll() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      const job = await response.json();
      bar.value = job.progress;
      bar.textContent = `${job.progress}%`;
      field("step").textContent = job.step;
      field("state_display").textContent = job.state_display;
      field("message").textContent = job.message;
      if (job.state !== lastState && (job.finished || job.state === "confirm")) {
        window.location.reload();
        return;
      }
      lastState = job.state;
    } catch (error) {
      field("message").textContent = "Lost contact with the server; retrying…";
    }
    window.setTimeout(poll, 500);
  }
  window.setTimeout(poll, 300);
})();
