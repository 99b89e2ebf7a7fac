"""`manage.py serve_web`: the web servers and the TLS edge alone, as the `dropserver-web` unit
runs them (deploy/systemd/), where the supervisor and the Celery workers are units of their own.

Built from `serve`'s pieces (the listening sockets, Daphne's command line, the edge, the
watch loop that restarts the edge and stops everything in order), so both start the web the
same way. Two differences: no supervisor and no workers, and the metrics directory is not
emptied (the other units are writing to it): only the files of processes that are gone go.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from dropserver_site.edge import caddy
from dropserver_site.management.commands import serve


def prune_metrics(folder: Path) -> list[Path]:
    """Remove the prometheus multiprocess files (`<kind>_<pid>.db`) of processes that no longer
    exist: their gauges would otherwise be summed forever. Returns what it removed."""
    removed = []
    for path in folder.glob("*_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


class Command(serve.Command):
    help = "Run Dropserver's web servers (Daphne) and, with DS_TLS on, its TLS edge (Caddy)."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(no_worker=True)

    def handle(self, *args, port: int, bind: str, **options) -> None:
        self._check_migrations()
        edge = settings.DS_TLS_ON
        if edge and (reason := caddy.caddy_available()):
            raise CommandError(reason)
        if edge and port in (settings.DS_HTTPS_PORT, settings.DS_WEB_PORT):
            raise CommandError(f"--port {port} must differ from DS_HTTPS_PORT and DS_WEB_PORT.")
        env = dict(os.environ, DS_PORT=str(port), PYTHONUNBUFFERED="1")
        web_bind, web_port = ("127.0.0.1", settings.DS_WEB_PORT) if edge else (bind, port)
        listeners = serve.listen_sockets(web_bind, web_port, settings.DS_WEB_PROCESSES)
        processes = len(listeners)
        children = [
            serve.Child(
                f"web server {n}/{processes}",
                serve.web_argv(listener),
                pass_fds=(listener.fileno(),) if listener.family == socket.AF_INET else (),
            )
            for n, listener in enumerate(listeners, 1)
        ]
        if listeners[0].family != socket.AF_INET:
            listeners[0].close()
        if edge:
            children.append(serve.edge_child(env, http_port=port, bind=bind, web_port=web_port))

        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        metrics_dir.mkdir(parents=True, exist_ok=True)
        prune_metrics(metrics_dir)
        for child in children:
            child.start(env)
        ports = [(web_bind, web_port)]
        if edge:
            ports += [(bind, port), (bind, settings.DS_HTTPS_PORT)]
        status = 0
        try:
            if all(self._wait_for_port(b, p, children, lambda: stopping) for b, p in ports):
                manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
                self._announce(env, manage)
                status = self._watch(children, lambda: stopping)
            elif not stopping:
                status = 1
        finally:
            self._stop(children)
        if status:
            raise SystemExit(status)
