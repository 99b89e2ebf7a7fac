"""The install's progress reaches the browser: Debian's Chromium watches the job page's real
<progress> move (without reloading) while the pipeline runs, then the page settles."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections
from django.test import Client
from playwright.sync_api import sync_playwright

from appspaces.installs.service import install_job_create, install_job_run
from appspaces.installs.staging import upload_copy
from appspaces.models import Job
from tests.appspaces.conftest import hello_app

pytestmark = [pytest.mark.browser, pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]

# Each sandbox run of this app takes a while (app-init, then warming), so the bar has time to
# be seen between steps.
SLOW = "await new Promise((resolve) => setTimeout(resolve, 1200));\n" + hello_app(1)


def run_pipeline(job_id: int) -> None:
    try:
        install_job_run(job_id=job_id)
    finally:
        connections.close_all()


def test_the_progress_bar_moves_live_and_the_page_settles(
    live_server, settings, supervisor, alice, make_package
):
    settings.ALLOWED_HOSTS = [settings.DS_PANEL_HOST, "localhost"]
    port = live_server.url.rsplit(":", 1)[1]
    base = f"http://{settings.DS_PANEL_HOST}:{port}"  # Chromium resolves *.localhost to loopback
    client = Client()
    client.force_login(alice)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    job = install_job_create(
        owner=alice,
        upload=upload_copy(make_package({"app.ts": SLOW}, name="slow.tar.gz")),
        filename="slow.tar.gz",
        enqueue=False,
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        try:
            context = browser.new_context()
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": base}]
            )
            page = context.new_page()
            page.goto(f"{base}/apps/installs/{job.public_id}/")
            assert page.locator("progress").get_attribute("value") == "0"
            page.evaluate("window.stillTheSamePage = true")

            worker = threading.Thread(target=run_pipeline, args=(job.pk,))
            worker.start()
            seen = watch(page)
            worker.join(60)
        finally:
            browser.close()

    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.message
    # Without any reload, the bar and the step text followed the job through its steps.
    live = [s for s in seen if s["same"]]
    values = {s["value"] for s in live}
    assert any(0 < v < 100 for v in values), seen
    steps = {s["step"] for s in live}
    assert "Starting the app to read its routes" in steps, steps
    assert "Preparing the app's code cache" in steps, steps
    assert [s["value"] for s in live] == sorted(s["value"] for s in live)  # never backwards
    # Then the page reloaded itself once, rendered by the server in its final state.
    final = seen[-1]
    assert not final["same"] and final["value"] == 100
    assert final["state"] == "done" and final["open"] == "Open Hello"


def watch(page, timeout: float = 60.0) -> list[dict]:
    """Sample what the browser shows until the page has reloaded into the finished state."""
    script = """() => ({
        same: window.stillTheSamePage === true,
        value: Number(document.querySelector("progress")?.value ?? -1),
        step: document.querySelector('[data-job-field="step"]')?.textContent.trim() ?? "",
        state: document.querySelector('[data-job-field="state_display"]')?.textContent.trim(),
        open: document.querySelector("a.button")?.textContent.trim() ?? "",
    })"""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sample = page.evaluate(script)
        except Exception:  # the page is being replaced by its reload
            time.sleep(0.05)
            continue
        if not seen or sample != seen[-1]:
            seen.append(sample)
        if not sample["same"] and sample["state"] == "done" and sample["open"]:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the page never settled; it showed: {seen}")
