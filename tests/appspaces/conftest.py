"""App install test helpers: real sandboxes (tests/sandbox/fixtures.py), packages, installs.

- `make_package(files, manifest=..., name=...)` -> Path: a .tar.gz with dropapp.json first;
  `files` maps paths to text/bytes, or to ("symlink", target) / ("hardlink", target).
- `install(owner, package_or_url, **install_job_create kwargs)` -> Job: the whole pipeline in
  this process (as `install_app` runs it), the job refreshed.
- `assert_nothing_left()`: no app folder, no staged upload, no App/AppVersion row.
- `eager`: Celery tasks run in-process (CELERY_TASK_ALWAYS_EAGER).
- `logged_in(user)` -> Client on the panel host.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from appspaces.installs.service import install_job_create, install_job_run
from appspaces.installs.staging import upload_copy
from appspaces.models import App, AppVersion, Job
from dropserver_site.celery import app as celery_app
from tests.sandbox.fixtures import (  # noqa: F401 (fixtures)
    http_request,
    make_app,
    start_supervisor,
    supervisor,
)

HELLO = """
import { createApp } from "@dropserver/app";
createApp({
  routes: [{ method: "GET", path: "/", auth: "public", handler: () => new Response("hello") }],
  migrations: [%s],
});
"""


def hello_app(schema: int = 0) -> str:
    """An app with `schema` migrations (1..schema)."""
    migration = "{ schema: %d, up() {}, down() {} }"
    return HELLO % ", ".join(migration % n for n in range(1, schema + 1))


def manifest_for(version: str = "1.0.0", **fields) -> dict:
    return {"name": "Hello", "version": version, "license": "MIT", **fields}


@pytest.fixture
def make_package(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10**6))

    def make(
        files: dict | None = None,
        *,
        manifest: dict | str | None = None,
        name: str | None = None,
    ) -> Path:
        files = {"app.ts": hello_app()} if files is None else files
        manifest = manifest_for() if manifest is None else manifest
        path = tmp_path / (name or f"package-{next(counter)}.tar.gz")
        with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            raw = manifest if isinstance(manifest, str) else json.dumps(manifest)
            _add(tar, "dropapp.json", raw)
            for rel, content in files.items():
                _add(tar, rel, content)
        return path

    return make


def _add(tar: tarfile.TarFile, name: str, content) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    if isinstance(content, tuple):
        kind, target = content
        info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        info.linkname = target
        tar.addfile(info)
        return
    data = content.encode() if isinstance(content, str) else content
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def install(owner, source: Path | str, **kwargs) -> Job:
    """Create an install job for `source` (a package file or a URL) and run it here."""
    if isinstance(source, Path):
        kwargs.setdefault("filename", source.name)
        job = install_job_create(owner=owner, upload=upload_copy(source), enqueue=False, **kwargs)
    else:
        job = install_job_create(owner=owner, url=source, enqueue=False, **kwargs)
    install_job_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def rerun(job: Job) -> Job:
    install_job_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def apps_dir() -> Path:
    return Path(settings.DS_DATA_DIR) / "apps"


def uploads_dir() -> Path:
    return Path(settings.DS_DATA_DIR) / "uploads"


def version_dirs() -> list[Path]:
    root = apps_dir()
    return sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []


def leftovers() -> dict[str, list]:
    """What an install left: app folders, staged uploads, rows."""
    apps = sorted(p.name for p in apps_dir().iterdir()) if apps_dir().exists() else []
    staged = sorted(p.name for p in uploads_dir().iterdir()) if uploads_dir().exists() else []
    return {
        "app folders": apps,
        "uploads": staged,
        "apps": list(App.objects.values_list("name", flat=True)),
        "versions": list(AppVersion.objects.values_list("version", flat=True)),
    }


def assert_nothing_left() -> None:
    left = leftovers()
    assert not any(left.values()), left


@pytest.fixture
def eager(settings):
    # Read first: Celery loads its configuration from Django's settings on first use.
    before = celery_app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = True
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def logged_in(user) -> Client:
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    client.force_login(user)
    return client
