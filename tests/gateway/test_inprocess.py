"""The gateway driven in this process, against a fake sandbox socket that records every byte.

What the live tests cannot see from outside: the exact request the sandbox receives, what
happens to upstream connections after each kind of failure, invalidation in the gateway's
own process, and the WebSocket backlog cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from appspaces.gateway.asgi import gateway_http, gateway_websocket
from appspaces.gateway.state import config as gateway_config
from appspaces.gateway.state.runtime import SandboxLinks, runtime
from appspaces.models import AppspaceUser
from appspaces.sharing.sessions import appspace_session_create, appspace_sessions_revoke
from tests.gateway.peer_sockets import listen_as, serve_accepted, websocket_server_as

pytestmark = [pytest.mark.sandbox, pytest.mark.asyncio]


async def db(function, *args, **kwargs):
    """ORM work in a thread that closes its connection after (as the gateway's loads do)."""
    return await database_sync_to_async(function, thread_sensitive=False)(*args, **kwargs)


OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class FakeSandbox:
    """A unix-socket HTTP server: answers each request with `respond(request_head)`, records
    heads, and counts connections opened and closed."""

    def __init__(self, respond=None):
        self.respond = respond or (lambda head: OK)
        self.heads: list[bytes] = []
        self.opened = 0
        self.closed = asyncio.Event()
        self.closed_count = 0
        self.paths: dict[int, str] = {}  # uid -> socket, listened on by that uid
        self.servers: list[asyncio.Task] = []

    @property
    def path(self) -> str:
        return next(iter(self.paths.values()))

    async def path_for(self, uid: int) -> str:
        """The gateway only talks to a socket of the appspace's uid (SO_PEERCRED)."""
        if uid not in self.paths:
            path = str(Path(tempfile.mkdtemp(prefix="fake-sb-")) / "http.sock")
            listener = listen_as(uid, path)
            self.servers.append(asyncio.create_task(serve_accepted(listener, self._serve)))
            self.paths[uid] = path
        return self.paths[uid]

    def close(self) -> None:
        for server in self.servers:
            server.cancel()

    async def _serve(self, reader, writer):
        self.opened += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.heads.append(head)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                answer = self.respond(head)
                if asyncio.iscoroutine(answer):
                    answer = await answer
                if answer is None:
                    return
                if answer == "hang":  # until the gateway hangs up
                    await reader.read()
                    return
                if isinstance(answer, tuple):  # (bytes,): answer, then hang up
                    writer.write(answer[0])
                    await writer.drain()
                    return
                writer.write(answer)
                await writer.drain()
        finally:
            self.closed_count += 1
            self.closed.set()
            writer.close()


@pytest.fixture
def fake(monkeypatch):
    sandboxes = []

    async def make(respond=None):
        sandbox = FakeSandbox(respond)
        sandboxes.append(sandbox)

        async def socket_path(self, spec):
            return await sandbox.path_for(spec.uid)

        monkeypatch.setattr(SandboxLinks, "socket_path", socket_path)
        monkeypatch.setattr(SandboxLinks, "ensure", socket_path)
        return sandbox

    yield make
    for sandbox in sandboxes:
        sandbox.close()


class Client:
    """Calls the gateway's ASGI app the way Daphne does."""

    def __init__(self, stack, appspace):
        self.stack = stack
        self.appspace = appspace

    def scope(self, method, path, headers=(), query=b""):
        host = f"{self.appspace.subdomain}.localhost:{self.stack.port}".encode()
        return {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "scheme": "http",
            "http_version": "1.1",
            "headers": [(b"host", host), *headers],
            "appspace_subdomain": self.appspace.subdomain,
        }

    async def request(
        self,
        method="GET",
        path="/echo",
        headers=(),
        body=b"",
        *,
        disconnect: asyncio.Event | None = None,
    ):
        events: asyncio.Queue = asyncio.Queue()
        events.put_nowait({"type": "http.request", "body": body, "more_body": False})
        sent = []

        async def receive():
            message = await events.get()
            return message

        async def send(message):
            sent.append(message)

        task = asyncio.create_task(gateway_http(self.scope(method, path, headers), receive, send))
        if disconnect is not None:
            await disconnect.wait()
            events.put_nowait({"type": "http.disconnect"})
        await asyncio.wait_for(task, 10)
        start = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], dict(start["headers"]), body, sent


def cookie(key: str) -> tuple[bytes, bytes]:
    return (b"cookie", f"app=1; ds_panel=p; ds_appspace={key}; ds_csrf=c".encode())


async def test_the_sandbox_gets_exactly_the_hosts_identity_headers(stack, fake):
    sandbox = await fake()
    key = await db(appspace_session_create, user=stack.bob, appspace=stack.main)
    client = Client(stack, stack.main)
    forged = [
        (b"x-dropserver-user-id", b"forged"),
        (b"x-dropserver-route", b"9"),
        (b"x-dropserver-user-permissions", b'["admin"]'),
        (b"x-dropserver-host", b"evil"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"),
    ]
    status, _, body, _ = await client.request("GET", "/items/caf%C3%A9", [cookie(key), *forged])
    assert (status, body) == (200, b"ok")
    head = sandbox.heads[-1].decode("latin-1")
    lines = head.split("\r\n")
    assert lines[0] == "GET /items/caf%C3%A9 HTTP/1.1"
    headers = [line.split(": ", 1) for line in lines[1:] if line]
    ours = {name: value for name, value in headers if name.startswith("x-dropserver-")}
    assert len([n for n, _ in headers if n.startswith("x-dropserver-")]) == len(ours) == 7
    assert ours == {
        "x-dropserver-host": f"{stack.main.subdomain}.localhost:{stack.port}",
        "x-dropserver-scheme": "http",
        "x-dropserver-route": "5",
        "x-dropserver-params": '{"id":"caf\\u00e9"}',
        "x-dropserver-user-id": str(stack.bob.public_id),
        "x-dropserver-user-name": "Bob%20%C3%9Cn%C3%AFcode",
        "x-dropserver-user-permissions": '["edit"]',
    }
    names = [name for name, _ in headers]
    assert "cookie" in names and dict(headers)["cookie"] == "app=1"
    for gone in ("x-forwarded-for", "x-hop", "connection"):
        assert gone not in names
    assert names.count("host") == 1
    assert "forged" not in head and "evil" not in head and "admin" not in head


async def test_connections_are_reused_after_complete_responses_only(stack, fake):
    sandbox = await fake()
    client = Client(stack, stack.main)
    for _ in range(3):
        assert (await client.request())[0] == 200
    assert sandbox.opened == 1
    assert runtime().pool.idle_count(sandbox.path) == 1


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", 502),
        (b"HTTP/1.1 200 OK\r\nfolded: a\r\n b\r\ncontent-length: 0\r\n\r\n", 502),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok", 502),
        (b"HTTP/1.1 99 Weird\r\ncontent-length: 0\r\n\r\n", 502),
        (b"NOT HTTP\r\n\r\n", 502),
        (b"HTTP/1.1 101 Switching\r\n\r\n", 502),
        ((b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",), 200),  # cut short
        (None, 502),  # closed without answering
    ],
)
async def test_bad_answers_are_502_and_the_connection_is_dropped(stack, fake, answer, status):
    sandbox = await fake(lambda head: answer)
    got, headers, body, sent = await Client(stack, stack.main).request()
    assert got == status
    if status == 502:
        assert b"failed to answer" in body
        assert b"content-security-policy" in headers
    else:
        assert sent[-1].get("more_body", False) is False  # ended (no way to abort here)
    await asyncio.wait_for(sandbox.closed.wait(), 5)
    assert runtime().pool.idle_count(sandbox.path) == 0


async def test_chunked_and_interim_responses_are_relayed(stack, fake):
    answer = (
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nx-app: 1\r\n"
        b"access-control-allow-origin: *\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: x\r\n\r\n"
    )
    sandbox = await fake(lambda head: answer)
    status, headers, body, sent = await Client(stack, stack.main).request()
    assert (status, body) == (201, b"abcde")
    assert headers[b"x-app"] == b"1"
    assert b"access-control-allow-origin" not in headers
    assert b"content-length" not in headers
    assert runtime().pool.idle_count(sandbox.path) == 1  # read to its exact end: reusable


async def test_a_client_disconnect_closes_the_upstream_connection(stack, fake):
    arrived = asyncio.Event()

    def never(head):
        arrived.set()
        return "hang"

    sandbox = await fake(never)
    status_task = asyncio.create_task(Client(stack, stack.main).request(disconnect=arrived))
    await asyncio.wait_for(sandbox.closed.wait(), 3)  # well before the 60 s timeouts
    with pytest.raises(asyncio.CancelledError):
        await status_task
    assert runtime().pool.idle_count(sandbox.path) == 0


async def test_removing_a_user_locks_them_out_at_once_in_this_process(stack, fake):
    await fake()
    appspace = await db(stack.appspace, members={stack.carol: []})
    key = await db(appspace_session_create, user=stack.carol, appspace=appspace)
    client = Client(stack, appspace)
    assert (await client.request("GET", "/user", [cookie(key)]))[0] == 200
    await db(lambda: AppspaceUser.objects.filter(appspace=appspace, user=stack.carol).delete())
    assert (await client.request("GET", "/user", [cookie(key)]))[0] == 302  # no TTL wait


async def test_revoking_sessions_logs_out_at_once_in_this_process(stack, fake):
    await fake()
    key = await db(appspace_session_create, user=stack.bob, appspace=stack.main)
    client = Client(stack, stack.main)
    assert (await client.request("GET", "/user", [cookie(key)]))[0] == 200
    await db(appspace_sessions_revoke, appspace=stack.main, user=stack.bob)
    assert (await client.request("GET", "/user", [cookie(key)]))[0] == 302


async def test_a_status_change_applies_at_once_in_this_process(stack, fake):
    await fake()
    appspace = await db(stack.appspace)
    client = Client(stack, appspace)
    assert (await client.request())[0] == 200
    appspace.status = "paused"
    await db(appspace.save)
    status, _, body, _ = await client.request()
    assert status == 503
    assert b"paused" in body


async def test_a_load_that_raced_an_invalidation_is_not_cached():
    release = asyncio.Event()
    calls = []

    def loader(key):
        calls.append(key)
        return len(calls)

    cache = gateway_config.LoadingCache("test", loader, ttl=lambda: 60)
    original = cache._loader

    async def slow(key):
        await release.wait()
        return await original(key)

    cache._loader = slow
    first = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0)
    cache.invalidate("k")  # the data changed while the load was in flight
    release.set()
    assert await first == 1  # the request that was already waiting gets its answer...
    assert await cache.get("k") == 2  # ...but it was never cached


async def test_a_websocket_client_that_floods_a_slow_sandbox_is_closed(stack, monkeypatch):
    path = str(Path(tempfile.mkdtemp(prefix="fake-ws-")) / "ws.sock")
    server = websocket_server_as(stack.main.sandbox_uid, path)  # accepts, never reads
    try:

        async def socket_path(self, spec):
            return path

        monkeypatch.setattr(SandboxLinks, "socket_path", socket_path)
        events: asyncio.Queue = asyncio.Queue()
        events.put_nowait({"type": "websocket.connect"})
        for _ in range(200):
            events.put_nowait({"type": "websocket.receive", "bytes": b"x" * 60_000})
        sent = []

        async def send(message):
            sent.append(message)

        host = f"{stack.main.subdomain}.localhost:{stack.port}".encode()
        scope = {
            "type": "websocket",
            "path": "/ws",
            "raw_path": b"/ws",
            "query_string": b"",
            "headers": [(b"host", host)],
            "subprotocols": [],
            "appspace_subdomain": stack.main.subdomain,
        }
        # Far less than the sandbox would take to drain: the backlog cap closes it.
        await asyncio.wait_for(gateway_websocket(scope, events.get, send), 5)
    finally:
        server.kill()
        server.wait()
    assert sent[0]["type"] == "websocket.accept"
    assert sent[-1] == {"type": "websocket.close", "code": 1008}
    assert events.qsize() > 0  # it stopped reading the browser once the cap was hit


async def test_a_permission_change_applies_at_once_in_this_process(stack, fake):
    await fake()
    appspace = await db(stack.appspace, members={stack.carol: []})
    key = await db(appspace_session_create, user=stack.carol, appspace=appspace)
    client = Client(stack, appspace)
    assert (await client.request("GET", "/edit", [cookie(key)]))[0] == 403
    member = await db(AppspaceUser.objects.get, appspace=appspace, user=stack.carol)
    member.permissions = ["edit"]
    await db(member.save)
    assert (await client.request("GET", "/edit", [cookie(key)]))[0] == 200


async def test_a_sandbox_that_accepts_no_connections_is_busy(stack, settings, monkeypatch):
    import socket

    settings.DS_GATEWAY_CONNECT_TIMEOUT = 0.3
    path = str(Path(tempfile.mkdtemp(prefix="fake-full-")) / "http.sock")
    listener = listen_as(stack.main.sandbox_uid, path, backlog=0)  # never accepts: full at once
    filler = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(path)
            filler.append(s)

        async def socket_path(self, spec):
            return path

        monkeypatch.setattr(SandboxLinks, "socket_path", socket_path)
        started = asyncio.get_running_loop().time()
        status, headers, body, _ = await Client(stack, stack.main).request()
        assert status in (503, 504)  # found out on the first write, or by the connect timeout
        assert headers.get(b"retry-after") == b"5" or b"did not answer in time" in body
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        for s in filler:
            s.close()
        listener.close()


async def test_two_host_headers_are_a_bad_request(stack, fake):
    sandbox = await fake()
    client = Client(stack, stack.main)
    status, _, _, _ = await client.request(headers=[(b"host", b"evil.example")])
    assert status == 400
    assert not sandbox.heads
