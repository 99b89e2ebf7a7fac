"""`manage.py serve` as a newcomer runs it: embedded defaults, real subprocesses, real signals."""

from __future__ import annotations

import http.client
import os
import signal
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


def _listening_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target)
    return inodes


def test_every_web_process_serves_on_one_socket(ds_data_dir):
    """DS_WEB_PROCESSES Daphne processes adopt the one socket serve bound, and the kernel
    hands connections to each: checked from the host (their descriptors, their CPU time)."""
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
        shared = _listening_inodes(webs[0]) & _listening_inodes(webs[1])
        assert shared, "the two web processes hold no socket in common"

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
