"""The proxy through the real stack: bodies both ways, caps, timeouts, disconnects, crashes.

Upstream connections are counted from the host: the unix sockets Daphne holds open."""

import contextlib
import hashlib
import http.client
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.gateway.conftest import deno_pid, wait_for

pytestmark = pytest.mark.sandbox

MAX_BODY = 1024 * 1024  # DS_GATEWAY_MAX_BODY_BYTES of the test Daphne


def unix_sockets(pid: int) -> int:
    """How many unix sockets process `pid` holds (its upstream connections, its supervisor
    connection), read from /proc."""
    unix = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        unix.add(line.split()[6])
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in unix:
            count += 1
    return count


def raw(stack, appspace, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", stack.port), timeout=20) as s:
        s.sendall(request)
        response = http.client.HTTPResponse(s)
        response.begin()
        return response.status, response.read()


def head(stack, appspace, method: str, path: str, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {stack.host(appspace)}:{stack.port}\r\n{extra}\r\n"
    ).encode()


def test_request_bodies_reach_the_app_intact(stack):
    body = os.urandom(700 * 1024)
    response = stack.browser().post(stack.url(stack.main, "/echo"), body)
    assert response.status == 200
    seen = response.json()
    assert (seen["length"], seen["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_chunked_request_bodies_are_streamed(stack):
    parts = [os.urandom(40_000) for _ in range(5)]
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    status, body = raw(
        stack,
        stack.main,
        head(stack, stack.main, "POST", "/echo", "Transfer-Encoding: chunked\r\n") + chunks,
    )
    assert status == 200
    import json

    seen = json.loads(body)
    whole = b"".join(parts)
    assert (seen["length"], seen["sha256"]) == (len(whole), hashlib.sha256(whole).hexdigest())


def test_oversize_bodies_get_413(stack):
    browser = stack.browser()
    response = browser.post(stack.url(stack.main, "/echo"), b"x" * (MAX_BODY + 1))
    assert response.status == 413
    assert b"too large" in response.body
    chunk = b"y" * 65536
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for _ in range(17)) + b"0\r\n\r\n"
    status, body = raw(
        stack,
        stack.main,
        head(stack, stack.main, "POST", "/echo", "Transfer-Encoding: chunked\r\n") + chunks,
    )
    assert status == 413
    assert browser.post(stack.url(stack.main, "/echo"), b"x" * MAX_BODY).status == 200


def _answer_without_sending_a_body(stack, host: str, length: int) -> tuple[int, bytes]:
    """POST with a declared body that is never sent: only a server that refuses it from the
    headers answers (one that reads it first waits for bytes that never come)."""
    request = (f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
        s.sendall(request)
        response = http.client.HTTPResponse(s)
        response.begin()
        return response.status, response.read()


def test_a_body_declared_too_large_is_refused_before_daphne_stores_it(stack, settings):
    appspace_host = f"{stack.host(stack.main)}:{stack.port}"
    assert _answer_without_sending_a_body(stack, appspace_host, MAX_BODY + 1) == (
        413,
        b"The request is too large.\n",
    )
    # The panel takes up to its largest upload (plus the form around it); unknown hosts
    # only ever get a bare 404, so a body is refused early there too.
    panel_max = max(settings.DS_APP_MAX_PACKAGE_MB, settings.DS_BACKUP_MAX_UPLOAD_MB) * 1024 * 1024
    panel_host = f"{settings.DS_PANEL_HOST}:{stack.port}"
    assert _answer_without_sending_a_body(stack, panel_host, panel_max * 2)[0] == 413
    assert _answer_without_sending_a_body(stack, "nowhere.example", 65 * 1024)[0] == 413


def test_a_chunked_body_is_refused_once_it_passes_the_cap(stack):
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
        s.sendall(head(stack, stack.main, "POST", "/echo", "Transfer-Encoding: chunked\r\n"))
        chunk = b"z" * 65536
        sent = 0
        with contextlib.suppress(OSError):  # the server may stop reading once it answered
            while sent <= MAX_BODY + len(chunk):
                s.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        # The answer came while the body was still "in flight" (no final chunk was sent).
        response = http.client.HTTPResponse(s)
        response.begin()
        assert response.status == 413
        assert response.getheader("connection") == "close"
    # The next request on a new connection is served as usual.
    assert stack.browser().post(stack.url(stack.main, "/echo"), b"x" * 10).status == 200


def test_a_slow_app_gets_504_and_its_connection_is_freed(stack):
    appspace = stack.appspace()
    browser = stack.browser()
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=20)
    assert browser.get(stack.url(appspace, "/"), connection=conn).status == 200
    before = unix_sockets(stack.daphne.pid)
    started = time.monotonic()
    response = browser.get(stack.url(appspace, "/hang"), connection=conn)
    took = time.monotonic() - started
    assert response.status == 504
    assert b"did not answer in time" in response.body
    assert 1.9 < took < 4  # DS_GATEWAY_FIRST_BYTE_TIMEOUT=2
    # The upstream connection it used was closed, not put back in the pool...
    wait_for(lambda: unix_sockets(stack.daphne.pid) == before - 1, timeout=2)
    # ...and the browser's own connection is free for the next request.
    assert browser.get(stack.url(appspace, "/"), connection=conn).body == b"home"
    conn.close()


def test_a_client_that_disconnects_cancels_its_upstream_request(stack):
    appspace = stack.appspace()
    browser = stack.browser()
    assert browser.get(stack.url(appspace, "/")).status == 200
    before = unix_sockets(stack.daphne.pid)
    client = socket.create_connection(("127.0.0.1", stack.port))
    client.sendall(head(stack, appspace, "GET", "/hang"))
    # Another request opens a second upstream connection while /hang holds the first.
    wait_for(lambda: browser.get(stack.url(appspace, "/hanging")).json()["hanging"] == 1)
    assert unix_sockets(stack.daphne.pid) == before + 1
    closed = time.monotonic()
    client.close()
    wait_for(lambda: unix_sockets(stack.daphne.pid) == before, timeout=3)
    assert time.monotonic() - closed < 1.5  # the disconnect did it, not the 2 s timeout


def test_a_sandbox_killed_mid_request_gives_502_and_the_next_request_is_served(stack):
    appspace = stack.appspace()
    browser = stack.browser()
    assert browser.get(stack.url(appspace, "/")).status == 200
    pid = deno_pid(stack, appspace)
    result = {}
    hanging = threading.Thread(
        target=lambda: result.update(r=stack.browser().get(stack.url(appspace, "/hang")))
    )
    hanging.start()
    wait_for(lambda: browser.get(stack.url(appspace, "/hanging")).json()["hanging"] == 1)
    os.kill(pid, signal.SIGKILL)
    hanging.join(10)
    response = result["r"]
    assert response.status == 502
    assert b"failed to answer" in response.body
    for detail in (b"sock", b"deno", b"Error", b"upstream", str(appspace.public_id).encode()):
        assert detail not in response.body
    served = browser.get(stack.url(appspace, "/"))
    assert served.status == 200, served.text[:300]
    assert served.body == b"home"
    assert deno_pid(stack, appspace) != pid


def test_a_client_that_reads_slowly_slows_the_app_down(stack):
    """Backpressure: the gateway stops reading the sandbox while the client is not reading,
    instead of buffering the app's whole response in Daphne."""
    appspace = stack.appspace()
    browser = stack.browser()
    chunks = 1600  # 100 MiB, if nothing held the app back
    client = socket.create_connection(("127.0.0.1", stack.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.sendall(head(stack, appspace, "GET", f"/stream-big?n={chunks}"))
    assert client.recv(1024).startswith(b"HTTP/1.1 200")

    def pulled() -> int:
        return browser.get(stack.url(appspace, "/pulled")).json()["pulled"]

    # Let it run until the app stops being asked for more.
    last = -1
    deadline = time.monotonic() + 10
    while (now := pulled()) != last and time.monotonic() < deadline:
        last = now
        time.sleep(0.5)
    assert 0 < now < chunks // 4, now  # at most a few MiB in buffers on the way
    # Reading on lets the app go on to the end.
    client.settimeout(20)
    received = 0
    while data := client.recv(1 << 20):
        received += len(data)
        if data.endswith(b"0\r\n\r\n"):
            break
    client.close()
    assert pulled() == chunks
    assert received > chunks * 65536
