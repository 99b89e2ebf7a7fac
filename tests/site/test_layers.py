"""The ground floor stands alone: every module of packages/ imports in a bare interpreter, with
no Django settings configured, and brings no ORM with it. (The layers above are checked by
`lint-imports` in `make test`; see docs/architecture.md.)"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import packages
from tests.sandbox.fixtures import REPO

MODULES = sorted(f"packages.{m.name}" for m in pkgutil.iter_modules(packages.__path__))


def test_packages_import_without_settings_or_orm():
    assert len(MODULES) >= 8
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = [m for m in sys.modules if m.startswith(('django.db', 'appspaces', 'backups',"
        " 'sandbox', 'accounts', 'celery', 'channels'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_no_folder_holds_more_than_fifteen_modules():
    """Past ~15 modules a folder stops showing its flows: it gets subpackages instead
    (docs/architecture.md). Migrations and tests are lists by nature and are not counted."""
    crowded = {}
    for folder in ("accounts", "appspaces", "backups", "dropserver_site", "packages", "sandbox"):
        for path in [REPO / folder, *(REPO / folder).rglob("*")]:
            if not path.is_dir() or path.name in ("migrations", "__pycache__"):
                continue
            modules = [p for p in path.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > 15:
                crowded[str(path.relative_to(REPO))] = len(modules)
    assert not crowded, crowded
