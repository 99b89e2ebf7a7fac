"""A per-process cache for the gateway: loads off the event loop, one load per key at a time,
refreshes ahead of expiry, and invalidation that is safe from any thread.

Reads on the hot path are a dict lookup and a clock read. A value is served for at most `ttl`
seconds after it was loaded (the bound on how stale a change made elsewhere can be); after
half of that, the first request starts a background reload and keeps the cached value, so
busy keys never wait for the database. Invalidation (from signal receivers, which run in
whatever thread saved the model) bumps a generation under a lock: a load that was in flight
when the data changed returns its result to the requests already waiting for it but never
stores it, and requests arriving afterwards start a fresh load.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)


class _Entry(Generic[V]):
    __slots__ = ("expires", "loaded", "refresh", "value")

    def __init__(self, value: V, now: float, ttl: float):
        self.value = value
        self.loaded = now
        self.refresh = now + ttl / 2
        self.expires = now + ttl


MISSING = object()


class LoadingCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        loader: Callable[[K], V],
        *,
        ttl: Callable[[], float],
        max_entries: int = 10_000,
    ):
        self.name = name
        self._loader = database_sync_to_async(loader, thread_sensitive=False)
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[K, _Entry[V]] = {}
        self._loading: dict[K, asyncio.Task] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def peek(self, key: K):
        """The value if it is fresh (MISSING otherwise): the hot path, without a coroutine."""
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() < entry.refresh:
            return entry.value
        return MISSING

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            now = time.monotonic()
            if now < entry.refresh:
                return entry.value
            if now < entry.expires:
                self._start_load(key)  # refresh ahead; this request keeps the cached value
                return entry.value
        return await asyncio.shield(self._start_load(key))

    async def get_fresh(self, key: K, *, max_age: float) -> V:
        """The value, loaded at most `max_age` seconds ago (waiting for a load if needed):
        for re-checking open connections, which must not be served a stale answer."""
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry.loaded < max_age:
            return entry.value
        return await asyncio.shield(self._start_load(key))

    def _start_load(self, key: K) -> asyncio.Task:
        loop = asyncio.get_running_loop()
        with self._lock:
            task = self._loading.get(key)
            if task is None or task.get_loop() is not loop:  # tests run several loops
                task = loop.create_task(self._load(key, self._generation))
                task.add_done_callback(_retrieve_exception)
                self._loading[key] = task
        return task

    async def _load(self, key: K, generation: int) -> V:
        try:
            value = await self._loader(key)
        finally:
            with self._lock:
                if self._loading.get(key) is asyncio.current_task():
                    del self._loading[key]
        with self._lock:
            if generation == self._generation:
                self._entries.pop(key, None)  # re-inserted last: eviction drops the oldest
                self._entries[key] = _Entry(value, time.monotonic(), self._ttl())
                while len(self._entries) > self._max_entries:
                    del self._entries[next(iter(self._entries))]
        return value

    def invalidate(self, key: K) -> None:
        with self._lock:
            self._generation += 1
            self._entries.pop(key, None)
            self._loading.pop(key, None)

    def invalidate_where(self, predicate: Callable[[K, V], bool]) -> None:
        """Drop every entry whose (key, value) matches; in-flight loads are not stored."""
        with self._lock:
            self._generation += 1
            for key in [k for k, e in self._entries.items() if predicate(k, e.value)]:
                del self._entries[key]
            self._loading.clear()

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._loading.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _retrieve_exception(task: asyncio.Task) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("gateway cache load failed: %r", exc)
