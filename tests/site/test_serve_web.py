"""`manage.py serve_web`, the `dropserver-web` unit's command: Daphne and the TLS edge without
the supervisor or the workers.

The unit runs it as DS_RUN_AS; here it runs as the test's user, because this machine's venv
interpreter links into /root (0700), which no other uid can exec from. Running the platform
unprivileged is tested with `serve` (DS_RUN_AS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from dropserver_site.management.commands.serve_web import prune_metrics
from tests.sandbox.fixtures import poll
from tests.site.conftest import internal_tls_env
from tests.site.processes import descendants
from tests.site.test_serve import BASE_DIR
from tests.site.tls import client_context, http_get, https_get


def test_serve_web_runs_the_web_and_the_edge_and_nothing_else(ds_data_dir):
    env, (http_port, https_port, _) = internal_tls_env(ds_data_dir)
    env["DS_WEB_PROCESSES"] = "2"
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    # A leftover metrics file of a process that is gone, and one of a live process (ours).
    metrics = ds_data_dir / "metrics"
    metrics.mkdir(exist_ok=True)
    dead = metrics / "counter_999999999.db"
    alive = metrics / f"counter_{os.getpid()}.db"
    dead.write_bytes(b"")
    alive.write_bytes(b"")
    log = ds_data_dir / "serve_web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*manage, "serve_web"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        poll(lambda: proc.poll() is not None or "Press Ctrl-C" in log.read_text(), timeout=90)
        assert proc.poll() is None, log.read_text()
        root = ds_data_dir / "tls" / "internal-root.crt"
        poll(root.is_file, timeout=15)

        response = https_get(https_port, "dropid.localhost", "/healthz", client_context(root))
        assert response.status == 200
        response = http_get(http_port, "dropid.localhost", "/accounts/login/")
        assert response.status == 308
        assert response.getheader("Location").startswith("https://dropid.localhost")

        tree = descendants(proc.pid, with_cmdline=True)
        commands = [cmd for _, cmd in tree]
        assert sum("daphne" in c for c in commands) == 2, commands
        assert sum("caddy" in c for c in commands) == 1, commands
        assert not [c for c in commands if "sandbox" in c or "celery" in c], commands
        assert not dead.exists() and alive.exists()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    assert "Dropserver stopped." in log.read_text()


def test_prune_metrics_keeps_live_processes_files(tmp_path):
    live = tmp_path / f"gauge_livesum_{os.getpid()}.db"
    gone = tmp_path / "histogram_999999999.db"
    other = tmp_path / "notes.txt"
    for path in (live, gone, other):
        path.write_bytes(b"")
    assert prune_metrics(tmp_path) == [gone]
    assert live.exists() and other.exists()
