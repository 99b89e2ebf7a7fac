// Appspace creation form, enhanced: the address is shown as it will be (lower case, with the
// domain) while it is typed. Without JavaScript the server gives the same answers on submit.
(function () {
  "use strict";
  const input = document.getElementById("id_subdomain");
  const suffix = document.getElementById("id_subdomain_suffix");
  if (!input || !suffix) return;
  const help = document.getElementById("id_subdomain_helptext");
  const original = help ? help.textContent : "";
  const label = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

  function update() {
    const name = input.value.trim().toLowerCase();
    if (!help) return;
    if (!name) {
      help.textContent = original;
    } else if (!label.test(name)) {
      help.textContent = "Letters a-z, digits and hyphens only, not at the start or the end.";
    } else {
      help.textContent = "Its address will be " + name + suffix.textContent + ".";
    }
  }
  input.addEventListener("input", update);
  update();
})();
