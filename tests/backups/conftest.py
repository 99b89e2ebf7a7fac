"""Backup test helpers (and the real-sandbox fixtures of tests/sandbox/fixtures.py).

- `make_appspace(owner, schema=0, app_files=None, ...)` -> Appspace: App, AppVersion and
  Appspace rows; with `app_files` ({path: text}) the app's files are laid out for real
  sandboxes (the App's id is the laid-out one).
- `fill(appspace, {rel: bytes | str})`: write files into the appspace's data dir.
- `tree_hashes(path)` -> {rel: sha256}: a folder's files as the host sees them.
- `logged_in(user)` -> a test Client on the panel host.
- `sshd` (tests/backups/sshd.py): a real OpenSSH server on a loopback port, for sftp: repositories.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from appspaces.models import App, Appspace, AppVersion
from tests.backups.sshd import sshd  # noqa: F401 (fixture: a real sshd on loopback)
from tests.sandbox.fixtures import (  # noqa: F401 (fixtures)
    http_request,
    lay_out_app,
    make_app,
    start_supervisor,
    supervisor,
)

_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _own_uids(settings):
    # Appspace uids are base + pk; other test runs on this host use small pks too.
    settings.DS_SANDBOX_UID_BASE = 400_000_000 + secrets.randbelow(10**6) * 1000


def create_appspace(
    owner,
    *,
    schema: int = 0,
    app_files: dict[str, str] | None = None,
    app_name: str = "Notes",
    version: str = "1.0.0",
    disk_mb: int = 200,
    status: str = Appspace.Status.ACTIVE,
    subdomain: str | None = None,
    app: App | None = None,
) -> Appspace:
    if app is None:
        laid_out = lay_out_app(app_files, version=version) if app_files else None
        app = App.objects.create(owner=owner, name=app_name)
        if laid_out is not None:
            App.objects.filter(pk=app.pk).update(public_id=laid_out.app_id)
            app.refresh_from_db()
    app_version, _ = AppVersion.objects.get_or_create(
        app=app,
        version=version,
        defaults={
            "version_key": version,
            "schema": schema,
            "entrypoint": "app.ts",
            "migrations": [{"schema": n} for n in range(1, schema + 1)],
        },
    )
    return Appspace.objects.create(
        owner=owner,
        app=app,
        app_version=app_version,
        subdomain=subdomain or f"space{next(_names)}-{secrets.token_hex(3)}",
        status=status,
        data_schema=schema,
        memory_mb=256,
        cpu_percent=50,
        disk_mb=disk_mb,
    )


@pytest.fixture
def make_appspace() -> Callable[..., Appspace]:
    return create_appspace


def fill(appspace: Appspace, files: dict[str, bytes | str]) -> None:
    for rel, content in files.items():
        path = appspace.data_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def logged_in() -> Callable[..., Client]:
    def make(user) -> Client:
        client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
        client.force_login(user)
        return client

    return make


def lay_out_version(app_id: str, version: str, files: dict[str, str]) -> None:
    """Another version of an already laid-out app (same app id), as an install lays it out."""
    from sandbox import layout

    root = layout.app_files_dir(app_id, version)
    root.mkdir(parents=True)
    os.chmod(root.parent, 0o711)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    os.chmod(root, 0o755)
