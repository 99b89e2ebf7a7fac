"""One path, one meaning: the path the gateway's route table matched and authorised is the
path the app reads from `new URL(ctx.request.url).pathname`, or the request is refused.

Differential, through the real stack (Daphne, the gateway, a real sandboxed Deno app): a
generated corpus of request targets (backslashes, `%5C`, `%2F`, `%2e` in all cases, tabs
and newlines that URL parsers strip, `;`, `//`, non-ASCII, over-long segments, mixed-case
escapes) is sent raw; for each, either the gateway refuses it (no app code runs: checked on
the host, in the file the app appends every call to) or the pathname the app reports is the
path sent, and the route table, matching that pathname, picks the route and params the app
got. The reference WHATWG parser is the app's own: a route of the same sandboxed app parses
every generated path with `new URL`, and `request_path` may only pass its fixed points.
Hypothesis runs derandomized with fixed example counts, so ids and results are stable.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from appspaces import models
from appspaces.models import App, Appspace
from packages.routes import BadPath, RouteTable, request_path
from sandbox import layout
from tests.gateway.conftest import UID_BASE
from tests.sandbox.fixtures import lay_out_app

pytestmark = pytest.mark.sandbox

PATHS_APP = r"""
import { createApp } from "@dropserver/app";

const json = (value) =>
  new Response(JSON.stringify(value), { headers: { "content-type": "application/json" } });

// What the app saw, recorded on disk (the test reads it from the host) and answered.
function seen(ctx, route) {
  const pathname = new URL(ctx.request.url).pathname;
  Deno.writeTextFileSync("calls.log", `${pathname}\n`, { append: true });
  // Dispatch the Hono/Oak way, on the URL the app sees: what the gateway's auth must cover.
  const secret = pathname.startsWith("/admin/") ? "ADMIN-ONLY-SECRET" : null;
  return { route, pathname, params: ctx.params, secret };
}

createApp({
  routes: [
    {
      method: "GET", path: "/admin/*", auth: { permission: "admin" },
      handler: (ctx) => json(seen(ctx, 0)),
    },
    { method: "GET", path: "/files/*", auth: "public", static: "@app/public" },
    {
      method: "GET", path: "/ws/*", auth: "public",
      handler: (ctx) => {
        const report = seen(ctx, 2);
        if (ctx.request.headers.get("upgrade")?.toLowerCase() !== "websocket") return json(report);
        const { socket, response } = Deno.upgradeWebSocket(ctx.request);
        socket.onopen = () => socket.send(JSON.stringify(report));
        return response;
      },
    },
    {
      method: "POST", path: "/parse", auth: "public",
      handler: async (ctx) => {
        const paths = await ctx.request.json();
        return json(paths.map((p) => {
          try {
            return new URL(`http://h${p}`).pathname;
          } catch {
            return null;
          }
        }));
      },
    },
    { method: "GET", path: "/*", auth: "public", handler: (ctx) => json(seen(ctx, 4)) },
  ],
});
"""

PUBLIC = {
    "public/index.html": "<p>index</p>\n",
    "public/sub/deep.txt": "deep\n",
    "public/é.txt": "accent\n",
}
FILES = {"app.ts": PATHS_APP, "secret.txt": "app-root-secret\n", **PUBLIC}
SECRETS = (b"ADMIN-ONLY-SECRET", b"app-root-secret", b"createApp")

# The alphabet the corpus is drawn from, each piece appended as is: pieces every URL parser
# reads alike, and pieces the issue lists (separators, dots, escapes, stripped characters).
PLAIN = (
    "a",
    "Z9",
    "admin",
    "secret",
    "index.html",
    "sub",
    "deep.txt",
    "%C3%A9.txt",
    "%c3%a9",
    "%252e",
    "..a",
    ".b",
    "/",
    "//",
    ";",
    ";x=1",
    "'",
    "@",
    ":",
    "~",
    "?q=\\..",
    "x" * 300,  # an over-long segment
)
TRICKY = (
    "é",
    ".",
    "..",
    "\\",
    "%5C",
    "%5c",
    "%2F",
    "%2f",
    "%2e",
    "%2E",
    "%2e%2E",
    ".%2e",
    "%2E.",
    "%00",
    "%zz",
    "%",
    "\t",
    "\n",
    "\r",
    " ",
    "#",
    "?",
    "|",
    "^",
    "`",
    "{",
    "}",
    "<",
    ">",
    '"',
    "[",
    "]",
    "\x7f",
    "\x01",
)
PREFIXES = ("/", "/x/", "/admin/", "/files/", "/ws/")
_piece = st.one_of(st.sampled_from(PLAIN), st.sampled_from(PLAIN), st.sampled_from(TRICKY))
targets = st.tuples(st.sampled_from(PREFIXES), st.lists(_piece, min_size=1, max_size=6)).map(
    lambda t: t[0] + "".join(t[1])
)
CORPUS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: every example is a batch of live requests; the assertion names the target.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# The issue's own example, and its relatives for each kind of route.
EXPLICIT = {
    "issue-backslash": "/x\\..\\admin/secret",
    "encoded-dots": "/x/%2e%2e/admin/secret",
    "mixed-dots": "/x/.%2E/admin/secret",
    "encoded-dots-and-slash": "/x/%2E%2e%2fadmin/secret",
    "encoded-backslash": "/x\\..%5Cadmin/secret",
    "dots-backslash": "/x/..\\admin/secret",
    "tab": "/x/\t../admin/secret",
    "static-backslash": "/files/..\\secret.txt",
    "static-encoded-dots": "/files/%2e%2e/secret.txt",
    "websocket-backslash": "/ws/..\\..\\admin/secret",
}


class PathsApp:
    def __init__(self, stack, appspace: Appspace, table: RouteTable):
        self.stack = stack
        self.appspace = appspace
        self.table = table
        self.host = stack.host(appspace)

    @property
    def calls_log(self) -> Path:
        return layout.appspace_data_dir(str(self.appspace.public_id)) / "calls.log"

    def calls(self) -> list[str]:
        """The pathnames the app was called with, read from its data folder on the host."""
        try:
            return self.calls_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def parse(self, paths: Sequence[str]) -> list[str | None]:
        """WHATWG pathnames of "http://h" + path, as the sandboxed app's `new URL` reads them."""
        body = json.dumps(list(paths)).encode()
        response = self.stack.browser().post(
            self.stack.url(self.appspace, "/parse"),
            body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 200, response.body[:300]
        return response.json()

    def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        """GET `target`, byte for byte as given, on a fresh connection."""
        line = b"GET " + target.encode() + b" HTTP/1.1\r\n"
        head = f"Host: {self.host}:{self.stack.port}\r\nConnection: close\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.stack.port), timeout=20) as s:
            s.sendall(line + head)
            response = http.client.HTTPResponse(s)
            response.begin()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, response.read()

    def websocket(self, target: str) -> tuple[int, dict | None]:
        """A WebSocket handshake on `target`, byte for byte; the app's first message if open."""
        key = base64.b64encode(os.urandom(16)).decode()
        host = f"{self.host}:{self.stack.port}"
        head = (
            f"Host: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{host}\r\n\r\n"
        )
        request = b"GET " + target.encode() + b" HTTP/1.1\r\n" + head.encode()
        with socket.create_connection(("127.0.0.1", self.stack.port), timeout=20) as s:
            s.sendall(request)
            reader = s.makefile("rb")
            status_line = reader.readline()
            if not status_line:
                return 0, None
            status = int(status_line.split()[1])
            while reader.readline() not in (b"\r\n", b"\n", b""):
                pass
            if status != 101:
                return status, None
            first, length = reader.read(2)
            assert first == 0x81, first  # one unfragmented text frame
            if length == 126:
                length = int.from_bytes(reader.read(2), "big")
            message = json.loads(reader.read(length))
            s.sendall(b"\x88\x82" + b"\x00" * 4 + (1000).to_bytes(2, "big"))  # close, masked
            return status, message

    def check_app_saw(self, method: str, sent_path: str, report: dict) -> None:
        """The app's pathname is the path sent, and the route table, matching it, picks the
        route and params the app was given."""
        assert report["pathname"] == sent_path
        assert report["secret"] is None
        match = self.table.match(method, report["pathname"])
        assert match is not None, report
        assert (match.route.index, match.params) == (report["route"], report["params"])


@pytest.fixture(scope="module")
def paths_app(stack) -> PathsApp:
    files = lay_out_app(FILES)
    warmed = stack.supervisor.client.run_once(files.job_spec(uid=UID_BASE + 998_000), "warm")
    assert warmed.ok, warmed
    app = App.objects.create(public_id=uuid.UUID(files.app_id), owner=stack.alice, name="Paths")
    permissions = [{"key": "admin", "name": "Admin", "description": "Everything"}]
    version = models.AppVersion.objects.create(
        app=app,
        version=files.version,
        version_key="1.0.0",
        manifest={"name": "Paths", "version": "1.0.0", "permissions": permissions},
        routes=warmed.result["routes"],
        entrypoint="app.ts",
    )
    appspace = Appspace.objects.create(
        owner=stack.alice,
        app=app,
        app_version=version,
        subdomain=f"p{uuid.uuid4().hex[:12]}",
        status=Appspace.Status.ACTIVE,
        memory_mb=256,
        cpu_percent=100,
        disk_mb=100,
    )
    table = RouteTable.from_routes(warmed.result["routes"], permission_keys=["admin"])
    served = PathsApp(stack, appspace, table)
    status, _, body = served.get("/x/ok")
    assert status == 200, body[:300]
    return served


def check_http(app: PathsApp, batch: Sequence[str]) -> None:
    paths = [t.split("?", 1)[0] for t in batch]
    whatwg = app.parse(paths)
    before = len(app.calls())
    served = []
    for target, path, parsed in zip(batch, paths, whatwg, strict=True):
        try:
            passed = request_path(path) == path
        except BadPath:
            passed = False
        if passed:  # the gateway's rule only lets fixed points of the app's parser through
            assert parsed == path, (target, parsed)
        status, headers, body = app.get(target)
        assert not any(secret in body for secret in SECRETS), (target, status, body[:300])
        if status != 200:
            # Refused before any app code: bad path 400, no route 404, log in first 302.
            assert status in (302, 400, 404), (target, status, body[:300])
            # A 400 for a path the gateway passes: only Daphne's, for a target that is not
            # one in HTTP (spaces, controls, non-ASCII in the query).
            wire_ok = all("!" <= c <= "~" for c in target)
            assert status != 400 or not passed or not wire_ok, (target, status)
            continue
        if path.startswith("/files/"):  # static: the file the app's reading of it names
            assert parsed == path, (target, parsed)
            rest = unquote(path[len("/files/") :])
            assert body.decode() == PUBLIC[f"public/{rest}"], target
        else:
            report = json.loads(body)
            app.check_app_saw("GET", path, report)
            served.append(report["pathname"])
        assert passed, target
    # Exactly the requests answered by the app reached it, with the paths it answered for.
    assert app.calls()[before:] == served


def check_websockets(app: PathsApp, batch: Sequence[str]) -> None:
    # autobahn (Daphne's WebSocket side) keeps urlparse's path: `;params` of the last segment
    # and a `//authority` are dropped before the gateway sees it, which forwards what it saw.
    paths = [urlparse(t).path if "#" not in t else t.split("?", 1)[0] for t in batch]
    whatwg = app.parse(paths)
    before = len(app.calls())
    served = []
    for target, path, parsed in zip(batch, paths, whatwg, strict=True):
        status, report = app.websocket(target)
        if status != 101:
            assert status in (0, 400, 403, 404), (target, status)
            continue
        assert parsed == path, target
        app.check_app_saw("GET", path, report)
        served.append(report["pathname"])
    assert app.calls()[before:] == served


@pytest.mark.parametrize("target", EXPLICIT.values(), ids=EXPLICIT.keys())
def test_the_issues_examples_are_refused(paths_app, target):
    if target.startswith("/ws/"):
        assert paths_app.websocket(target) == (403, None)
        return
    before = paths_app.calls()
    status, _, body = paths_app.get(target)
    assert status == 400, (status, body[:300])
    assert not any(secret in body for secret in SECRETS)
    assert paths_app.calls() == before


def test_backslash_paths_never_reach_a_permission_route_through_a_public_one(paths_app):
    """The issue's attack: `/x\\..\\admin/secret` matches the public `/*` in the gateway; an
    app dispatching on its URL would read `/admin/secret`."""
    assert paths_app.parse(["/x\\..\\admin/secret"]) == ["/admin/secret"]
    status, _, body = paths_app.get("/x\\..\\admin/secret")
    assert status == 400
    assert b"ADMIN-ONLY-SECRET" not in body
    assert "/admin/secret" not in paths_app.calls()


def test_fixed_points_are_served_with_the_path_the_app_reads(paths_app):
    check_http(
        paths_app,
        [
            "/x/ok",
            "/x/a;b=1/c",
            "/x/caf%C3%A9",
            "/x/caf%c3%a9?q=\\..%2e",
            "/x/..a/.b/a..",
            "/x/%252e%252e",
            "/x/~user@host:1/!$&'()*+,=",
            "/files/index.html",
            "/files/sub/deep.txt",
            "/files/%C3%A9.txt",
        ],
    )


@settings(CORPUS, max_examples=20)
@given(batch=st.lists(targets, min_size=30, max_size=30))
def test_generated_targets_are_refused_or_read_alike(paths_app, batch):
    check_http(paths_app, batch)


@settings(CORPUS, max_examples=4)
@given(batch=st.lists(targets.map(lambda t: "/ws/" + t.lstrip("/")), min_size=15, max_size=15))
def test_generated_websocket_targets_are_refused_or_read_alike(paths_app, batch):
    check_websockets(paths_app, batch)


@pytest.mark.parametrize(
    "path",
    ["/x\\..\\admin/secret", "/x/%2e%2E/admin/secret", "/x/./admin", "/x/a#b", "/x/.%2e"],
    ids=["backslash", "encoded-dots", "dot", "fragment", "mixed-dots"],
)
def test_the_harness_refuses_a_path_the_app_would_read_differently(paths_app, path):
    """The second wall: a request straight to the sandbox's socket (as a gateway with a bug
    would send it) gets 400 bad-path from the harness, and the app is not called."""
    assert paths_app.get("/x/awake")[0] == 200  # the sandbox runs, its socket is there
    socket_path = str(layout.sandbox_socket_path(str(paths_app.appspace.public_id)))
    before = paths_app.calls()
    request = (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: app.example.com\r\n"
        b"X-Dropserver-Route: 4\r\nX-Dropserver-Host: app.example.com\r\n"
        b"X-Dropserver-Scheme: https\r\nConnection: close\r\n\r\n"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(socket_path)
        s.sendall(request)
        response = http.client.HTTPResponse(s)
        response.begin()
        body = response.read()
    assert response.status == 400, body
    assert response.getheader("x-dropserver-harness-error") == "bad-path"
    assert paths_app.calls() == before
