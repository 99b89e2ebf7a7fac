"""Helpers of the appspace tests (test_appspace_*.py import what they use).

- `make_version(owner, files=None, version=, schema=, permissions=, network=, app=)` ->
  AppVersion: App and AppVersion rows; with `files` the app's files are laid out for real
  sandboxes (a second version of the same `app` goes beside the first).
- `make_appspace(owner, version, subdomain=None, status=ACTIVE, folders=False)` -> Appspace
  rows as the creation job leaves them (with `folders`, data/meta and users.json too).
- `notes_app(schema, ...)`: the source of a small app whose migrations write files, for real
  sandboxes; `tree_hashes(path)`: a folder's files as the host sees them.
- `own_uids` (autouse where imported): appspace uids of this test run only.
- `logged_in(user)`: a test Client on the panel host.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from appspaces.lifecycle.creation import prepare_folders
from appspaces.models import App, Appspace, AppVersion
from appspaces.sandboxes import publish_users
from sandbox import layout
from tests.sandbox.fixtures import lay_out_app

_names = itertools.count(1)

EDIT = {"key": "edit", "name": "Write notes", "description": "Add and delete notes."}


@pytest.fixture(autouse=True)
def own_uids(settings):
    # Appspace uids are base + pk; other test runs on this host use small pks too.
    settings.DS_SANDBOX_UID_BASE = 500_000_000 + secrets.randbelow(10**6) * 1000


def logged_in(user) -> Client:
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    client.force_login(user)
    return client


def _lay_out_version(app_id: str, version: str, files: dict[str, str]) -> None:
    root = layout.app_files_dir(app_id, version)
    root.mkdir(parents=True)
    os.chmod(root.parent, 0o711)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        os.chmod(directory, 0o755)


def make_version(
    owner,
    files: dict[str, str] | None = None,
    *,
    version: str = "1.0.0",
    schema: int = 0,
    name: str = "Notes",
    permissions: list[dict] | None = None,
    network: dict | None = None,
    app: App | None = None,
    changelog: str = "",
) -> AppVersion:
    from appspaces.installs.versions import version_sort_key

    if app is None:
        app = App.objects.create(owner=owner, name=name)
        if files is not None:
            laid_out = lay_out_app(files, version=version)
            App.objects.filter(pk=app.pk).update(public_id=laid_out.app_id)
            app.refresh_from_db()
    elif files is not None:
        _lay_out_version(str(app.public_id), version, files)
    manifest = {"name": app.name, "version": version}
    manifest["permissions"] = [EDIT] if permissions is None else permissions
    if network is not None:
        manifest["network"] = network
    return AppVersion.objects.create(
        app=app,
        version=version,
        version_key=version_sort_key(version),
        schema=schema,
        manifest=manifest,
        routes=[],
        migrations=list(range(1, schema + 1)),
        entrypoint="app.ts",
        changelog=changelog,
    )


def make_appspace(
    owner,
    version: AppVersion,
    *,
    subdomain: str | None = None,
    status: str = Appspace.Status.ACTIVE,
    folders: bool = False,
) -> Appspace:
    appspace = Appspace.objects.create(
        owner=owner,
        app=version.app,
        app_version=version,
        subdomain=subdomain or f"space{next(_names)}-{secrets.token_hex(3)}",
        status=status,
        data_schema=version.schema,
        memory_mb=256,
        cpu_percent=50,
        disk_mb=100,
    )
    if folders:
        prepare_folders(appspace)
        publish_users(appspace)
    return appspace


# An app whose migrations write files in the data dir, so a failed migration is visible.
NOTES_APP = """
import { createApp } from "@dropserver/app";
const migrations = [
  { schema: 1,
    up: async ({ dataPath }) => {
      await Deno.writeTextFile(`${dataPath}/notes.json`, JSON.stringify([{ text: "first" }]));
    },
    down: async ({ dataPath }) => { await Deno.remove(`${dataPath}/notes.json`); } },
  %s
];
createApp({
  routes: [
    { method: "GET", path: "/", auth: "public",
      handler: (ctx) => new Response(Deno.readTextFileSync(`${ctx.dataPath}/notes.json`)) },
  ],
  migrations,
});
"""

# Schema 2: rewrites the notes and adds a file, then (when `fail`) throws half-way.
MIGRATION_2 = """
  { schema: 2,
    up: async ({ dataPath }) => {
      const notes = JSON.parse(await Deno.readTextFile(`${dataPath}/notes.json`));
      await Deno.writeTextFile(`${dataPath}/notes.json`,
        JSON.stringify(notes.map((n) => ({ ...n, done: false }))));
      await Deno.writeTextFile(`${dataPath}/tags.json`, "[]");
      %s
    },
    down: async ({ dataPath }) => {
      const notes = JSON.parse(await Deno.readTextFile(`${dataPath}/notes.json`));
      await Deno.writeTextFile(`${dataPath}/notes.json`,
        JSON.stringify(notes.map(({ done, ...n }) => n)));
      await Deno.remove(`${dataPath}/tags.json`);
    } },
"""


def notes_app(schema: int = 1, *, fail: bool = False) -> str:
    if schema == 1:
        return NOTES_APP % ""
    throw = 'throw new Error("disk on fire halfway through");' if fail else ""
    return NOTES_APP % (MIGRATION_2 % throw)


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
