"""Helpers for tests of least privilege: the DS_RUN_AS test user, and talking to a supervisor's
control socket as some other uid (a real process, its credentials set by the kernel).

`run_as_test_user()` creates (once per host, then reuses) the system user `ds-test-runas` with
scripts/run-as-user.sh. `control_as(socket, requests, user=, extra_groups=)` runs the system
Python (`/usr/bin/python3`: sys.executable may live where other users cannot reach it) as that
user, sends each request frame and returns what came back: `{"connect_error": "..."}` or
`{"responses": [...]}`. `reachable_python(user, argv)` wraps a command started as root so that
children dropped to `user` can run this interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sandbox import access

REPO = Path(__file__).resolve().parents[1]
TEST_USER = "ds-test-runas"
SYSTEM_PYTHON = "/usr/bin/python3"

_CLIENT = r"""
import json, socket, sys
path, frames = sys.argv[1], json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(path)
except OSError as exc:
    print(json.dumps({"connect_error": f"{type(exc).__name__}: {exc.strerror}"}))
    sys.exit(0)
f = s.makefile("rb")
responses = []
for frame in frames:
    try:
        s.sendall(json.dumps(frame).encode() + b"\n")
        line = f.readline()
    except OSError as exc:
        responses.append({"closed": str(exc)})
        break
    if not line:
        responses.append({"closed": "connection closed"})
        break
    responses.append(json.loads(line))
print(json.dumps({"responses": responses}))
"""


def run_as_test_user() -> access.RunAs:
    subprocess.run([str(REPO / "scripts" / "run-as-user.sh"), TEST_USER], check=True)
    user = access.run_as_user(TEST_USER)
    assert user is not None
    return user


def control_as(
    socket_path: str | Path,
    requests: list[dict],
    *,
    user: int | str,
    group: int | str | None = None,
    extra_groups: list[int] | None = None,
) -> dict:
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", _CLIENT, str(socket_path), json.dumps(requests)],
        user=user,
        group=group,
        extra_groups=extra_groups if extra_groups is not None else [],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def reachable_python(user: access.RunAs, argv: list[str]) -> list[str]:
    """`argv` (started as root), wrapped so that `user` can run this interpreter too.

    On a host where Python lives under a folder others cannot traverse (pyenv under /root, 0700
    here), the dropped children could not even exec it. Then the command runs in a private
    mount namespace where that folder is a 0755 tmpfs holding only a bind of the interpreter's
    tree; supervisor, web servers and workers all share that namespace, as they must.
    """
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import django"],
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            capture_output=True,
            cwd="/",
            check=False,
        )
        if probe.returncode == 0:
            return argv
    except PermissionError:
        pass
    python = Path(os.path.realpath(sys.executable))
    closed = next(
        p for p in reversed(python.parents) if p != Path("/") and not os.stat(p).st_mode & 0o001
    )
    keep = python.parents[len(python.parents) - len(closed.parents) - 2]
    script = (
        'm=$(mktemp -d) && mount --bind "$1" "$m" && '
        'mount -t tmpfs -o mode=0755 tmpfs "$2" && mkdir -p "$1" && mount --move "$m" "$1" && '
        'rmdir "$m" && shift 2 && exec "$@"'
    )
    return [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", script, "sh", str(keep), str(closed), *argv,
    ]  # fmt: skip
