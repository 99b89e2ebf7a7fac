"""End-to-end tests: the whole platform as `serve` runs it, driven by Debian's Chromium.

One stack per module: a sandbox supervisor, Daphne serving `dropserver_site.asgi` (panel and
gateway) on a free loopback port, and a real Celery worker. The worker and Daphne share a
filesystem broker inside this package's DS_DATA_DIR, so no other test run can take their
tasks. As in tests/gateway, Daphne and the worker read committed rows: tests here never use
pytest-django's `db`; the database is flushed when the package is done.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

# Daphne is started the gateway tests' way, with their uid base: the worker must use the same.
from tests.gateway.conftest import GATEWAY_ENV, UID_BASE, _database_url, start_daphne, stop
from tests.gateway.conftest import gateway_db as gateway_db
from tests.sandbox.fixtures import REPO, Supervisor, free_port, poll


@pytest.fixture(scope="package")
def e2e_dir(data_root) -> Path:
    path = Path(tempfile.mkdtemp(prefix="e2e-", dir=data_root))
    path.chmod(0o711)
    return path


@pytest.fixture(autouse=True)
def ds_data_dir(settings, e2e_dir) -> Path:
    settings.DS_DATA_DIR = e2e_dir
    settings.DS_SANDBOX_UID_BASE = UID_BASE
    return e2e_dir


@pytest.fixture(autouse=True)
def _committed_db(gateway_db, django_db_blocker) -> Iterator[None]:
    with django_db_blocker.unblock():
        yield


@dataclass
class Platform:
    port: int
    data_dir: Path
    supervisor: Supervisor
    daphne: subprocess.Popen
    worker: subprocess.Popen
    logs: dict[str, Path]

    @property
    def panel(self) -> str:
        return f"http://{settings.DS_PANEL_HOST}:{self.port}"

    def appspace_url(self, subdomain: str, path: str = "/") -> str:
        return f"http://{subdomain}.{settings.DS_DOMAIN}:{self.port}{path}"

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")


@pytest.fixture(scope="module")
def platform(e2e_dir, gateway_db, django_db_blocker) -> Iterator[Platform]:
    env = dict(
        os.environ,
        DS_DATA_DIR=str(e2e_dir),
        DS_SANDBOX_UID_BASE=str(UID_BASE),
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        DS_SANDBOX_STOP_GRACE="1",
        DS_TEST_CANARY="canary-" + secrets.token_hex(8),
    )
    logs = {name: e2e_dir / f"{name}.log" for name in ("supervisor", "daphne", "worker")}
    with (
        django_db_blocker.unblock(),
        override_settings(DS_DATA_DIR=e2e_dir, DS_SANDBOX_UID_BASE=UID_BASE),
    ):
        with open(logs["supervisor"], "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sandbox"], cwd=REPO, env=env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        supervisor = Supervisor(process, e2e_dir, logs["supervisor"], env["DS_TEST_CANARY"])
        daphne = worker = None
        try:
            supervisor.wait_ready()
            broker = {"CELERY_BROKER_URL": "filesystem://", "CELERY_TASK_ALWAYS_EAGER": "0"}
            port = free_port()
            daphne = start_daphne(port, e2e_dir, logs["daphne"], **broker)
            worker_env = dict(
                env, DATABASE_URL=_database_url(), DS_PORT=str(port),
                SECRET_KEY=settings.SECRET_KEY, **GATEWAY_ENV, **broker,
            )  # fmt: skip
            with open(logs["worker"], "wb") as out:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "dropserver_site", "worker",
                     "--pool", "solo", "--queues", ",".join(settings.DS_CELERY_QUEUES),
                     "--without-heartbeat", "--without-gossip",
                     "--without-mingle", "--loglevel", "INFO"],
                    cwd=REPO, env=worker_env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            poll(lambda: b"ready." in logs["worker"].read_bytes(), timeout=60, interval=0.1)
            yield Platform(port, e2e_dir, supervisor, daphne, worker, logs)
        finally:
            for child in (worker, daphne):
                if child is not None:
                    stop(child)
            supervisor.stop()
            leftover = supervisor.cgroup_pids()
            call_command("flush", interactive=False, verbosity=0)
            assert not leftover, f"processes left in sandbox cgroups: {leftover}"


@pytest.fixture
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()
