"""The platform's log format: DS_LOG_FORMAT=text (default, for a terminal) or json (one JSON
object per line, python-json-logger), each line with the request context of packages/logcontext
(request id, host, appspace, user id, route; status and duration on access lines); and the
handler that writes it to stderr, line by line or (web processes) in blocks."""

from __future__ import annotations

import logging
import threading
import time

from pythonjsonlogger.json import JsonFormatter

from packages.logcontext import FIELDS


class SecondStamps(logging.Formatter):
    """The time stamp's seconds formatted once per second rather than on every line:
    strftime is the costliest part of a line, and the access log writes one per request."""

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


class ContextJsonFormatter(SecondStamps, JsonFormatter):
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


class ConsoleHandler(logging.StreamHandler):
    """stderr, line by line like `logging.StreamHandler`; or, once `write_in_blocks` is called
    (the web processes: dropserver_site/asgi.py), in blocks: a line below WARNING waits at most
    `seconds` (or until the buffer is full), one at WARNING or above is written at once with
    everything before it. A write per line cost a system call per request (the access line) and,
    under systemd, a wake-up of journald. A process killed with SIGKILL loses at most those
    seconds of lines; a normal exit writes them (logging's own shutdown flushes handlers)."""

    BLOCK_BYTES = 64 * 1024

    def __init__(self, stream=None):
        super().__init__(stream)
        self._block_seconds = 0.0
        self._timer: threading.Timer | None = None

    def write_in_blocks(self, seconds: float) -> None:
        self.acquire()
        try:
            self.flush()
            fd = self.stream.fileno()
            self.setStream(
                open(  # noqa: SIM115 - the handler's stream from now on, as stderr was
                    fd, "w", buffering=self.BLOCK_BYTES, closefd=False, errors="backslashreplace"
                )
            )
            self._block_seconds = seconds
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        if not self._block_seconds:
            return super().emit(record)
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.flush()
            elif self._timer is None:
                self._timer = threading.Timer(self._block_seconds, self._flush_due)
                self._timer.daemon = True
                self._timer.start()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _flush_due(self) -> None:
        self.acquire()
        try:
            self._timer = None
            self.flush()
        finally:
            self.release()


def write_in_blocks(seconds: float = 1.0) -> None:
    """The root logger's console handlers write in blocks from now on (ConsoleHandler)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ConsoleHandler):
            handler.write_in_blocks(seconds)


def logging_config(log_format: str, level: str) -> dict:
    """settings.LOGGING for DS_LOG_FORMAT."""
    formatter = (
        {"()": ContextJsonFormatter}
        if log_format == "json"
        else {"()": SecondStamps, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "packages.logcontext.ContextFilter"}},
        "formatters": {"plain": formatter},
        "handlers": {
            "console": {
                "class": "dropserver_site.observe.logs.ConsoleHandler",
                "formatter": "plain",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.request": {"level": "ERROR"}},
    }
