"""The platform started the way deploy/systemd/ runs it, one process per unit: the supervisor
(`python -m sandbox`, DS_SANDBOX_CGROUP_DELEGATED=1, inside cgroups standing in for its unit's
delegated ones), the web and edge (`manage.py serve_web`), the two Celery workers (the
commands `serve` runs, which tests/deploy/ checks the units run too)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from dropserver_site.management.commands.serve import worker_commands
from tests.sandbox.fixtures import CGROUP_ROOT, JOIN_CGROUPS, poll, unit_cgroup

BASE_DIR = Path(__file__).resolve().parents[2]


def _worker_argv(argv: list[str], data_dir: Path) -> list[str]:
    argv = list(argv)
    if "--schedule" in argv:  # the unit's path: DS_DATA_DIR/celerybeat-schedule
        argv[argv.index("--schedule") + 1] = str(data_dir / "celerybeat-schedule")
    return argv


@contextlib.contextmanager
def run_as_units(env: dict[str, str], data_dir: Path) -> Iterator[subprocess.Popen]:
    """Yields the web unit's process once it serves (its output: `data_dir/serve_web.log`);
    afterwards checks that a sandbox runs below the supervisor's unit cgroup, not at the top."""
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    started: list[subprocess.Popen] = []

    def start(argv: list[str], log: str, **extra: str) -> subprocess.Popen:
        with open(data_dir / log, "wb") as out:
            proc = subprocess.Popen(
                argv, env=dict(env, **extra), cwd=BASE_DIR, stdout=out, stderr=subprocess.STDOUT
            )
        started.append(proc)
        return proc

    with unit_cgroup() as (_, dirs):
        try:
            start(
                [*JOIN_CGROUPS, sys.executable, "-m", "sandbox"],
                "sandboxd.log",
                DS_SANDBOX_CGROUP_DELEGATED="1",
                DS_TEST_JOIN=" ".join(map(str, dirs)),
            )
            poll((data_dir / "run" / "sandboxd.sock").exists, timeout=30)
            for n, (_, argv) in enumerate(worker_commands()):
                start(_worker_argv(argv, data_dir), f"worker-{n}.log")
            web = start([*manage, "serve_web"], "serve_web.log")
            log = data_dir / "serve_web.log"
            poll(lambda: web.poll() is not None or "Press Ctrl-C" in log.read_text(), timeout=90)
            assert web.poll() is None, log.read_text()
            yield web
            # What ran (the drill opens an appspace) ran below the supervisor's unit cgroup.
            memory = next(d for d in dirs if d.parent == (CGROUP_ROOT / "memory").resolve())
            running = [
                g for g in memory.glob("dropserver/*/sb-*") if (g / "cgroup.procs").read_text()
            ]
            assert running, f"no sandbox is running below {memory}"
        finally:
            # As systemd stops them: the web and the workers first (After= the supervisor).
            for proc in [*started[1:], started[0]] if started else []:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
