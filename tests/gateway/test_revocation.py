"""Revocation reaches open connections: a member holds a WebSocket and a long streaming
response open through the real gateway; the product withdraws their access one of six ways
(through the panel's views, in this process, so the gateway in Daphne's process only learns
of it from the database); both must end within DS_GATEWAY_CACHE_TTL, and a new connection is
refused.

The clock here is the promise being tested (docs/security.md, class 5), not a sleep: the
test waits on the connections themselves and fails only if they outlive the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from django.urls import reverse
from websockets.asyncio.server import unix_serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.models import User
from accounts.services import users_deactivate
from appspaces.gateway.asgi import gateway_websocket
from appspaces.gateway.state import connections
from appspaces.gateway.state.runtime import SandboxLinks
from appspaces.models import AllowlistEntry, AppspaceUser
from appspaces.sharing.sessions import appspace_session_create, user_appspace_sessions_revoke
from tests.conftest import make_user
from tests.gateway.browser import Browser
from tests.gateway.conftest import Stack, start_daphne, stop
from tests.sandbox.fixtures import free_port

pytestmark = pytest.mark.sandbox

TTL = 2.0  # DS_GATEWAY_CACHE_TTL of this module's Daphne


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[Stack]:
    """The package's stack, served by a Daphne of its own with a TTL of TTL seconds."""
    port = free_port()
    log = stack.daphne_log.with_name("daphne-revocation.log")
    daphne = start_daphne(port, stack.daphne_log.parent, log, DS_GATEWAY_CACHE_TTL=str(TTL))
    try:
        yield dataclasses.replace(stack, port=port, daphne=daphne, daphne_log=log)
    finally:
        stop(daphne)


@pytest.fixture
def no_errors(gateway: Stack) -> Iterator[None]:
    start = gateway.daphne_log.stat().st_size
    yield
    with open(gateway.daphne_log, "rb") as log:
        log.seek(start)
        new = log.read().decode(errors="replace")
    assert "Traceback" not in new, new[-4000:]


@pytest.fixture
def sockets() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as opened:
        yield opened


def panel_as(user) -> Client:
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    client.force_login(user)
    return client


def open_socket(gateway: Stack, space, cookie: str):
    host = f"{gateway.host(space)}:{gateway.port}"
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    return connect(
        f"ws://{host}/ws-edit",
        sock=sock,
        origin=f"http://{host}",
        additional_headers={"Cookie": f"ds_appspace={cookie}"},
        open_timeout=10,
        close_timeout=5,
    )


class Stream:
    """A GET /stream-edit read in a thread, which notes when and how the response ended."""

    def __init__(self, gateway: Stack, space, cookie: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        self.conn.request(
            "GET",
            "/stream-edit",
            headers={
                "Host": f"{gateway.host(space)}:{gateway.port}",
                "Cookie": f"ds_appspace={cookie}",
            },
        )
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()[:500]
        self.body = self.response.read1(4096)
        assert self.body.startswith(b"tick0;"), self.body
        self.ended_at: float | None = None
        self.outcome = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := self.response.read1(65536):
                self.body += chunk
            self.outcome = "complete"
        except (http.client.HTTPException, OSError) as exc:
            self.outcome = f"aborted ({type(exc).__name__})"
        self.ended_at = time.monotonic()

    def close(self) -> None:
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)  # ends the reader's read first
        self.thread.join(5)
        self.conn.close()


def revoke(kind: str, gateway: Stack, space, user, user_panel: Client) -> None:
    """Withdraw `user`'s access to `space` the way the product does it."""
    owner = panel_as(gateway.alice)
    member = AppspaceUser.objects.get(appspace=space, user=user)
    if kind == "removed":
        url = reverse("appspace_user_remove", args=[space.public_id, member.public_id])
        response = owner.post(url)
    elif kind == "permission-withdrawn":
        url = reverse("appspace_user_edit", args=[space.public_id, member.public_id])
        response = owner.post(url, {"display_name": member.display_name, "permissions": []})
    elif kind == "signed-out":
        response = user_panel.post(reverse("account_logout"))
    elif kind == "deactivated":
        admin, _ = User.objects.get_or_create(
            email="revocation-admin@example.com", defaults={"is_staff": True, "is_superuser": True}
        )
        response = panel_as(admin).post(
            reverse("admin:accounts_user_changelist"),
            {"action": "deactivate", "_selected_action": [user.pk]},
        )
        assert not User.objects.get(pk=user.pk).is_active
    elif kind == "appspace-paused":
        response = owner.post(reverse("appspace_pause", args=[space.public_id]))
    elif kind == "appspace-deleted":
        response = owner.post(
            reverse("appspace_delete", args=[space.public_id]),
            {"confirm": space.subdomain, "backups": "delete"},
        )
    else:
        raise AssertionError(kind)
    assert response.status_code == 302, response.content[:1000]


KINDS = [
    "removed",
    "permission-withdrawn",
    "signed-out",
    "deactivated",
    "appspace-paused",
    "appspace-deleted",
]


@pytest.mark.parametrize("kind", KINDS)
def test_revocation_closes_open_sockets_and_requests(gateway, no_errors, sockets, kind):
    user = make_user(f"revoked-{kind}@example.com", display_name="Revoked")
    space = gateway.appspace(members={user: ["edit"]})

    # The user's browser: logged in to the panel, then to the appspace through the redirects.
    user_panel = panel_as(user)
    browser = Browser(gateway.port)
    browser.cookies[settings.DS_PANEL_HOST] = {
        settings.SESSION_COOKIE_NAME: user_panel.cookies[settings.SESSION_COOKIE_NAME].value
    }
    entered = browser.get(gateway.url(space, "/edit"), follow=True)
    assert entered.status == 200, entered.text[:500]
    cookie = browser.cookies[gateway.host(space)]["ds_appspace"]

    sock = sockets.enter_context(open_socket(gateway, space, cookie))
    sock.send("still here?")
    assert sock.recv(timeout=10) == "still here?"
    stream = Stream(gateway, space, cookie)
    try:
        revoke(kind, gateway, space, user, user_panel)
        changed = time.monotonic()
        deadline = changed + TTL

        with pytest.raises(ConnectionClosed) as closed:
            while True:  # nothing arrives unless we send: the first thing is the close
                sock.recv(timeout=max(0.0, deadline - time.monotonic()))
        socket_closed = time.monotonic()
        stream.thread.join(max(0.0, deadline - time.monotonic()))
        ended_at, outcome, body = stream.ended_at, stream.outcome, stream.body
    finally:
        stream.close()

    assert socket_closed <= deadline, f"the socket closed {socket_closed - changed:.2f}s after"
    if kind not in ("appspace-paused", "appspace-deleted"):  # those also stop the sandbox
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert ended_at is not None and ended_at <= deadline, "still streaming"
    assert outcome.startswith("aborted"), outcome
    assert b"done" not in body

    # and, once the TTL is over, nothing new opens
    threading.Event().wait(max(0.0, deadline - time.monotonic()))
    with pytest.raises(InvalidStatus):
        open_socket(gateway, space, cookie)
    again = Browser(gateway.port)
    again.cookies[gateway.host(space)] = {"ds_appspace": cookie}
    assert again.get(gateway.url(space, "/stream-edit")).status in (302, 403, 404, 503)


def test_an_unrelated_change_leaves_open_connections_alone(gateway, no_errors, sockets):
    """Re-admission closes only what lost access: a new permission, another member's
    removal and a re-read every TTL/2 keep the connection open."""
    user = make_user("revocation-kept@example.com", display_name="Kept")
    other = make_user("revocation-other@example.com", display_name="Other")
    space = gateway.appspace(members={user: ["edit"], other: []})
    browser = gateway.browser(user)
    assert browser.get(gateway.url(space, "/edit"), follow=True).status == 200
    cookie = browser.cookies[gateway.host(space)]["ds_appspace"]
    sock = sockets.enter_context(open_socket(gateway, space, cookie))
    stream = Stream(gateway, space, cookie)
    try:
        owner = panel_as(gateway.alice)
        member = AppspaceUser.objects.get(appspace=space, user=user)
        owner.post(
            reverse("appspace_user_edit", args=[space.public_id, member.public_id]),
            {"display_name": "Kept", "permissions": ["edit", "admin"]},
        )
        gone = AppspaceUser.objects.get(appspace=space, user=other)
        owner.post(reverse("appspace_user_remove", args=[space.public_id, gone.public_id]))
        # Past several re-admissions: the socket still echoes, the stream still flows.
        until = time.monotonic() + 2 * TTL
        while time.monotonic() < until:
            sock.send("ping")
            assert sock.recv(timeout=5) == "ping"
            threading.Event().wait(0.1)
        assert stream.ended_at is None
    finally:
        stream.close()


# --- Another process, told through the channel layer: long before the TTL ------------------

BROADCAST_TTL = 600.0  # the periodic re-check cannot be what closes the socket here
BROADCAST_DEADLINE = 5.0  # the message is one Redis round trip; this leaves room for load


@pytest.fixture(scope="module")
def slow_gateway(stack: Stack) -> Iterator[Stack]:
    """The stack served by a Daphne whose caches would keep stale facts for 10 minutes."""
    port = free_port()
    log = stack.daphne_log.with_name("daphne-broadcast.log")
    daphne = start_daphne(
        port, stack.daphne_log.parent, log, DS_GATEWAY_CACHE_TTL=str(BROADCAST_TTL)
    )
    try:
        yield dataclasses.replace(stack, port=port, daphne=daphne, daphne_log=log)
    finally:
        stop(daphne)


@pytest.mark.parametrize("kind", ["removed", "deactivated"])
def test_another_process_hears_of_a_revocation_at_once(slow_gateway, sockets, kind):
    """The change is made here (the panel's view in the test process); the gateway in
    Daphne's process learns of it through Redis, not from its 10-minute cache."""
    assert settings.REDIS_URL, "the suite runs with this machine's Redis"
    gateway = slow_gateway
    user = make_user(f"broadcast-{kind}@example.com", display_name="Told")
    space = gateway.appspace(members={user: ["edit"]})
    user_panel = panel_as(user)
    browser = Browser(gateway.port)
    browser.cookies[settings.DS_PANEL_HOST] = {
        settings.SESSION_COOKIE_NAME: user_panel.cookies[settings.SESSION_COOKIE_NAME].value
    }
    assert browser.get(gateway.url(space, "/edit"), follow=True).status == 200
    cookie = browser.cookies[gateway.host(space)]["ds_appspace"]
    sock = sockets.enter_context(open_socket(gateway, space, cookie))
    sock.send("still here?")
    assert sock.recv(timeout=10) == "still here?"

    revoke(kind, gateway, space, user, user_panel)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            sock.recv(timeout=BROADCAST_DEADLINE)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # and the cached facts went with it: a new connection is refused at once
    with pytest.raises(InvalidStatus):
        open_socket(gateway, space, cookie)


def test_a_change_to_an_allowlist_reaches_another_process_at_once(slow_gateway):
    """Not only revocations: any change the gateway caches (here the appspace's allowlist,
    which shapes its CSP) is dropped in the other process as soon as it is committed."""
    gateway = slow_gateway
    space = gateway.appspace()
    browser = gateway.browser(gateway.alice)
    first = browser.get(gateway.url(space, "/edit"), follow=True)
    assert first.status == 200
    origin = "https://fonts.example.net"
    assert origin not in (first.header("content-security-policy") or "")
    space.allowlist.create(kind=AllowlistEntry.Kind.BROWSER, value=origin)
    deadline = time.monotonic() + BROADCAST_DEADLINE
    while True:
        csp = browser.get(gateway.url(space, "/edit")).header("content-security-policy") or ""
        if origin in csp or time.monotonic() > deadline:
            break
        threading.Event().wait(0.1)
    assert origin in csp, csp


# --- In the gateway's own process: at once, without waiting for the periodic re-check ------


async def _db(function, *args, **kwargs):
    return await database_sync_to_async(function, thread_sensitive=False)(*args, **kwargs)


def _withdraw_in_process(kind: str, space, user) -> None:
    if kind == "removed":
        AppspaceUser.objects.filter(appspace=space, user=user).delete()
    elif kind == "deactivated":
        users_deactivate(users=[user])  # a bulk UPDATE: only access_changed tells the gateway
    elif kind == "signed-out":
        user_appspace_sessions_revoke(user=user)  # what panel logout calls
    else:
        raise AssertionError(kind)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["removed", "deactivated", "signed-out"])
async def test_in_the_gateways_process_revocation_is_immediate(stack, settings, monkeypatch, kind):
    settings.DS_GATEWAY_CACHE_TTL = 600  # the periodic re-check would come far too late
    user = await _db(make_user, f"revoked-now-{kind}@example.com")
    space = await _db(stack.appspace, members={user: ["edit"]})
    key = await _db(appspace_session_create, user=user, appspace=space)
    path = str(Path(tempfile.mkdtemp(prefix="revoke-ws-")) / "ws.sock")

    async def echo(connection):
        async for message in connection:
            await connection.send(message)

    async with unix_serve(echo, path):

        async def socket_path(self, spec):
            return path

        monkeypatch.setattr(SandboxLinks, "socket_path", socket_path)
        events: asyncio.Queue = asyncio.Queue()
        events.put_nowait({"type": "websocket.connect"})
        events.put_nowait({"type": "websocket.receive", "text": "hello"})
        sent: list[dict] = []
        echoed = asyncio.Event()

        async def send(message):
            sent.append(message)
            if message.get("text") == "hello":
                echoed.set()

        host = f"{space.subdomain}.localhost:{stack.port}".encode()
        scope = {
            "type": "websocket",
            "path": "/ws-edit",
            "raw_path": b"/ws-edit",
            "query_string": b"",
            "headers": [(b"host", host), (b"cookie", f"ds_appspace={key}".encode())],
            "subprotocols": [],
            "appspace_subdomain": space.subdomain,
        }
        relay = asyncio.create_task(gateway_websocket(scope, events.get, send))
        await asyncio.wait_for(echoed.wait(), 10)
        assert connections.open_count() >= 1
        await _db(_withdraw_in_process, kind, space, user)
        await asyncio.wait_for(relay, 5)  # not 600 s: the change itself closed it
    assert sent[0]["type"] == "websocket.accept"
    assert sent[-1] == {"type": "websocket.close", "code": 1008}
