"""The platform's log format: DS_LOG_FORMAT=text (default, for a terminal) or json (one JSON
object per line, python-json-logger), each line with the request context of packages/logcontext
(request id, host, appspace, user id, route; status and duration on access lines)."""

from __future__ import annotations

import logging
import time

from pythonjsonlogger.json import JsonFormatter

from packages.logcontext import FIELDS


class ContextJsonFormatter(JsonFormatter):
    """Time, level, logger and message, then the context fields that are known."""

    def __init__(self, *args, **kwargs):
        renamed = {"asctime": "time", "levelname": "level", "name": "logger"}
        kwargs.setdefault("rename_fields", renamed)
        kwargs.setdefault("timestamp", False)
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", *args, **kwargs)

    def add_fields(self, log_data, record, message_dict) -> None:
        super().add_fields(log_data, record, message_dict)
        for name in FIELDS:
            if log_data.get(name) is None:
                log_data.pop(name, None)


class TextFormatter(logging.Formatter):
    """The text format, with the time's seconds formatted once per second rather than on
    every line (strftime is the costliest part of a line: the access log writes one per
    request)."""

    _second: int | None = None
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


def logging_config(log_format: str, level: str) -> dict:
    """settings.LOGGING for DS_LOG_FORMAT."""
    formatter = (
        {"()": ContextJsonFormatter}
        if log_format == "json"
        else {"()": TextFormatter, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "packages.logcontext.ContextFilter"}},
        "formatters": {"plain": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.request": {"level": "ERROR"}},
    }
