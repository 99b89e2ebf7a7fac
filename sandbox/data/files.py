"""The supervisor's narrow operations on one appspace's files, for callers that are not root.

The web servers run as the DS_RUN_AS user (docs/security.md, "Processes and their uids"), yet
an appspace's data belongs to its uid, its log folder and socket folder to root. Rather than a
general "run this as root", the supervisor offers one operation per need, each naming an
appspace by id, never a path:

- `data_remove` {"appspace": id} -> {"removed": [names]}: delete `appspaces/<id>/`,
  `logs/<id>/` and `run/<id>/` (detached first if mounted), once no sandbox of that id runs
  (`busy` otherwise). Deleting an appspace from the panel calls it.
- `data_remove` {"appspace": id, "part": name}: only `appspaces/<id>/<name>`, where name is a
  restore's staging (`.restore-<token>`) or replaced data (`.previous-<stamp>-<token>`).
- `data_hand_over` {"appspace": id, "part": ".restore-<token>", "uid": uid}: make the restored
  tree `appspaces/<id>/<part>/data` the appspace's own: owned by `uid` (at least
  DS_SANDBOX_UID_BASE), 0700 folders, 0600 files; links and special files are left alone.
- `data_swap` {"appspace": id, "part": name}: exchange `appspaces/<id>/<part>/data` with
  `appspaces/<id>/data` in one rename (a folder of another uid cannot be moved by the
  platform user). The restore calls these two when not root.
- `data_view` {"appspace": id, "uid": uid} -> {"path"}: a read-only view of the data where
  `uid` (the appspace's) reads as the caller's DS_RUN_AS user (`sandbox.walls.views`), for a
  backup; `data_view_close` {"appspace": id} takes it down.
- `data_usage` {"appspace": id} -> the fields of `sandbox.data.usage.DiskUsage`: the disk used by
  `appspaces/<id>/data/`, walked as root (a walk as anyone else would miss what the app made
  unreadable, and let it hide bytes from its quota). The disk measure calls it when not root.

Paths are built here from the id (the sandbox id pattern of `sandbox.spec`: no `/`, no `..`)
and a part name of a fixed shape; below `appspaces/`, every component is opened O_NOFOLLOW
relative to its parent's descriptor (the platform user owns those folders and could plant a
link), and the removal never follows a link (`mounts.remove_tree`, `shutil.rmtree(dir_fd=)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import re
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from sandbox import access, layout
from sandbox.data import usage
from sandbox.instance import FROZEN, RUNNING, STARTING, STOPPING
from sandbox.protocol import SandboxBadRequest, SandboxBusy
from sandbox.spec import _ID, UID_MAX
from sandbox.walls import mounts, views

if TYPE_CHECKING:
    from sandbox.supervisor import Supervisor


def appspace_id(raw: Any) -> str:
    if not isinstance(raw, str) or not _ID.match(raw):
        raise SandboxBadRequest("appspace must be a sandbox id (1-64 of [A-Za-z0-9_-])")
    return raw


_PART = re.compile(r"^\.(restore|previous)-[A-Za-z0-9_-]{1,80}$")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_EXCHANGE = 2


def part_name(raw: Any, *, restore_only: bool = False) -> str:
    if not isinstance(raw, str) or not _PART.match(raw):
        raise SandboxBadRequest("part must be .restore-<token> or .previous-<stamp>-<token>")
    if restore_only and not raw.startswith(".restore-"):
        raise SandboxBadRequest("only a restore's staging (.restore-<token>) is handed over")
    return raw


def _open_appspace(sandbox_id: str) -> int:
    """A descriptor of appspaces/<id>/, neither of the two components followed if a link."""
    parent = os.open(layout.appspaces_dir(), _DIR)
    try:
        return os.open(sandbox_id, _DIR, dir_fd=parent)
    finally:
        os.close(parent)


async def remove(sup: Supervisor, raw_id: Any, raw_part: Any = None) -> dict[str, Any]:
    sandbox_id = appspace_id(raw_id)
    if raw_part is not None:
        part = part_name(raw_part)
        loop = asyncio.get_running_loop()
        return {"removed": await loop.run_in_executor(None, _remove_part, sandbox_id, part)}
    inst = sup.instances.get(sandbox_id)
    if inst is not None:
        async with inst.lock:
            if inst.state in (RUNNING, FROZEN, STARTING, STOPPING):
                raise SandboxBusy(f"sandbox {sandbox_id} is {inst.state}: stop it first")
            inst.log.close()
            sup.instances.pop(sandbox_id, None)
    targets = {
        "appspace": layout.appspaces_dir() / sandbox_id,
        "log": layout.sandbox_log_dir(sandbox_id),
        "run": layout.sandbox_run_dir(sandbox_id),
    }
    removed = await asyncio.get_running_loop().run_in_executor(None, _remove_all, targets)
    return {"removed": removed}


def _remove_all(targets: dict[str, Path]) -> list[str]:
    removed = []
    for name, path in targets.items():
        if not path.exists() and not path.is_symlink():
            continue
        if name == "run":
            mounts.remove_run_dir(path.name)  # detaches a leftover tmpfs first
        else:
            mounts.remove_tree(path)
        removed.append(name)
    return removed


async def measure(raw_id: Any) -> dict[str, int]:
    data = layout.appspace_data_dir(appspace_id(raw_id))
    loop = asyncio.get_running_loop()
    try:
        used = await loop.run_in_executor(None, usage.measure, data)
    except OSError as exc:  # TreeMoved, a link at the top
        raise SandboxBusy(f"the data of {raw_id} could not be measured: {exc}") from None
    return dataclasses.asdict(used)


def _remove_part(sandbox_id: str, part: str) -> list[str]:
    try:
        fd = _open_appspace(sandbox_id)
    except FileNotFoundError:
        return []
    try:
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            os.unlink(part, dir_fd=fd)
        else:
            shutil.rmtree(part, dir_fd=fd)
    except FileNotFoundError:
        return []
    finally:
        os.close(fd)
    return [part]


async def hand_over(raw_id: Any, raw_part: Any, raw_uid: Any) -> dict[str, Any]:
    sandbox_id, part = appspace_id(raw_id), part_name(raw_part, restore_only=True)
    raw_uid = _sandbox_uid(raw_uid)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _hand_over, sandbox_id, part, raw_uid)
    except OSError as exc:  # missing, or a link where a folder must be
        raise SandboxBadRequest(f"cannot hand over {sandbox_id}/{part}: {exc.strerror}") from None


def _hand_over(sandbox_id: str, part: str, uid: int) -> dict[str, Any]:
    files = folders = 0
    fd = _open_appspace(sandbox_id)
    try:
        stage = os.open(part, _DIR, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        for _path, _dirs, names, dir_fd in os.fwalk("data", dir_fd=stage, follow_symlinks=False):
            os.fchmod(dir_fd, 0o700)
            os.fchown(dir_fd, uid, uid)
            folders += 1
            for name in names:
                with contextlib.suppress(OSError):  # a link or a special file: left alone
                    entry = os.open(
                        name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd
                    )
                    try:
                        if stat.S_ISREG(os.fstat(entry).st_mode):
                            os.fchmod(entry, 0o600)
                            os.fchown(entry, uid, uid)
                            files += 1
                    finally:
                        os.close(entry)
    finally:
        os.close(stage)
    return {"files": files, "folders": folders}


async def swap(raw_id: Any, raw_part: Any) -> dict[str, Any]:
    sandbox_id, part = appspace_id(raw_id), part_name(raw_part)
    try:
        return _swap(sandbox_id, part)
    except OSError as exc:
        raise SandboxBadRequest(f"cannot swap {sandbox_id}/{part}: {exc.strerror}") from None


def _swap(sandbox_id: str, part: str) -> dict[str, Any]:
    fd = _open_appspace(sandbox_id)
    try:
        stage = os.open(part, _DIR, dir_fd=fd)
        try:
            for folder, name in ((stage, "data"), (fd, "data")):
                if not stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                    raise SandboxBadRequest(f"{name} of {sandbox_id}/{part} is not a folder")
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.renameat2(stage, b"data", fd, b"data", ctypes.c_uint(_RENAME_EXCHANGE)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), f"{sandbox_id}/{part}/data")
        finally:
            os.close(stage)
    finally:
        os.close(fd)
    return {"swapped": True}


async def view(raw_id: Any, raw_uid: Any) -> dict[str, Any]:
    sandbox_id, uid = appspace_id(raw_id), _sandbox_uid(raw_uid)
    platform = access.run_as_user()
    if os.geteuid() != 0 or platform is None:
        raise SandboxBadRequest("views are for the DS_RUN_AS user of a supervisor running as root")
    loop = asyncio.get_running_loop()
    try:
        path = await loop.run_in_executor(
            None, views.open_view, sandbox_id, uid, platform.uid, platform.gid
        )
    except OSError as exc:
        raise SandboxBadRequest(f"cannot open a view of {sandbox_id}: {exc}") from None
    return {"path": str(path)}


async def view_close(raw_id: Any) -> dict[str, Any]:
    return {"closed": views.close_view(appspace_id(raw_id))}


def _sandbox_uid(raw: Any) -> int:
    base = settings.DS_SANDBOX_UID_BASE
    if isinstance(raw, bool) or not isinstance(raw, int) or not base <= raw <= UID_MAX:
        raise SandboxBadRequest(f"uid {raw!r} refused: sandbox uids start at {base}")
    return raw
