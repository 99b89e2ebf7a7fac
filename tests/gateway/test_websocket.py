"""WebSockets through Daphne and the gateway to the sandbox: auth, origin, echo both ways,
close codes and message size caps."""

import json
import socket

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.sandbox


def ws(stack, appspace, path="/ws", *, browser=None, origin="own", **kwargs):
    host = f"{stack.host(appspace)}:{stack.port}"
    headers = {}
    if browser is not None and browser.cookies.get(stack.host(appspace)):
        jar = browser.cookies[stack.host(appspace)]
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
    if origin == "own":
        origin = f"http://{host}"
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    return connect(
        f"ws://{host}{path}",
        sock=sock,
        origin=origin,
        additional_headers=headers,
        open_timeout=10,
        close_timeout=5,
        max_size=2**20,
        **kwargs,
    )


def test_it_echoes_text_and_binary(stack):
    with ws(stack, stack.main) as conn:
        conn.send("hello")
        assert conn.recv(timeout=10) == "hello"
        conn.send(b"\x00\x01binary\xff")
        assert conn.recv(timeout=10) == b"\x00\x01binary\xff"
        payload = "é" * 20_000  # 40 KB of UTF-8, under the 64 KiB cap
        conn.send(payload)
        assert conn.recv(timeout=10) == payload
        conn.send("who")
        assert json.loads(conn.recv(timeout=10)) is None  # anonymous on a public route


def test_the_apps_close_code_reaches_the_browser(stack):
    with ws(stack, stack.main) as conn:
        conn.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=10)
    assert closed.value.rcvd.code == 4001


def test_user_routes_need_a_session(stack):
    with pytest.raises(InvalidStatus) as refused:
        ws(stack, stack.main, "/ws-user")
    assert refused.value.response.status_code == 403
    browser = stack.enter(stack.main, stack.bob)
    with ws(stack, stack.main, "/ws-user", browser=browser) as conn:
        assert json.loads(conn.recv(timeout=10))["id"] == str(stack.bob.public_id)


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://other.localhost"])
def test_a_foreign_origin_cannot_open_a_socket(stack, origin):
    browser = stack.enter(stack.main, stack.bob)
    with pytest.raises(InvalidStatus) as refused:
        ws(stack, stack.main, "/ws-user", browser=browser, origin=origin)
    assert refused.value.response.status_code == 403


def test_unknown_and_static_routes_are_refused(stack):
    for path in ("/nope", "/assets/app.js", "/.dropserver/login"):
        with pytest.raises(InvalidStatus):
            ws(stack, stack.main, path)


def test_oversize_messages_close_with_1009_either_way(stack):
    with ws(stack, stack.main) as conn:
        conn.send(b"x" * (100 * 1024))  # Daphne takes 1 MiB; the gateway's cap is 64 KiB
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    with ws(stack, stack.main) as conn:
        conn.send("big:100000")  # the app answers with more than the cap
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
