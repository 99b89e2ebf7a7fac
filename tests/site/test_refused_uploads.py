"""A refused upload leaves nothing: every upload (app package, backup archive) refused for any
reason leaves DS_DATA_DIR as it was, checked from the host right after each answer (no sweep
runs); and the panel takes large bodies only on upload views, from signed-in users, both in
Django and while Daphne reads the body."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import tarfile
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from accounts.upload_gate import PANEL_MAX_BODY, make_ticket
from appspaces.installs.staging import uploads_dir
from appspaces.models import Appspace, AppVersion, Job
from backups.models import Backup
from backups.restore import uploads_dir as archive_uploads_dir
from backups.services import backup_create
from dropserver_site.body_limits import max_body_bytes
from tests.backups.conftest import create_appspace, fill
from tests.site.processes import free_port

pytestmark = pytest.mark.django_db


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root as the host sees it: kind, mode, size and content hash. The
    Prometheus files under `metrics/` are left out: every answered request (a 413 too) is
    counted there, and that is the instance's telemetry, not a stored upload."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root and "metrics" in dirs:
            dirs.remove("metrics")
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            out[path.relative_to(root).as_posix()] = (st.st_mode, st.st_size, digest)
    return out


def package_bytes(size: int = 0) -> bytes:
    """A small .tar.gz app package; `size` bytes of incompressible padding make it larger."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (
            ("dropapp.json", b'{"name": "Hello", "version": "1.0.0"}'),
            ("app.ts", b"export default {};"),
            ("pad.bin", os.urandom(size)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload(name: str, data: bytes) -> io.BytesIO:
    file = io.BytesIO(data)
    file.name = name
    return file


def panel(user=None, **kwargs) -> Client:
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST, **kwargs)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def world(alice, bob, charlie, ds_data_dir):
    space = create_appspace(alice, schema=0)
    fill(space, {"a.txt": "alpha"})
    backup = backup_create(appspace=space, kind=Backup.Kind.MANUAL)
    creating = create_appspace(alice, schema=0, status=Appspace.Status.CREATING)
    version = AppVersion.objects.get(pk=space.app_version_id)
    uploads_dir(), archive_uploads_dir()  # the folders a running instance has
    return {
        "appspace": space,
        "creating": creating,
        "archive": backup.path.read_bytes(),
        "version": version,
    }


def test_a_series_of_refused_uploads_leaves_the_data_dir_unchanged(
    world, alice, charlie, ds_data_dir, settings
):
    settings.DS_APP_MAX_PACKAGE_MB = 1
    settings.DS_BACKUP_MAX_UPLOAD_MB = 1
    space, version, archive = world["appspace"], world["version"], world["archive"]
    restore_url = reverse("backup_upload_restore", args=[space.public_id])
    new_url = reverse("appspace_new") + f"?version={version.public_id}"
    install_url = reverse("app_install")
    version_url = reverse("app_install_version", args=[version.app.public_id])
    small, big, huge = package_bytes(), package_bytes(1536 * 1024), package_bytes(3 * 1024 * 1024)
    # A CSRF cookie but no token: Django reads the body to look for the token, then refuses.
    no_csrf = panel(alice, enforce_csrf_checks=True)
    assert no_csrf.get(install_url).status_code == 200
    assert settings.CSRF_COOKIE_NAME in no_csrf.cookies
    jobs = Job.objects.count()
    before = snapshot(ds_data_dir)

    def refused(client, url, data, status, says=""):
        response = client.post(url, data)
        assert response.status_code == status, (url, response.status_code)
        if says:
            assert says in response.content.decode()
        # At once, from the host: no file, no folder, no size changed.
        assert snapshot(ds_data_dir) == before, url
        assert Job.objects.count() == jobs

    # CSRF: a signed-in owner's post without the token.
    refused(no_csrf, install_url, {"package": upload("p.tar.gz", small)}, 403)
    refused(no_csrf, version_url, {"package": upload("p.tar.gz", small)}, 403)
    refused(
        no_csrf,
        restore_url,
        {"archive": upload("a.tar.zst", archive), "confirm": space.subdomain},
        403,
    )
    refused(no_csrf, new_url, {"archive": upload("a.tar.zst", archive), "subdomain": "x"}, 403)

    # Anonymous: sent to sign in (a small body), or 413 (a large one).
    anonymous = panel()
    refused(anonymous, install_url, {"package": upload("p.tar.gz", small)}, 302)
    refused(anonymous, restore_url, {"archive": upload("a.tar.zst", archive)}, 302)
    refused(anonymous, install_url, {"package": upload("p.tar.gz", big)}, 413)

    # An outsider: 404 for someone else's app, appspace or version, before the body is read.
    outsider = panel(charlie)
    refused(outsider, version_url, {"package": upload("p.tar.gz", small)}, 404)
    refused(
        outsider,
        restore_url,
        {"archive": upload("a.tar.zst", archive), "confirm": space.subdomain},
        404,
    )
    refused(outsider, new_url, {"archive": upload("a.tar.zst", archive), "subdomain": "x"}, 404)

    # Not allowed now: an appspace being created cannot be restored.
    owner = panel(alice)
    creating_url = reverse("backup_upload_restore", args=[world["creating"].public_id])
    refused(
        owner,
        creating_url,
        {"archive": upload("a.tar.zst", archive), "confirm": world["creating"].subdomain},
        409,
        "cannot be restored",
    )

    # Too large: declared (refused from Content-Length) and streamed (refused past the cap).
    refused(owner, install_url, {"package": upload("p.tar.gz", huge)}, 413)
    refused(owner, install_url, {"package": upload("p.tar.gz", big)}, 400, "larger than 1 MB")
    refused(
        owner,
        restore_url,
        {"archive": upload("a.tar.zst", os.urandom(1536 * 1024)), "confirm": space.subdomain},
        400,
        "larger than 1 MB",
    )

    # Bad content: a form that does not hold, an archive that is not one.
    refused(
        owner,
        install_url,
        {"package": upload("p.tar.gz", small), "url": "https://example.com/p.tar.gz"},
        400,
        "not both",
    )
    refused(owner, restore_url, {"archive": upload("a.tar.zst", archive), "confirm": "wrong"}, 400)
    refused(
        owner,
        new_url,
        {"archive": upload("a.tar.zst", b"not an archive" * 100), "subdomain": "fresh"},
        400,
        "not a backup Dropserver can read",
    )


def test_a_kept_upload_gets_its_one_name_in_the_jobs_folder(world, alice, ds_data_dir):
    before = set(snapshot(ds_data_dir))
    response = panel(alice).post(
        reverse("app_install"), {"package": upload("p.tar.gz", package_bytes())}
    )
    assert response.status_code == 302
    job = Job.objects.get(kind=Job.Kind.INSTALL)
    added = set(snapshot(ds_data_dir)) - before
    assert added == {f"uploads/{job.public_id}", f"uploads/{job.public_id}/package"}
    assert (uploads_dir() / str(job.public_id) / "package").read_bytes()[:2] == b"\x1f\x8b"


def test_an_anonymous_large_body_to_sign_in_is_413_not_an_error(alice):
    response = panel().post(reverse("account_login"), {"login": "x" * (PANEL_MAX_BODY + 1)})
    assert response.status_code == 413
    assert response.content == b"The request is too large.\n"
    # Signed in, a large body is still refused where no upload is expected.
    response = panel(alice).post(reverse("account_login"), {"login": "x" * (PANEL_MAX_BODY + 1)})
    assert response.status_code == 413


def test_signed_in_pages_carry_an_upload_ticket_bound_to_the_session(alice):
    client = panel(alice)
    client.get(reverse("dashboard"))
    name = "ds_upload"
    ticket = client.cookies[name]
    assert ticket["httponly"] and ticket["samesite"] == "Lax" and not ticket["domain"]
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    host = settings.DS_PANEL_HOST.encode()
    target = reverse("app_install").encode()
    good = f"{settings.SESSION_COOKIE_NAME}={session}; {name}={ticket.value}".encode()
    large = settings.DS_APP_MAX_PACKAGE_MB * 1024 * 1024
    assert max_body_bytes(host, target, good) > large
    # Anywhere else, without the ticket, with another session's, or forged: the small cap.
    assert max_body_bytes(host, reverse("account_login").encode(), good) == PANEL_MAX_BODY
    assert max_body_bytes(host, target, f"{settings.SESSION_COOKIE_NAME}={session}".encode()) == (
        PANEL_MAX_BODY
    )
    other = f"{settings.SESSION_COOKIE_NAME}=another; {name}={ticket.value}".encode()
    assert max_body_bytes(host, target, other) == PANEL_MAX_BODY
    forged = make_ticket(alice.pk, session)[:-3] + "abc"
    assert (
        max_body_bytes(
            host, target, f"{settings.SESSION_COOKIE_NAME}={session}; {name}={forged}".encode()
        )
        == PANEL_MAX_BODY
    )
    # Signing out takes it back.
    response = client.post(reverse("account_logout"))
    assert response.cookies[name].value == ""


# --- Through Daphne ---------------------------------------------------------------------------


def _declared_only(port: int, path: str, length: int, cookie: str = "") -> int:
    """POST a declared body that is never sent: only a server that refuses it from the headers
    answers (one that reads it first waits for bytes that never come)."""
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {settings.DS_PANEL_HOST}:{port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{extra}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(request)
        response = http.client.HTTPResponse(s)
        response.begin()
        return response.status


def test_daphne_refuses_large_panel_bodies_without_an_upload_ticket(data_root):
    from tests.gateway.conftest import start_daphne, stop

    data_dir = Path(tempfile.mkdtemp(prefix="daphne-", dir=data_root))
    port = free_port()
    process = start_daphne(port, data_dir, data_dir.parent / f"{data_dir.name}.log")
    try:
        before = snapshot(data_dir)
        login = reverse("account_login")
        assert _declared_only(port, login, PANEL_MAX_BODY + 1) == 413
        assert _declared_only(port, reverse("app_install"), 2 * PANEL_MAX_BODY) == 413
        forged = f"{settings.SESSION_COOKIE_NAME}=abc; ds_upload=forged:1:2"
        assert _declared_only(port, reverse("app_install"), 2 * PANEL_MAX_BODY, forged) == 413
        assert snapshot(data_dir) == before
    finally:
        stop(process)
