"""What a web process (Daphne serving dropserver_site.asgi) sets once, for what each request
costs. Measured with bench/gateway.py (docs/benchmarks.md, Gateway): together these took the
function route from ~275 to ~210 µs of Daphne CPU per request on this machine.
"""

from __future__ import annotations

import gc
import logging


def tune_web_process() -> None:
    """Call once the application is loaded (its imports done)."""
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise rescan all of Django every few thousand requests.
    gc.freeze()
    # A request allocates a few hundred objects that reference counting frees; the default
    # (a pass every 700 net allocations) ran every few requests. Cycles are still collected.
    gc.set_threshold(20_000, 20, 20)
    # No log format of a web process prints where a line was logged from, nor its thread or
    # process: skip finding them on every line (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    _no_twisted_access_lines()


def _no_twisted_access_lines() -> None:
    """Twisted's HTTP factory formats a Combined Log Format line for every request and hands it
    to Twisted's log, which Daphne sends nowhere at the verbosity `serve` runs it with (0):
    ~15 µs of CPU per request for nothing. The access log is the application's own
    (dropserver_site/observe/access.py). A no-op where Daphne is not installed."""
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:  # pragma: no cover - Daphne is a dependency
        return
    HTTPFactory.log = _no_line


def _no_line(self, request) -> None:
    return None
