"""What ASGI cannot say, done through Daphne (Twisted) when the gateway runs under it.

ASGI gives an application no write backpressure (Daphne's `send` returns at once, and Twisted
buffers whatever a slow client has not read yet) and no way to abort a response half-way (an
app that stops sending leaves the client waiting; ending it would pass a truncated body off as
complete). Under Daphne, `send` is `functools.partial(server.handle_reply, protocol)`, so the
connection's transport is reachable: `wait_writable` waits while its unsent bytes are above a
high-water mark, and `abort` drops the connection so the browser sees an error. Daphne's
`websocket.close` also only takes 1000 and 3000-4999 (autobahn's rule for applications), so
`close_websocket` sends the protocol's own codes (1008, 1009, 1011) the way Daphne does for
its errors.

Under another server these degrade: no waiting, the response is ended instead of aborted, and
close codes go through `websocket.close`. tests/gateway checks them against the pinned Daphne.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
POLL_SECONDS = 0.005


def _transport(send: Any) -> Any:
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    channel = getattr(protocol, "channel", None)  # an HTTP request (None once finished)
    transport = getattr(channel, "transport", None) or getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "dataBuffer"):
        return None  # not a plain Twisted TCP transport (TLS, another server): no hooks
    return transport


def unsent_bytes(transport: Any) -> int:
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return 0


async def wait_writable(send: Any, *, timeout: float) -> None:
    """Wait until the client has taken most of what was sent (TimeoutError after `timeout`
    seconds without progress below the mark). Returns at once under other servers."""
    transport = _transport(send)
    if transport is None or unsent_bytes(transport) <= HIGH_WATER:
        return
    async with asyncio.timeout(timeout):
        while unsent_bytes(transport) > LOW_WATER and not getattr(transport, "disconnected", 1):
            await asyncio.sleep(POLL_SECONDS)


def abort(send: Any) -> bool:
    """Drop the client connection at once; False when the server offers no way to."""
    transport = _transport(send)
    if transport is None:
        return False
    with contextlib.suppress(Exception):
        transport.abortConnection()
        return True
    return False


def close_websocket(send: Any, code: int) -> bool:
    """Send a close frame with any valid code; False when not under Daphne."""
    if not isinstance(send, functools.partial) or not send.args:
        return False
    close_frame = getattr(send.args[0], "sendCloseFrame", None)
    if close_frame is None:
        return False
    with contextlib.suppress(Exception):
        close_frame(code=int(code), isReply=False)
        return True
    return False
