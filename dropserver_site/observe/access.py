"""One access-log line per HTTP request, whatever the host (panel, appspace, loopback): logger
`dropserver.access`, one JSON object per line under DS_LOG_FORMAT=json (logs.py). `observed`
wraps the web process's HTTP application; it gives each request a context (request id and
host, then whatever the code answering it notes: appspace, user id, route) that every log line
of the request carries, and adds status and duration to it for the access line.

`serve` runs Daphne with `--verbosity 0`, which turns Daphne's own access log off, so each
request is logged once, here.

This runs on every request, so it is written for the hot path: a request id from a per-process
prefix and a counter (unique across processes and restarts, no system call), the context set
and reset directly, and `send` wrapped once to see the status.
"""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
import time
from collections.abc import Callable

from packages.logcontext import request_context

access_log = logging.getLogger("dropserver.access")

# 16 random hex digits per process, then a 16-digit counter: 32 hex digits, like a UUID's.
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)

# What the application answering a request learns about it, once it is answered:
# (the request's context, status, seconds).
AnswerHook = Callable[[dict, int, float], None]


def request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


def _observing_send(*args, original, state: list[int]):
    message = args[-1]
    if message["type"] == "http.response.start":
        state[0] = message["status"]
    return original(message)


def observed(app, *, on_answer: AnswerHook | None = None):
    """`app` wrapped to give each request its log context and one access line; `on_answer`
    (the gateway's per-appspace counters) is called first, with the context, status and
    duration."""

    async def handle(scope: dict, receive, send) -> None:
        start = time.perf_counter()
        state = [0]  # the response status, once sent
        # Still a partial over Daphne's protocol, as the gateway's server_hooks expects.
        args = send.args if isinstance(send, functools.partial) else ()
        send_observed = functools.partial(_observing_send, *args, original=send, state=state)
        host = b""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        text_host = host[:255].decode("latin-1")
        context = {"request_id": request_id(), "host": text_host}
        token = request_context.set(context)
        try:
            await app(scope, receive, send_observed)
        finally:
            status = state[0]
            duration = time.perf_counter() - start
            context["status"] = status
            context["duration_ms"] = round(duration * 1e3, 2)
            try:
                if on_answer is not None:
                    on_answer(context, status, duration)
                method = scope["method"]
                access_log.info(
                    "%s %s %s %d %.1fms",
                    method,
                    text_host,
                    scope["path"][:200],
                    status,
                    duration * 1e3,
                    extra={"method": method},
                )
            finally:
                request_context.reset(token)

    return handle
