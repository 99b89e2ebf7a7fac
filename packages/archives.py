"""Reading an untrusted tar stream with bounded memory and bounded output: the one copy of that
hardening, used by package extraction (packages/extraction.py) and by backup archives
(backups/format/archive.py).

- `CountingReader` counts the compressed bytes read;
- `BudgetReader` counts the inflated bytes and stops past a budget (which the caller may raise
  once it knows more, as backups do after reading their metadata) or past a compression ratio;
- `ReadAhead` inflates in a thread of its own so decompression overlaps with writing files;
- `open_tar_stream` opens a streaming (`r|`) tar over such a reader whose headers cannot be
  inflated without bound: PAX and GNU long-name headers, which tarfile reads whole into
  memory, are refused above 64 KiB, and sparse entries are refused outright.

Every refusal is an `ArchiveRefused` whose str() is a sentence for the person who gave us the
archive; callers reword it into their own error type.
"""

from __future__ import annotations

import io
import queue
import tarfile
import threading
from collections.abc import Callable
from typing import IO

CHUNK_BYTES = 64 * 1024
MAX_TAR_HEADER_BYTES = 64 * 1024  # PAX and GNU long-name headers are read into memory
TAR_OVERHEAD_PER_ENTRY = 3 * 512 + 511  # header (+ long name/PAX block) + padding
TAR_END_BYTES = 20 * 512  # end-of-archive blocks and the record padding after them
_TAR_HEADER_TYPES = {
    tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
}  # fmt: skip


class ArchiveRefused(Exception):
    """An archive (or a part of it) that will not be read; str() is a sentence for the user."""


class CountingReader(io.RawIOBase):
    """The raw (compressed) bytes, counted."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n


class BudgetReader(io.RawIOBase):
    """Inflated bytes, counted and read at most CHUNK_BYTES at a time. Past `budget` it raises
    what `over_budget()` makes; with `max_ratio`, once past `ratio_grace_bytes` it refuses a
    stream that expands more than that many times the bytes `compressed` has read."""

    def __init__(
        self,
        inflated: IO[bytes],
        budget: int,
        over_budget: Callable[[], Exception],
        *,
        compressed: CountingReader | None = None,
        max_ratio: float | None = None,
        ratio_grace_bytes: int = 0,
    ):
        self.inflated, self.budget, self.over_budget = inflated, budget, over_budget
        self.compressed, self.max_ratio, self.ratio_grace_bytes = (
            compressed,
            max_ratio,
            ratio_grace_bytes,
        )
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > CHUNK_BYTES:
            size = CHUNK_BYTES  # never inflate a large request in one go
        data = self.inflated.read(size)
        self.count += len(data)
        if self.count > self.budget:
            raise self.over_budget()
        ratio = self.max_ratio
        if (
            ratio
            and self.compressed is not None
            and self.count > self.ratio_grace_bytes
            and self.count > ratio * max(self.compressed.count, 1)
        ):
            raise ArchiveRefused(
                f"The archive expands more than {ratio:g} times its compressed size: "
                "it looks like a compression bomb."
            )
        return data

    def readinto(self, buffer) -> int:  # pragma: no cover -- tarfile calls read()
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class ReadAhead(io.RawIOBase):
    """Inflates in a thread of its own (zstandard releases the GIL), so decompression overlaps
    with writing files, as gzip and tar overlap in `tar xzf`. At most `depth` chunks wait.
    Close it before the file it reads from."""

    def __init__(self, source: IO[bytes], depth: int = 8):
        self.source = source
        self.chunks: queue.Queue = queue.Queue(maxsize=depth)
        self.pending = b""
        self.finished = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="extract-inflate", daemon=True)
        self.thread.start()

    def _produce(self) -> None:
        try:
            while not self.stopping.is_set():
                data = self.source.read(CHUNK_BYTES * 4)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading thread, raised there
            self._put(exc)

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK_BYTES
        while not self.pending and not self.finished:
            item = self.chunks.get()
            if isinstance(item, BaseException):
                self.finished = True
                raise item
            if not item:
                self.finished = True
            self.pending = item
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        super().close()


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses headers tarfile would read whole into memory when they claim to be huge, and
    sparse entries (their map is another header, and nothing we make writes one)."""

    def _proc_member(self, tar):
        if self.type in _TAR_HEADER_TYPES and self.size > MAX_TAR_HEADER_BYTES:
            raise ArchiveRefused("The archive has an oversized extended header; it looks crafted.")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveRefused(f"The archive entry {self.name[:200]!r} is a sparse file.")
        return super()._proc_member(tar)


def open_tar_stream(stream: IO[bytes]) -> tarfile.TarFile:
    """A streaming tar over `stream` (a BudgetReader): names decoded as UTF-8, with
    undecodable bytes kept as surrogates for the caller's name check to refuse."""
    return tarfile.open(
        fileobj=stream,  # type: ignore[arg-type]
        mode="r|",
        tarinfo=_BoundedTarInfo,
        encoding="utf-8",
        errors="surrogateescape",
    )
