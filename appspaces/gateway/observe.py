"""What the gateway records about each request once it is answered: the Prometheus counters
(appspaces/metrics.py) and one access-log line (logger `dropserver.access`; one JSON object
under DS_LOG_FORMAT=json, see dropserver_site/observe/logs.py), with the request's context
(request id, host, appspace, user id, route) kept in a contextvar that every log line of the
request carries.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid

from appspaces.gateway.state.cache import MISSING
from appspaces.gateway.state.config import configs
from appspaces.metrics import REQUEST_SECONDS, REQUESTS, UNKNOWN_APPSPACE, record
from packages.logcontext import bind, request_context

access_log = logging.getLogger("dropserver.access")


def note(**fields) -> None:
    """Add to the current request's context (the gateway calls it once it knows who and which
    route); a no-op outside a request."""
    context = request_context.get()
    if context is not None:
        context.update(fields)


def _observing_send(*args, original, state: list[int]):
    message = args[-1]
    if message["type"] == "http.response.start":
        state[0] = message["status"]
    return original(message)


def observed(app):
    """`app` (the gateway's HTTP entry point) wrapped to count, time and log each request."""

    async def handle(scope: dict, receive, send) -> None:
        start = time.perf_counter()
        state = [0]  # the response status, once sent
        # Still a partial over Daphne's protocol, as server_hooks expects of `send`.
        args = send.args if isinstance(send, functools.partial) else ()
        send_observed = functools.partial(_observing_send, *args, original=send, state=state)

        subdomain = scope["appspace_subdomain"]
        host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
        with bind(request_id=uuid.uuid4().hex, host=host[:255]) as context:
            try:
                await app(scope, receive, send_observed)
            finally:
                status = state[0]
                duration = time.perf_counter() - start
                config = configs.peek(subdomain)
                if config is MISSING:  # a request that outlived the cache entry
                    config = await configs.get(subdomain)
                # Names that are no appspace share one label: nobody can add series at will.
                known = config is not None
                label = subdomain if known else UNKNOWN_APPSPACE
                record(lambda: REQUESTS.labels(label, str(status)).inc())
                record(lambda: REQUEST_SECONDS.labels(label).observe(duration))
                context.update(appspace=label, status=status, duration_ms=round(duration * 1e3, 2))
                access_log.info(
                    "%s %s %s %d %.1fms",
                    scope["method"],
                    host,
                    scope["path"][:200],
                    status,
                    duration * 1e3,
                    extra={"method": scope["method"]},
                )

    return handle
