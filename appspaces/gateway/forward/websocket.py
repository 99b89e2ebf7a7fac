"""WebSockets: the same dispatch, same-origin rule and route auth as HTTP, then frames relayed
both ways between the browser (through Daphne) and the sandbox's unix socket.

- The handshake is refused (Daphne answers 403) for unknown or inactive appspaces, a path
  the app would read differently from the route table (routes.request_path), a foreign
  Origin (cross-site WebSocket hijacking), unknown or static routes, visitors the route's
  auth refuses, and when the app itself refuses the upgrade.
- Close codes travel both ways (codes a peer may not send become 1000 or 1011).
- Messages over DS_GATEWAY_WS_MAX_MESSAGE_BYTES close the connection with 1009, either way.
- Backpressure: towards the sandbox, each message waits for the socket to drain; Daphne
  cannot be told to stop reading, so at most DS_GATEWAY_WS_MAX_PENDING browser messages wait
  here and more close the connection with 1008. Towards the browser, the websockets library
  stops reading the sandbox while its queue is full, and sends wait while the client's
  Twisted buffer is over its high-water mark (server_hooks).
- While the connection is open, the supervisor is told the sandbox is in use.
- While it is open it is re-admitted whenever access may have changed (connections.py); once
  refused, it is closed with 1008 and its sandbox side dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from django.conf import settings
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from appspaces.gateway.auth import (
    Admission,
    RequestFacts,
    admit,
    own_origin,
    public_scheme,
    request_target,
)
from appspaces.gateway.forward import server_hooks
from appspaces.gateway.forward.proxy import RECONNECT_DELAYS
from appspaces.gateway.headers import forward_request_headers
from appspaces.gateway.state import connections
from appspaces.gateway.state.config import configs
from appspaces.gateway.state.limits import limits
from appspaces.gateway.state.runtime import Runtime, runtime
from packages.routes import BadPath, request_path
from sandbox import peer
from sandbox.protocol import SandboxError

log = logging.getLogger(__name__)

_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
# The websockets library makes these itself; the browser's belong to the browser's connection.
_HANDSHAKE = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)


def sendable(code: int | None) -> int:
    """A close code this side may put in a close frame."""
    if code is None or code == 1005:
        return 1000
    if code in _SENDABLE or 3000 <= code <= 4999:
        return int(code)  # not an IntEnum: Daphne's autobahn wants exactly an int
    return 1011  # 1006 (abnormal), 1015 (TLS) and invalid codes


class _Close:
    __slots__ = ("code",)

    def __init__(self, code: int):
        self.code = code


async def relay(scope: dict, receive, send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    upstream = await _open(scope, send)
    if upstream is None:
        await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return
    rt, spec_id, conn, guard = upstream
    try:
        await send({"type": "websocket.accept", "subprotocol": conn.subprotocol})
        await _pump(receive, send, conn, rt, spec_id, guard)
    finally:
        if conn.transport is not None:
            conn.transport.abort()


async def _open(
    scope: dict, send
) -> tuple[Runtime, str, ClientConnection, connections.Guard] | None:
    config = await configs.get(scope["appspace_subdomain"])
    if config is None or not config.active:
        return None
    lim = limits()
    facts = RequestFacts(scope["headers"], lim.cookie_prefix)
    if (
        facts.hosts != 1
        or facts.header_count > lim.max_headers
        or facts.header_bytes > lim.max_header_bytes
    ):
        return None
    try:
        path = request_path(scope["raw_path"])
    except BadPath:
        return None  # one meaning for the gateway and the app, as for HTTP
    scheme = public_scheme(scope, lim.https)
    # Browsers always send Origin on WebSocket handshakes; a foreign one is a hijack attempt.
    if facts.origin is not None and facts.origin != own_origin(facts.host, scheme):
        return None
    target = request_target(scope)
    outcome = await admit(config, facts, "GET", path, scope)
    if not isinstance(outcome, Admission) or outcome.match.route.is_static:
        return None
    member = outcome.member
    guard = connections.Guard(config, facts, "GET", path, scope, member)
    headers = forward_request_headers(
        [(n, v) for n, v in scope["headers"] if n not in _HANDSHAKE],
        identity=member.identity if member else None,
        identity_headers=member.headers if member else None,
        host=facts.host,
        scheme=scheme,
        route_index=outcome.match.route.index,
        params=outcome.match.params,
    )
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers if n != b"host"]
    rt = runtime()
    spec = config.spec
    for attempt, delay in enumerate(RECONNECT_DELAYS):
        try:
            await asyncio.sleep(delay)
            socket = await (rt.links.socket_path(spec) if not attempt else rt.links.ensure(spec))
            async with asyncio.timeout(settings.DS_GATEWAY_FIRST_BYTE_TIMEOUT):
                # Never through a symlink, only to a listener of the appspace's uid.
                sock = await peer.connect(socket, peer.expected_uid(spec.uid))
            conn = await _unix_connect(
                sock,
                uri=f"ws://{facts.host}{target}",
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,
                compression=None,
                max_size=settings.DS_GATEWAY_WS_MAX_MESSAGE_BYTES,
                max_queue=16,
                open_timeout=settings.DS_GATEWAY_FIRST_BYTE_TIMEOUT,
                ping_interval=None,
                close_timeout=2,
                user_agent_header=None,
                proxy=None,
            )
            return rt, spec.id, conn, guard
        except SandboxError as exc:
            log.info("appspace %s: no sandbox for a WebSocket: %s", config.subdomain, exc)
            return None
        except peer.PeerRefused as exc:
            log.warning("appspace %s: WebSocket not relayed: %s", config.subdomain, exc)
            rt.links.forget(spec.id)
        except OSError:
            rt.links.forget(spec.id)  # the sandbox is gone: ask the supervisor once more
        except (InvalidHandshake, TimeoutError) as exc:
            log.info("appspace %s: WebSocket upgrade refused: %r", config.subdomain, exc)
            return None
    return None


async def _unix_connect(sock, **kwargs) -> ClientConnection:
    """websockets' handshake over a socket `sandbox.peer` connected (closed if it fails)."""
    try:
        return await unix_connect(sock=sock, **kwargs)
    except BaseException:
        sock.close()
        raise


async def _pump(
    receive, send, conn: ClientConnection, rt: Runtime, spec_id: str, guard: connections.Guard
) -> None:
    max_size = settings.DS_GATEWAY_WS_MAX_MESSAGE_BYTES
    pending: asyncio.Queue = asyncio.Queue(maxsize=settings.DS_GATEWAY_WS_MAX_PENDING)
    idle = settings.DS_GATEWAY_IDLE_TIMEOUT

    async def from_client() -> int | None:
        """Browser messages into the bounded queue. Returns a close code when the browser
        broke a rule (too big, too many waiting), None when it disconnected."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                pending.put_nowait(_Close(sendable(message.get("code"))))
                return None
            if message["type"] != "websocket.receive":
                continue
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            if len(data) > max_size or (isinstance(data, str) and len(data.encode()) > max_size):
                return 1009
            try:
                pending.put_nowait(data)
            except asyncio.QueueFull:
                return 1008

    async def to_sandbox() -> None:
        while True:
            item = await pending.get()
            if isinstance(item, _Close):
                await conn.close(code=item.code)
                return
            await conn.send(item)  # waits for the socket to drain

    async def to_client() -> None:
        try:
            async for data in conn:
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})
                await server_hooks.wait_writable(send, timeout=idle)
        except ConnectionClosed:
            pass
        except TimeoutError:  # the browser stopped reading
            conn.transport.abort()
            await _close_client(send, 1008)
            return
        code = conn.close_code
        protocol = conn.protocol
        if protocol.close_sent is not None and not protocol.close_rcvd_then_sent:
            code = protocol.close_sent.code  # we closed it (message too big): say why
        await _close_client(send, sendable(code))

    async def keep_in_use() -> None:
        interval = max(5.0, min(60.0, settings.DS_SANDBOX_IDLE_TIMEOUT / 3))
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(SandboxError):
                await rt.links.touch(spec_id)

    revoked = asyncio.Event()
    reader = asyncio.create_task(from_client())
    downstream = asyncio.create_task(to_client())
    revocation = asyncio.create_task(revoked.wait())
    others = [asyncio.create_task(to_sandbox()), asyncio.create_task(keep_in_use()), revocation]
    connections.register(guard, revoked.set)
    try:
        await asyncio.wait({reader, downstream, revocation}, return_when=asyncio.FIRST_COMPLETED)
        if revoked.is_set() and not downstream.done():
            # Access was withdrawn: the app must not hear from this visitor again.
            conn.transport.abort()
            downstream.cancel()
            await _close_client(send, 1008)
        elif reader.done() and not downstream.done():
            violation = reader.result()
            if violation is not None:
                # Drop the sandbox side at once: it may be the one not reading.
                conn.transport.abort()
                downstream.cancel()
                await _close_client(send, violation)
            else:
                # The browser left: to_sandbox closes upstream, which ends downstream.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(downstream), timeout=3)
    finally:
        connections.unregister(guard)
        for task in (reader, downstream, *others):
            task.cancel()
        for task in (reader, downstream, *others):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _close_client(send, code: int) -> None:
    if code == 1000 or 3000 <= code <= 4999 or not server_hooks.close_websocket(send, code):
        await send({"type": "websocket.close", "code": code})
