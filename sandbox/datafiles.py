"""The supervisor's narrow operations on one appspace's files, for callers that are not root.

The web servers run as the DS_RUN_AS user (docs/security.md, "Processes and their uids"), yet
an appspace's data belongs to its uid, its log folder and socket folder to root. Rather than a
general "run this as root", the supervisor offers one operation per need, each naming an
appspace by id, never a path:

- `data_remove` {"appspace": id} -> {"removed": [names]}: delete `appspaces/<id>/`,
  `logs/<id>/` and `run/<id>/` (detached first if mounted), once no sandbox of that id runs
  (`busy` otherwise). Deleting an appspace from the panel calls it.
- `data_usage` {"appspace": id} -> the fields of `sandbox.usage.DiskUsage`: the disk used by
  `appspaces/<id>/data/`, walked as root (a walk as anyone else would miss what the app made
  unreadable, and let it hide bytes from its quota). The disk measure calls it when not root.

Paths are built here from the id (the sandbox id pattern of `sandbox.spec`: no `/`, no `..`);
the removal never follows a link (`mounts.remove_tree`: fd-relative, a link at the top is
removed as a link).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox import layout, usage
from sandbox.instance import FROZEN, RUNNING, STARTING, STOPPING
from sandbox.protocol import SandboxBadRequest, SandboxBusy
from sandbox.spec import _ID
from sandbox.walls import mounts

if TYPE_CHECKING:
    from sandbox.supervisor import Supervisor


def appspace_id(raw: Any) -> str:
    if not isinstance(raw, str) or not _ID.match(raw):
        raise SandboxBadRequest("appspace must be a sandbox id (1-64 of [A-Za-z0-9_-])")
    return raw


async def remove(sup: Supervisor, raw_id: Any) -> dict[str, Any]:
    sandbox_id = appspace_id(raw_id)
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
