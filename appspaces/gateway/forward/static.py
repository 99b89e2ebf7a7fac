"""Static routes: files of the app version, served by the host without waking the sandbox.

The file is found by `packages.routes.static_file` (the declared folder only; realpath
checked). App files never change after install, so what a (version, route, path) resolves to
is cached for good, with the bytes of small files (an LRU bounded by bytes): the first request
reads off the event loop, later ones never leave it. Larger files are streamed from disk in
a thread. Conditional requests (ETag, Last-Modified), single byte ranges and HEAD work.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from django.conf import settings

from appspaces.gateway import pages
from appspaces.gateway.forward import server_hooks
from appspaces.gateway.headers import Header
from packages.routes import WILDCARD, RouteMatch, static_file

READ_CHUNK = 256 * 1024
_files = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-files")

_types = mimetypes.MimeTypes()  # Python's own table, not the host's /etc/mime.types
_OVERRIDES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".htm": "text/html",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".xml": "application/xml",
    ".ico": "image/x-icon",
}
_UTF8 = (
    "text/",
    "application/json",
    "application/manifest+json",
    "application/xml",
    "image/svg+xml",
)


def content_type(path: str) -> bytes:
    suffix = os.path.splitext(path)[1].lower()
    kind = _OVERRIDES.get(suffix) or _types.guess_type(path, strict=False)[0]
    if kind is None:
        return b"application/octet-stream"
    if kind.startswith(_UTF8):
        kind += "; charset=utf-8"
    return kind.encode("ascii")


@dataclass(frozen=True, slots=True)
class StaticFile:
    path: str
    size: int
    mtime: int  # whole seconds, as Last-Modified can say it
    etag: bytes
    last_modified: bytes
    content_type: bytes
    body: bytes | None  # the bytes of small files


def resolve(files_dir: str, match: RouteMatch, version_tag: str, max_inline: int):
    """Blocking: the StaticFile a matched static route serves, or None."""
    found = static_file(match, Path(files_dir))
    if found is None:
        return None
    # static_file keeps the file inside the app's files; the route promised less: its own
    # folder (or file). Links cannot come from a package, but say no to them anyway.
    declared = (Path(files_dir) / match.route.static).resolve()
    if found != declared and not found.is_relative_to(declared):
        return None
    path = str(found)
    with open(path, "rb") as f:
        stat = os.fstat(f.fileno())
        body = f.read() if stat.st_size <= max_inline else None
    if body is not None and len(body) != stat.st_size:  # pragma: no cover - files never change
        return None
    return StaticFile(
        path=path,
        size=stat.st_size,
        mtime=int(stat.st_mtime),
        etag=f'"{version_tag}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'.encode("ascii"),
        last_modified=formatdate(stat.st_mtime, usegmt=True).encode("ascii"),
        content_type=content_type(path),
        body=body,
    )


class StaticCache:
    """What (files dir, route, path) resolve to; LRU, bounded by bytes held and entries."""

    def __init__(self, max_bytes: int, max_entries: int = 20_000):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._entries: OrderedDict[tuple, StaticFile | None] = OrderedDict()

    def get(self, key: tuple) -> tuple[bool, StaticFile | None]:
        try:
            value = self._entries[key]
        except KeyError:
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: tuple, value: StaticFile | None) -> None:
        if key in self._entries:
            return
        self._entries[key] = value
        self.bytes += _weight(value)
        while self._entries and (
            self.bytes > self.max_bytes or len(self._entries) > self.max_entries
        ):
            _, old = self._entries.popitem(last=False)
            self.bytes -= _weight(old)


def _weight(value: StaticFile | None) -> int:
    return 200 + (len(value.body) if value is not None and value.body is not None else 0)


cache = StaticCache(settings.DS_GATEWAY_STATIC_CACHE_MB * 1024 * 1024)


async def serve(
    scope: dict,
    send,
    *,
    match: RouteMatch,
    files_dir: str,
    version_tag: str,
    platform: list[Header],
    host: str,
    private: bool,
) -> None:
    key = (files_dir, match.route.index, match.params.get(WILDCARD, ""))
    hit, found = cache.get(key)
    if not hit:
        max_inline = settings.DS_GATEWAY_STATIC_CACHE_FILE_KB * 1024
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            _files, resolve, files_dir, match, version_tag, max_inline
        )
        cache.put(key, found)
    head_only = scope["method"] == "HEAD"
    if found is None:
        title, message = pages.NOT_FOUND
        await pages.send_page(
            send,
            404,
            title=title,
            message=message,
            host=host,
            platform=platform,
            head_only=head_only,
        )
        return
    await _send_file(scope, send, found, platform=platform, private=private, head_only=head_only)


def _request_headers(scope: dict) -> dict[bytes, bytes]:
    wanted = (b"if-none-match", b"if-modified-since", b"range", b"if-range")
    return {n: v for n, v in scope["headers"] if n in wanted}


async def _send_file(scope, send, f: StaticFile, *, platform, private: bool, head_only: bool):
    conditions = _request_headers(scope) if scope["headers"] else {}
    validators = [
        (b"etag", f.etag),
        (b"last-modified", f.last_modified),
        (b"cache-control", b"private, no-cache" if private else b"no-cache"),
    ]
    if _not_modified(conditions, f):
        await send(
            {"type": "http.response.start", "status": 304, "headers": [*validators, *platform]}
        )
        await send({"type": "http.response.body", "body": b""})
        return
    status, start, end = 200, 0, f.size  # end is exclusive
    extra: list[Header] = [(b"accept-ranges", b"bytes")]
    wanted = conditions.get(b"range")
    if wanted is not None and _if_range_holds(conditions.get(b"if-range"), f):
        parsed = parse_range(wanted, f.size)
        if parsed == "unsatisfiable":
            await pages.send_response(
                send,
                416,
                b"",
                platform=platform,
                content_type=b"text/plain; charset=utf-8",
                headers=[(b"content-range", f"bytes */{f.size}".encode()), *validators],
            )
            return
        if parsed is not None:
            status, (start, end) = 206, parsed
            extra.append((b"content-range", f"bytes {start}-{end - 1}/{f.size}".encode()))
    headers = [
        (b"content-type", f.content_type),
        (b"content-length", str(end - start).encode()),
        *validators,
        *extra,
        *platform,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if head_only:
        await send({"type": "http.response.body", "body": b""})
    elif f.body is not None:
        await send({"type": "http.response.body", "body": f.body[start:end]})
    else:
        await _stream(send, f.path, start, end)


async def _stream(send, path: str, start: int, end: int) -> None:
    loop = asyncio.get_running_loop()
    handle = await loop.run_in_executor(_files, open, path, "rb")
    try:
        await loop.run_in_executor(_files, handle.seek, start)
        left = end - start
        while left > 0:
            data = await loop.run_in_executor(_files, handle.read, min(READ_CHUNK, left))
            if not data:
                server_hooks.abort(send)  # pragma: no cover - files never shrink
                return
            left -= len(data)
            await send({"type": "http.response.body", "body": data, "more_body": left > 0})
            if left:
                try:
                    await server_hooks.wait_writable(send, timeout=settings.DS_GATEWAY_IDLE_TIMEOUT)
                except TimeoutError:
                    server_hooks.abort(send)
                    return
    finally:
        await loop.run_in_executor(_files, handle.close)


def _etags(value: bytes) -> list[bytes]:
    return [t.strip().removeprefix(b"W/") for t in value.split(b",") if t.strip()]


def _not_modified(conditions: dict[bytes, bytes], f: StaticFile) -> bool:
    if_none_match = conditions.get(b"if-none-match")
    if if_none_match is not None:  # it overrides If-Modified-Since (RFC 9110 13.1.3)
        tags = _etags(if_none_match)
        return b"*" in tags or f.etag in tags
    since = conditions.get(b"if-modified-since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return False
    return when.tzinfo is not None and f.mtime <= when.timestamp()


def _if_range_holds(value: bytes | None, f: StaticFile) -> bool:
    # A range applies only to the representation the client has: strong ETag or exact date.
    return value is None or value.strip() in (f.etag, f.last_modified)


def parse_range(value: bytes, size: int):
    """(start, end exclusive) for one `bytes=` range; None to ignore the header (bad syntax,
    several ranges); "unsatisfiable" when it asks for nothing inside the file."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first, dash, last = spec.strip().partition(b"-")
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # suffix: the last N bytes
        if not last:
            return None
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size)
