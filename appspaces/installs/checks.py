"""The install pipeline's judgements: what app-init reported, whether its routes and migrations
are acceptable, and whether a version may join an app (once, with a schema that never goes
down as versions go up). Each refusal is a JobFailed whose message names what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import semver

from appspaces.installs.versions import parse_version
from appspaces.jobs import JobFailed
from appspaces.models import App
from packages.manifest import Manifest
from packages.paths import UnsafePath, clean_relative_path
from packages.routes import RouteError, RouteTable
from sandbox.client import RunResult

RESERVED_PREFIX = "/.dropserver"  # the platform's own paths on every appspace domain
MAX_LISTED_ERRORS = 10


@dataclass(frozen=True)
class CheckedApp:
    routes: list[dict[str, Any]]  # as app-init reported them; the index is the position
    migrations: list[int]
    schema: int


def run_failure(result: RunResult, *, timeout: float) -> str:
    """Why a sandbox run failed, in words (with the end of the app's error output)."""
    if result.timed_out:
        return f"the app did not finish starting within {timeout:g} seconds"
    if result.oom:
        return "the app ran out of memory while starting"
    error = (result.result or {}).get("error") if isinstance(result.result, dict) else None
    reason = str(error) if error else result.outcome
    tail = result.stderr_tail.strip()
    if tail and not error:
        reason += f" ({tail[-500:]})"
    return reason[:1500]


def app_init_result(result: RunResult, *, timeout: float) -> dict[str, Any]:
    if not result.ok or not isinstance(result.result, dict) or not result.result.get("ok"):
        raise JobFailed(
            "The app failed when it was started to read its routes: "
            + run_failure(result, timeout=timeout)
        )
    return result.result


def _listed(errors: list[str]) -> str:
    shown = "; ".join(errors[:MAX_LISTED_ERRORS])
    more = len(errors) - MAX_LISTED_ERRORS
    return shown + (f"; and {more} more" if more > 0 else "")


def check_app_init(init: dict[str, Any], *, manifest: Manifest, files_dir: Path) -> CheckedApp:
    """Validate the routes and migrations the app declared at app-init."""
    raw_routes = init.get("routes")
    errors: list[str] = []
    table = None
    try:
        table = RouteTable.from_routes(raw_routes, permission_keys=manifest.permission_keys)
    except RouteError as exc:
        errors.extend(exc.errors)
    if table is not None:
        for route in table.routes:
            label = f"route {route.index} ({route.method} {route.path[:80]})"
            path = route.path.lower()
            if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
                errors.append(f"{label}: paths under {RESERVED_PREFIX}/ are the platform's")
            static_ok = _static_target_exists(files_dir, route.static, route.wildcard)
            if route.is_static and not static_ok:
                kind = "folder" if route.wildcard else "file"
                errors.append(
                    f"{label}: the static {kind} {'@app/' + route.static!r} is not in the package"
                )
    if errors:
        raise JobFailed(f"The app's routes are not valid: {_listed(errors)}")

    migrations = init.get("migrations")
    if not isinstance(migrations, list) or not all(
        isinstance(m, int) and not isinstance(m, bool) for m in migrations
    ):
        raise JobFailed("The app's migrations could not be read.")
    migrations = sorted(migrations)
    if migrations != list(range(1, len(migrations) + 1)):
        declared = ", ".join(str(m) for m in migrations[:20])
        raise JobFailed(
            "The app's migrations must be numbered 1, 2, 3... without gaps; "
            f"it declares schema {declared}."
        )
    schema = migrations[-1] if migrations else 0
    if init.get("schema", schema) != schema:
        raise JobFailed("The app's reported schema does not match its migrations.")
    return CheckedApp(routes=list(raw_routes), migrations=migrations, schema=schema)


def _static_target_exists(files_dir: Path, rel: str, folder: bool) -> bool:
    try:
        rel = clean_relative_path(rel) if rel else ""
    except UnsafePath:
        return False
    target = files_dir / rel if rel else files_dir
    if folder:  # a folder route may also name one file (then only that file is served)
        return target.is_dir() or target.is_file()
    return target.is_file()


def check_new_version(app: App | None, version: semver.Version) -> None:
    """A version is installed once per app (and so is anything of the same precedence)."""
    if app is None:
        return
    for existing in app.versions.values_list("version", flat=True):
        if parse_version(existing).compare(version) == 0:
            raise JobFailed(f"{app.name} {existing} is already installed.")


def check_schema_order(app: App | None, version: semver.Version, schema: int) -> None:
    """As versions go up, the data schema never goes down (appspaces move up without loss)."""
    if app is None:
        return
    for existing, existing_schema in app.versions.values_list("version", "schema"):
        order = parse_version(existing).compare(version)
        if order < 0 and existing_schema > schema:
            raise JobFailed(
                f"Version {version} has data schema {schema}, lower than the older version "
                f"{existing} (schema {existing_schema}): an app's schema may never go down "
                "as its versions go up."
            )
        if order > 0 and existing_schema < schema:
            raise JobFailed(
                f"Version {version} has data schema {schema}, higher than the newer version "
                f"{existing} (schema {existing_schema}): an app's schema may never go down "
                "as its versions go up."
            )


def app_name(manifest: Manifest, params: dict[str, Any]) -> str:
    if manifest.name:
        return manifest.name
    filename = params.get("filename") or ""
    stem = filename.split(".", 1)[0].strip()
    return stem[:100] or "Untitled app"
