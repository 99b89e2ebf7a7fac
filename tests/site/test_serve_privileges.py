"""`manage.py serve` started as root with DS_RUN_AS: who runs as what, read from /proc, and the
platform still working end to end through it (install, create, open through the gateway, back
up, download, restore, delete from the panel; a version change and its automatic restore; the
scheduled instance backup): what the systemd worker units, also DS_RUN_AS, rely on. Real
processes, embedded defaults.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import urllib.parse
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from sandbox import access
from tests.conftest import PASSWORD
from tests.privileges import control_as, reachable_python, run_as_test_user
from tests.sandbox.fixtures import poll
from tests.site.processes import descendants, free_port, read_until
from tests.site.test_serve import BASE_DIR, embedded_env
from tests.site.tls import client_context, http_get, https_get

NOBODY = 65534
OWNER = "alice@example.com"


@pytest.fixture(scope="module")
def run_as() -> access.RunAs:
    return run_as_test_user()


def _succeeds(argv: list[str], env: dict[str, str]) -> str:
    """The output of a command that must exit 0 (its output in the failure otherwise)."""
    result = subprocess.run(
        argv, env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Stack:
    def __init__(self, proc: subprocess.Popen, port: int, env: dict, data: Path, banner: str):
        self.proc, self.port, self.env, self.data, self.banner = proc, port, env, data, banner

    def manage(self, *args: str) -> str:
        return _succeeds([sys.executable, str(BASE_DIR / "manage.py"), *args], self.env)

    def manage_as(self, user: access.RunAs, *args: str) -> str:
        """A management command run by `user` (as the workers will), not by root, in serve's
        mount namespace (where the supervisor's views and socket dirs are)."""
        argv = [
            "nsenter", f"--mount=/proc/{self.proc.pid}/ns/mnt",
            "setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
            sys.executable, str(BASE_DIR / "manage.py"), *args,
        ]  # fmt: skip
        return _succeeds(argv, dict(self.env, HOME=str(self.data)))

    def query(self, code: str):
        """The JSON printed by `code` run in `manage.py shell` (what the platform recorded)."""
        out = self.manage("shell", "-c", code)
        return json.loads(out.strip().splitlines()[-1])

    def uids(self) -> dict[int, tuple[str, list[int], list[int], list[int]]]:
        """pid -> (command, uids, gids, groups) of every process under serve, from /proc."""
        found = {}
        for pid, cmd in descendants(self.proc.pid, with_cmdline=True):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            found[pid] = (
                cmd,
                [int(v) for v in fields["Uid"].split()],
                [int(v) for v in fields["Gid"].split()],
                sorted(int(v) for v in fields["Groups"].split()),
            )
        return found


class Browser:
    """HTTP/1.1 to the stack's port with a Host header and a cookie jar per host."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, dict[str, str]] = {}

    def request(
        self,
        method: str,
        host: str,
        path: str,
        form: dict | None = None,
        *,
        json_body=None,
        headers: dict | None = None,
    ):
        headers = {"Host": f"{host}:{self.port}", **(headers or {})}
        if jar := self.cookies.get(host):
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = f"http://{host}:{self.port}"
            headers["Referer"] = f"http://{host}:{self.port}{path}"
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
            headers["Origin"] = f"http://{host}:{self.port}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies.setdefault(host, {})[name] = morsel.value
        conn.close()
        return response.status, response.headers, data


@contextlib.contextmanager
def started_stack(ds_data_dir: Path, run_as: access.RunAs, **extra_env: str):
    """`serve` started as root with DS_RUN_AS set, until the block ends (then Ctrl-C)."""
    port = free_port()
    env = embedded_env(ds_data_dir, port)
    env.update(
        DS_RUN_AS=run_as.name,
        DS_SANDBOX_UID_BASE=str(6_000_000 + secrets.randbelow(10_000) * 100),
        DS_SANDBOX_STOP_GRACE="1",
        **extra_env,
    )
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        reachable_python(run_as, [*manage, "serve", "--port", str(port)]),
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = read_until(proc, "Press Ctrl-C to stop.", timeout=120)
        yield Stack(proc, port, env, ds_data_dir, banner)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                output = proc.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                output = proc.communicate()[0]
            print(output)  # shown when the test failed


@pytest.fixture
def stack(ds_data_dir, run_as):
    with started_stack(ds_data_dir, run_as) as started:
        yield started


def install_examples(stack: Stack) -> None:
    """The example apps, installed by the jobs worker (queued, as `make run` does)."""
    stack.query(
        "import json; from tests.conftest import make_user; "
        f"make_user({OWNER!r}, staff=True); print(json.dumps(1))"
    )
    stack.manage("install_examples", "--owner", OWNER)
    poll(
        lambda: (
            stack.query(
                "import json; from appspaces.models import Job; "
                "print(json.dumps(Job.objects.filter(kind='install', state='succeeded').count()))"
            )
            == 3
        ),
        timeout=240,
        interval=1,
    )


def csrf_token(page: bytes) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()


PANEL = "dropid.localhost"


def panel_login(browser: Browser) -> None:
    """The owner logs in to the panel (served by the unprivileged web server)."""
    _, _, login = browser.request("GET", PANEL, "/accounts/login/")
    form = {"login": OWNER, "password": PASSWORD, "csrfmiddlewaretoken": csrf_token(login)}
    status, _, _ = browser.request("POST", PANEL, "/accounts/login/", form)
    assert status == 302


def job_outcome(stack: Stack, kind: str, count: int, timeout: float = 240) -> list:
    """[state, message] of the `count`th job of `kind`, once it has ended."""
    code = (
        "import json; from appspaces.models import Job; "
        f"jobs = list(Job.objects.filter(kind={kind!r}).order_by('pk')); "
        f"job = jobs[{count - 1}] if len(jobs) >= {count} else None; "
        "print(json.dumps(job and [job.state, job.message]))"
    )
    ended = ("succeeded", "failed", "cancelled")
    return poll(
        lambda: (found := stack.query(code)) and found[0] in ended and found,
        timeout=timeout,
        interval=1,
    )


def swap_leftovers(stack: Stack, appspace_id: str) -> list[str]:
    folder = stack.data / "appspaces" / appspace_id
    return [p.name for p in folder.iterdir() if p.name.startswith((".restore", ".previous"))]


def data_owners(stack: Stack, appspace_id: str) -> set[int]:
    """Who owns the appspace's data, read from the host; and nothing left of a swap."""
    folder = stack.data / "appspaces" / appspace_id
    assert not swap_leftovers(stack, appspace_id)
    assert not list((stack.data / "run" / "views").iterdir())  # every view closed
    return {os.stat(p).st_uid for p in (folder / "data").rglob("*")} | {
        os.stat(folder / "data").st_uid
    }


def test_only_the_supervisor_keeps_root(stack, run_as):
    assert "DS_RUN_AS" not in stack.banner, stack.banner  # no fallback warning: it dropped
    table = stack.uids()
    roles = {
        pid: (
            "supervisor"
            if "sandboxd" in cmd
            else "web"
            if "daphne" in cmd
            else "worker"
            if "celery" in cmd
            else cmd
        )
        for pid, (cmd, *_rest) in table.items()
    }
    assert {"supervisor", "web", "worker"} <= set(roles.values())
    for pid, (cmd, uids, gids, groups) in table.items():
        role = roles[pid]
        if role in ("web", "worker"):
            assert uids == [run_as.uid] * 4, (cmd, uids)
            assert gids == [run_as.gid] * 4, (cmd, gids)
            assert groups == sorted(set(run_as.groups)), (cmd, groups)
        elif role == "supervisor":
            assert uids == [0] * 4, (cmd, uids)
        else:
            raise AssertionError(f"unexpected process under serve: {cmd} {uids}")
    sock = os.stat(stack.data / "run" / "sandboxd.sock")
    assert (sock.st_uid, sock.st_gid, stat.S_IMODE(sock.st_mode)) == (0, run_as.gid, 0o660)
    refused = control_as(
        stack.data / "run" / "sandboxd.sock",
        [{"id": 1, "op": "list"}],
        user=NOBODY,
        extra_groups=[run_as.gid],
    )
    assert refused["responses"][0]["error"]["code"] == "forbidden"


def test_install_create_open_back_up_restore_and_delete_through_it(stack, run_as):
    install_examples(stack)  # queued: the jobs worker installs
    # Installed files and the warmed cache are the platform's, as the panel deletes them.
    apps = list((stack.data / "apps").iterdir())
    assert apps and all(os.stat(a).st_uid == run_as.uid for a in apps)
    assert {os.stat(p).st_uid for p in (stack.data / "apps").rglob("*")} == {run_as.uid}

    stack.manage(
        "create_appspace", "--owner", OWNER, "--app", "Guestbook", "--version", "1.0.0",
        "--subdomain", "gb",
    )  # fmt: skip
    appspace_id, uid = stack.query(
        "import json; from appspaces.models import Appspace; a = Appspace.objects.get(); "
        "print(json.dumps([str(a.public_id), a.sandbox_uid]))"
    )
    host = "gb.localhost"
    browser = Browser(stack.port)
    status, _, page = browser.request("GET", host, "/")
    assert status == 200 and b"Guestbook" in page, page[:300]
    status, _, _ = browser.request("POST", host, "/", {"name": "Ann", "message": "first words"})
    assert status == 303
    assert b"first words" in browser.request("GET", host, "/")[2]

    # Bubblewrap and Deno run as the appspace's uid, never root (read from /proc).
    supervisor = next(p for p, (cmd, *_r) in stack.uids().items() if "sandboxd" in cmd)
    sandbox = [p for p in descendants(supervisor)]
    assert sandbox
    for pid in sandbox:
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split("\n")[0].split()
        assert {int(u) for u in uids} == {uid}, (pid, uids)
    meta = os.stat(stack.data / "appspaces" / appspace_id / "meta")
    assert (meta.st_uid, meta.st_gid) == (run_as.uid, uid)

    # The backup, run by the unprivileged user: it reads the appspace's data (its uid's, 0700)
    # through the supervisor's read-only view.
    backup = stack.manage_as(run_as, "backup_appspace", "gb", "--json")
    backup = json.loads(backup.strip().splitlines()[-1])
    assert backup["files"] >= 1 and not backup["warnings"], backup
    archive = Path(backup["path"])
    assert os.stat(archive).st_uid == run_as.uid  # the web servers hand it out
    assert not list((stack.data / "run" / "views").iterdir())  # the view is closed

    # The panel, served by the unprivileged web server: log in, download the archive.
    panel = PANEL
    panel_login(browser)
    backup_id = backup["backup_id"]
    status, _, body = browser.request(
        "GET", panel, f"/appspaces/{appspace_id}/backups/{backup_id}/download"
    )
    assert status == 200 and body == archive.read_bytes()

    browser.request("POST", host, "/", {"name": "Bob", "message": "second words"})
    assert b"second words" in browser.request("GET", host, "/")[2]
    # The restore, run by the unprivileged user (not root): hand-over, swap and clean-up go
    # through the supervisor's narrow operations.
    stack.manage_as(run_as, "restore_appspace", "gb", str(archive), "--yes")
    assert data_owners(stack, appspace_id) == {uid}
    restored = browser.request("GET", host, "/")[2]
    assert b"first words" in restored and b"second words" not in restored

    # Delete from the panel: the web server (not root) has the supervisor remove the files.
    status, _, form = browser.request("GET", panel, f"/appspaces/{appspace_id}/delete")
    token = csrf_token(form)
    status, _, _ = browser.request(
        "POST",
        panel,
        f"/appspaces/{appspace_id}/delete",
        {"confirm": "gb", "backups": "delete", "csrfmiddlewaretoken": token},
    )
    assert status == 302
    assert browser.request("GET", host, "/")[0] == 404
    poll(lambda: not (stack.data / "appspaces" / appspace_id).exists(), timeout=60)
    assert not (stack.data / "logs" / appspace_id).exists()
    assert not archive.exists()


# A Notes version whose schema 3 migration empties the notes, then throws.
FAILING_MIGRATION = """    {
      schema: 3,
      up: ({ dataPath }) =>
        withDb(dataPath, (db) => {
          db.exec("DELETE FROM notes");
          throw new Error("disk on fire halfway through");
        }),
      down: ({ dataPath }) => withDb(dataPath, () => undefined),
    },
  ],
});
"""


def broken_notes_package(stack: Stack) -> Path:
    """Notes 3.0.0, packaged where the platform user can read it."""
    folder = stack.data / "packages"
    folder.mkdir(mode=0o755)
    source = folder / "notes-3.0.0"
    shutil.copytree(BASE_DIR / "examples" / "notes" / "2.0.0", source)
    manifest = json.loads((source / "dropapp.json").read_text())
    (source / "dropapp.json").write_text(json.dumps({**manifest, "version": "3.0.0"}))
    app = (source / "app.ts").read_text()
    assert app.endswith("  ],\n});\n")
    (source / "app.ts").write_text(app.removesuffix("  ],\n});\n") + FAILING_MIGRATION)
    package = folder / "notes-3.0.0.tar.gz"
    stack.manage("package_app", str(source), "-o", str(package))
    os.chmod(package, 0o644)
    return package


def open_appspace(browser: Browser, appspace_id: str, host: str) -> None:
    """*Open* on the appspace's page, then the login link as a browser follows it from there."""
    _, _, page = browser.request("GET", PANEL, f"/appspaces/{appspace_id}/")
    status, headers, _ = browser.request(
        "POST", PANEL, f"/appspaces/{appspace_id}/open", {"csrfmiddlewaretoken": csrf_token(page)}
    )
    assert status == 302, status
    link = urllib.parse.urlsplit(headers["Location"])
    assert link.hostname == host
    panel_origin = f"http://{PANEL}:{browser.port}/"
    status, _, _ = browser.request(
        "GET",
        host,
        f"{link.path}?{link.query}",
        headers={"Sec-Fetch-Site": "cross-site", "Referer": panel_origin},
    )
    assert status == 302, status


def change_version(browser: Browser, appspace_id: str, version_id: str) -> None:
    """The panel's *upgrade to it*: the page with the plan, then its form."""
    path = f"/appspaces/{appspace_id}/version"
    status, _, page = browser.request("GET", PANEL, f"{path}?to={version_id}")
    assert status == 200, page[:300]
    form = {"to": version_id, "csrfmiddlewaretoken": csrf_token(page)}
    status, headers, _ = browser.request("POST", PANEL, path, form)
    assert status == 302 and "/jobs/" in headers["Location"], (status, headers["Location"])


def test_a_version_change_through_it_keeps_the_data_or_puts_it_back(stack, run_as):
    """Upgrade from the panel, run by the unprivileged jobs worker: offline, a backup first (the
    schema changes), the migration in the sandbox, back up on the new version with the notes.
    Then a version whose migration destroys the notes and fails: the backup made before it is
    put back (hand-over and swap by the supervisor), the appspace back on its version."""
    install_examples(stack)
    # Created as the worker creates: by the platform user; the supervisor gives data/ to the uid.
    stack.manage_as(
        run_as, "create_appspace", "--owner", OWNER, "--app", "Notes", "--version", "1.0.0",
        "--subdomain", "notes",
    )  # fmt: skip
    appspace_id, uid = stack.query(
        "import json; from appspaces.models import Appspace; a = Appspace.objects.get(); "
        "print(json.dumps([str(a.public_id), a.sandbox_uid]))"
    )
    versions_code = (
        "import json; from appspaces.models import Appspace; a = Appspace.objects.get(); "
        "print(json.dumps({v.version: str(v.public_id) for v in a.app.versions.all()}))"
    )
    state_code = (
        "import json; from appspaces.models import Appspace; from backups.models import Backup; "
        "a = Appspace.objects.get(); backups = Backup.objects.filter(appspace=a).order_by('pk'); "
        "print(json.dumps([a.app_version.version, a.data_schema, a.status, "
        "[[b.kind, b.state, str(b.path)] for b in backups]]))"
    )
    host = "notes.localhost"
    browser = Browser(stack.port)
    panel_login(browser)
    open_appspace(browser, appspace_id, host)
    status, _, body = browser.request("POST", host, "/api/notes", json_body={"text": "milk"})
    assert status == 201, body

    change_version(browser, appspace_id, stack.query(versions_code)["2.0.0"])
    state, message = job_outcome(stack, "migrate", 1)
    assert state == "succeeded", message
    version, schema, status, backups = stack.query(state_code)
    assert (version, schema, status) == ("2.0.0", 2, "active")
    [(kind, backup_state, archive)] = backups
    assert (kind, backup_state) == ("pre-migration", "ready")
    assert os.stat(archive).st_uid == run_as.uid
    notes = json.loads(browser.request("GET", host, "/api/notes")[2])
    assert [(n["text"], n["done"]) for n in notes] == [("milk", False)]  # schema 2's column
    assert data_owners(stack, appspace_id) == {uid}

    # A new version of the same app, queued as the panel's *Install a new version* does.
    stack.query(
        "import json; from pathlib import Path; from appspaces.models import Appspace; "
        "from appspaces.installs.service import install_job_create; "
        "from appspaces.installs.staging import upload_copy; a = Appspace.objects.get(); "
        f"package = Path({str(broken_notes_package(stack))!r}); "
        "install_job_create(owner=a.owner, app=a.app, upload=upload_copy(package), "
        "filename=package.name, accept_warnings=True); print(json.dumps(1))"
    )
    state, message = job_outcome(stack, "install", 4)
    assert state == "succeeded", message
    change_version(browser, appspace_id, stack.query(versions_code)["3.0.0"])
    state, message = job_outcome(stack, "migrate", 2)
    assert state == "failed"
    assert "disk on fire halfway through" in message, message
    assert "back on version 2.0.0" in message and "exactly as it was" in message, message
    version, schema, status, backups = stack.query(state_code)
    assert (version, schema, status) == ("2.0.0", 2, "active")
    assert [b[:2] for b in backups] == [["pre-migration", "ready"]] * 2
    # The data the failed migration left is kept aside until the appspace has run.
    [aside] = swap_leftovers(stack, appspace_id)
    assert aside.startswith(".previous-")
    notes = json.loads(browser.request("GET", host, "/api/notes")[2])
    assert [n["text"] for n in notes] == ["milk"]
    # It ran: the sweep (the housekeeping worker) has the supervisor remove what was kept.
    stack.manage("shell", "-c", "from backups.tasks import backups_sweep; backups_sweep.delay()")
    poll(lambda: not swap_leftovers(stack, appspace_id), timeout=90, interval=1)
    assert data_owners(stack, appspace_id) == {uid}


def test_an_instance_backup_through_it_writes_a_snapshot_of_the_platform_user(ds_data_dir, run_as):
    """The scheduled instance backup, run by the unprivileged jobs worker: a fresh backup of the
    appspace first (through the supervisor's view), the apps, the database, into
    DS_BACKUP_INSTANCE_DIR; and `backup_instance --to` run as that user, as the worker would."""
    folder = Path(f"{ds_data_dir}-instance")
    folder.mkdir(mode=0o700)
    os.chown(folder, run_as.uid, run_as.gid)
    extra = {"DS_BACKUP_INSTANCE_HOURS": "1", "DS_BACKUP_INSTANCE_DIR": str(folder)}
    with started_stack(ds_data_dir, run_as, **extra) as stack:
        install_examples(stack)
        stack.manage(
            "create_appspace", "--owner", OWNER, "--app", "Guestbook", "--version", "1.0.0",
            "--subdomain", "gb",
        )  # fmt: skip
        browser = Browser(stack.port)
        form = {"name": "Ann", "message": "kept words"}
        assert browser.request("POST", "gb.localhost", "/", form)[0] == 303

        # Queued as beat queues it; its route sends it to the jobs worker.
        stack.manage(
            "shell", "-c",
            "from backups.tasks import instance_backup_scheduled as t; t.delay()",
        )  # fmt: skip
        code = (
            "import json; from backups.models import InstanceBackup, Backup; "
            "r = InstanceBackup.objects.order_by('pk').last(); "
            "b = Backup.objects.filter(state='ready').order_by('pk').last(); "
            "print(json.dumps(r and r.state != 'pending' and "
            "[r.state, r.target, r.message, r.appspace_count, b and [b.kind, str(b.public_id), "
            "str(b.path)]]))"
        )
        state, target, error, appspaces, backup = poll(
            lambda: stack.query(code), timeout=240, interval=1
        )
        assert (state, error, appspaces) == ("ready", "", 1), (state, error)
        snapshot = Path(target)
        assert snapshot.parent == folder and snapshot.name.startswith("instance-")
        assert {os.stat(p).st_uid for p in [snapshot, *snapshot.rglob("*")]} == {run_as.uid}
        manifest = json.loads((snapshot / "manifest.json").read_text())
        assert not manifest["warnings"], manifest["warnings"]
        for rel, info in manifest["files"].items():
            assert hashlib.sha256((snapshot / rel).read_bytes()).hexdigest() == info["sha256"]
        [entry] = manifest["appspaces"]
        kind, backup_id, archive = backup
        # The worker backed the appspace up first (none was fresh) and took that archive.
        assert (entry["subdomain"], entry["backup"], kind) == ("gb", backup_id, "scheduled")
        assert (snapshot / entry["archive"]).read_bytes() == Path(archive).read_bytes()
        assert os.stat(archive).st_uid == run_as.uid
        assert sorted(manifest["apps"]) == sorted(
            str(p.relative_to(stack.data / "apps")) for p in (stack.data / "apps").glob("*/*")
        )
        with sqlite3.connect(snapshot / manifest["database"]) as db:
            rows = db.execute("SELECT subdomain FROM appspaces_appspace").fetchall()
        assert rows == [("gb",)]
        assert not list((stack.data / "run" / "views").iterdir())

        by_hand = folder / "by-hand.tar"
        out = stack.manage_as(run_as, "backup_instance", "--to", str(by_hand), "--json")
        result = json.loads(out.strip().splitlines()[-1])
        assert (result["appspaces"], result["warnings"]) == (1, []), result
        assert os.stat(by_hand).st_uid == run_as.uid
        with tarfile.open(by_hand) as tar:
            names = set(tar.getnames())
        assert {"./manifest.json", f"./{entry['archive']}"} <= names


def _free_low_port(exclude: tuple[int, ...] = ()) -> int:
    for port in range(1023, 900, -1):
        if port in exclude:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024 on 127.0.0.1")


def test_the_tls_edge_runs_unprivileged_with_only_the_bind_capability(ds_data_dir, run_as):
    """Ports below 1024, as in production: Caddy runs as DS_RUN_AS and keeps CAP_NET_BIND_SERVICE
    and nothing else (read from /proc), and serves verified https through the dropped web."""
    http_port = _free_low_port()
    https_port = _free_low_port((http_port,))
    env = embedded_env(ds_data_dir, http_port)
    env.update(
        DS_TLS="internal",
        DS_HTTPS_PORT=str(https_port),
        DS_WEB_PORT=str(free_port()),
        DS_BIND="127.0.0.1",
        DS_RUN_AS=run_as.name,
    )
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        reachable_python(run_as, [*manage, "serve"]),
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(proc, "Press Ctrl-C to stop.", timeout=120)
        root = ds_data_dir / "tls" / "internal-root.crt"
        poll(root.is_file, timeout=30)
        edges = [p for p, c in descendants(proc.pid, with_cmdline=True) if "caddy" in c]
        assert len(edges) == 1
        status = Path(f"/proc/{edges[0]}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert [int(v) for v in fields["Uid"].split()] == [run_as.uid] * 4
        assert [int(v) for v in fields["Gid"].split()] == [run_as.gid] * 4
        bind_only = 1 << 10  # CAP_NET_BIND_SERVICE
        for name in ("CapEff", "CapPrm", "CapAmb"):
            assert int(fields[name], 16) == bind_only, (name, fields[name])
        assert os.stat(ds_data_dir / "tls").st_uid == run_as.uid
        login = https_get(https_port, "dropid.localhost", "/accounts/login/", client_context(root))
        assert login.status == 200
        assert http_get(http_port, "dropid.localhost", "/").status == 308
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            print(proc.communicate(timeout=60)[0])
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_a_user_that_cannot_run_it_keeps_everything_as_before(ds_data_dir, run_as):
    """`make run` as root from a checkout the user cannot reach (a home that is 0700; here
    DS_DATA_DIR is inside one): serve says why and runs as it always did, the panel answering."""
    closed = ds_data_dir / "home"
    closed.mkdir(mode=0o700)
    port = free_port()
    env = embedded_env(closed / "var", port)
    env.update(DS_RUN_AS=run_as.name)
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = read_until(proc, "Press Ctrl-C to stop.", timeout=120)
        assert f"DS_RUN_AS user {run_as.name!r} cannot run Dropserver here" in banner
        assert "run as root" in banner
        status, _, _ = Browser(port).request("GET", "dropid.localhost", "/accounts/login/")
        assert status == 200
        webs = [p for p, c in descendants(proc.pid, with_cmdline=True) if "daphne" in c]
        assert webs and all(os.stat(f"/proc/{p}").st_uid == 0 for p in webs)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
