"""The TLS edge against a real ACME CA: Caddy (configured by dropserver_site/edge) obtains
certificates from Pebble on loopback for the panel and an existing appspace, refuses names the
ask endpoint does not know, redirects http to https and carries wss to a sandboxed app.

The stack (tests/gateway/conftest.py) provides the supervisor, the database rows and a real
appspace; this module adds a Daphne configured as `serve` runs it with DS_TLS=acme (loopback,
proxy headers trusted) and Caddy in front. Names are *.localhost; Pebble resolves every name to
127.0.0.1 through its DNS stub and validates on the edge's own (high) ports.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from django.conf import settings
from django.test import override_settings
from websockets.sync.client import connect

from appspaces.models import AllowlistEntry
from dropserver_site.edge import caddy
from dropserver_site.management.commands.serve import listen_socket, web_argv
from tests.gateway.conftest import GATEWAY_ENV, UID_BASE, _database_url, stop
from tests.sandbox.fixtures import REPO, free_port, poll
from tests.site.tls import (
    NOW,
    Pebble,
    client_context,
    http_get,
    https_get,
    self_signed,
    start_pebble,
)

pytestmark = pytest.mark.sandbox


@dataclass
class Edge:
    http_port: int
    https_port: int
    web_port: int
    pebble: Pebble
    root: Path  # Pebble's issuing root, what the test's TLS clients trust
    storage: Path
    log: Path
    caddy_argv: list[str]
    caddy_env: dict[str, str]
    processes: list[subprocess.Popen]

    def context(self) -> ssl.SSLContext:
        return client_context(self.root)

    def start_caddy(self) -> None:
        with open(self.log, "ab") as log:
            process = subprocess.Popen(
                self.caddy_argv, env=self.caddy_env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        _wait_listening(self.https_port, process, self.log)

    def restart_caddy(self) -> None:
        stop(self.processes.pop())
        self.start_caddy()


def _wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    def up() -> bool:
        assert process.poll() is None, log.read_text(errors="replace")[-4000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    poll(up, timeout=60, interval=0.05)


@pytest.fixture(scope="module")
def edge(stack, gateway_dir) -> Iterator[Edge]:
    work = Path(tempfile.mkdtemp(prefix="edge-", dir=gateway_dir))
    http_port, https_port, web_port = free_port(), free_port(), free_port()
    pebble = start_pebble(work, http_port=http_port, tls_port=https_port)
    tls_env = {
        "DS_TLS": "acme",
        "DS_ACME_DIRECTORY": pebble.directory,
        "DS_ACME_CA_ROOT": str(pebble.ca_root),
        "DS_ACME_EMAIL": "admin@example.com",
        "DS_PORT": str(http_port),
        "DS_HTTPS_PORT": str(https_port),
        "DS_WEB_PORT": str(web_port),
        "DS_BIND": "127.0.0.1",
    }
    processes: list[subprocess.Popen] = []
    listener = None
    try:
        with override_settings(
            DS_DATA_DIR=gateway_dir,  # as under serve: the edge beside the rest
            DS_TLS="acme",
            DS_TLS_ON=True,
            DS_TRUST_PROXY_HEADERS=True,
            DS_ACME_DIRECTORY=pebble.directory,
            DS_ACME_CA_ROOT=str(pebble.ca_root),
            DS_ACME_EMAIL="admin@example.com",
        ):
            listener = listen_socket("127.0.0.1", web_port)
            argv = web_argv(listener)
            config = caddy.write_config(
                http_port=http_port, https_port=https_port, web_port=web_port, bind="127.0.0.1"
            )
            caddy_argv, storage = caddy.caddy_argv(), caddy.storage_dir()
            caddy_env = caddy.caddy_env(dict(os.environ))
        assert "--proxy-headers" in argv
        web_log, edge_log = work / "daphne.log", work / "caddy.log"
        env = dict(
            os.environ,
            DS_DATA_DIR=str(gateway_dir),  # the stack's supervisor and appspaces
            DATABASE_URL=_database_url(),
            DS_SANDBOX_UID_BASE=str(UID_BASE),
            SECRET_KEY=settings.SECRET_KEY,
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            **GATEWAY_ENV,
            **tls_env,
        )
        with open(web_log, "wb") as log:
            processes.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(listener.fileno(),),
                )
            )
        _wait_listening(web_port, processes[-1], web_log)
        assert config.is_file()
        edge = Edge(
            http_port,
            https_port,
            web_port,
            pebble,
            _write(work / "pebble-root.pem", pebble.issuing_root()),
            storage,
            edge_log,
            caddy_argv,
            caddy_env,
            processes,
        )
        edge.start_caddy()
        yield edge
    finally:
        for process in reversed(processes):
            stop(process)
        if listener is not None:
            listener.close()
        pebble.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _issued_names(edge: Edge) -> set[str]:
    return {p.name for p in edge.storage.glob("certificates/*/*") if p.is_dir()}


def test_the_panel_and_an_appspace_get_certificates_that_verify(stack, edge):
    panel = https_get(edge.https_port, settings.DS_PANEL_HOST, "/readyz", edge.context())
    assert panel.status == 200, panel.body
    checks = json.loads(panel.body)["checks"]
    assert checks["supervisor"] == {"ok": True}
    assert checks["certificate"]["state"] == "valid"
    issuer = dict(x[0] for x in panel.peer_cert["issuer"])
    assert issuer["commonName"].startswith("Pebble")
    hsts = [v for k, v in panel.getheaders() if k.lower() == "strict-transport-security"]
    assert hsts == ["max-age=31536000; includeSubDomains"]  # once: Django's, not Caddy's

    host = stack.host(stack.main)
    page = https_get(edge.https_port, host, "/", edge.context())
    assert (page.status, page.body) == (200, b"home")
    hsts = [v for k, v in page.getheaders() if k.lower() == "strict-transport-security"]
    assert hsts == ["max-age=31536000; includeSubDomains"]  # once: the gateway's, not Caddy's
    assert page.peer_cert["subjectAltName"] == (("DNS", host),)
    assert {settings.DS_PANEL_HOST, host} <= _issued_names(edge)


def test_no_certificate_for_a_name_that_is_not_an_appspace(stack, edge):
    stranger = "nosuchappspace.localhost"
    with pytest.raises(ssl.SSLError):
        https_get(edge.https_port, stranger, "/", edge.context())
    assert stranger not in _issued_names(edge)
    # Nor for a name outside the domain, nor nested under an appspace.
    for name in ("example.com", f"a.{stack.host(stack.main)}"):
        with pytest.raises(ssl.SSLError):
            https_get(edge.https_port, name, "/", edge.context())
        assert name not in _issued_names(edge)


def test_the_ask_endpoint_is_not_reachable_through_the_edge(stack, edge):
    path = "/.well-known/dropserver/tls-ask?domain=" + stack.host(stack.main)
    outside = https_get(edge.https_port, settings.DS_PANEL_HOST, path, edge.context())
    assert outside.status == 404
    # A Host header naming Daphne's loopback address does not reach the loopback endpoints
    # either: the edge's route refuses the path, and the edge's X-Forwarded-For the rest.
    loopback = f"127.0.0.1:{edge.web_port}"
    for probe in (path, "/readyz"):
        spoofed = https_get(
            edge.https_port, settings.DS_PANEL_HOST, probe, edge.context(), host_header=loopback
        )
        assert (spoofed.status, spoofed.body) == (404, b"Not Found")
    local = http_get(edge.web_port, "127.0.0.1", path)
    assert local.status == 200 and json.loads(local.body) == {"allowed": True}
    # Local probes get the health endpoints on the same loopback address.
    assert json.loads(http_get(edge.web_port, "127.0.0.1", "/healthz").body) == {"status": "ok"}
    ready = http_get(edge.web_port, "127.0.0.1", "/readyz")
    assert ready.status == 200 and json.loads(ready.body)["status"] == "ok"
    refused = http_get(edge.web_port, "127.0.0.1", f"{caddy.ASK_PATH}?domain=nosuch.localhost")
    assert refused.status == 404 and json.loads(refused.body) == {"allowed": False}


def test_http_is_redirected_to_https_on_every_host(stack, edge):
    for host in (settings.DS_PANEL_HOST, stack.host(stack.main), "anything.localhost"):
        response = http_get(edge.http_port, host, "/some/path?q=1")
        assert response.status == 308
        assert response.getheader("location") == (f"https://{host}:{edge.https_port}/some/path?q=1")


def test_wss_reaches_the_sandboxed_app_through_the_edge(stack, edge):
    host = f"{stack.host(stack.main)}:{edge.https_port}"
    sock = socket.create_connection(("127.0.0.1", edge.https_port), timeout=30)
    with connect(
        f"wss://{host}/ws",
        sock=sock,
        ssl=edge.context(),
        server_hostname=stack.host(stack.main),
        origin=f"https://{host}",
        open_timeout=30,
        close_timeout=5,
    ) as conn:
        conn.send("hello over tls")
        assert conn.recv(timeout=10) == "hello over tls"


def test_browsers_get_http2(stack, edge):
    context = edge.context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    sock = socket.create_connection(("127.0.0.1", edge.https_port), timeout=30)
    with context.wrap_socket(sock, server_hostname=settings.DS_PANEL_HOST) as tls:
        assert tls.selected_alpn_protocol() == "h2"


def test_an_expired_certificate_in_storage_is_renewed_at_the_next_handshake(stack, edge):
    """The renewal path: the stored certificate of an appspace host is replaced by an expired
    one (as after months offline); a fresh Caddy loads it, sees it needs renewal, and the
    client gets a new certificate from the ACME CA, which verifies."""
    host = stack.host(stack.main)
    assert https_get(edge.https_port, host, "/", edge.context()).status == 200
    [stored] = edge.storage.glob(f"certificates/*/{host}/{host}.crt")
    issued = x509.load_pem_x509_certificate(stored.read_bytes())
    cert, key = self_signed(
        stored.parent.parent,
        "expired",
        dns=(host,),
        not_before=NOW - dt.timedelta(days=90),
        not_after=NOW - dt.timedelta(hours=1),
    )
    cert.replace(stored)
    key.replace(stored.with_suffix(".key"))
    edge.restart_caddy()

    page = https_get(edge.https_port, host, "/", edge.context())
    assert (page.status, page.body) == (200, b"home")
    renewed = x509.load_pem_x509_certificate(stored.read_bytes())
    assert renewed.serial_number != issued.serial_number
    assert renewed.not_valid_after_utc > NOW
    assert renewed.issuer.rfc4514_string().startswith("CN=Pebble")


def test_an_appspace_reaches_another_through_the_relay_with_tls_on(stack, edge):
    """With the edge, the relay hands requests to Daphne on loopback (DS_WEB_PORT) with the
    public Host: the app fetches B's https:// address, B's gateway serves it as it serves an
    https visitor, anonymous."""
    b = stack.appspace()
    a = stack.appspace()
    AllowlistEntry.objects.create(appspace=a, kind=AllowlistEntry.Kind.SERVER, value=stack.host(b))
    public = f"{stack.host(b)}:{edge.https_port}"
    body = json.dumps({"url": f"https://{public}/echo", "headers": {"cookie": "ds_appspace=x"}})
    sock = socket.create_connection(("127.0.0.1", edge.https_port), timeout=60)
    tls = edge.context().wrap_socket(sock, server_hostname=stack.host(a))
    head = [
        "POST /outbound HTTP/1.1",
        f"Host: {stack.host(a)}:{edge.https_port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    tls.sendall(("\r\n".join(head) + "\r\n\r\n" + body).encode())
    response = http.client.HTTPResponse(tls)
    response.begin()
    got = json.loads(response.read())
    tls.close()
    assert got["status"] == 200, got
    echo = json.loads(got["body"])
    assert echo["user"] is None and "cookie" not in echo["headers"]
    assert echo["url"] == f"https://{public}/echo"
    assert echo["headers"]["host"] == public
