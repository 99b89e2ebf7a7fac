"""The context every log line of a request carries (request id, host, appspace, user id,
route; on the access line also status and duration; in a Celery task its id and name), kept
in a contextvar so that each asyncio task and thread sees its own. `ContextFilter` copies it
onto log records; the JSON formatter (dropserver_site/observe/logs.py) writes it out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

request_context: ContextVar[dict[str, Any] | None] = ContextVar("request_context", default=None)

_NO_CONTEXT: dict[str, Any] = {}

FIELDS = ("request_id", "task", "host", "appspace", "user_id", "route", "status", "duration_ms")


@contextmanager
def bind(**fields: Any) -> Iterator[dict[str, Any]]:
    """A new context for the code inside (a request, a task), holding `fields`."""
    context = dict(fields)
    token = request_context.set(context)
    try:
        yield context
    finally:
        request_context.reset(token)


class ContextFilter(logging.Filter):
    """Adds the current context's fields to each record (None where unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = request_context.get() or _NO_CONTEXT
        fields = record.__dict__  # dict operations: this runs for every line
        for name in FIELDS:
            if name not in fields:
                fields[name] = context.get(name)
        return True
