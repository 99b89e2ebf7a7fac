"""Gateway tests run one real stack for the whole package: a sandbox supervisor with real Deno
sandboxes, and Daphne serving `dropserver_site.asgi` on a free loopback port, both on the
package's DS_DATA_DIR and the test database.

Daphne is another process, so the rows it reads must be committed: these tests never use
pytest-django's `db` (whose transaction Daphne cannot see). The DB is unblocked for every
test, rows are committed as they are written, and the package flushes the database when
it is done. Personas are created here for the same reason (tests/conftest.py's are
per-test and transactional): alice owns, bob is a user with "edit", carol a user without
permissions, charlie an outsider.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings

from appspaces import models
from appspaces.models import AllowlistEntry, App, Appspace, AppspaceUser
from dropserver_site.management.commands.serve import listen_socket, web_argv
from tests.conftest import make_user
from tests.db_sessions import fail_if_left_open, is_test_database
from tests.gateway.app_files import BINARY_FILES, FILES, MANIFEST_PERMISSIONS
from tests.gateway.browser import Browser
from tests.sandbox.fixtures import *  # noqa: F403
from tests.sandbox.fixtures import REPO, Supervisor, free_port, lay_out_app, poll

UID_BASE = 10_000_000 + secrets.randbelow(100_000) * 1000

# What the test Daphne runs with: short timeouts and small caps, so tests are quick.
GATEWAY_ENV = {
    "DS_GATEWAY_FIRST_BYTE_TIMEOUT": "2",
    "DS_GATEWAY_IDLE_TIMEOUT": "2",
    "DS_GATEWAY_MAX_BODY_BYTES": str(1024 * 1024),
    "DS_GATEWAY_WS_MAX_MESSAGE_BYTES": str(64 * 1024),
    "DS_GATEWAY_CACHE_TTL": "1",
    "DS_GATEWAY_MAX_HEADERS": "60",
    "DS_USAGE_REQUESTS_FLUSH_SECONDS": "0.2",
}


@pytest.fixture(scope="package")
def gateway_dir(data_root) -> Path:
    path = Path(tempfile.mkdtemp(prefix="gateway-", dir=data_root))
    path.chmod(0o711)
    return path


@pytest.fixture(autouse=True)
def ds_data_dir(settings, gateway_dir) -> Path:
    """Overrides tests/conftest.py's: the whole package shares the running stack's dir."""
    settings.DS_DATA_DIR = gateway_dir
    settings.DS_SANDBOX_UID_BASE = UID_BASE
    return gateway_dir


@pytest.fixture(scope="package")
def gateway_db(django_db_setup, django_db_blocker) -> Iterator[None]:
    """The test database. pytest-django only creates it when some collected test asks for
    `db`; when only this package runs, none does, so create (and destroy) it here."""
    with django_db_blocker.unblock():
        old_name = None
        if not is_test_database(connection):
            old_name = connection.settings_dict["NAME"]
            connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    yield
    if old_name is not None:
        with django_db_blocker.unblock():
            if connection.vendor == "postgresql":
                fail_if_left_open(connection)  # as tests/conftest.py's django_db_setup does
            connection.creation.destroy_test_db(old_name, verbosity=0)


@pytest.fixture(autouse=True)
def _committed_db(gateway_db, django_db_blocker) -> Iterator[None]:
    with django_db_blocker.unblock():
        yield


@dataclass
class Stack:
    port: int
    daphne: subprocess.Popen
    daphne_log: Path
    supervisor: Supervisor
    version: models.AppVersion
    alice: object
    bob: object
    carol: object
    charlie: object
    main: Appspace  # alice's; bob has "edit", carol nothing

    def host(self, appspace: Appspace) -> str:
        return f"{appspace.subdomain}.{settings.DS_DOMAIN}"

    def url(self, appspace: Appspace, path: str = "/") -> str:
        return f"http://{self.host(appspace)}:{self.port}{path}"

    def panel_url(self, path: str = "/") -> str:
        return f"http://{settings.DS_PANEL_HOST}:{self.port}{path}"

    def browser(self, user=None) -> Browser:
        """A browser, logged in to the panel as `user` (not yet to any appspace)."""
        browser = Browser(self.port)
        if user is not None:
            client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
            client.force_login(user)
            key = client.cookies[settings.SESSION_COOKIE_NAME].value
            browser.cookies[settings.DS_PANEL_HOST] = {settings.SESSION_COOKIE_NAME: key}
        return browser

    def enter(self, appspace: Appspace, user, path: str = "/user") -> Browser:
        """A browser logged in to `appspace` as `user`, through the real redirects."""
        browser = self.browser(user)
        response = browser.get(self.url(appspace, path), follow=True)
        assert response.url.startswith(self.url(appspace, "")), (response.url, response.text)
        assert browser.cookies[self.host(appspace)].get("ds_appspace"), browser.cookies
        return browser

    def appspace(
        self,
        *,
        owner=None,
        members: dict | None = None,
        status: str = Appspace.Status.ACTIVE,
        browser_origins: tuple[str, ...] = (),
    ) -> Appspace:
        owner = owner or self.alice
        appspace = Appspace.objects.create(
            owner=owner,
            app=self.version.app,
            app_version=self.version,
            subdomain=f"t{uuid.uuid4().hex[:12]}",
            status=status,
            memory_mb=256,
            cpu_percent=100,
            disk_mb=100,
        )
        for user, permissions in (members or {}).items():
            AppspaceUser.objects.create(
                appspace=appspace, user=user, display_name=user.name, permissions=permissions
            )
        for origin in browser_origins:
            AllowlistEntry.objects.create(
                appspace=appspace, kind=AllowlistEntry.Kind.BROWSER, value=origin
            )
        return appspace

    def log(self) -> str:
        return self.daphne_log.read_text(errors="replace")


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_daphne(port: int, data_dir: Path, log_path: Path, **extra: str) -> subprocess.Popen:
    """Daphne on 127.0.0.1:`port` with the command line `serve` gives it (serve.web_argv)."""
    env = dict(
        os.environ,
        DS_DATA_DIR=str(data_dir),
        DATABASE_URL=_database_url(),
        DS_PORT=str(port),
        DS_SANDBOX_UID_BASE=str(UID_BASE),
        SECRET_KEY=settings.SECRET_KEY,  # panel sessions made here must be valid there
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        **{**GATEWAY_ENV, **extra},
    )
    listener = listen_socket("127.0.0.1", port)
    with open(log_path, "wb") as log, listener:
        process = subprocess.Popen(
            web_argv(listener),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"daphne exited:\n{log_path.read_text(errors='replace')}")
        try:
            return Browser(port, timeout=2).get(f"http://nosuch.localhost:{port}/").status == 404
        except OSError:
            return False

    poll(ready, timeout=60, interval=0.1)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="package")
def stack(gateway_dir, gateway_db, django_db_blocker) -> Iterator[Stack]:
    with (
        django_db_blocker.unblock(),
        override_settings(
            DS_DATA_DIR=gateway_dir,
            DS_SANDBOX_UID_BASE=UID_BASE,
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        ),
    ):
        env = dict(
            os.environ,
            DS_DATA_DIR=str(gateway_dir),
            DS_SANDBOX_UID_BASE=str(UID_BASE),
            PYTHONPATH=str(REPO),
            DS_SANDBOX_STOP_GRACE="1",
            DS_SANDBOX_RESTART_BACKOFF="0.05",
            DS_TEST_CANARY="canary-" + secrets.token_hex(8),
        )
        sup_log = gateway_dir / "supervisor.log"
        with open(sup_log, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sandbox"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        supervisor = Supervisor(process, gateway_dir, sup_log, env["DS_TEST_CANARY"])
        daphne = None
        try:
            supervisor.wait_ready()
            files = lay_out_app(FILES)
            for rel, data in BINARY_FILES.items():
                path = files.files_dir / rel
                path.write_bytes(data)
                path.chmod(0o644)
            warmed = supervisor.client.run_once(files.job_spec(uid=UID_BASE + 999_000), "warm")
            assert warmed.ok, warmed
            alice = make_user("alice@example.com", display_name="Alice")
            bob = make_user("bob@example.com", display_name="Bob Ünïcode")
            carol = make_user("carol@example.com", display_name="Carol")
            charlie = make_user("charlie@example.com", display_name="Charlie")
            app = App.objects.create(public_id=uuid.UUID(files.app_id), owner=alice, name="Test")
            version = models.AppVersion.objects.create(
                app=app,
                version=files.version,
                version_key="1.0.0",
                manifest={"name": "Test", "version": "1.0.0", "permissions": MANIFEST_PERMISSIONS},
                routes=warmed.result["routes"],
                entrypoint="app.ts",
            )
            port = free_port()
            daphne_log = gateway_dir / "daphne.log"
            daphne = start_daphne(port, gateway_dir, daphne_log)
            stack = Stack(
                port, daphne, daphne_log, supervisor, version, alice, bob, carol, charlie, main=None
            )  # type: ignore[arg-type]
            stack.main = stack.appspace(members={bob: ["edit"], carol: []})
            yield stack
        finally:
            if daphne is not None:
                stop(daphne)
            supervisor.stop()
            leftover = supervisor.cgroup_pids()
            call_command("flush", interactive=False, verbosity=0)
            assert not leftover, f"processes left in sandbox cgroups: {leftover}"


def wait_for(check, timeout: float = 10.0):
    return poll(check, timeout=timeout, interval=0.02)


def deno_pid(stack: Stack, appspace: Appspace) -> int:
    return stack.supervisor.deno_pid(str(appspace.public_id))


def elapsed(start: float) -> float:
    return time.monotonic() - start


@pytest.fixture(autouse=True)
def _no_errors_in_daphne(request) -> Iterator[None]:
    """Whatever a test asserts, the gateway must not have crashed on the way."""
    if "stack" not in request.fixturenames:
        yield
        return
    stack = request.getfixturevalue("stack")
    start = stack.daphne_log.stat().st_size
    yield
    with open(stack.daphne_log, "rb") as log:
        log.seek(start)
        new = log.read().decode(errors="replace")
    assert "Traceback" not in new, new[-4000:]
