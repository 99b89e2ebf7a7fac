"""`serve` with DS_TLS=internal: Caddy's local CA in front of the platform, as someone trying
production on a private network runs it. Real processes; the client trusts only the root
`serve` publishes in DS_DATA_DIR/tls/internal-root.crt."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.sandbox.fixtures import poll
from tests.site.processes import descendants, free_port
from tests.site.test_serve import BASE_DIR, embedded_env
from tests.site.tls import client_context, http_get, https_get

PANEL = "dropid.localhost"


def test_serve_with_the_internal_ca_serves_https_that_verifies(served_tls):
    proc, (http_port, https_port, web_port), root, output, _ = served_tls
    assert f"https://{PANEL}:{https_port}/" in output()
    assert f"trust its root in your browser, {root}" in output()
    assert root.stat().st_mode & 0o777 == 0o644

    health = https_get(https_port, PANEL, "/readyz", client_context(root))
    assert health.status == 200, health.body
    body = json.loads(health.body)
    assert body["checks"]["certificate"]["state"] == "valid"

    login = https_get(https_port, PANEL, "/accounts/login/", client_context(root))
    assert login.status == 200
    hsts = [v for k, v in login.getheaders() if k.lower() == "strict-transport-security"]
    assert hsts == ["max-age=31536000; includeSubDomains"]
    assert "__Host-ds_csrf=" in login.getheader("set-cookie")  # Django knows it is https
    assert login.getheader("server") is None

    redirect = http_get(http_port, PANEL, "/accounts/login/?next=/")
    assert redirect.status == 308
    assert redirect.getheader("location") == f"https://{PANEL}:{https_port}/accounts/login/?next=/"

    # Daphne listens on loopback only, behind the edge, and trusts the edge's headers.
    [web] = [c for _, c in descendants(proc.pid, with_cmdline=True) if "daphne" in c]
    assert f"--bind 127.0.0.1 --port {web_port}" in web and "--proxy-headers" in web


def test_serve_restarts_the_edge_and_stops_it_with_the_rest(served_tls):
    proc, (_, https_port, _), root, output, _ = served_tls
    [(edge, _)] = [
        (p, c)
        for p, c in descendants(proc.pid, with_cmdline=True)
        if c.startswith("/usr/bin/caddy")
    ]
    os.kill(edge, signal.SIGKILL)
    poll(lambda: "TLS edge exited" in output(), timeout=10)

    def edge_back() -> bool:
        try:
            return https_get(https_port, PANEL, "/healthz", client_context(root)).status == 200
        except OSError:
            return False

    poll(edge_back, timeout=30, interval=0.1)
    assert proc.poll() is None  # the rest of the platform never stopped
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 0, output()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if Path(f"/proc/{p}").exists()]


def test_an_edge_that_cannot_start_stops_serve_with_its_reason(ds_data_dir):
    http_port, web_port = free_port(), free_port()
    with socket.socket() as taken:  # someone else holds the https port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = embedded_env(ds_data_dir, http_port)
        env.update(
            DS_TLS="internal",
            DS_HTTPS_PORT=str(taken.getsockname()[1]),
            DS_WEB_PORT=str(web_port),
            DS_BIND="127.0.0.1",
        )
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
        result = subprocess.run(
            [*manage, "serve"], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode != 0
    assert "TLS edge exited with status" in result.stderr, result.stderr[-3000:]
    assert "address already in use" in (result.stdout + result.stderr)
