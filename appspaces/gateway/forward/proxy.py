"""Function routes: the request streamed to the sandbox over its unix socket, the response
streamed back, with the platform's limits, timeouts and headers.

- Request bodies over DS_GATEWAY_MAX_BODY_BYTES get a 413 (before the sandbox is reached when
  Content-Length says so; as soon as the count passes the cap for chunked uploads).
- Connect, first-byte and idle timeouts give a 504 page (or an aborted connection once the
  response has started); the upstream connection is closed, so the app sees the abort.
- A client that disconnects cancels the upstream request: its connection is closed, never
  put back in the pool.
- A sandbox that is gone (crashed, stopped) gives a 502 page without detail; the gateway
  forgets its socket, so the next request asks the supervisor, which starts it again.
- A request still running after WATCH_AFTER is registered with connections.py: if its
  visitor's access is withdrawn meanwhile, it is cancelled (403 page, or the client connection
  aborted once the response started) and its upstream connection closed.
"""

from __future__ import annotations

import asyncio
import errno
import logging

from appspaces.gateway import pages
from appspaces.gateway.forward import server_hooks
from appspaces.gateway.forward.upstream import (
    ConnectFailed,
    Connection,
    ConnectTimedOut,
    UpstreamError,
    read_response,
    request_head,
)
from appspaces.gateway.headers import filter_response_headers, forward_request_headers
from appspaces.gateway.state import connections
from appspaces.gateway.state.config import AppspaceConfig, Member
from appspaces.gateway.state.limits import limits
from appspaces.gateway.state.runtime import Runtime
from packages.routes import RouteMatch
from sandbox import peer
from sandbox.protocol import SandboxError, SandboxUnavailable

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NOT_ACCEPTED = frozenset({errno.ENOTCONN, errno.EAGAIN})
RECONNECT_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4)
_FLUSH_AT = 256 * 1024  # request bytes buffered towards the sandbox before awaiting a drain


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def proxy(
    scope: dict,
    receive,
    send,
    *,
    rt: Runtime,
    config: AppspaceConfig,
    match: RouteMatch,
    member: Member | None,
    host: str,
    scheme: str,
    content_length: int | None,
    chunked: bool,
    guard: connections.Guard | None = None,
) -> None:
    method = scope["method"]
    platform = config.platform_headers
    lim = limits()

    page = pages.page_sender(send, host=host, platform=platform, method=method)

    spec = config.spec
    try:
        path = await rt.links.socket_path(spec)
    except SandboxUnavailable as exc:
        log.info("appspace %s: sandbox unavailable: %s", config.subdomain, exc)
        return await page(503, pages.BUSY, [(b"retry-after", b"5")])
    except SandboxError as exc:
        log.warning("appspace %s: sandbox did not start: %s", config.subdomain, exc)
        return await page(502, pages.BAD_GATEWAY)

    headers = forward_request_headers(
        scope["headers"],
        identity=member.identity if member else None,
        identity_headers=member.headers if member else None,
        host=host,
        scheme=scheme,
        route_index=match.route.index,
        params=match.params,
        platform_names=lim.platform_cookie_names,
    )
    query = scope.get("query_string")
    target = scope["raw_path"] + b"?" + query if query else scope["raw_path"]
    if content_length is not None:
        framing = b"content-length: %d\r\n" % content_length
    elif chunked:
        framing = b"transfer-encoding: chunked\r\n"
    else:
        framing = b"content-length: 0\r\n" if method in _BODY_METHODS else b""
    head = request_head(method, target, headers, framing)

    try:
        conn = await rt.pool.acquire(
            path,
            uid=peer.expected_uid(spec.uid),
            timeout=lim.connect_timeout,
            limit=lim.max_response_head,
        )
    except ConnectTimedOut:
        log.info("appspace %s: its sandbox does not accept connections", config.subdomain)
        return await page(504, pages.GATEWAY_TIMEOUT)
    except ConnectFailed:
        # Nothing was sent: the sandbox is gone (crashed, stopped idle). Ask the supervisor,
        # which starts it again.
        rt.pool.discard(path)
        try:
            conn = await _reconnect(rt, spec, lim)
        except ConnectTimedOut:
            return await page(504, pages.GATEWAY_TIMEOUT)
        except SandboxUnavailable:
            return await page(503, pages.BUSY, [(b"retry-after", b"5")])
        except (SandboxError, ConnectFailed) as exc:
            log.warning("appspace %s: cannot reach its sandbox: %s", config.subdomain, exc)
            rt.links.forget(spec.id)
            return await page(502, pages.BAD_GATEWAY)

    exchange = _Exchange(rt, conn, send, spec.id, platform, page, lim, guard)
    try:
        await exchange.run(receive, head, method, content_length is not None or chunked, chunked)
    finally:
        exchange.finish()


async def _reconnect(rt: Runtime, spec, lim) -> Connection:
    """`ensure`, then connect. The supervisor may not have seen the death yet and hand out
    the old socket: give it a moment, a few times (under a second in all)."""
    for delay in RECONNECT_DELAYS:
        rt.links.forget(spec.id)
        await asyncio.sleep(delay)
        path = await rt.links.ensure(spec)
        try:
            return await rt.pool.acquire(
                path,
                uid=peer.expected_uid(spec.uid),
                timeout=lim.connect_timeout,
                limit=lim.max_response_head,
            )
        except ConnectTimedOut:
            raise
        except ConnectFailed:
            if delay == RECONNECT_DELAYS[-1]:
                raise
    raise AssertionError("unreachable")


class _Exchange:
    """One request/response over one upstream connection, and what happens when it breaks.

    Hot-path economy (every request pays for it): a request answered within WATCH_AFTER
    seconds sets one timer. That timer starts the disconnect watcher (a task reading
    `receive`; a request that ends sooner never notices a disconnect, and needs not) and arms
    the first-byte timeout for what is left of it; from then on one timer serves all the
    timeouts, re-armed only when a read has to wait.
    """

    WATCH_AFTER = 0.05

    def __init__(
        self, rt: Runtime, conn: Connection, send, sandbox_id: str, platform, page, lim, guard=None
    ):
        self.rt = rt
        self.conn: Connection | None = conn
        self.send = send
        self.sandbox_id = sandbox_id
        self.platform = platform
        self.page = page
        self.lim = lim
        self.reusable = False
        self.started = False
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.first_byte_by: float | None = None  # the deadline, until the watcher arms it
        self.expired = False
        self.watch_timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task | None = None
        self.guard: connections.Guard | None = guard
        self.guarded = False
        self.revoked = False

    # --- one timer for every timeout ------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        self.expired = True
        self.task.cancel()

    async def run(self, receive, head: bytes, method: str, has_body: bool, chunked: bool):
        try:
            await self._run(receive, head, method, has_body, chunked)
        except asyncio.CancelledError:
            if self.revoked:
                self.task.uncancel()
                self._disarm()
                self._stop_watching()
                self.reusable = False
                return await self._fail(403, pages.ACCESS_WITHDRAWN)
            if not self.expired:
                raise  # the client went away, or the server is shutting down
            self.task.uncancel()
            self._stop_watching()
            await self._fail(504, pages.GATEWAY_TIMEOUT)
        except _BodyTooLarge:
            self._stop_watching()
            await self.page(413, pages.TOO_LARGE)
        except _ClientGone:
            pass
        except OSError as exc:
            if exc.errno not in _NOT_ACCEPTED or self.started:
                return await self._upstream_failed(exc)
            # asyncio "connects" a unix socket whose backlog is full; the first write finds
            # out. The sandbox is alive but swamped: say so, and keep its socket.
            self._disarm()
            self._stop_watching()
            await self.page(503, pages.BUSY, [(b"retry-after", b"5")])
        except UpstreamError as exc:
            await self._upstream_failed(exc)
        finally:
            self._disarm()

    async def _upstream_failed(self, exc: BaseException) -> None:
        self._disarm()
        self._stop_watching()
        # The sandbox may have died: the next request asks the supervisor again.
        log.info("sandbox %s: upstream failed: %r", self.sandbox_id, exc)
        self.rt.links.forget(self.sandbox_id)
        if self.conn is not None:
            self.rt.pool.discard(self.conn.path)
        await self._fail(502, pages.BAD_GATEWAY)

    async def _run(self, receive, head: bytes, method: str, has_body: bool, chunked: bool):
        conn = self.conn
        assert conn is not None
        idle = self.lim.idle_timeout
        self.watch_timer = self.loop.call_later(self.WATCH_AFTER, self._watch_disconnect, receive)
        if has_body:
            await self._send_body(receive, head, chunked, idle)
        else:
            conn.writer.write(head)
            await _discard_body(receive)
        if self.watch_timer is None or self.lim.first_byte_timeout <= self.WATCH_AFTER:
            self._arm(self.lim.first_byte_timeout)  # (the watcher runs already: a long upload)
        else:  # armed by _watch_disconnect if the head is not there by then
            self.first_byte_by = self.loop.time() + self.lim.first_byte_timeout
        response = await read_response(conn.reader, head_request=method == "HEAD")
        self.first_byte_by = None
        self._disarm()
        headers = filter_response_headers(
            response.headers,
            platform=self.platform,
            platform_names=self.lim.platform_cookie_names,
        )
        if response.length is not None:
            headers.append((b"content-length", b"%d" % response.length))
        await self.send(
            {"type": "http.response.start", "status": response.status, "headers": headers}
        )
        self.started = True
        while True:
            if response.complete:
                body = b""
            elif response.ready():  # no wait, so no timer
                body = await response.read()
            else:
                self._arm(idle)
                body = await response.read()
                self._disarm()
            if response.complete:
                self._stop_watching()
                self.reusable = response.keep_alive
                self.finish()  # back to the pool before the client's last byte
                await self.send({"type": "http.response.body", "body": body})
                return
            if body:
                await self.send({"type": "http.response.body", "body": body, "more_body": True})
                await server_hooks.wait_writable(self.send, timeout=idle)

    async def _fail(self, status: int, text: tuple[str, str]) -> None:
        if not self.started:
            await self.page(status, text)
        elif not server_hooks.abort(self.send):
            # No way to abort: end the response (the client may take it as complete).
            await self.send({"type": "http.response.body", "body": b""})

    async def _send_body(self, receive, head: bytes, chunked: bool, idle: float) -> None:
        assert self.conn is not None
        writer = self.conn.writer
        cap = self.lim.max_body
        writer.write(head)
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            data = message.get("body", b"")
            total += len(data)
            if total > cap:
                raise _BodyTooLarge
            if data:
                writer.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            if not message.get("more_body", False):
                break
            if writer.transport.get_write_buffer_size() > _FLUSH_AT:
                self._arm(idle)
                await writer.drain()
                self._disarm()
        if chunked:
            writer.write(b"0\r\n\r\n")
        self._arm(idle)
        await writer.drain()
        self._disarm()

    # --- client disconnects ---------------------------------------------------------------

    def _watch_disconnect(self, receive) -> None:
        """From here on, a client disconnect cancels this request (and closes upstream)."""
        self.watch_timer = None
        if self.first_byte_by is not None:
            self._arm(max(0.0, self.first_byte_by - self.loop.time()))
        self.watcher = self.loop.create_task(receive())
        self.watcher.add_done_callback(self._client_gone)
        if self.guard is not None:
            self.guarded = True
            connections.register(self.guard, self._revoke)

    def _revoke(self) -> None:
        """connections.py found that this visitor may no longer be here."""
        if self.conn is not None and not self.revoked:
            self.revoked = True
            self.task.cancel()

    def _client_gone(self, watcher: asyncio.Task) -> None:
        if not watcher.cancelled():
            self.task.cancel()

    def _stop_watching(self) -> None:
        if self.guarded:
            self.guarded = False
            connections.unregister(self.guard)
        if self.watch_timer is not None:
            self.watch_timer.cancel()
            self.watch_timer = None
        if self.watcher is not None:
            self.watcher.remove_done_callback(self._client_gone)
            self.watcher.cancel()
            self.watcher = None

    def finish(self) -> None:
        self._stop_watching()
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        if self.reusable:
            self.rt.pool.release(conn)
        else:
            conn.close()


async def _discard_body(receive) -> None:
    """Take the request's (empty) body messages off the queue, so that the next message is
    the disconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        if not message.get("more_body", False):
            return
