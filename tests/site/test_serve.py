"""`manage.py serve` as a newcomer runs it: embedded defaults, real subprocesses, real signals."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.site.processes import descendants, free_port, read_until

BASE_DIR = Path(__file__).resolve().parents[2]
EMBEDDED_ONLY = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CHANNEL_LAYER_URL", "CACHE_URL")


def embedded_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_ONLY}
    env.update(DS_DATA_DIR=str(data_dir), DS_PORT=str(port), PYTHONUNBUFFERED="1")
    return env


def get(port: int, host: str, path: str = "/") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": f"{host}:{port}"})
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


@pytest.fixture
def served(ds_data_dir):
    """A migrated instance on the embedded defaults, with `serve` running."""
    port = free_port()
    env = embedded_env(ds_data_dir, port)
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = read_until(proc, "Press Ctrl-C to stop.", timeout=90)
        yield proc, port, banner
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_it_serves_the_panel_and_dispatches_hosts(served):
    proc, port, banner = served
    assert f"http://dropid.localhost:{port}/" in banner
    assert "/setup/" in banner  # a fresh instance prints its one-time setup link

    login = get(port, "dropid.localhost", "/accounts/login/")
    assert login.status == 200
    assert b"Log in" in login.body or b"Sign In" in login.body
    assert get(port, "dropid.localhost", "/").status == 302  # dashboard needs a login
    assert get(port, "nosuchthing.localhost").status == 404  # no such appspace
    unknown = get(port, "example.com")
    assert unknown.status == 404
    assert unknown.body == b"Not Found"


def test_it_stops_every_child_on_ctrl_c(served):
    proc, port, _ = served
    children = descendants(proc.pid)
    assert len(children) >= 3  # supervisor, worker (+ pool), web server

    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "Dropserver stopped." in output
    # Each child stopped itself, in order: none had to be killed, none logged a traceback
    # (Celery's pool workers are not SIGTERMed from outside, the supervisor ends quietly).
    assert "did not stop in time" not in output and "Traceback" not in output, output
    assert "exited with 'signal 15" not in output, output
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


def test_it_stops_with_an_error_when_a_child_dies(served):
    proc, port, _ = served
    web = next(pid for pid, cmd in descendants(proc.pid, with_cmdline=True) if "daphne" in cmd)
    os.kill(web, signal.SIGKILL)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode != 0
    assert "web server exited unexpectedly" in output


def test_it_refuses_an_unmigrated_database(ds_data_dir):
    env = embedded_env(ds_data_dir, free_port())
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "run `python manage.py migrate`" in result.stderr


def _stat_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target)
    return inodes


def _held_connections(port: int, pids: list[int], count: int) -> dict[int, int]:
    """Open `count` connections at once, one request each, kept open: which process holds
    each one (ss, from the host)."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    try:
        for conn in conns:
            conn.sendall(b"GET /accounts/login/ HTTP/1.1\r\nHost: dropid.localhost\r\n\r\n")
        for conn in conns:
            assert conn.recv(64).startswith(b"HTTP/1.1 200"), "no answer"
        # The kernel's table of TCP sockets: local "ADDR:PORT" in hex, state 01 = established.
        accepted = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
                accepted.add(f"socket:[{fields[9]}]")
        assert len(accepted) == count, accepted
        return {pid: len(_socket_inodes(pid) & accepted) for pid in pids}
    finally:
        for conn in conns:
            conn.close()


def test_every_web_process_serves_its_share_of_connections(ds_data_dir):
    """DS_WEB_PROCESSES Daphne processes each adopt a socket serve bound on the port, and the
    kernel spreads connections over them, kept-open ones included: checked from the host (their
    descriptors, who holds the established connections, their CPU time)."""
    port = free_port()
    env = embedded_env(ds_data_dir, port)
    env["DS_WEB_PROCESSES"] = "2"
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(proc, "Press Ctrl-C to stop.", timeout=90)
        webs = [pid for pid, cmd in descendants(proc.pid, with_cmdline=True) if "daphne" in cmd]
        assert len(webs) == 2, webs
        # A socket each (SO_REUSEPORT), not one shared: whoever is awake first would take them.
        assert not _socket_inodes(webs[0]) & _socket_inodes(webs[1])
        held = _held_connections(port, webs, 32)
        # By a hash of the addresses: fewer than 4 of 32 for one has a chance of ~3 in a million.
        assert all(n >= 4 for n in held.values()), held

        before = {pid: _stat_ticks(pid) for pid in webs}
        errors: list[BaseException] = []

        def client() -> None:
            try:
                for _ in range(60):
                    assert get(port, "dropid.localhost", "/accounts/login/").status == 200
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[:3]
        worked = {pid: _stat_ticks(pid) - before[pid] for pid in webs}
        assert all(ticks > 0 for ticks in worked.values()), worked
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
