"""`manage.py serve`: the whole platform in one process tree (supervisor, Celery, Daphne).

The children run in their own sessions so that a terminal's Ctrl-C reaches only this
process, which then stops them in order; each also gets a parent-death signal so none
outlives us if we are killed outright. One child dying stops the whole tree with a
non-zero status: a platform running half-alive is worse than one that is down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from dropserver_site.process import parent_death_signal

STOP_GRACE_SECONDS = 10
START_TIMEOUT_SECONDS = 60


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            start_new_session=True,
            preexec_fn=parent_death_signal(),
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        """The child itself: it stops what it started (Celery its pool and beat, the
        supervisor its sandboxes) in order, which a signal to the whole group would race."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


def worker_commands() -> list[tuple[str, list[str]]]:
    """The Celery workers, one per queue group (docs/operations.md, "Celery"): `jobs` (long
    work, two at a time) and `housekeeping` plus the default queue, with beat, so periodic work
    never waits behind a long restore."""
    celery = [sys.executable, "-m", "celery", "-A", "dropserver_site", "worker"]
    common = ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    return [
        (
            "celery jobs worker",
            [*celery, "--queues", "jobs", "--hostname", "jobs@%h", "--concurrency", "2", *common],
        ),
        (
            "celery housekeeping worker",
            [
                *celery,
                "--queues",
                "housekeeping,celery",
                "--hostname",
                "housekeeping@%h",
                "--concurrency",
                "1",
                "--beat",
                "--schedule",
                settings.CELERY_BEAT_SCHEDULE_FILENAME,
                *common,
            ],
        ),
    ]


class Command(BaseCommand):
    help = (
        "Run Dropserver: the sandbox supervisor, Celery workers (jobs; housekeeping with beat) "
        "and Daphne."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.DS_PORT)
        parser.add_argument("--bind", default=settings.DS_BIND, help="address to listen on")
        parser.add_argument(
            "--no-worker", action="store_true", help="do not start Celery (run it separately)"
        )

    def handle(self, *args, port: int, bind: str, no_worker: bool, **options) -> None:
        self._check_migrations()
        env = dict(os.environ, DS_PORT=str(port), PYTHONUNBUFFERED="1")
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        children = [Child("sandbox supervisor", [*manage, "sandboxd"])]
        if not no_worker:
            children.extend(Child(name, argv) for name, argv in worker_commands())
        daphne_argv = [
            sys.executable,
            "-m",
            "daphne",
            "--bind",
            bind,
            "--port",
            str(port),
            "--no-server-name",
            "--websocket-max-message-size",
            str(2**20),
        ]
        if settings.DS_HTTPS and os.environ.get("DS_BEHIND_PROXY"):
            daphne_argv.append("--proxy-headers")
        children.append(Child("web server", [*daphne_argv, "dropserver_site.asgi:application"]))

        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        settings.DS_DATA_DIR.mkdir(parents=True, exist_ok=True)
        # Metrics files of processes that are gone would be summed into /metrics forever.
        metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        for child in children:
            child.start(env)

        status = 0
        try:
            if not self._wait_for_port(bind, port, children, lambda: stopping):
                status = 0 if stopping else 1
            else:
                self._announce(env, manage)
                status = self._watch(children, lambda: stopping)
        finally:
            self._stop(children)
        if status:
            raise SystemExit(status)

    def _check_migrations(self) -> None:
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            raise CommandError("The database is not up to date: run `python manage.py migrate`.")

    def _wait_for_port(self, bind: str, port: int, children: list[Child], stopping) -> bool:
        host = "127.0.0.1" if bind in ("0.0.0.0", "") else ("::1" if bind == "::" else bind)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not stopping():
            if dead := self._first_dead(children):
                self.stderr.write(f"{dead.name} exited with status {dead.process.returncode}")
                return False
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        if not stopping():
            self.stderr.write(f"The web server did not start listening on port {port}.")
        return False

    def _announce(self, env: dict[str, str], manage: list[str]) -> None:
        # A child computes the URLs: its settings see the port this command was given.
        banner = subprocess.run(
            [*manage, "serve_banner"], env=env, capture_output=True, text=True, check=False
        )
        self.stdout.write(banner.stdout.rstrip() or banner.stderr.rstrip())
        self.stdout.write("Press Ctrl-C to stop.\n")
        self.stdout.flush()

    def _watch(self, children: list[Child], stopping) -> int:
        while not stopping():
            if dead := self._first_dead(children):
                self.stderr.write(
                    f"{dead.name} exited unexpectedly (status {dead.process.returncode}); "
                    "stopping Dropserver."
                )
                return 1
            time.sleep(0.2)
        return 0

    @staticmethod
    def _first_dead(children: list[Child]) -> Child | None:
        return next((c for c in children if not c.running), None)

    def _stop(self, children: list[Child]) -> None:
        # Web first (no new requests), supervisor last (it stops the sandboxes).
        for child in reversed(children):
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in reversed(children):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop in time; killing it.")
            child.signal_group(signal.SIGKILL)
            child.process.wait()
        self.stdout.write("Dropserver stopped.")
