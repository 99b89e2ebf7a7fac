"""`serve` started as root: which children give up root, and what they must own to work.

Only the sandbox supervisor needs uid 0 (bubblewrap as per-appspace uids, cgroups, mounts).
Started by root, `serve` runs the web servers (Daphne), the TLS edge (Caddy) and the Celery
workers as the DS_RUN_AS user — `subprocess.Popen(user=, group=, extra_groups=)`, i.e.
setgroups (initgroups' list), setgid and setuid in the child before exec. The edge keeps one
capability, CAP_NET_BIND_SERVICE, and only when it must bind a port below 1024 (`setpriv`,
ambient). What the workers did as root on appspace data (read it for backups, hand restored
trees to its uid, swap them in, remove old data, measure it) goes through the supervisor's
narrow operations (`sandbox/data/files.py`, docs/security.md).

When `serve` is not root, nothing changes. When the DS_RUN_AS user does not exist, or cannot run
this Python or read DS_DATA_DIR (a checkout under /root, say), `serve` says so and keeps
everything as root: `make run` must keep working for a newcomer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sandbox import access

# What the web servers and workers write or hand out under DS_DATA_DIR (besides DS_DATA_DIR
# itself, where SQLite puts its -wal and -shm files): theirs. run/ and logs/ stay the
# supervisor's (root's), appspace data its uid's.
PLATFORM_ENTRIES = (
    "secret_key",
    "broker",
    "mail",
    "metrics",
    "uploads",
    "static",
    "tls",
    "backups",  # archives the owners download, uploads they restore from (the workers write)
    "apps",  # installed versions, deleted from the panel (the workers and the supervisor write)
    "trash",
    "tmp",
    "examples",  # packages `install_examples` built for the workers
    "celerybeat-schedule",  # beat's shelve (one or three files, by dbm)
    "celerybeat-schedule.bak",
    "celerybeat-schedule.dat",
    "celerybeat-schedule.dir",
)


@dataclass(frozen=True)
class Drop:
    user: access.RunAs

    def popen_kwargs(self) -> dict:
        return {"user": self.user.uid, "group": self.user.gid, "extra_groups": self.user.groups}

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """No root's $HOME for the child: DS_DATA_DIR (the edge overrides it with tls/). Its
        temporary files go to DS_DATA_DIR/tmp, the user's own, not the sticky /tmp: the
        filesystem broker moves each message there before deleting it, and a message queued by
        root (a `manage.py` command) could not be deleted from /tmp by another user."""
        home = str(settings.DS_DATA_DIR)
        tmp = str(Path(settings.DS_DATA_DIR) / "tmp")
        return dict(env, HOME=home, TMPDIR=tmp, USER=self.user.name, LOGNAME=self.user.name)

    def edge_argv(self, argv: list[str], ports: list[int]) -> tuple[list[str], bool]:
        """Caddy's command line, and whether Popen must do the drop itself. A port below 1024
        needs CAP_NET_BIND_SERVICE: `setpriv` drops the uid and keeps that one capability."""
        if all(p >= 1024 for p in ports):
            return argv, True
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return [
            setpriv,
            f"--reuid={self.user.uid}",
            f"--regid={self.user.gid}",
            "--init-groups",
            "--inh-caps=+net_bind_service",
            "--ambient-caps=+net_bind_service",
            "--",
            *argv,
        ], False


def drop_target(warn) -> Drop | None:
    """The user `serve`'s web servers and edge run as, or None (with a warning through `warn`
    when root could have dropped and cannot)."""
    if os.geteuid() != 0 or not settings.DS_RUN_AS:
        return None
    user = access.run_as_user()
    if user is None:
        warn(
            f"DS_RUN_AS user {settings.DS_RUN_AS!r} does not exist: the web servers and the TLS "
            "edge run as root. Create it with `scripts/run-as-user.sh` (or set DS_RUN_AS= to "
            "silence this)."
        )
        return None
    drop = Drop(user)
    if reason := _cannot_run(drop):
        warn(
            f"DS_RUN_AS user {user.name!r} cannot run Dropserver here ({reason}): the web servers "
            "and the TLS edge run as root. The Python interpreter, the code and DS_DATA_DIR must "
            f"be readable by {user.name}."
        )
        return None
    return drop


def _cannot_run(drop: Drop) -> str | None:
    """Can the user start this interpreter, import the project and reach DS_DATA_DIR (or where
    it will be)?"""
    probe = "import os, sys; import dropserver_site, daphne; os.stat(sys.argv[1])"
    try:
        result = subprocess.run(
            [sys.executable, "-c", probe, str(_existing(Path(settings.DS_DATA_DIR)))],
            cwd=settings.BASE_DIR,
            env=drop.env(dict(os.environ)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **drop.popen_kwargs(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines()
        return lines[-1] if lines else f"exit status {result.returncode}"
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def give_platform_paths(drop: Drop) -> None:
    """Make what the dropped children write theirs: DS_DATA_DIR itself (SQLite's -wal/-shm
    files are created next to the database), the SQLite database, and `PLATFORM_ENTRIES`,
    created if missing, and appspaces/ with each appspaces/<id>/ (not their content). Never
    follows a link; run/ and logs/ are the supervisor's."""
    uid, gid = drop.user.uid, drop.user.gid
    data = Path(settings.DS_DATA_DIR)
    data.mkdir(parents=True, exist_ok=True)
    os.chown(data, uid, gid, follow_symlinks=False)
    for name in ("broker", "mail", "metrics", "uploads", "tls", "backups", "tmp"):
        (data / name).mkdir(exist_ok=True)
    os.chmod(data / "tmp", 0o700)
    paths = [data / name for name in PLATFORM_ENTRIES]
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = Path(database["NAME"])
        paths += [name, Path(f"{name}-wal"), Path(f"{name}-shm")]
    for path in paths:
        _chown_tree(path, uid, gid)
    # appspaces/ and each appspaces/<id>/ (not what is inside: data is the appspace uid's, meta
    # the supervisor sets at each start): restores stage data there.
    appspaces = data / "appspaces"
    if appspaces.is_dir() and not appspaces.is_symlink():
        os.chown(appspaces, uid, gid, follow_symlinks=False)
        for entry in appspaces.iterdir():
            os.chown(entry, uid, gid, follow_symlinks=False)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    if not root.exists() and not root.is_symlink():
        return
    os.chown(root, uid, gid, follow_symlinks=False)
    if root.is_symlink() or not root.is_dir():
        return
    for folder, dirnames, filenames in os.walk(root):  # never descends into links
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
