"""The browser-side journey in Chromium: a page loads an image and a script from two origins
the owner never allowed; the CSP blocks both and Chromium reports them to the gateway; the
owner allows one on the panel (the real view); after a reload that origin works and the other
is still blocked."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
from django.urls import reverse

from appspaces.models import AllowlistEntry, NetworkRequest
from tests.db_sessions import in_thread
from tests.gateway.browser import csrf_token
from tests.gateway.conftest import wait_for

pytestmark = pytest.mark.sandbox

GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)


class Assets(BaseHTTPRequestHandler):
    """Serves the pixel and the script to any Host (two origins, one loopback port)."""

    hits: list[str] = []

    def do_GET(self):
        Assets.hits.append(f"{self.headers.get('Host')}{self.path}")
        if self.path == "/pixel.gif":
            body, kind = GIF, "image/gif"
        elif self.path == "/lib.js":
            body, kind = b"window.libLoaded = true;\n", "text/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def assets():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Assets)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def chromium():
    # Playwright's sync API keeps an event loop in this thread: the test's ORM calls run in
    # another (tests/db_sessions.in_thread).
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--host-resolver-rules=MAP *.localhost 127.0.0.1",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def states(page) -> tuple[str, str]:
    page.wait_for_function(
        "document.getElementById('img').textContent !== 'pending'"
        " && document.getElementById('js').textContent !== 'pending'",
        timeout=15_000,
    )
    return page.inner_text("#img"), page.inner_text("#js")


def test_blocked_origins_are_reported_and_one_click_allows_one(stack, assets, chromium):
    appspace = in_thread(stack.appspace)
    img_origin = f"http://img-origin.localhost:{assets}"
    js_origin = f"http://js-origin.localhost:{assets}"
    url = stack.url(appspace, f"/assets/network.html?img={quote(img_origin)}&js={quote(js_origin)}")
    page = chromium.new_page()
    page.goto(url)
    assert states(page) == ("blocked", "blocked")
    assert Assets.hits == []  # the CSP stopped both before any request left the browser

    def reported():
        rows = {
            r.value: r for r in NetworkRequest.objects.filter(appspace=appspace, kind="browser")
        }
        return rows if {img_origin, js_origin} <= set(rows) else None

    rows = in_thread(lambda: wait_for(reported, timeout=30))  # Chromium reports asynchronously
    assert rows[img_origin].source == "report"
    assert "img-src" in rows[img_origin].directives
    assert "script-src" in rows[js_origin].directives

    owner = in_thread(lambda: stack.browser(stack.alice))
    panel_path = reverse("appspace_detail", kwargs={"appspace_id": appspace.public_id})
    panel = owner.get(stack.panel_url(panel_path))
    assert panel.status == 200
    assert f"Allow {img_origin}" in panel.text and f"Allow {js_origin}" in panel.text
    allow = owner.request(
        "POST",
        stack.panel_url(
            reverse("appspace_request_allow", kwargs={"appspace_id": appspace.public_id})
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=(
            f"csrfmiddlewaretoken={csrf_token(panel.text)}&kind=browser&value={quote(img_origin)}"
        ).encode(),
    )
    assert allow.status == 302, allow.text[:500]

    def allowed() -> tuple[bool, bool]:
        entry = AllowlistEntry.objects.filter(appspace=appspace, kind="browser", value=img_origin)
        request = NetworkRequest.objects.filter(appspace=appspace, value=img_origin)
        return entry.exists(), request.exists()

    assert in_thread(allowed) == (True, False)

    page.reload()
    assert states(page) == ("loaded", "blocked")
    assert Assets.hits == [f"img-origin.localhost:{assets}/pixel.gif"]
    page.close()
