"""A small HTTP/1.1 client for sandbox unix sockets: kept-open connections pooled per socket.

Why not httpx or h11: on these machines httpx over a unix socket was client-bound at ~1.3k
requests/s (p50 0.77 ms), while raw asyncio streams reached ~27k (p50 0.1 ms); see
docs/gateway.md for the measurements. The only server it talks to is the harness's Deno.serve,
so it implements what that needs and refuses anything odd (a 502 rather than a guess):
content-length and chunked bodies (both directions), read-to-close, interim 1xx responses,
a bounded response head, no obs-fold, no conflicting lengths. A connection is reused only
after a response was read to its exact end; anything else closes it.
"""

from __future__ import annotations

import asyncio
import time

from appspaces.gateway.headers import Header
from sandbox import peer

CHUNK = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class UpstreamError(Exception):
    """The sandbox closed the connection or answered something that is not HTTP/1.1."""


class ConnectFailed(UpstreamError):
    """Nothing was sent: the socket is gone or refuses connections (the sandbox is down)."""


class ConnectTimedOut(ConnectFailed):
    """The sandbox is there but does not accept connections in time (its backlog is full)."""


class PeerMismatch(ConnectFailed):
    """The socket path is not the sandbox's own socket (a symlink, or another uid listens)."""


class Connection:
    __slots__ = ("idle_since", "path", "reader", "writer")

    def __init__(self, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.path = path
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle kept-open connections per socket path (most recently used first)."""

    def __init__(self, *, max_idle: int, idle_seconds: float = 30.0):
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._idle: dict[str, list[Connection]] = {}

    async def acquire(self, path: str, *, uid: int, timeout: float, limit: int) -> Connection:
        """A kept-open connection, or a new one to the socket at `path` made by `sandbox.peer`:
        never through a symlink, and only to a listener running as `uid`."""
        idle = self._idle.get(path)
        if idle:
            oldest_allowed = time.monotonic() - self.idle_seconds
            while idle:
                conn = idle.pop()
                if conn.usable() and conn.idle_since > oldest_allowed:
                    return conn
                conn.close()
        try:
            async with asyncio.timeout(timeout):
                sock = await peer.connect(path, uid)
                reader, writer = await asyncio.open_unix_connection(sock=sock, limit=limit)
        except TimeoutError:
            raise ConnectTimedOut(f"no connection to {path} within {timeout}s") from None
        except peer.NotAccepting:
            raise ConnectTimedOut(f"{path} accepts no connections (backlog full)") from None
        except peer.PeerRefused as exc:
            raise PeerMismatch(f"refused to use {path}: {exc}") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {path}: {exc!r}") from None
        return Connection(path, reader, writer)

    def release(self, conn: Connection) -> None:
        idle = self._idle.setdefault(conn.path, [])
        if len(idle) < self.max_idle and conn.usable():
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    def discard(self, path: str) -> None:
        """Close every idle connection to `path` (its sandbox died or restarted)."""
        for conn in self._idle.pop(path, ()):
            conn.close()

    def idle_count(self, path: str) -> int:
        return len(self._idle.get(path, ()))


def request_head(method: str, target: bytes, headers: list[Header], framing: bytes) -> bytes:
    """The request line and headers; `framing` is a content-length or chunked header line."""
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (framing, b"\r\n")
    return b"".join(parts)


class Response:
    """A response head, and its body read chunk by chunk with `read()` (b"" at the end)."""

    __slots__ = (
        "_chunk_left",
        "_done",
        "_mode",
        "_reader",
        "_remaining",
        "headers",
        "keep_alive",
        "length",
        "status",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        status: int,
        headers: list[Header],
        *,
        head_request: bool,
    ):
        self._reader = reader
        self.status = status
        self.headers = headers
        self.length: int | None = None  # content-length when the body has one
        self.keep_alive = True
        self._chunk_left = 0
        self._done = False
        lengths, chunked, other_coding = set(), False, False
        for name, value in headers:
            if name == b"content-length":
                lengths.add(value)
            elif name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",") if c.strip()]
                chunked = bool(codings) and codings[-1] == b"chunked"
                other_coding = other_coding or not chunked
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
        if head_request or status in _NO_BODY_STATUS:
            self._mode = "none"
            if len(lengths) == 1 and not chunked:
                self.length = _parse_length(next(iter(lengths)))
            self._done = True
        elif chunked:
            if other_coding:
                raise UpstreamError("unsupported transfer coding")
            self._mode = "chunked"
        elif lengths:
            if len(lengths) != 1:
                raise UpstreamError("conflicting content-length headers")
            self.length = self._remaining = _parse_length(next(iter(lengths)))
            self._mode = "length"
            self._done = self._remaining == 0
        elif other_coding:
            raise UpstreamError("unsupported transfer coding")
        else:
            self._mode = "close"
            self.keep_alive = False

    @property
    def complete(self) -> bool:
        return self._done

    def ready(self) -> bool:
        """True when `read()` will return without waiting for the socket."""
        if self._mode == "chunked":
            return False  # a chunk line may be incomplete
        return bool(self._reader._buffer) or self._reader.at_eof()  # StreamReader internals

    async def read(self) -> bytes:
        if self._done:
            return b""
        reader = self._reader
        if self._mode == "length":
            data = await reader.read(min(self._remaining, CHUNK))
            if not data:
                raise UpstreamError("connection closed in the middle of the body")
            self._remaining -= len(data)
            self._done = self._remaining == 0
            return data
        if self._mode == "chunked":
            return await self._read_chunked(reader)
        data = await reader.read(CHUNK)  # read to close
        self._done = not data
        return data

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        if self._chunk_left == 0:
            line = await _readline(reader)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise UpstreamError("bad chunk size") from None
            if size < 0 or not size_text.isalnum():
                raise UpstreamError("bad chunk size")
            if size == 0:
                while await _readline(reader):  # trailers, dropped
                    pass
                self._done = True
                return b""
            self._chunk_left = size
        data = await reader.read(min(self._chunk_left, CHUNK))
        if not data:
            raise UpstreamError("connection closed in the middle of a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and await _readexactly(reader, 2) != b"\r\n":
            raise UpstreamError("bad chunk terminator")
        return data


def _parse_length(value: bytes) -> int:
    if not value.isdigit() or len(value) > 18:
        raise UpstreamError("bad content-length")
    return int(value)


async def _readline(reader: asyncio.StreamReader) -> bytes:
    """One CRLF-terminated line without its CRLF."""
    try:
        return (await reader.readuntil(b"\r\n"))[:-2]
    except asyncio.IncompleteReadError:
        raise UpstreamError("connection closed in the middle of a line") from None
    except asyncio.LimitOverrunError:
        raise UpstreamError("line too long") from None


async def _readexactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise UpstreamError("connection closed early") from None


async def read_response(reader: asyncio.StreamReader, *, head_request: bool) -> Response:
    """Read the final response head (interim 1xx responses are skipped)."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            what = "a partial response head" if exc.partial else "no response"
            raise UpstreamError(f"connection closed after {what}") from None
        except asyncio.LimitOverrunError:
            raise UpstreamError("response head too large") from None
        lines = raw[:-4].split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise UpstreamError("not an HTTP/1.x response")
        code = status_line[1]
        if len(code) != 3 or not code.isdigit():
            raise UpstreamError("bad status code")
        status = int(code)
        if status < 100:
            raise UpstreamError("bad status code")
        headers: list[Header] = []
        for line in lines[1:]:
            if not line or line[0] in b" \t":
                raise UpstreamError("folded or empty header line")
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise UpstreamError("bad header line")
            headers.append((name.lower(), value.strip(b" \t")))
        if status == 101:
            raise UpstreamError("unexpected protocol switch")
        if status >= 200:
            return Response(reader, status, headers, head_request=head_request)
