"""The example apps: they build, install through the real pipeline (routes and migrations read
in the sandbox), run in a real sandbox (SQLite in the data dir, per-user notes, live updates over
a WebSocket, migrations up and down), and `install_examples` gets them to the first admin."""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from websockets.sync.client import unix_connect

from appspaces.installs.examples import PENDING, example_sources, examples_build, packages_dir
from appspaces.models import App, Job
from packages.manifest import load_manifest
from sandbox.spec import SandboxSpec
from tests.appspaces.conftest import install
from tests.conftest import make_user
from tests.sandbox.fixtures import send_request, unique_uid

pytestmark = [pytest.mark.django_db, pytest.mark.sandbox]


def routes_of(version) -> list[tuple]:
    return [(r["method"], r["path"], json.dumps(r["auth"]), r["kind"]) for r in version.routes]


def test_every_example_has_a_clean_manifest():
    sources = {(example, path.name) for example, path in example_sources()}
    assert sources == {("guestbook", "guestbook"), ("notes", "1.0.0"), ("notes", "2.0.0")}
    for _, path in example_sources():
        result = load_manifest(path)
        assert result.ok and not result.warnings, (path, result.errors, result.warnings)


@pytest.fixture
def packages():
    return {f"{p.example}-{p.version}": p.package for p in examples_build()}


def test_the_examples_install_and_their_routes_and_migrations_are_read(supervisor, alice, packages):
    notes1 = install(alice, packages["notes-1.0.0"])
    assert notes1.state == Job.State.SUCCEEDED, notes1.message
    notes2 = install(alice, packages["notes-2.0.0"], app=notes1.app)
    assert notes2.state == Job.State.SUCCEEDED, notes2.message
    guestbook = install(alice, packages["guestbook-1.0.0"])
    assert guestbook.state == Job.State.SUCCEEDED, guestbook.message

    edit = json.dumps({"permission": "edit"})
    v1, v2 = notes1.app_version, notes2.app_version
    assert routes_of(v1) == [
        ("GET", "/", '"user"', "static"),
        ("GET", "/static/*", '"user"', "static"),
        ("GET", "/api/me", '"user"', "function"),
        ("GET", "/api/notes", '"user"', "function"),
        ("POST", "/api/notes", edit, "function"),
        ("DELETE", "/api/notes/:id", edit, "function"),
        ("GET", "/api/live", '"user"', "function"),
    ]
    assert (v1.migrations, v1.schema, v2.migrations, v2.schema) == ([1], 1, [1, 2], 2)
    assert ("PATCH", "/api/notes/:id", edit, "function") in routes_of(v2)
    assert [p["key"] for p in v2.permissions] == ["edit"]
    assert "done" in v2.changelog
    assert notes1.app.versions.count() == 2

    gb = guestbook.app_version
    assert routes_of(gb) == [
        ("GET", "/", '"public"', "function"),
        ("POST", "/", '"public"', "function"),
        ("GET", "/assets/*", '"public"', "static"),
    ]
    assert (gb.files_dir / "assets" / "guestbook.css").is_file()
    assert gb.migrations == [1]


# --- The examples in a running sandbox (as the gateway will talk to them) -------------------


class Appspace:
    """A data dir and the sandbox specs of one appspace, without the gateway."""

    def __init__(self, client, version):
        self.client, self.id, self.uid = client, str(uuid.uuid4()), unique_uid()
        self.use(version)

    def use(self, version) -> None:
        self.version = version
        self.spec = SandboxSpec.for_appspace(
            appspace_id=self.id,
            app_id=str(version.app.public_id),
            version=version.version,
            uid=self.uid,
            entrypoint=version.entrypoint,
        )

    def migrate(self, start: int, to: int) -> None:
        result = self.client.run_once(self.spec, "migrate", {"from": start, "to": to})
        assert result.ok and result.result["reached"] == to, result

    def route(self, method: str, path: str) -> int:
        return next(
            r["index"] for r in self.version.routes if (r["method"], r["path"]) == (method, path)
        )

    def request(
        self, method, path, *, route=None, params=None, user=None, body=None, json_body=None, **h
    ):
        headers = {"X-Dropserver-Route": str(self.route(method, route or path)), **h}
        if params is not None:
            headers["X-Dropserver-Params"] = json.dumps(params)
        if user is not None:
            headers.update(user_headers(*user))
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        return send_request(self.client.ensure(self.spec), method, path, headers=headers, body=body)

    def stop(self) -> None:
        self.client.stop(self.id)


def user_headers(user_id: str, name: str, permissions: list[str]) -> dict[str, str]:
    return {
        "X-Dropserver-User-Id": user_id,
        "X-Dropserver-User-Name": urllib.parse.quote(name),
        "X-Dropserver-User-Permissions": json.dumps(permissions),
    }


ALICE = ("u-alice", "Alice", ["edit"])
BOB = ("u-bob", "Bob", ["edit"])
READER = ("u-reader", "Rita", [])


def test_the_notes_app_keeps_per_user_notes_live_and_migrates(supervisor, alice, packages):
    notes1 = install(alice, packages["notes-1.0.0"])
    notes2 = install(alice, packages["notes-2.0.0"], app=notes1.app)
    space = Appspace(supervisor.client, notes1.app_version)
    space.migrate(0, 1)

    socket = space.client.ensure(space.spec)
    live = unix_connect(
        socket,
        uri="ws://notes.example.com/api/live",
        additional_headers={
            "X-Dropserver-Route": str(space.route("GET", "/api/live")),
            "X-Dropserver-Host": "notes.example.com",
            **user_headers(*BOB),
        },
        open_timeout=10,
    )
    with live:
        status, _, _ = space.request("POST", "/api/notes", user=ALICE, json_body={"text": "milk"})
        assert status == 201
        assert json.loads(live.recv(timeout=10))["type"] == "added"  # Bob's tab hears of it
    space.request("POST", "/api/notes", user=BOB, json_body={"text": "bread"})

    status, _, body = space.request("GET", "/api/notes", user=ALICE)
    notes = json.loads(body)
    assert status == 200
    assert [(n["text"], n["author"], n["mine"]) for n in notes] == [
        ("bread", "Bob", False),
        ("milk", "Alice", True),
    ]
    # One deletes only one's own notes; a form post from elsewhere is refused.
    bread = str(notes[0]["id"])
    delete = {"route": "/api/notes/:id", "params": {"id": bread}, "json_body": {}}
    assert space.request("DELETE", f"/api/notes/{bread}", user=ALICE, **delete)[0] == 404
    assert len(json.loads(space.request("GET", "/api/notes", user=ALICE)[2])) == 2
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert space.request("POST", "/api/notes", user=ALICE, body=b"text=x", **form)[0] == 415
    me = json.loads(space.request("GET", "/api/me", user=READER)[2])
    assert me == {"id": "u-reader", "displayName": "Rita", "canEdit": False}

    # Version 2.0.0: the data moves to schema 2 and back, nothing lost.
    space.stop()
    space.use(notes2.app_version)
    space.migrate(1, 2)
    milk = str(notes[1]["id"])
    patch = {"route": "/api/notes/:id", "params": {"id": milk}, "json_body": {"done": True}}
    assert space.request("PATCH", f"/api/notes/{milk}", user=ALICE, **patch)[0] == 204
    assert space.request("PATCH", f"/api/notes/{milk}", user=BOB, **patch)[0] == 404
    notes = json.loads(space.request("GET", "/api/notes", user=ALICE)[2])
    assert [(n["text"], n["done"]) for n in notes] == [("bread", False), ("milk", True)]
    space.stop()
    space.migrate(2, 1)
    db = Path(space.spec.data_dir) / "notes.db"
    with sqlite3.connect(db) as con:
        columns = [row[1] for row in con.execute("PRAGMA table_info(notes)")]
        texts = sorted(row[0] for row in con.execute("SELECT text FROM notes"))
    assert columns == ["id", "user_id", "author", "text", "created"]
    assert texts == ["bread", "milk"]
    # And Bob can delete his own note.
    space.use(notes1.app_version)
    delete = {"route": "/api/notes/:id", "params": {"id": bread}, "json_body": {}}
    assert space.request("DELETE", f"/api/notes/{bread}", user=BOB, **delete)[0] == 204
    texts = [n["text"] for n in json.loads(space.request("GET", "/api/notes", user=BOB)[2])]
    assert texts == ["milk"]


def test_the_guestbook_takes_public_entries_and_escapes_them(supervisor, alice, packages):
    version = install(alice, packages["guestbook-1.0.0"]).app_version
    space = Appspace(supervisor.client, version)
    space.migrate(0, 1)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = b"name=%3Cb%3EMallory%3C%2Fb%3E&message=hi+there"
    status, headers, _ = space.request("POST", "/", body=body, **form)
    assert (status, headers["location"]) == (303, "/")
    status, headers, page = space.request("GET", "/")
    html = page.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "&#60;b&#62;Mallory&#60;/b&#62;" in html and "<b>Mallory" not in html
    assert "<script" not in html and "style=" not in html  # works under a strict CSP
    assert '<link rel="stylesheet" href="/assets/guestbook.css">' in html
    # A form on another site cannot sign it; an empty message is explained.
    evil = {**form, "Origin": "https://evil.example"}
    assert space.request("POST", "/", body=body, **evil)[0] == 403
    status, _, page = space.request("POST", "/", body=b"name=Al&message=", **form)
    assert status == 400 and b"Write a message" in page


# --- install_examples -----------------------------------------------------------------------


def installed_examples(user) -> dict[str, list[str]]:
    return {
        app.name: sorted(app.versions.values_list("version", flat=True))
        for app in App.objects.filter(owner=user)
    }


def test_install_examples_waits_for_the_first_admin(
    supervisor, eager, django_capture_on_commit_callbacks
):
    out = StringIO()
    call_command("install_examples", stdout=out)
    assert "installed for the first admin as soon as that account is created" in out.getvalue()
    assert (packages_dir() / PENDING).is_file()

    make_user("bob@example.com")  # not an admin: nothing happens
    assert not Job.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        admin = make_user("admin@example.com", staff=True)
    assert installed_examples(admin) == {"Guestbook": ["1.0.0"], "Notes": ["1.0.0", "2.0.0"]}
    assert not (packages_dir() / PENDING).exists()
    assert all(job.state == Job.State.SUCCEEDED for job in Job.objects.all())

    # `make run` runs it every time: the admin gets them once (deleting them sticks).
    out = StringIO()
    call_command("install_examples", stdout=out)
    assert "already installed for admin@example.com" in out.getvalue()
    assert Job.objects.count() == 3


def test_install_examples_queues_for_an_existing_admin(
    admin_user, django_capture_on_commit_callbacks
):
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command("install_examples", stdout=out)
    assert "Queued the example apps" in out.getvalue() and "admin@example.com" in out.getvalue()
    jobs = {job.params["example"]: job for job in Job.objects.all()}
    assert sorted(jobs) == ["guestbook", "notes"]
    assert [Path(step["package"]).name for step in jobs["notes"].params["then"]] == [
        "notes-2.0.0.tar.gz"
    ]
    assert jobs["notes"].params["label"] == "notes-1.0.0.tar.gz"
    assert len(callbacks) == 2  # one task each, sent on commit
