"""The https drill: `serve` with DS_TLS=internal, and Debian's Chromium trusting only the root
`serve` published (an NSS database of its own, no certificate errors ignored). The first admin
uses the setup link over https, installs Notes (the CLI, as an admin scripting it would),
opens the appspace on its own https host, its WebSocket (wss) connects, and http redirects.

Three times: on `localhost` (names resolve to loopback by themselves), and on `drill.test`, a
domain that puts settings in production mode (secret key required, secure cookies, SSL
redirect), resolved to 127.0.0.1 by Chromium's host resolver rules (no /etc/hosts edit: Caddy
and the internal CA resolve nothing, and the test's own clients connect to 127.0.0.1); the
third on `drill.test` again with the platform run as the systemd units run it, one process per
unit and the supervisor in a delegated cgroup (tests/site/units.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packages.build import build_package
from packages.extraction import ExtractionLimits
from tests.site.conftest import AS_UNITS
from tests.site.test_serve import BASE_DIR

pytestmark = [pytest.mark.browser, pytest.mark.sandbox]

ADMIN, PASSWORD = "admin@example.com", "correct horse battery staple 42"
STEP = 30_000  # ms


def trusting_home(tmp_path: Path, root: Path) -> Path:
    """A HOME whose NSS database (what Chromium on Linux trusts) holds only our root."""
    nssdb = tmp_path / "home" / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    certutil = ["certutil", "-d", f"sql:{nssdb}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True, capture_output=True)
    subprocess.run(
        [*certutil, "-A", "-t", "C,,", "-n", "dropserver-internal", "-i", str(root)],
        check=True,
        capture_output=True,
    )
    return nssdb.parents[1]


def manage(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


PRODUCTION = {"DS_DOMAIN": "drill.test", "SECRET_KEY": "drill-" + "k" * 60}


@pytest.mark.parametrize(
    "served_tls",
    [{}, PRODUCTION, {**PRODUCTION, AS_UNITS: True}],
    indirect=True,
    ids=["localhost", "production-domain", "production-as-units"],
)
def test_the_platform_over_https_in_chromium(served_tls, tmp_path):
    proc, (http_port, https_port, _), root, output, env = served_tls
    assert shutil.which("certutil"), "certutil missing: apt-get install -y libnss3-tools"
    domain = env.get("DS_DOMAIN", "localhost")
    panel_host = f"dropid.{domain}"
    panel = f"https://{panel_host}:{https_port}"
    setup = next(line.strip() for line in output().splitlines() if "/setup/" in line)
    assert setup.startswith(panel + "/setup/")

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--host-resolver-rules=MAP *.drill.test 127.0.0.1",
            ],
            env={"HOME": str(trusting_home(tmp_path, root))},
        )
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(STEP)

            # The setup link over https: a certificate error would stop the navigation.
            page.goto(setup)
            page.fill('input[name="email"]', ADMIN)
            page.fill('input[name="password1"]', PASSWORD)
            page.fill('input[name="password2"]', PASSWORD)
            page.get_by_role("button", name="Create the admin account").click()
            page.wait_for_url(panel + "/**")

            source = tmp_path / "notes"
            shutil.copytree(BASE_DIR / "examples" / "notes" / "1.0.0", source)
            package = tmp_path / "notes.tar.gz"
            build_package(source, package, limits=ExtractionLimits.for_app_packages())
            installed = manage(
                env, "install_app", str(package), "--owner", ADMIN, "--accept-warnings"
            )
            manage(
                env,
                "create_appspace",
                "--owner",
                ADMIN,
                "--app",
                installed["app_id"],
                "--version",
                "1.0.0",
                "--subdomain",
                "notes",
            )

            # Plain http on every host ends on https: the edge's redirect, seen by a browser
            # that has no HSTS for these hosts yet (it would upgrade http itself after).
            fresh = browser.new_context().new_page()
            fresh.set_default_timeout(STEP)
            for host in (f"notes.{domain}", panel_host):
                fresh.goto(f"http://{host}:{http_port}/accounts/login/")
                assert fresh.url.startswith(f"https://{host}:{https_port}/"), fresh.url

            # Its own https host; logged in to the panel, the visitor is let straight in.
            notes = f"https://notes.{domain}:{https_port}"
            page.goto(notes + "/")
            page.wait_for_url(notes + "/**")
            opened = page.evaluate(
                """url => new Promise(resolve => {
                    const socket = new WebSocket(url);
                    socket.onopen = () => { socket.close(); resolve("open"); };
                    socket.onerror = () => resolve("error");
                })""",
                f"wss://notes.{domain}:{https_port}/api/live",
            )
            assert opened == "open"

        finally:
            browser.close()
