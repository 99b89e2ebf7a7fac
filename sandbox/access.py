"""Who may talk to the supervisor, and which operations each caller may ask for.

The control socket (`run/sandboxd.sock`) is `root:<DS_RUN_AS group>` 0660 when the supervisor
runs as root and the DS_RUN_AS user exists, else 0600 (the supervisor's own uid only). The file
mode keeps everyone else from connecting; on top, every connection's `SO_PEERCRED` is read once
and every request is checked against this table, so a process that was handed a connected
socket (or a group it should not have) still gets nothing:

- `root`: uid 0 (operators' tools, tests, `manage.py` run by an admin);
- `platform`: the DS_RUN_AS uid (Daphne, the Celery workers) — or, with a supervisor that does
  not run as root (UNSAFE development mode), the supervisor's own uid;
- anyone else: every request is answered `forbidden` and the connection closed.

Every operation the platform may call is listed in `ACCESS`: an op that is not listed is
`forbidden` for `platform` even if the dispatcher knows it. Operations act on one sandbox or
one appspace named by id, with arguments the supervisor checks (a spec's uid is at least
DS_SANDBOX_UID_BASE, its paths are under DS_DATA_DIR/apps|appspaces): there is no operation
that runs a command, or touches a path the caller chose, as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

from django.conf import settings

from sandbox.protocol import SandboxForbidden

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

ROOT = "root"
PLATFORM = "platform"
BOTH = frozenset({ROOT, PLATFORM})

# op -> the callers that may ask for it (docs/security.md, "Processes and their uids"). Each
# names one sandbox (or a spec the supervisor validates): the web servers and workers need all
# of them. A root-only op would list ROOT alone.
ACCESS: dict[str, frozenset[str]] = {
    "ping": BOTH,
    "ensure": BOTH,
    "touch": BOTH,
    "stop": BOTH,
    "restart": BOTH,
    "freeze": BOTH,
    "thaw": BOTH,
    "usage": BOTH,
    "list": BOTH,
    "blocked": BOTH,
    "network_requests": BOTH,
    "run_once": BOTH,
    "data_remove": BOTH,  # an appspace's files, by id (sandbox/data/files.py)
    "data_usage": BOTH,  # the disk its data uses, walked as root
    "data_hand_over": BOTH,  # a restored tree given to the appspace's uid
    "data_swap": BOTH,  # restored data swapped with the live data
    "data_view": BOTH,  # a read-only view of the data for a backup (sandbox/walls/views.py)
    "data_view_close": BOTH,
    "data_hold": BOTH,  # a stopped appspace's data image mounted for a backup or a measure
    "data_release": BOTH,
}


@dataclass(frozen=True)
class RunAs:
    """The unprivileged user the web servers, the edge and the workers run as."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def groups(self) -> list[int]:
        """Its supplementary groups (initgroups' list), its primary group first."""
        return os.getgrouplist(self.name, self.gid)


def run_as_user(name: str | None = None) -> RunAs | None:
    """The DS_RUN_AS user, or None when it does not exist on this host (or the setting is
    empty: everything then runs as whoever starts it, as before)."""
    name = settings.DS_RUN_AS if name is None else name
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


def platform_uid() -> int:
    """Who owns what the platform writes next to a sandbox's files (meta/): the DS_RUN_AS uid
    when it exists, else root."""
    user = run_as_user()
    return user.uid if user else 0


def give_to_platform(target: str | os.PathLike | int) -> None:
    """Root writing something the platform's web servers must read or write later (a backup
    archive they let the owner download, the folder uploads land in): make it the DS_RUN_AS
    user's. A path is never followed; an int is an open descriptor. No-op unless root and the
    user exists."""
    if os.geteuid() != 0 or (user := run_as_user()) is None:
        return
    if isinstance(target, int):
        os.fchown(target, user.uid, user.gid)
    else:
        os.chown(target, user.uid, user.gid, follow_symlinks=False)


def give_tree_to_platform(root: str | os.PathLike) -> None:
    """`give_to_platform` for a tree root wrote (app files, a warmed cache); links are changed
    themselves, never followed."""
    if os.geteuid() != 0 or run_as_user() is None:
        return
    give_to_platform(root)
    for folder, dirnames, filenames in os.walk(root):  # never descends into a link
        for name in (*dirnames, *filenames):
            give_to_platform(os.path.join(folder, name))


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    role: str | None  # ROOT, PLATFORM, or None: refused

    def check(self, op: object) -> None:
        """Raise SandboxForbidden unless this caller may ask for `op`."""
        if self.role is None:
            raise SandboxForbidden(
                f"uid {self.uid} (pid {self.pid}) may not use the sandbox supervisor: only root "
                f"and {_platform_name()} may",
                uid=self.uid,
            )
        allowed = ACCESS.get(op) if isinstance(op, str) else None
        if allowed is None or self.role not in allowed:
            raise SandboxForbidden(
                f"op {op!r} is not allowed for {self.role} callers "
                f"(allowed: {', '.join(sorted(k for k, v in ACCESS.items() if self.role in v))})",
                uid=self.uid,
            )


def _platform_name() -> str:
    if os.geteuid() != 0:
        return f"the supervisor's own uid ({os.geteuid()})"
    user = run_as_user()
    return f"DS_RUN_AS ({user.name}, uid {user.uid})" if user else "DS_RUN_AS (no such user)"


def peer_caller(sock: socket.socket) -> Caller:
    """Who is at the other end of a control connection, from the kernel (`SO_PEERCRED`)."""
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return Caller(pid=pid, uid=uid, gid=gid, role=role_of(uid))


def role_of(uid: int) -> str | None:
    if uid == 0:
        return ROOT
    me = os.geteuid()
    if me != 0:
        return PLATFORM if uid == me else None  # no root: the supervisor's own uid only
    user = run_as_user()
    return PLATFORM if user is not None and uid == user.uid else None


def socket_owner() -> tuple[int, int, int]:
    """(uid, gid, mode) the control socket gets: root and the DS_RUN_AS group, 0660, when that
    can be done; else the supervisor's own, 0600."""
    user = run_as_user() if os.geteuid() == 0 else None
    if user is None:
        return os.geteuid(), os.getegid(), 0o600
    return 0, user.gid, 0o660


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
