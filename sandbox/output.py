"""What a sandbox prints: its size-capped rotated log, the recent tail, and the blocked-hosts table.

An app controls its own output, so everything here is bounded: line length, log bytes per
second, file size and count, tail length, blocked-table entries.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandbox import access

MAX_LOG_LINE = 8 * 1024
LOG_BYTES_PER_SECOND = 256 * 1024
TAIL_LINES = 40
MAX_BLOCKED = 200
MAX_ASKED = 50  # network requests an app made (requestNetwork), kept per sandbox


class LogSink:
    """Appends lines to `<dir>/sandbox.log`, rotating to .1 .. .N at `max_bytes`."""

    def __init__(self, directory: Path, *, max_bytes: int, keep: int):
        self.directory = directory
        self.path = directory / "sandbox.log"
        self.max_bytes = max_bytes
        self.keep = max(keep, 1)
        self._file = None
        self._size = 0
        self._budget = float(LOG_BYTES_PER_SECOND)
        self._budget_at = time.monotonic()
        self._dropped = 0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Root's; the platform's group (DS_RUN_AS: the panel shows the log's tail) may read.
        platform = access.run_as_user() if os.geteuid() == 0 else None
        if platform is not None:
            os.chown(self.directory, 0, platform.gid, follow_symlinks=False)
        os.chmod(self.directory, 0o700 if platform is None else 0o750)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - lives with the sink
        self._size = self._file.tell()

    def _rotate(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
        for n in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"sandbox.log.{n}")
            if src.exists():
                os.replace(src, self.path.with_name(f"sandbox.log.{n + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name("sandbox.log.1"))
        excess = self.path.with_name(f"sandbox.log.{self.keep + 1}")
        excess.unlink(missing_ok=True)
        self._open()

    def write(self, stream: str, line: str) -> None:
        now = time.monotonic()
        self._budget = min(
            float(LOG_BYTES_PER_SECOND),
            self._budget + (now - self._budget_at) * LOG_BYTES_PER_SECOND,
        )
        self._budget_at = now
        if len(line) > MAX_LOG_LINE:
            line = line[:MAX_LOG_LINE] + " [truncated]"
        if self._budget < len(line) and stream != "sup":
            self._dropped += 1  # an app flooding its output must not cost the host its disk
            return
        self._budget -= len(line)
        prefix = ""
        if self._dropped:
            prefix = f"{_now()} sup| [{self._dropped} lines dropped: output rate limit]\n"
            self._dropped = 0
        data = f"{prefix}{_now()} {stream}| {line}\n".encode(errors="replace")
        try:
            if self._file is None:
                self._open()
            if self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(data)
            self._size += len(data)
        except OSError:
            self._file = None  # a full disk must not take the supervisor down

    def close(self) -> None:
        if self._file:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Tail:
    """The last lines a sandbox printed, for error messages (start failures, run_once)."""

    def __init__(self, lines: int = TAIL_LINES):
        self._lines: deque[str] = deque(maxlen=lines)

    def add(self, line: str) -> None:
        self._lines.append(line[:1000])

    def text(self) -> str:
        return "\n".join(self._lines)


class LineSplitter:
    """Bytes from a pipe -> complete lines, each at most `limit` bytes (longer ones are cut)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.limit:
                    if not self._skipping:
                        lines.append(bytes(self._buf[: self.limit]))
                    self._skipping = True
                    self._buf.clear()
                return lines
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._skipping:
                self._skipping = False
                continue
            lines.append(line[: self.limit])

    def flush(self) -> list[bytes]:
        rest, self._buf = bytes(self._buf), bytearray()
        return [rest] if rest and not self._skipping else []


@dataclass
class Blocked:
    host: str
    port: int | None
    count: int
    first: float
    last: float

    def to_json(self) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "count": self.count,
            "first": datetime.fromtimestamp(self.first, UTC).isoformat(),
            "last": datetime.fromtimestamp(self.last, UTC).isoformat(),
        }


class BlockedTable:
    """Outbound connections Deno refused, per host:port, for the owner's approval UI."""

    def __init__(self, limit: int = MAX_BLOCKED):
        self.limit = limit
        self.entries: dict[tuple[str, int | None], Blocked] = {}

    def record(self, host: object, port: object) -> None:
        if not isinstance(host, str) or not host or len(host) > 255:
            return
        port_value = port if isinstance(port, int) and 0 < port < 65536 else None
        key = (host.lower(), port_value)
        now = time.time()
        entry = self.entries.get(key)
        if entry:
            entry.count += 1
            entry.last = now
        elif len(self.entries) < self.limit:
            self.entries[key] = Blocked(key[0], port_value, 1, now, now)

    def to_json(self) -> list[dict]:
        return [e.to_json() for e in sorted(self.entries.values(), key=lambda e: -e.last)]


class AskedTable:
    """Network access the app asked for (requestNetwork), newest reason per entry, for the
    owner's approval UI. The app's word only: the platform validates every entry again."""

    def __init__(self, limit: int = MAX_ASKED):
        self.limit = limit
        self.entries: dict[tuple[str, str], dict] = {}

    def record(self, server: object, browser: object, reason: object) -> None:
        reason_text = reason[:1000] if isinstance(reason, str) else ""
        now = datetime.now(UTC).isoformat()
        for kind, values in (("server", server), ("browser", browser)):
            if not isinstance(values, list):
                continue
            for value in values[:20]:
                if not isinstance(value, str) or not value or len(value) > 300:
                    continue
                key = (kind, value)
                if key in self.entries or len(self.entries) < self.limit:
                    self.entries[key] = {
                        "kind": kind,
                        "value": value,
                        "reason": reason_text,
                        "at": now,
                    }

    def to_json(self) -> list[dict]:
        return list(self.entries.values())
