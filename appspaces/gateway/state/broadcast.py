"""Cache invalidations from other processes, at once: the process that changes a user, a
permission, an allowlist, a session or an appspace tells every gateway process through the
channel layer (channels-redis on REDIS_URL), and each applies the same invalidation as the
process that made the change (invalidation.py), re-admitting its open connections.

- `publish(event)` is called once the change is committed (a Django view, a Celery task, a
  shell); it never raises: a lost message leaves the cache TTL as the fallback.
- `listen()` is called by the gateway's ASGI entry points; the first call in a process starts
  its subscriber, a daemon thread with an event loop of its own (so no server's or test's
  loop carries it) that joins the group and applies what arrives through the thread-safe
  invalidation of the caches and connections (messages this process published itself were
  applied locally already and are skipped).

With the in-memory channel layer (embedded defaults: one process serves everything) nothing
needs to be told, so nothing is published.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)

GROUP = "dropserver.gateway.invalidate"
ORIGIN = secrets.token_hex(8)  # this process
REJOIN_SECONDS = 60.0  # membership expires after group_expiry (300 s, settings.py)
RETRY_SECONDS = 2.0

_listener: threading.Thread | None = None
_lock = threading.Lock()
_handler: Callable[[dict], None] | None = None


def _layer():
    layer = get_channel_layer()
    return None if layer is None or isinstance(layer, InMemoryChannelLayer) else layer


def publish(event: dict) -> None:
    """Tell the other processes what changed (call it after the commit, from sync code)."""
    layer = _layer()
    if layer is None:
        return
    message = {"type": "gateway.invalidate", "origin": ORIGIN, "event": event}
    try:
        async_to_sync(layer.group_send)(GROUP, message)
    except Exception as exc:  # the TTL is the fallback; a change never fails for this
        log.warning("gateway: could not broadcast an invalidation (%s): %s", event, exc)


def set_handler(handler: Callable[[dict], None]) -> None:
    """What a received event does here (invalidation.received), set once at start-up."""
    global _handler
    _handler = handler


def listen() -> None:
    """Start this process's subscriber unless it runs (cheap: call it per request)."""
    global _listener
    if _listener is not None and _listener.is_alive():
        return
    if _layer() is None:
        return
    with _lock:
        if _listener is None or not _listener.is_alive():
            _listener = threading.Thread(
                target=asyncio.run, args=(_subscribe(),), name="gateway-broadcast", daemon=True
            )
            _listener.start()


async def _subscribe() -> None:
    layer = _layer()
    while True:
        rejoin = None
        try:
            channel = await layer.new_channel("gateway.")
            await layer.group_add(GROUP, channel)
            rejoin = asyncio.create_task(_rejoin(layer, channel))
            while True:
                _received(await layer.receive(channel))
        except Exception as exc:  # Redis restarting, say: join again in a moment
            log.warning("gateway: invalidation broadcast interrupted: %s", exc)
            await asyncio.sleep(RETRY_SECONDS)
        finally:
            if rejoin is not None:
                rejoin.cancel()


async def _rejoin(layer, channel: str) -> None:
    """Renew the membership before the group forgets it (a dead process's lapses)."""
    while True:
        await asyncio.sleep(REJOIN_SECONDS)
        try:
            await layer.group_add(GROUP, channel)
        except Exception as exc:
            log.warning("gateway: could not renew the invalidation subscription: %s", exc)


def _received(message: dict) -> None:
    if message.get("origin") == ORIGIN or _handler is None:
        return
    event = message.get("event")
    if isinstance(event, dict):
        try:
            _handler(event)
        except Exception:
            log.exception("gateway: applying a broadcast invalidation failed: %r", event)
