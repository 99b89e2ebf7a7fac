"""The outbound fetch: a real local HTTP server, the SSRF matrix, redirects, caps, listings.

The test server listens on 127.0.0.1. Tests that need it reachable either set
DS_FETCH_ALLOW_LOOPBACK (loopback only), or, to test the guard with the setting off, put it
behind a fake public address: a resolver hook answers 93.184.215.14 for `public.test` and
the socket layer routes that one address to the local server. Everything the guard decides
is decided on the resolved address, so that is exactly what a real public host looks like.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from packages import fetch
from packages.build import build_package
from packages.extraction import ExtractionLimits, safe_extract
from packages.fetch import (
    FetchError,
    FetchLimits,
    ListingError,
    fetch_listing,
    fetch_to_file,
    newest_version,
    parse_listing,
)
from packages.manifest import load_manifest

PUBLIC_IP = "93.184.215.14"
LIMITS = FetchLimits(
    max_bytes=1024 * 1024,
    connect_timeout=2,
    read_timeout=2,
    total_timeout=10,
    max_redirects=5,
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        self.server.hits.append((path, self.headers.get("Host")))
        route = self.server.routes.get(path)
        try:
            if route is None:
                self._send(404, {}, b"not found")
            elif callable(route):
                route(self)
            else:
                self._send(*route)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status, headers, body=b""):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.routes, httpd.hits = {}, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.port = httpd.server_address[1]
    httpd.url = f"http://127.0.0.1:{httpd.port}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def loopback_refused(settings):
    settings.DS_FETCH_ALLOW_LOOPBACK = False  # whatever the environment says


@pytest.fixture
def loopback_allowed(settings):
    settings.DS_FETCH_ALLOW_LOOPBACK = True


class FakeInternet:
    """Resolver hook + socket routing: PUBLIC_IP is the local test server."""

    def __init__(self, server, monkeypatch):
        self.server = server
        self.names = {
            "public.test": [PUBLIC_IP],
            "localhost": fetch.system_resolver("localhost", 80),
        }
        self.lookups: list[str] = []
        self.connections: list[tuple[str, int]] = []
        real = socket.create_connection

        def create_connection(address, timeout=None, *args, **kwargs):
            self.connections.append(address)
            if address[0] == PUBLIC_IP:
                return real(("127.0.0.1", server.port), timeout)
            if address[0] == "127.0.0.1":  # only allowed through when the guard is off
                return real(address, timeout)
            raise AssertionError(f"the test tried to reach {address}")

        monkeypatch.setattr(fetch.socket, "create_connection", create_connection)

    def resolve(self, host, port):
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror("no such host")
        if host.startswith("flip"):  # a rebinding name: a different answer each time
            return [self.names[host].pop(0)]
        return list(self.names[host])

    def url(self, path):
        return f"http://public.test:{self.server.port}{path}"


@pytest.fixture
def internet(server, monkeypatch):
    return FakeInternet(server, monkeypatch)


def no_leftovers(folder):
    assert os.listdir(folder) == []


# --- Downloads ------------------------------------------------------------------------------


def test_it_downloads_to_a_temporary_file(server, loopback_allowed, tmp_path):
    body = os.urandom(300_000)
    server.routes["/pkg.tar.gz"] = (200, {"Content-Type": "application/gzip"}, body)
    with fetch_to_file(f"{server.url}/pkg.tar.gz", dest_dir=tmp_path, limits=LIMITS) as got:
        assert got.path.read_bytes() == body
        assert got.size == len(body) and got.sha256 == hashlib.sha256(body).hexdigest()
        assert got.content_type == "application/gzip"
        assert got.url == f"{server.url}/pkg.tar.gz"
    no_leftovers(tmp_path)


def test_it_sends_the_original_host_and_connects_to_the_checked_address(internet, tmp_path):
    internet.server.routes["/file"] = (200, {}, b"hello")
    with fetch_to_file(internet.url("/file"), limits=LIMITS, resolver=internet.resolve) as got:
        assert got.path.read_bytes() == b"hello"
    assert internet.server.hits == [("/file", f"public.test:{internet.server.port}")]
    assert internet.connections == [(PUBLIC_IP, internet.server.port)]
    assert internet.lookups == ["public.test"]


def test_it_does_not_resolve_twice(internet):
    # A rebinding name: public on the first lookup, loopback on any later one.
    internet.names["flip.test"] = [PUBLIC_IP, "127.0.0.1"]
    internet.server.routes["/file"] = (200, {}, b"ok")
    url = f"http://flip.test:{internet.server.port}/file"
    with fetch_to_file(url, limits=LIMITS, resolver=internet.resolve) as got:
        assert got.path.read_bytes() == b"ok"
    assert internet.lookups == ["flip.test"]
    assert internet.connections == [(PUBLIC_IP, internet.server.port)]


def test_it_follows_a_redirect_chain(server, loopback_allowed):
    server.routes.update(
        {
            "/a": (302, {"Location": "/b"}),
            "/b": (301, {"Location": f"{server.url}/c?x=1"}),
            "/c": (307, {"Location": "d"}),
            "/d": (200, {}, b"end"),
        }
    )
    with fetch_to_file(f"{server.url}/a", limits=LIMITS) as got:
        assert got.path.read_bytes() == b"end"
        assert got.url == f"{server.url}/d"
    assert [path for path, _ in server.hits] == ["/a", "/b", "/c", "/d"]


def test_it_stops_after_too_many_redirects(server, loopback_allowed):
    server.routes["/loop"] = (302, {"Location": "/loop"})
    with pytest.raises(FetchError, match="Too many redirects"):
        fetch_to_file(f"{server.url}/loop", limits=LIMITS)
    assert len(server.hits) == LIMITS.max_redirects + 1


def test_it_refuses_a_redirect_without_location(server, loopback_allowed):
    server.routes["/r"] = (302, {})
    with pytest.raises(FetchError, match="redirect without a location"):
        fetch_to_file(f"{server.url}/r", limits=LIMITS)


@pytest.mark.parametrize("status", [404, 500, 204, 206])
def test_it_reports_answers_other_than_200(server, loopback_allowed, status, tmp_path):
    server.routes["/x"] = (status, {}, b"")
    with pytest.raises(FetchError, match=f"answered {status}"):
        fetch_to_file(f"{server.url}/x", limits=LIMITS, dest_dir=tmp_path)
    no_leftovers(tmp_path)


def test_it_refuses_compressed_responses(server, loopback_allowed):
    server.routes["/x"] = (200, {"Content-Encoding": "gzip"}, b"\x1f\x8b")
    with pytest.raises(FetchError, match=r"compressed \(gzip\)"):
        fetch_to_file(f"{server.url}/x", limits=LIMITS)


# --- Caps and timeouts ----------------------------------------------------------------------


def test_it_refuses_a_declared_size_over_the_cap(server, loopback_allowed, tmp_path):
    def huge(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 1024**3))
        handler.end_headers()
        handler.wfile.write(b"\0" * 65536)

    server.routes["/big"] = huge
    with pytest.raises(FetchError, match=r"larger than 1 MB"):
        fetch_to_file(f"{server.url}/big", limits=LIMITS, dest_dir=tmp_path)
    no_leftovers(tmp_path)


def test_it_stops_an_endless_chunked_body_at_the_cap(server, loopback_allowed, tmp_path):
    def endless(handler):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"\0" * 65536
        while True:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    server.routes["/endless"] = endless
    received = []
    started = time.monotonic()
    with pytest.raises(FetchError, match="larger than 1 MB"):
        fetch_to_file(
            f"{server.url}/endless",
            limits=LIMITS,
            dest_dir=tmp_path,
            progress=lambda n, _total: received.append(n),
        )
    assert max(received) <= LIMITS.max_bytes
    assert time.monotonic() - started < 3
    no_leftovers(tmp_path)


def test_it_times_out_a_server_that_does_not_answer(server, loopback_allowed):
    server.routes["/slow"] = lambda handler: time.sleep(3)
    limits = FetchLimits(**{**LIMITS.__dict__, "read_timeout": 0.5})
    started = time.monotonic()
    with pytest.raises(FetchError, match="stopped answering"):
        fetch_to_file(f"{server.url}/slow", limits=limits)
    assert time.monotonic() - started < 2


def test_the_total_timeout_ends_a_slow_drip(server, loopback_allowed, tmp_path):
    def drip(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.05)  # every read succeeds well within the read timeout

    server.routes["/drip"] = drip
    limits = FetchLimits(**{**LIMITS.__dict__, "read_timeout": 1, "total_timeout": 1})
    started = time.monotonic()
    with pytest.raises(FetchError, match="longer than 1 seconds"):
        fetch_to_file(f"{server.url}/drip", limits=limits, dest_dir=tmp_path)
    assert time.monotonic() - started < 3
    no_leftovers(tmp_path)


# --- What may be fetched at all -------------------------------------------------------------


@pytest.mark.parametrize(
    "url,message",
    [
        ("file:///etc/passwd", "Only http:// and https://"),
        ("ftp://example.com/app.zip", "Only http:// and https://"),
        ("gopher://example.com/", "Only http:// and https://"),
        ("javascript:alert(1)", "Only http:// and https://"),
        ("//example.com/x", "Only http:// and https://"),
        ("http://user:secret@example.com/", "user name or password"),
        ("http:///nohost", "no host"),
        ("http://exa mple.com/", "spaces or control characters"),
        ("http://example.com:99999/", "not a valid URL"),
        ("", "empty"),
        ("http://" + "a" * 3000 + ".com/", "longer than"),
    ],
)
def test_it_refuses_urls_it_will_not_fetch(url, message):
    with pytest.raises(FetchError, match=message):
        fetch_to_file(url, limits=LIMITS)


def _forbidden_urls(port):
    return [
        f"http://127.0.0.1:{port}/",
        f"http://127.0.0.2:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://0.0.0.0:{port}/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # CGNAT
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "https://240.0.0.1/",
    ]


def test_the_ssrf_matrix_with_loopback_refused(server):
    server.routes["/"] = (200, {}, b"internal secret")
    for url in _forbidden_urls(server.port):
        with pytest.raises(FetchError, match="Refused to connect"):
            fetch_to_file(url, limits=LIMITS)
    assert server.hits == []  # the guard decided before any connection


@pytest.mark.parametrize("host", ["localhost", "2130706433", "0x7f000001", "127.1", "0177.1"])
def test_it_refuses_names_and_spellings_of_loopback(server, host):
    server.routes["/"] = (200, {}, b"internal secret")
    with pytest.raises(FetchError):
        fetch_to_file(f"http://{host}:{server.port}/", limits=LIMITS)
    assert server.hits == []


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], [PUBLIC_IP, "127.0.0.1"], ["::1"], ["169.254.169.254"]]
)
def test_it_refuses_a_name_that_resolves_to_a_forbidden_address(internet, answer):
    internet.names["evil.test"] = answer
    internet.server.routes["/"] = (200, {}, b"internal secret")
    with pytest.raises(FetchError, match="Refused to connect to evil.test"):
        fetch_to_file(
            f"http://evil.test:{internet.server.port}/", limits=LIMITS, resolver=internet.resolve
        )
    assert internet.connections == [] and internet.server.hits == []


def test_the_refusal_does_not_reveal_the_private_address(internet):
    internet.names["intranet.test"] = ["10.20.30.40"]
    with pytest.raises(FetchError) as info:
        fetch_to_file("http://intranet.test/", limits=LIMITS, resolver=internet.resolve)
    assert "10.20.30.40" not in str(info.value)


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://[::1]:{port}/secret",
        "http://evil.test:{port}/secret",  # resolves to 127.0.0.1
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/secret",
        "file:///etc/passwd",
    ],
)
def test_it_refuses_a_redirect_to_a_forbidden_address(internet, location):
    internet.names["evil.test"] = ["127.0.0.1"]
    server = internet.server
    server.routes["/go"] = (302, {"Location": location.format(port=server.port)})
    server.routes["/secret"] = (200, {}, b"internal secret")
    with pytest.raises(FetchError, match="Refused to connect|Only http"):
        fetch_to_file(internet.url("/go"), limits=LIMITS, resolver=internet.resolve)
    assert [path for path, _ in server.hits] == ["/go"]  # /secret was never requested
    assert internet.connections == [(PUBLIC_IP, server.port)]


def test_loopback_permission_never_opens_private_or_metadata_addresses(internet, settings):
    settings.DS_FETCH_ALLOW_LOOPBACK = True
    internet.names["meta.test"] = ["169.254.169.254"]
    for url in ["http://10.0.0.1/", "http://169.254.169.254/", "http://[fd00:ec2::254]/",
                "http://meta.test/"]:  # fmt: skip
        with pytest.raises(FetchError, match="Refused to connect"):
            fetch_to_file(url, limits=LIMITS, resolver=internet.resolve)
    assert internet.connections == []


def test_it_reports_a_host_that_does_not_exist(internet):
    with pytest.raises(FetchError, match="could not be found"):
        fetch_to_file("http://nowhere.test/", limits=LIMITS, resolver=internet.resolve)


def test_it_times_out_a_slow_lookup():
    def slow(host, port):
        time.sleep(2)
        return [PUBLIC_IP]

    limits = FetchLimits(**{**LIMITS.__dict__, "connect_timeout": 0.3})
    started = time.monotonic()
    with pytest.raises(FetchError, match="took too long"):
        fetch_to_file("http://slow.test/", limits=limits, resolver=slow)
    assert time.monotonic() - started < 1.5


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path):
    """A TLS server with a self-signed certificate for public.test (so: not trusted)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "public.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("public.test")]), False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen = []
    context.sni_callback = lambda sock, server_name, ctx: seen.append(server_name)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], seen
    listener.close()


def test_it_uses_sni_and_verifies_certificates(tls_server, monkeypatch):
    port, seen = tls_server
    real = socket.create_connection
    monkeypatch.setattr(
        fetch.socket,
        "create_connection",
        lambda address, timeout=None: real(("127.0.0.1", port), timeout),
    )
    with pytest.raises(FetchError, match="TLS connection to public.test failed"):
        fetch_to_file(
            f"https://public.test:{port}/", limits=LIMITS, resolver=lambda h, p: [PUBLIC_IP]
        )
    assert seen == ["public.test"]  # SNI is the host name, not the address


def test_it_refuses_a_redirect_from_https_down_to_http(monkeypatch):
    # No TLS server that the system trusts exists here, so the connection is replaced by
    # one whose answer is a redirect to http://.
    class Redirect:
        status = 302

        def getheader(self, name, default=None):
            return "http://public.test/b" if name == "Location" else default

    class Connection:
        def shutdown(self, how):
            pass

        def close(self):
            pass

    monkeypatch.setattr(fetch, "_connect", lambda *args: Connection())
    monkeypatch.setattr(fetch, "_open", lambda target, sock: Redirect())
    with pytest.raises(FetchError, match="Refused a redirect from https:// down to http://"):
        fetch_to_file("https://public.test/a", limits=LIMITS, resolver=lambda h, p: [PUBLIC_IP])


# --- App listings ---------------------------------------------------------------------------

LISTING = {
    "base": "packages/",
    "versions": {
        "1.2.0": {"package": "notes-1.2.0.tar.gz", "manifest": "notes-1.2.0.json"},
        "1.10.0": {
            "package": "notes-1.10.0.tar.gz",
            "changelog": "/changelogs/1.10.0.txt",
            "icon": "https://cdn.example.com/icon.png",
        },
        "0.9.0": {"package": "../old/notes-0.9.0.tar.gz"},
        "2.0.0-beta.1": {"package": "notes-2.0.0-beta.1.tar.gz"},
    },
}


def test_it_fetches_and_orders_a_listing(server, loopback_allowed):
    server.routes["/apps/notes/listing.json"] = (200, {}, json.dumps(LISTING).encode())
    listing = fetch_listing(f"{server.url}/apps/notes/listing.json", limits=LIMITS)
    assert [str(v.version) for v in listing.versions] == [
        "0.9.0",
        "1.2.0",
        "1.10.0",
        "2.0.0-beta.1",
    ]
    base = f"{server.url}/apps/notes/packages/"
    assert listing.base_url == base
    by_version = {str(v.version): v for v in listing.versions}
    assert by_version["1.2.0"].package_url == base + "notes-1.2.0.tar.gz"
    assert by_version["1.2.0"].manifest_url == base + "notes-1.2.0.json"
    assert by_version["0.9.0"].package_url == f"{server.url}/apps/notes/old/notes-0.9.0.tar.gz"
    assert by_version["1.10.0"].changelog_url == f"{server.url}/changelogs/1.10.0.txt"
    assert by_version["1.10.0"].icon_url == "https://cdn.example.com/icon.png"
    assert str(newest_version(listing).version) == "1.10.0"
    assert str(newest_version(listing, include_prereleases=True).version) == "2.0.0-beta.1"


def test_without_base_urls_are_relative_to_the_listing():
    listing = parse_listing(
        b'{"versions": {"1.0.0": {"package": "app.zip"}}}', "https://example.com/apps/list.json"
    )
    assert listing.versions[0].package_url == "https://example.com/apps/app.zip"
    assert parse_listing(b'{"versions": {}}', "https://example.com/l.json").versions == ()
    assert newest_version(parse_listing(b'{"versions": {}}', "https://example.com/")) is None


def test_it_reports_a_listing_that_moved():
    listing = parse_listing(b'{"new-url": "../v2/list.json"}', "https://example.com/apps/l.json")
    assert listing.new_url == "https://example.com/v2/list.json" and listing.versions == ()


@pytest.mark.parametrize(
    "body,message",
    [
        (b"<html>", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", 'no "versions" object'),
        (b'{"versions": []}', 'no "versions" object'),
        (b'{"versions": {"1.0": {"package": "a.zip"}}}', "invalid version '1.0'"),
        (b'{"versions": {"1.0.0": "a.zip"}}', "must be an object"),
        (b'{"versions": {"1.0.0": {"manifest": "m.json"}}}', 'has no "package"'),
        (b'{"versions": {"1.0.0": {"package": "file:///etc/passwd"}}}', "must be an http"),
        (b'{"versions": {"1.0.0": {"package": "javascript:alert(1)"}}}', "must be an http"),
        (b'{"versions": {"1.0.0": {"package": 5}}}', "must be a URL"),
        (b'{"base": "ftp://x/", "versions": {}}', '"base" must be an http'),
        (b'{"versions": {"1.0.0+a": {"package": "a"}, "1.0.0+b": {"package": "b"}}}', "twice"),
    ],
)
def test_it_refuses_invalid_listings(body, message):
    with pytest.raises(ListingError, match=message):
        parse_listing(body, "https://example.com/listing.json")


def test_it_caps_the_size_of_a_listing(server, loopback_allowed, settings):
    settings.DS_FETCH_MAX_LISTING_KB = 1
    server.routes["/l.json"] = (200, {}, json.dumps({"versions": {}, "pad": "x" * 2000}).encode())
    for limits in (None, LIMITS):  # the listing cap holds whatever limits the caller gives
        with pytest.raises(FetchError, match="larger than 1 KB"):
            fetch_listing(f"{server.url}/l.json", limits=limits)


def test_it_installs_the_newest_version_from_a_served_listing(server, loopback_allowed, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.ts").write_text("export {}")
    (app / "dropapp.json").write_text('{"name": "Notes", "version": "1.10.0", "license": "MIT"}')
    limits = ExtractionLimits.for_app_packages()
    assert build_package(app, tmp_path / "notes.tar.gz", limits=limits).ok
    server.routes["/apps/listing.json"] = (200, {}, json.dumps(LISTING).encode())
    server.routes["/apps/packages/notes-1.10.0.tar.gz"] = (
        200,
        {},
        (tmp_path / "notes.tar.gz").read_bytes(),
    )
    newest = newest_version(fetch_listing(f"{server.url}/apps/listing.json"))
    with fetch_to_file(newest.package_url, dest_dir=tmp_path) as package:
        safe_extract(package.path, tmp_path / "version" / "files", limits=limits)
    result = load_manifest(tmp_path / "version" / "files")
    assert result.ok and str(result.manifest.version) == str(newest.version)
