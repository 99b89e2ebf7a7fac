"""A freed subdomain carries nothing to the next tenant, in Debian's Chromium against the whole
platform: an appspace on a name registers a service worker and fills localStorage in the
visitor's browser; it is deleted (the name is quarantined for other owners, until an admin
releases it); another owner's appspace of another app takes the name; the same browser visits
it, and none of the old app's state is there, nor does its service worker answer anything.
A worker that answers navigations itself gets the first visit, and is gone right after."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import make_user
from tests.db_sessions import in_thread
from tests.gateway.browser import Browser
from tests.gateway.conftest import UID_BASE, wait_for
from tests.sandbox.fixtures import lay_out_app

pytestmark = [pytest.mark.browser, pytest.mark.sandbox]

NAME = "reused"
STEP = 20_000  # ms

OLD_APP = {
    "app.ts": """
import { createApp } from "@dropserver/app";
createApp({
  routes: [
    { method: "GET", path: "/", auth: "public", static: "@app/public/index.html" },
    { method: "GET", path: "/sw.js", auth: "public", static: "@app/public/sw.js" },
    { method: "GET", path: "/assets/*", auth: "public", static: "@app/public" },
  ],
});
""",
    "public/index.html": '<!doctype html><title>old</title><script src="/assets/old.js"></script>',
    "public/old.js": """
localStorage.setItem("left-by", "the old app");
window.planted = navigator.serviceWorker.register("/sw.js")
  .then(() => navigator.serviceWorker.ready)
  .then(() => "planted");
""",
    # Answers /probe itself, and lets everything else through (a network-first worker).
    "public/sw.js": """
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  if (new URL(event.request.url).pathname === "/probe") {
    event.respondWith(new Response("answered by the old service worker"));
  }
});
""",
}

NEW_APP = {
    "app.ts": """
import { createApp } from "@dropserver/app";
createApp({
  routes: [
    { method: "GET", path: "/", auth: "public", static: "@app/public/index.html" },
    { method: "GET", path: "/probe", auth: "public", handler: () => new Response("new app") },
  ],
});
""",
    "public/index.html": "<!doctype html><title>new</title><h1>the new app</h1>",
}


def install(platform, owner, files: dict, uid_offset: int):
    from appspaces import models

    laid = lay_out_app(files)
    warmed = platform.supervisor.client.run_once(
        laid.job_spec(uid=UID_BASE + 998_000 + uid_offset), "warm"
    )
    assert warmed.ok, warmed
    app = models.App.objects.create(public_id=uuid.UUID(laid.app_id), owner=owner, name="App")
    return models.AppVersion.objects.create(
        app=app,
        version=laid.version,
        version_key="1.0.0",
        manifest={"name": "App", "version": "1.0.0"},
        routes=warmed.result["routes"],
        entrypoint="app.ts",
    )


def appspace(owner, version, name=NAME):
    from appspaces.models import Appspace

    return Appspace.objects.create(
        owner=owner,
        app=version.app,
        app_version=version,
        subdomain=name,
        status=Appspace.Status.ACTIVE,
        memory_mb=256,
        cpu_percent=100,
        disk_mb=100,
    )


@pytest.fixture
def tenants(platform):
    first = make_user("first@example.com", display_name="First")
    second = make_user("second@example.com", display_name="Second")
    old = install(platform, first, OLD_APP, 1)
    new = install(platform, second, NEW_APP, 2)
    return first, second, appspace(first, old), new


def test_a_reused_name_starts_with_a_clean_browser(platform, tenants, chromium):
    from appspaces.lifecycle.control import appspace_delete
    from appspaces.lifecycle.quarantine import subdomains_release
    from appspaces.lifecycle.subdomains import SubdomainError, subdomain_check_available
    from appspaces.models import FreedSubdomain

    first, second, old, new_version = tenants
    url = platform.appspace_url(NAME)

    browser = chromium.new_context()
    page = browser.new_page()
    page.set_default_timeout(STEP)
    page.goto(url)
    assert page.evaluate("() => window.planted") == "planted"
    assert page.evaluate("() => fetch('/probe').then((r) => r.text())") == (
        "answered by the old service worker"
    )
    assert page.evaluate("() => localStorage.getItem('left-by')") == "the old app"
    browser.add_cookies([{"name": "old_pref", "value": "1", "url": url}])

    # Deleted: the name is quarantined for everyone but its previous owner...
    def delete_and_check() -> str:
        appspace_delete(appspace=old, keep_backups=False)
        with pytest.raises(SubdomainError) as refused:
            subdomain_check_available(NAME, owner=second)
        assert subdomain_check_available(NAME, owner=first) == NAME
        subdomains_release(FreedSubdomain.objects.filter(name=NAME))  # ...until released
        assert subdomain_check_available(NAME, owner=second) == NAME
        appspace(second, new_version)
        return str(refused.value)

    message = in_thread(delete_and_check)
    assert "kept free until" in message and " UTC" in message

    # Daphne (another process) sees the change within DS_GATEWAY_CACHE_TTL.
    probe = Browser(platform.port)
    wait_for(lambda: probe.get(platform.appspace_url(NAME, "/probe")).body == b"new app")

    # The same browser, on the new tenant: the first response clears the old app's state.
    response = page.goto(url)
    assert response.all_headers()["clear-site-data"] == '"cache", "storage"'
    assert page.title() == "new"
    assert page.evaluate("() => navigator.serviceWorker.controller") is None
    assert page.evaluate("() => navigator.serviceWorker.getRegistrations()") == []
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("() => fetch('/probe').then((r) => r.text())") == "new app"
    names = {c["name"] for c in browser.cookies()}
    assert "old_pref" not in names and "ds_tenant" in names
    # Once cleared, this browser is the new tenant's like any other: nothing is cleared again.
    page.evaluate("() => localStorage.setItem('mine', 'new')")
    again = page.reload()
    assert "clear-site-data" not in again.all_headers()
    assert page.evaluate("() => localStorage.getItem('mine')") == "new"
    assert "Traceback" not in platform.log("daphne"), platform.log("daphne")[-4000:]


HIJACKER = {
    **OLD_APP,
    # Answers every navigation itself: the first visit under the new tenant never reaches the
    # gateway; the browser's update check of this script does.
    "public/sw.js": """
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  if (event.request.mode === "navigate") {
    event.respondWith(new Response("<title>hijacked</title>old app",
      { headers: { "content-type": "text/html" } }));
  }
});
""",
}


@pytest.fixture
def hijacked_tenants(platform):
    first = make_user("third@example.com", display_name="Third")
    second = make_user("fourth@example.com", display_name="Fourth")
    old = install(platform, first, HIJACKER, 3)
    new = install(platform, second, NEW_APP, 4)
    return second, appspace(first, old, "hijacked"), new


def test_a_service_worker_that_answers_navigations_is_gone_after_its_update_check(
    platform, hijacked_tenants, chromium
):
    from appspaces.lifecycle.control import appspace_delete
    from appspaces.lifecycle.quarantine import subdomains_release
    from appspaces.models import FreedSubdomain

    second, old, new_version = hijacked_tenants
    url = platform.appspace_url("hijacked")
    browser = chromium.new_context()
    page = browser.new_page()
    page.set_default_timeout(STEP)
    page.goto(url)
    assert page.evaluate("() => window.planted") == "planted"
    assert page.evaluate("() => localStorage.getItem('left-by')") == "the old app"
    page.reload()
    assert page.title() == "hijacked"

    def reuse() -> None:
        appspace_delete(appspace=old, keep_backups=False)
        subdomains_release(FreedSubdomain.objects.filter(name="hijacked"))
        appspace(second, new_version, "hijacked")

    in_thread(reuse)
    probe = Browser(platform.port)
    wait_for(lambda: probe.get(platform.appspace_url("hijacked", "/probe")).body == b"new app")

    # The first visit is still the old worker's (no server can answer a request the browser
    # never sends); the browser's update check of its script reaches the gateway, whose
    # answer clears the registration and the storage with it.
    page.goto(url)
    assert page.title() == "hijacked"

    def unregistered() -> bool:
        return page.evaluate("() => navigator.serviceWorker.getRegistrations()") == []

    wait_for(unregistered, timeout=15)
    page.goto(url)
    assert page.title() == "new"
    assert page.evaluate("() => navigator.serviceWorker.controller") is None
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("() => fetch('/probe').then((r) => r.text())") == "new app"
