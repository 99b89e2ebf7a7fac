"""Class 3 of the second review: root never follows a path a sandbox can change.

An appspace's uid swaps its socket for a symlink (to another appspace's socket, to a
root-only unix socket) and a request goes through the real gateway (Daphne): nothing is
relayed. Checked from the host: the listeners the symlinks point at accept no connection, and
the client gets a 502 (HTTP) or a refused upgrade (WebSocket).

Once an appspace is ready its socket dir is root's (`sandbox.walls.mounts.seal_run_dir`), so its uid
cannot swap anything; the test first shows that, then hands the dir back to the uid (as it is
before the app is ready) to test the gateway's own checks (`sandbox.peer`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from appspaces.sandboxes import appspace_spec
from sandbox import layout
from tests.gateway.peer_sockets import listen_as
from tests.gateway.test_proxy_live import head, raw
from tests.gateway.test_websocket import ws

pytestmark = pytest.mark.sandbox

AS_UID = """
import os, sys
uid, sock, target = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
try:
    os.rename(sock, sock + ".real")
    os.symlink(target, sock)
except OSError as exc:
    print(type(exc).__name__); sys.exit(1)
print("swapped")
"""


def swap_as(uid: int, sock: str, target: str) -> str:
    """As the appspace's uid: move the socket aside, put a symlink to `target` in its place."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", AS_UID, str(uid), sock, target],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip()


class CountingListener:
    """A unix listener that counts the connections it accepts (and answers none)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.setblocking(True)
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def root_only_listener() -> tuple[str, CountingListener]:
    directory = tempfile.mkdtemp(prefix="root-only-")
    os.chmod(directory, 0o711)
    path = str(Path(directory) / "system.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    return path, CountingListener(sock)


def other_appspace_listener(uid: int) -> tuple[str, CountingListener]:
    path = str(Path(tempfile.mkdtemp(prefix="other-appspace-")) / "http.sock")
    return path, CountingListener(listen_as(uid, path))


@pytest.fixture
def victim(stack):
    """A fresh appspace started by the supervisor (so the gateway holds no kept-open
    connection to it): its uid and socket path."""
    appspace = stack.appspace()
    path = stack.supervisor.client.ensure(appspace_spec(appspace))
    yield appspace, path
    stack.supervisor.client.stop(str(appspace.public_id))


def unseal(appspace) -> None:
    """The socket dir as it is before the app is ready: its uid's."""
    run = layout.sandbox_run_dir(str(appspace.public_id))
    os.chown(run, appspace.sandbox_uid, appspace.sandbox_uid)
    os.chmod(run, 0o700)


def get(stack, appspace, path: str = "/") -> tuple[int, bytes]:
    return raw(stack, appspace, head(stack, appspace, "GET", path))


def test_a_ready_appspace_cannot_touch_its_socket(stack, victim):
    appspace, path = victim
    target, listener = root_only_listener()
    try:
        assert swap_as(appspace.sandbox_uid, path, target) == "PermissionError"
        assert os.path.exists(path) and not os.path.islink(path)
        assert get(stack, appspace) == (200, b"home")
        assert listener.accepted == 0
    finally:
        listener.close()


@pytest.mark.parametrize("kind", ["root-only socket", "another appspace's socket"])
def test_a_socket_swapped_for_a_symlink_relays_nothing(stack, victim, kind):
    appspace, path = victim
    if kind == "root-only socket":
        target, listener = root_only_listener()
    else:  # a listener of another sandbox uid that counts what reaches it
        other = stack.appspace()
        target, listener = other_appspace_listener(other.sandbox_uid)
    try:
        unseal(appspace)
        assert swap_as(appspace.sandbox_uid, path, target) == "swapped"
        assert os.path.islink(path)

        status, body = get(stack, appspace, "/echo")
        assert status == 502, body
        with pytest.raises(InvalidStatus):
            ws(stack, appspace).close()
        assert listener.accepted == 0  # from the host: nothing reached the other listener
        assert "refused to use" in stack.log()
    finally:
        listener.close()


def test_a_symlink_to_a_real_appspace_socket_is_not_followed(stack, victim):
    appspace, path = victim
    other = stack.appspace()
    other_path = stack.supervisor.client.ensure(appspace_spec(other))
    unseal(appspace)
    assert swap_as(appspace.sandbox_uid, path, other_path) == "swapped"
    status, body = get(stack, appspace, "/echo")
    assert status == 502 and other.subdomain.encode() not in body
    assert get(stack, other) == (200, b"home")  # the other appspace itself is unharmed
    stack.supervisor.client.stop(str(other.public_id))
