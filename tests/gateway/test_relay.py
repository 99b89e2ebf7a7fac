"""Appspaces that talk to each other (issue 16, part 3), through real sandboxes and the real
gateway: appspace A, whose owner allowlisted appspace B's host, reaches B through the relay
socket the supervisor serves and the platform's gateway, as an anonymous visitor, although
B's host (`*.localhost`) resolves to loopback. Everything else local stays refused: another
appspace, the gateway's port by address, the panel, another loopback listener (checked from
the host to have received nothing), and the relay itself refuses what the harness would never
send it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from appspaces.models import AllowlistEntry
from appspaces.network.approvals import allowlist_entry_add
from appspaces.network.blocked import blocked_connections_pull, blocked_rows
from appspaces.sandboxes import appspace_spec, parse_server_entry
from packages.allowlist import AllowlistError
from sandbox import layout
from tests.gateway.conftest import deno_pid

pytestmark = pytest.mark.sandbox


def outbound(stack, appspace, **query) -> dict:
    response = stack.browser().request(
        "POST",
        stack.url(appspace, "/outbound"),
        headers={"Content-Type": "application/json"},
        body=json.dumps(query).encode(),
    )
    assert response.status == 200, response.text
    return response.json()


def seen_lines(stack, appspace, token: str) -> list[dict]:
    """What reached B's app with `x-relay-test: token`, read from its log on the host."""
    log = Path(settings.DS_DATA_DIR) / "logs" / str(appspace.public_id) / "sandbox.log"
    if not log.exists():
        return []
    out = []
    for line in log.read_text(errors="replace").splitlines():
        _, _, text = line.partition("out| relay-seen ")
        if text:
            seen = json.loads(text)
            if seen["headers"].get("x-relay-test") == token:
                out.append(seen)
    return out


@pytest.fixture
def pair(stack):
    """A (alice's, allowlists B's host) and B (alice's; bob has "edit")."""
    b = stack.appspace(members={stack.bob: ["edit"]})
    a = stack.appspace()
    with override_settings(DS_PUBLIC_PORT=stack.port):
        entry = parse_server_entry(f"{stack.host(b)}:{stack.port}")
    assert entry.instance
    AllowlistEntry.objects.create(appspace=a, kind=AllowlistEntry.Kind.SERVER, value=str(entry))
    return a, b


def test_an_allowlisted_appspace_is_reached_as_an_anonymous_visitor(stack, pair):
    a, b = pair
    member = stack.enter(b, stack.bob, "/edit")  # a real session of B's, with "edit"
    session = member.cookies[stack.host(b)]["ds_appspace"]
    token = uuid.uuid4().hex
    forged = {
        "x-relay-test": token,
        "cookie": f"ds_appspace={session}",
        "x-forwarded-for": "203.0.113.9",
        "x-forwarded-host": settings.DS_PANEL_HOST,
        "forwarded": "for=203.0.113.9;proto=https",
        "x-real-ip": "203.0.113.9",
        "x-dropserver-user-id": str(stack.bob.public_id),
        "authorization": "Bearer issued-by-b",
    }

    got = outbound(stack, a, url=stack.url(b, "/echo?from=a"), headers=forged)
    assert got["status"] == 200, got
    echo = json.loads(got["body"])
    assert echo["user"] is None
    assert echo["url"] == stack.url(b, "/echo?from=a")
    # Checked from the host, in B's own log: the request came with no identity, no cookie, no
    # forwarded address; the credential the app chose to send arrived.
    (arrived,) = seen_lines(stack, b, token)
    headers = arrived["headers"]
    assert arrived["user"] is None
    assert headers["host"] == f"{stack.host(b)}:{stack.port}"
    assert headers["authorization"] == "Bearer issued-by-b"
    for name in ("cookie", "x-forwarded-for", "x-forwarded-host", "forwarded", "x-real-ip"):
        assert name not in headers, (name, headers)
    assert not any(name.startswith("x-dropserver-") for name in headers)

    # https:// of the same host goes the same way (the relay hands it to the gateway).
    got = outbound(stack, a, url=stack.url(b, "/echo").replace("http://", "https://"))
    assert got["status"] == 200 and json.loads(got["body"])["user"] is None, got

    # A body of known length arrives whole.
    got = outbound(stack, a, url=stack.url(b, "/echo"), method="POST", body="x" * 70_000)
    assert got["status"] == 200, got
    assert json.loads(got["body"])["length"] == 70_000

    # Routes that need a user or a permission answer as to any anonymous visitor: the way to
    # the panel's login, and the app never sees the request — even with B's session cookie.
    for path in ("/edit", "/user", "/nobody"):
        got = outbound(stack, a, url=stack.url(b, path), headers=forged)
        assert got["status"] == 302, (path, got)
        assert got["location"].startswith(stack.panel_url(f"/a/{b.subdomain}/open?")), got
    assert len(seen_lines(stack, b, token)) == 1
    # The same cookie from a browser is bob's: the session was real, the relay dropped it.
    assert json.loads(member.get(stack.url(b, "/edit")).text)["user"]["id"] == str(
        stack.bob.public_id
    )


def test_the_rest_stays_refused(stack, pair):
    a, b = pair
    c = stack.appspace()  # on this instance, not allowlisted by A's owner
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    other = listener.getsockname()[1]
    panel = f"{settings.DS_PANEL_HOST}:{stack.port}"
    try:
        for url in (
            stack.url(c, "/echo"),
            f"http://127.0.0.1:{stack.port}/",
            f"http://{panel}/",
            f"http://127.0.0.1:{other}/",
            f"http://localhost:{other}/",
        ):
            got = outbound(stack, a, url=url)
            assert "NotCapable" in got.get("error", ""), (url, got)
        # The owner sees the refused attempts: another appspace can be allowed with one click
        # (it would go through the relay), the panel and the addresses never.
        blocked_connections_pull(appspace=a)
        with override_settings(DS_PUBLIC_PORT=stack.port):
            rows = {(r["blocked"].host, r["blocked"].port): r for r in blocked_rows(a)}
        assert rows[(stack.host(c), stack.port)]["entry"] == f"{stack.host(c)}:{stack.port}"
        assert "panel" in rows[(settings.DS_PANEL_HOST, stack.port)]["refused"]
        assert rows[("127.0.0.1", stack.port)]["refused"]
        assert rows[("127.0.0.1", other)]["refused"]
        for target in (
            {"hostname": "127.0.0.1", "port": other},
            {"hostname": "127.0.0.1", "port": stack.port},
            # The allowlisted name itself, directly: refused (it is only reached by relay).
            {"hostname": stack.host(b), "port": stack.port},
        ):
            got = outbound(stack, a, connect=target)
            assert "error" in got, (target, got)

        # The relay socket by hand: only http:// requests to the allowlisted host pass.
        for raw in (
            f"GET {stack.url(c, '/echo')} HTTP/1.1\r\n\r\n",
            f"GET http://{panel}/ HTTP/1.1\r\n\r\n",
            f"GET http://127.0.0.1:{other}/ HTTP/1.1\r\n\r\n",
            f"GET http://127.0.0.1:{stack.port}/ HTTP/1.1\r\nHost: {stack.host(b)}\r\n\r\n",
            f"GET http://{stack.host(b)}:{other}/echo HTTP/1.1\r\n\r\n",
            f"CONNECT {stack.host(b)}:443 HTTP/1.1\r\nHost: {stack.host(b)}:443\r\n\r\n",
            f"GET /echo HTTP/1.1\r\nHost: {stack.host(b)}:{stack.port}\r\n\r\n",
        ):
            got = outbound(stack, a, raw=raw)["raw"]
            assert got.startswith("HTTP/1.1 403 "), (raw, got)
            assert "x-dropserver-relay: refused" in got
        chunked = (
            f"POST {stack.url(b, '/echo')} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n"
        )
        assert outbound(stack, a, raw=chunked)["raw"].startswith("HTTP/1.1 411 ")

        # Host is pinned, and one request per connection: nothing rides behind the first.
        token = uuid.uuid4().hex
        raw = (
            f"GET {stack.url(b, '/echo')} HTTP/1.1\r\nHost: {panel}\r\n"
            f"x-relay-test: {token}\r\nContent-Length: 0\r\n\r\n"
            f"GET http://{panel}/ HTTP/1.1\r\nHost: {panel}\r\n\r\n"
        )
        got = outbound(stack, a, raw=raw)["raw"]
        assert got.startswith("HTTP/1.1 200 "), got
        assert len(re.findall(r"(?m)^HTTP/1\.[01] \d{3} ", got)) == 1, got
        (arrived,) = seen_lines(stack, b, token)
        assert arrived["headers"]["host"] == f"{stack.host(b)}:{stack.port}"

        # From the host: the other listener never saw a connection.
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()

    # A has no network but its relay: its sandbox sits in a network namespace of its own.
    pid = deno_pid(stack, a)
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    with override_settings(DS_PUBLIC_PORT=stack.port):
        assert appspace_spec(a).allow_net == ()


def test_only_the_sandbox_may_use_its_relay(stack, pair):
    """Checked from the host: a process that is not the sandbox's uid (here root) gets no
    answer, and the socket is root's, the sandbox's group, 0660."""
    a, b = pair
    assert outbound(stack, a, url=stack.url(b, "/"))["status"] == 200
    path = layout.sandbox_relay_path(str(a.public_id))
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, a.sandbox_uid, 0o660)
    token = uuid.uuid4().hex
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        request = f"GET {stack.url(b, '/echo')} HTTP/1.1\r\nx-relay-test: {token}\r\n\r\n"
        try:
            sock.sendall(request.encode())
            answer = sock.recv(100)
        except (BrokenPipeError, ConnectionResetError):  # closed before or after our request
            answer = b""
    assert answer == b""
    assert outbound(stack, a, url=stack.url(b, "/"))["status"] == 200  # still serves A
    assert seen_lines(stack, b, token) == []


def test_a_sandbox_holds_at_most_sixteen_relay_connections(stack, pair):
    a, b = pair
    raw = f"GET {stack.url(b, '/')} HTTP/1.1\r\n\r\n"
    assert outbound(stack, a, raw=raw, hold=15)["raw"].startswith("HTTP/1.1 200 ")
    assert outbound(stack, a, raw=raw, hold=16)["raw"].startswith("HTTP/1.1 503 ")
    assert outbound(stack, a, raw=raw)["raw"].startswith("HTTP/1.1 200 ")  # freed again


def test_only_appspace_hosts_of_this_instance_are_allowlisted_this_way(stack, pair):
    a, b = pair
    for value in (
        settings.DS_PANEL_HOST,
        f"{settings.DS_PANEL_HOST}:{stack.port}",
        f"127.0.0.1:{stack.port}",
        f"*.{settings.DS_DOMAIN}",
        f"x.{stack.host(b)}",  # not an appspace host: two labels under the domain
        f"{stack.host(b)}:{stack.port + 1}",
    ):
        with override_settings(DS_PUBLIC_PORT=stack.port), pytest.raises(AllowlistError):
            allowlist_entry_add(appspace=a, kind=AllowlistEntry.Kind.SERVER, value=value)
    with override_settings(DS_PUBLIC_PORT=stack.port):
        spec = appspace_spec(a)
    assert spec.relay_hosts == (f"{stack.host(b)}:{stack.port}",)
    assert spec.allow_net == ()
