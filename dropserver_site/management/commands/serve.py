"""`manage.py serve`: the whole platform in one process tree (supervisor, Celery, Daphne).

The children run in their own sessions so that a terminal's Ctrl-C reaches only this
process, which then stops them in order; each also gets a parent-death signal so none
outlives us if we are killed outright. One child dying stops the whole tree with a
non-zero status: a platform running half-alive is worse than one that is down. The one
exception is the TLS edge (Caddy, when DS_TLS is on): it holds no state of ours, so once it
has started, `serve` restarts it if it dies, with a growing pause between attempts.

With DS_TLS on, Daphne listens on 127.0.0.1:DS_WEB_PORT and Caddy on DS_PORT (plain HTTP)
and DS_HTTPS_PORT. Caddy binds its ports itself: started as root it keeps root; a setup
that runs it as another user (docs/operations.md) gives it CAP_NET_BIND_SERVICE for ports
below 1024 — see `edge_child()`, the one place that builds its command.

Started as root, `serve` runs the web servers, the edge and the Celery workers as the DS_RUN_AS
user (`dropserver_site.privileges.drop`); only the supervisor keeps root (docs/security.md,
"Processes and their uids"). Not root: nothing changes.
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

from dropserver_site.edge import caddy
from dropserver_site.privileges.drop import Drop, drop_target, give_platform_paths
from dropserver_site.process import parent_death_signal

STOP_GRACE_SECONDS = 10
START_TIMEOUT_SECONDS = 60


EDGE_RESTART_BACKOFF = (0.5, 30.0)  # first pause, longest pause (seconds)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)
    # Restarted when it dies after start-up, instead of stopping the tree (the TLS edge).
    restartable: bool = False
    env: dict[str, str] | None = field(default=None, repr=False)  # replaces serve's env
    restarts: int = 0
    next_start: float = 0.0
    started: float = 0.0
    pass_fds: tuple[int, ...] = ()  # descriptors it inherits (the web servers' socket)
    # Started as another user: Popen's user/group/extra_groups (set in the child before exec).
    credentials: dict = field(default_factory=dict, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            env=self.env or env,
            start_new_session=True,
            preexec_fn=parent_death_signal(),
            pass_fds=self.pass_fds,
            **self.credentials,
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
        parser.add_argument(
            "--port",
            type=int,
            default=settings.DS_PORT,
            help="the web port; with DS_TLS on, the plain-HTTP port (redirects, ACME)",
        )
        parser.add_argument("--bind", default=settings.DS_BIND, help="address to listen on")
        parser.add_argument(
            "--no-worker", action="store_true", help="do not start Celery (run it separately)"
        )

    def handle(self, *args, port: int, bind: str, no_worker: bool, **options) -> None:
        self._check_migrations()
        edge = settings.DS_TLS_ON
        if edge:
            if reason := caddy.caddy_available():
                raise CommandError(reason)
            if port in (settings.DS_HTTPS_PORT, settings.DS_WEB_PORT):
                raise CommandError(
                    f"--port {port} is DS_HTTPS_PORT or DS_WEB_PORT; with DS_TLS on it is the "
                    "plain-HTTP port and must differ from both."
                )
        # Children read the port and address from settings too (the relay between appspaces
        # connects to the web server's own listener: appspaces.sandboxes.gateway_address).
        env = dict(os.environ, DS_PORT=str(port), DS_BIND=bind, PYTHONUNBUFFERED="1")
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        drop = drop_target(lambda text: self.stderr.write(f"Warning: {text}"))
        children = [Child("sandbox supervisor", [*manage, "sandboxd"])]
        if not no_worker:
            for name, argv in worker_commands():
                worker = Child(name, argv)
                if drop is not None:
                    worker.env, worker.credentials = drop.env(env), drop.popen_kwargs()
                children.append(worker)
        # With the TLS edge, Daphne is reached on loopback only; the edge listens for the world.
        web_bind, web_port = ("127.0.0.1", settings.DS_WEB_PORT) if edge else (bind, port)
        # DS_WEB_PROCESSES Daphne processes, each on a listening socket of its own, bound
        # here: the kernel spreads connections over them, so every core serves requests.
        listeners = listen_sockets(web_bind, web_port, settings.DS_WEB_PROCESSES)
        processes = len(listeners)
        for n, listener in enumerate(listeners, 1):
            name = "web server" if processes == 1 else f"web server {n}/{processes}"
            adopted = (listener.fileno(),) if listener.family == socket.AF_INET else ()
            web = Child(name, web_argv(listener), pass_fds=adopted)
            if drop is not None:
                web.env, web.credentials = drop.env(env), drop.popen_kwargs()
            children.append(web)
        if listeners[0].family != socket.AF_INET:
            listeners[0].close()  # Daphne binds the IPv6 address itself
        if edge:
            children.append(
                edge_child(env, http_port=port, bind=bind, web_port=web_port, drop=drop)
            )

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
        if drop is not None:
            give_platform_paths(drop)
        for child in children:
            child.start(env)

        status = 0
        ports = [(web_bind, web_port)]
        if edge:
            ports += [(bind, port), (bind, settings.DS_HTTPS_PORT)]
        try:
            if not all(self._wait_for_port(b, p, children, lambda: stopping) for b, p in ports):
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
            # A child that cannot even start (the edge with a bad config too) is fatal.
            if dead := self._first_dead(children, during_start=True):
                self.stderr.write(f"{dead.name} exited with status {dead.process.returncode}")
                return False
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        if not stopping():
            self.stderr.write(f"Nothing started listening on port {port}.")
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
            if settings.DS_TLS == "internal":
                caddy.export_internal_root()
            for child in children:
                if child.running or not child.restartable:
                    continue
                now = time.monotonic()
                if child.next_start == 0.0:
                    first, longest = EDGE_RESTART_BACKOFF
                    if now - child.started > longest:
                        child.restarts = 0  # it ran well for a while: start over quickly
                    pause = min(longest, first * 2**child.restarts)
                    self.stderr.write(
                        f"{child.name} exited (status {child.process.returncode}); "
                        f"restarting it in {pause:g} s."
                    )
                    child.next_start = now + pause
                elif now >= child.next_start:
                    child.restarts += 1
                    child.next_start = 0.0
                    child.start(child.env or {})
            if dead := self._first_dead(children):
                self.stderr.write(
                    f"{dead.name} exited unexpectedly (status {dead.process.returncode}); "
                    "stopping Dropserver."
                )
                return 1
            time.sleep(0.2)
        return 0

    @staticmethod
    def _first_dead(children: list[Child], *, during_start: bool = False) -> Child | None:
        return next(
            (c for c in children if not c.running and (during_start or not c.restartable)),
            None,
        )

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


def listen_sockets(bind: str, port: int, count: int = 1) -> list[socket.socket]:
    """The web servers' listening sockets, bound by serve (a busy port fails here, readably):
    one per web process. With more than one, each has SO_REUSEPORT and goes to one Daphne: the
    kernel gives each new connection to one socket by a hash of its addresses, so kept-open
    connections spread evenly. (One socket shared by all goes to whichever process is awake
    first: 32 connections opened at once were measured split 32/0 in two of five tries.) Only
    processes of the same user can join the group of sockets on that port.
    Twisted adopts IPv4 sockets only from a command line (its `fd:` endpoint takes no address
    family), so an IPv6 address gets one web process, which binds it itself."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    count = count if family == socket.AF_INET else 1
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((bind, port))
            sock.listen(1024)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise CommandError(f"Cannot listen on {bind}:{port}: {exc.strerror}.") from None
    return sockets


def listen_socket(bind: str, port: int) -> socket.socket:
    """One listening socket, for one web process (listen_sockets)."""
    return listen_sockets(bind, port)[0]


def web_argv(listener: socket.socket) -> list[str]:
    """Daphne's command line, adopting `listener`. Behind a TLS proxy (ours or the
    operator's), it takes the client address and scheme from X-Forwarded-For/-Proto, which
    that proxy sets. Verbosity 0 turns Daphne's own access log off: the application writes
    one line per request, with its context (dropserver_site/observe/access.py)."""
    if listener.family == socket.AF_INET:
        where = ["--fd", str(listener.fileno())]
    else:
        bind, port = listener.getsockname()[:2]
        where = ["--bind", bind, "--port", str(port)]
    argv = [
        sys.executable,
        "-m",
        "daphne",
        *where,
        "--no-server-name",
        "--verbosity",
        "0",
        "--websocket-max-message-size",
        str(2**20),
    ]
    if settings.DS_TRUST_PROXY_HEADERS:
        argv.append("--proxy-headers")
    return [*argv, "dropserver_site.asgi:application"]


def edge_child(
    env: dict[str, str],
    *,
    http_port: int,
    bind: str,
    web_port: int,
    drop: Drop | None = None,
) -> Child:
    """The TLS edge: Caddy with the config written for these ports.

    With `drop` (serve started as root) it runs as the DS_RUN_AS user: the config and Caddy's
    storage under DS_DATA_DIR/tls/ are that user's, and for ports below 1024 it keeps
    CAP_NET_BIND_SERVICE (ambient, through `setpriv`) and nothing else.
    """
    owner = (drop.user.uid, drop.user.gid) if drop is not None else None
    caddy.write_config(
        http_port=http_port,
        https_port=settings.DS_HTTPS_PORT,
        web_port=web_port,
        bind=bind,
        owner=owner,
    )
    if drop is None:
        return Child("TLS edge", caddy.caddy_argv(), restartable=True, env=caddy.caddy_env(env))
    argv, by_popen = drop.edge_argv(caddy.caddy_argv(), [http_port, settings.DS_HTTPS_PORT])
    return Child(
        "TLS edge",
        argv,
        restartable=True,
        env=caddy.caddy_env(drop.env(env)),
        credentials=drop.popen_kwargs() if by_popen else {},
    )
