// Install form, enhanced: refuses a package over the size limit before uploading it, and shows
// the upload's progress on a real <progress>. Without JavaScript the form posts as usual and
// the server gives the same answers (it caps the size while the upload streams in).
(function () {
  "use strict";

  function enhance(form) {
    const file = form.querySelector('input[type="file"]');
    const status = form.querySelector("[data-upload-status]");
    const button = form.querySelector('button[type="submit"]');
    if (!file || !status || !button || !window.FormData) return;
    const bar = status.querySelector("progress");
    const message = status.querySelector("[data-upload-message]");
    const maxBytes = Number(form.dataset.maxBytes || 0);

    file.addEventListener("change", function () {
      file.setCustomValidity("");
      const chosen = file.files && file.files[0];
      if (chosen && maxBytes && chosen.size > maxBytes) {
        file.setCustomValidity(
          "The package is larger than " + Math.round(maxBytes / 1048576) + " MB, the limit here."
        );
        file.reportValidity();
      }
    });

    form.addEventListener("submit", function (event) {
      const chosen = file.files && file.files[0];
      if (!chosen) return; // a URL: an ordinary post is quick
      event.preventDefault();
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        const percent = Math.round((e.loaded * 100) / e.total);
        bar.value = percent;
        bar.textContent = percent + "%";
        message.textContent = percent < 100 ? percent + "% uploaded" : "Checking the package…";
      });
      xhr.addEventListener("load", function () {
        const action = new URL(form.action, window.location.href).href;
        if (xhr.status < 400 && xhr.responseURL && xhr.responseURL !== action) {
          window.location.assign(xhr.responseURL); // the install's progress page
          return;
        }
        // The form came back with errors: show them in place of this form.
        const page = new DOMParser().parseFromString(xhr.responseText, "text/html");
        const replacement = page.querySelector('form[data-install-form][action="' + form.getAttribute("action") + '"]');
        if (!replacement) {
          message.textContent = "The upload failed (" + xhr.status + "); please try again.";
          button.disabled = false;
          return;
        }
        const adopted = document.importNode(replacement, true);
        form.replaceWith(adopted);
        enhance(adopted);
        const firstError = adopted.querySelector(".errorlist");
        if (firstError) firstError.scrollIntoView({ block: "center" });
      });
      xhr.addEventListener("error", function () {
        message.textContent = "The upload failed; check your connection and try again.";
        button.disabled = false;
      });
      status.hidden = false;
      button.disabled = true;
      message.textContent = "Uploading…";
      xhr.send(new FormData(form));
    });
  }

  document.querySelectorAll("form[data-install-form]").forEach(enhance);
})();
