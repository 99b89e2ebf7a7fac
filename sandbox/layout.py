"""Where sandbox things live: host paths under DS_DATA_DIR and the fixed paths inside a sandbox.

Host paths are computed from `django.conf.settings.DS_DATA_DIR` on every call (tests point it
at a fresh directory per test). In-sandbox paths are identical in every sandbox so that Deno's
emit cache, keyed by absolute path, is valid for every appspace of an app version.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from django.conf import settings

# --- Inside every sandbox ---------------------------------------------------------------------
SANDBOX_APP = "/app"  # app files, read-only
SANDBOX_DATA = "/data"  # appspace data, read-write; the harness chdir's here
SANDBOX_HARNESS = "/dropserver"  # the trusted harness, read-only
SANDBOX_CACHE = "/cache"  # DENO_DIR: read-only, writable only while warming at install
SANDBOX_META = "/meta"  # host-written metadata (users.json), read-only
SANDBOX_RUN = "/run/ds"  # the socket directory
SANDBOX_SOCKET = f"{SANDBOX_RUN}/http.sock"
SANDBOX_DENO = "/usr/bin/deno"

HARNESS_DIR = Path(__file__).resolve().parent / "harness"
USERS_FILE = "users.json"
SOCKET_NAME = "http.sock"
RELAY_NAME = "relay.sock"  # served by the supervisor (sandbox.walls.relay): appspace hosts only


def data_dir() -> Path:
    return Path(settings.DS_DATA_DIR)


def apps_dir() -> Path:
    return data_dir() / "apps"


def appspaces_dir() -> Path:
    return data_dir() / "appspaces"


def run_dir() -> Path:
    return data_dir() / "run"


def logs_dir() -> Path:
    return data_dir() / "logs"


def control_socket_path() -> Path:
    return run_dir() / "sandboxd.sock"


def app_files_dir(app_id: str, version: str) -> Path:
    return apps_dir() / app_id / version / "files"


def app_cache_dir(app_id: str, version: str) -> Path:
    return apps_dir() / app_id / version / "cache"


def appspace_data_dir(appspace_id: str) -> Path:
    return appspaces_dir() / appspace_id / "data"


def appspace_meta_dir(appspace_id: str) -> Path:
    return appspaces_dir() / appspace_id / "meta"


def sandbox_run_dir(sandbox_id: str) -> Path:
    return run_dir() / sandbox_id


def sandbox_socket_path(sandbox_id: str) -> Path:
    return sandbox_run_dir(sandbox_id) / SOCKET_NAME


def sandbox_relay_path(sandbox_id: str) -> Path:
    return sandbox_run_dir(sandbox_id) / RELAY_NAME


def sandbox_log_dir(sandbox_id: str) -> Path:
    return logs_dir() / sandbox_id


def instance_name() -> str:
    """A short stable name for this Dropserver instance, used to keep cgroups of two instances
    (or two parallel test runs) on one host apart, so that one's stale cleanup never kills
    the other's sandboxes."""
    digest = hashlib.sha256(str(data_dir().resolve()).encode()).hexdigest()
    return f"i-{digest[:12]}"


def is_within(path: Path, parent: Path) -> bool:
    """True if the real path of `path` is `parent` or below it (symlinks resolved)."""
    real = os.path.realpath(path)
    base = os.path.realpath(parent)
    return real == base or real.startswith(base + os.sep)


def write_users(meta_dir: Path, users: list[dict]) -> None:
    """Atomically publish the appspace's users for `ctx.appspace.users()` in the sandbox.

    Each user is {"id": str, "displayName": str, "permissions": [str]}. Written by the host
    only; the sandbox sees the directory read-only. Rename keeps readers from seeing half a file.
    """
    meta_dir.mkdir(parents=True, exist_ok=True)
    clean = [
        {
            "id": str(u["id"]),
            "displayName": str(u.get("displayName", "")),
            "permissions": [str(p) for p in u.get("permissions", [])],
        }
        for u in users
    ]
    fd, tmp = tempfile.mkstemp(dir=meta_dir, prefix=".users-")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(clean, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, meta_dir / USERS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
