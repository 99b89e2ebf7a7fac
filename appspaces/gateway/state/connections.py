"""Open long-lived gateway connections, and taking them back when access is revoked.

Admission (auth.admit) is decided once, when a request or WebSocket handshake arrives; a
WebSocket or a streaming response can outlive that decision by hours. Every such connection
is registered here as a `Guard` (WebSockets once accepted, HTTP requests once they have run
for proxy._Exchange.WATCH_AFTER), and is re-admitted, by the same `admit` that let it in:

- at once, in this process, when something here revokes access (a user removed, their
  permissions changed, a sign-out, a deactivated account, a paused or deleted appspace): the
  gateway's signal receivers (config.py) call `revalidate_threadsafe` after dropping the
  cached facts, from whatever thread made the change;
- every DS_GATEWAY_CACHE_TTL/2 seconds, with facts at most DS_GATEWAY_CACHE_TTL/4 old, so a
  change made by another process (the panel elsewhere, a Celery task, a shell) reaches open
  connections within 3/4 of DS_GATEWAY_CACHE_TTL plus one database read.

A connection whose appspace is gone or not active, whose visitor `admit` now refuses, or
whose user lost the membership or any permission the app was told about, is revoked: a
WebSocket is closed with 1008 (and its sandbox side dropped), an in-flight request is
cancelled (a 403 page if nothing was sent yet, else the client connection is aborted) and
its upstream connection closed, so the app sees the abort.

`revalidate_threadsafe` is the hook a cross-process broadcast (e.g. Redis pub/sub) can call
to make revocations from other processes immediate too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable

from django.conf import settings

from appspaces.gateway.auth import Refusal, RequestFacts, admit
from appspaces.gateway.state.config import AppspaceConfig, Member, configs, sessions

log = logging.getLogger(__name__)


class Guard:
    """One long-lived connection: what it was admitted as, and how to end it."""

    __slots__ = (
        "appspace_pk",
        "facts",
        "loop",
        "member",
        "method",
        "on_revoke",
        "path",
        "revoked",
        "scope",
        "subdomain",
    )

    def __init__(
        self,
        config: AppspaceConfig,
        facts: RequestFacts,
        method: str,
        path: str,
        scope: dict,
        member: Member | None,
    ):
        self.subdomain = config.subdomain
        self.appspace_pk = config.pk
        self.facts = facts
        self.method = method
        self.path = path
        self.scope = scope
        self.member = member
        self.on_revoke: Callable[[], None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.revoked = False

    @property
    def user_pk(self) -> int | None:
        return self.member.user_pk if self.member is not None else None

    def matches(self, appspace_pk: int | None, user_pk: int | None) -> bool:
        return (appspace_pk is None or self.appspace_pk == appspace_pk) and (
            user_pk is None or self.user_pk == user_pk
        )


_guards: set[Guard] = set()
_timers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}
_running: set[asyncio.Task] = set()
_lock = threading.Lock()  # revalidate_threadsafe runs in other threads


def register(guard: Guard, on_revoke: Callable[[], None]) -> None:
    """Watch `guard` from now on (call it on the connection's event loop)."""
    loop = asyncio.get_running_loop()
    guard.loop = loop
    guard.on_revoke = on_revoke
    with _lock:
        _guards.add(guard)
        timer = _timers.get(loop)
        if timer is None or timer.done():
            _timers[loop] = loop.create_task(_revalidate_periodically(loop))


def unregister(guard: Guard) -> None:
    with _lock:
        _guards.discard(guard)


def open_count() -> int:
    return len(_guards)


def _interval() -> float:
    return max(0.05, settings.DS_GATEWAY_CACHE_TTL / 2)


async def _revalidate_periodically(loop: asyncio.AbstractEventLoop) -> None:
    while True:
        await asyncio.sleep(_interval())
        with _lock:
            guards = [g for g in _guards if g.loop is loop]
            if not guards:
                _timers.pop(loop, None)
                return
        await _revalidate_all(guards, max_age=settings.DS_GATEWAY_CACHE_TTL / 4)


async def _revalidate_all(guards: list[Guard], *, max_age: float) -> None:
    results = await asyncio.gather(
        *(revalidate(g, max_age=max_age) for g in guards), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.warning("gateway: revalidating an open connection failed: %r", result)


async def revalidate(guard: Guard, *, max_age: float) -> bool:
    """Admit `guard` again on facts at most `max_age` seconds old; revoke it if refused.
    Returns whether it may stay open."""
    if guard.revoked:
        return False
    config = await configs.get_fresh(guard.subdomain, max_age=max_age)
    if guard.facts.cookie_key:
        key_hash = hashlib.sha256(guard.facts.cookie_key.encode("latin-1")).hexdigest()
        await sessions.get_fresh(key_hash, max_age=max_age)  # admit reads it from the cache
    if config is None or not config.active or config.pk != guard.appspace_pk:
        return _revoke(guard)
    outcome = await admit(config, guard.facts, guard.method, guard.path, guard.scope)
    if isinstance(outcome, Refusal):
        return _revoke(guard)
    before, now = guard.member, outcome.member
    if before is not None:
        if now is None or now.user_pk != before.user_pk:
            return _revoke(guard)
        if not set(before.identity.permissions) <= set(now.identity.permissions):
            return _revoke(guard)  # the app was told of a permission the user no longer has
    return True


def _revoke(guard: Guard) -> bool:
    if not guard.revoked:
        guard.revoked = True
        unregister(guard)
        if guard.on_revoke is not None:
            guard.on_revoke()
    return False


def revalidate_threadsafe(*, appspace_pk: int | None = None, user_pk: int | None = None) -> None:
    """Re-admit, on fresh facts, the open connections of `appspace_pk` and/or `user_pk` (None
    means any). Safe from any thread; returns at once, the checks run on the gateway's loops.
    Call it after the cached facts were dropped and the change is committed."""
    with _lock:
        loops = {g.loop for g in _guards if g.loop is not None and g.matches(appspace_pk, user_pk)}
    for loop in loops:
        with contextlib.suppress(RuntimeError):  # that loop is closed: its guards are gone
            loop.call_soon_threadsafe(_revalidate_matching, loop, appspace_pk, user_pk)


def _revalidate_matching(
    loop: asyncio.AbstractEventLoop, appspace_pk: int | None, user_pk: int | None
) -> None:
    with _lock:
        guards = [g for g in _guards if g.loop is loop and g.matches(appspace_pk, user_pk)]
    if guards:
        task = loop.create_task(_revalidate_all(guards, max_age=0.0))
        _running.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_running.discard)
