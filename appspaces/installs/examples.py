"""The example apps in examples/, installed for the instance's first admin so that a newcomer to
`make run` has apps to open.

`manage.py install_examples` builds each example folder into a package under
DS_DATA_DIR/examples/ and queues install jobs (through the ordinary pipeline) for the oldest
active admin. A fresh instance has no admin yet: then it leaves `pending.json` there, and the
jobs are queued the moment the first admin account is created (the receiver at the end of
appspaces/models.py). Either way the jobs run when the Celery worker runs (`manage.py serve`).
Versions of one app are installed oldest first, each as a version of the same app (a chain:
the job of 1.0.0 queues 2.0.0 when it succeeds). Each admin gets the examples once: deleting
them stays deleted, however often `make run` runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import semver
from django.conf import settings

from appspaces.allowances import AllowanceError, check_app
from appspaces.installs.service import install_job_create
from appspaces.installs.staging import upload_copy
from appspaces.installs.versions import parse_version
from appspaces.models import App, Job, data_dir
from packages.build import build_package
from packages.extraction import ExtractionLimits

log = logging.getLogger(__name__)

PENDING = "pending.json"
STATE = "state.json"


class ExampleError(Exception):
    """An example folder that does not build; str() says why."""


@dataclass(frozen=True)
class ExamplePackage:
    example: str  # the folder under examples/, e.g. "notes"
    name: str
    version: semver.Version
    package: Path


def examples_root() -> Path:
    return Path(settings.BASE_DIR) / "examples"


def packages_dir() -> Path:
    path = data_dir() / "examples"
    path.mkdir(parents=True, exist_ok=True)
    return path


def example_sources(root: Path | None = None) -> Iterator[tuple[str, Path]]:
    """(example, folder) for `examples/<app>/` with a dropapp.json, or one per version folder
    `examples/<app>/<version>/`."""
    root = root or examples_root()
    for app_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if (app_dir / "dropapp.json").is_file():
            yield app_dir.name, app_dir
            continue
        for version_dir in sorted(p for p in app_dir.iterdir() if p.is_dir()):
            if (version_dir / "dropapp.json").is_file():
                yield app_dir.name, version_dir


def examples_build(root: Path | None = None) -> list[ExamplePackage]:
    """Build every example into DS_DATA_DIR/examples/ (deterministic: same files, same bytes)."""
    built = []
    dest = packages_dir()
    for example, source in example_sources(root):
        scratch = dest / f".{example}-{source.name}.tar.gz"
        result = build_package(source, scratch, limits=ExtractionLimits.for_app_packages())
        if not result.ok or result.manifest.manifest is None:
            scratch.unlink(missing_ok=True)
            problems = [str(e) for e in result.manifest.errors] + result.errors
            raise ExampleError(f"{source} does not build: {'; '.join(problems)}")
        manifest = result.manifest.manifest
        package = dest / f"{example}-{manifest.version}.tar.gz"
        os.replace(scratch, package)
        built.append(ExamplePackage(example, manifest.name, manifest.version, package))
    return sorted(built, key=lambda p: (p.example, p.version))


def examples_queue(*, owner, packages: list[ExamplePackage], force: bool = False) -> list[Job]:
    """Queue the installs of what `owner` does not have yet; once per owner unless forced."""
    state = _read(packages_dir() / STATE) or {"installed_for": []}
    if str(owner.public_id) in state["installed_for"] and not force:
        return []
    jobs = []
    by_example: dict[str, list[ExamplePackage]] = {}
    for package in packages:
        by_example.setdefault(package.example, []).append(package)
    for example, group in by_example.items():
        group.sort(key=lambda p: p.version)
        busy = Job.objects.filter(owner=owner, kind=Job.Kind.INSTALL, params__example=example)
        if busy.exclude(state__in=Job.FINISHED).exists():
            continue
        app = App.objects.filter(owner=owner, name=group[-1].name).order_by("created").first()
        installed = (
            {parse_version(v) for v in app.versions.values_list("version", flat=True)}
            if app
            else set()
        )
        todo = [p for p in group if p.version not in installed]
        if not todo:
            continue
        if app is None:
            try:
                check_app(owner)
            except AllowanceError as exc:
                log.info("example %s not installed for %s: %s", example, owner, exc)
                continue
        first = todo[0]
        jobs.append(
            install_job_create(
                owner=owner,
                upload=upload_copy(first.package),
                app=app,
                filename=first.package.name,
                accept_warnings=True,  # our own examples, reviewed here
                extra={
                    "example": example,
                    "then": [{"package": str(p.package), "example": example} for p in todo[1:]],
                },
            )
        )
    state["installed_for"] = sorted({*state["installed_for"], str(owner.public_id)})
    _write(packages_dir() / STATE, state)
    return jobs


def examples_pending_save(packages: list[ExamplePackage]) -> None:
    _write(packages_dir() / PENDING, {"packages": [_as_json(p) for p in packages]})


def examples_pending_queue(*, owner) -> list[Job]:
    """Queue the examples a fresh instance kept for its first admin (a no-op otherwise)."""
    pending = data_dir() / "examples" / PENDING
    claimed = pending.with_name(f"{PENDING}.{os.getpid()}")
    try:
        os.rename(pending, claimed)  # exactly one process takes them
    except FileNotFoundError:
        return []
    try:
        data = _read(claimed) or {"packages": []}
        packages = [_from_json(p) for p in data["packages"] if Path(p["package"]).is_file()]
        jobs = examples_queue(owner=owner, packages=packages)
        log.info("queued %d example app installs for %s", len(jobs), owner.email)
        return jobs
    finally:
        claimed.unlink(missing_ok=True)


def _as_json(p: ExamplePackage) -> dict:
    return {
        "example": p.example,
        "name": p.name,
        "version": str(p.version),
        "package": str(p.package),
    }


def _from_json(d: dict) -> ExamplePackage:
    return ExamplePackage(d["example"], d["name"], parse_version(d["version"]), Path(d["package"]))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
