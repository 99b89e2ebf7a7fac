"""Installs from URLs: a package URL, a Dropserver-style listing served by a local test server,
newer versions offered by the listing, and the SSRF guard still in place for the pipeline."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appspaces.installs.listings import listing_check_due, listing_refresh, listings_refresh_all
from appspaces.installs.versions import app_update_available
from appspaces.models import App, AppVersion, Job
from tests.appspaces.conftest import assert_nothing_left, hello_app, install, manifest_for

pytestmark = [pytest.mark.django_db, pytest.mark.sandbox]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.server.files.get(self.path)
        self.server.hits.append(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(settings):
    settings.DS_FETCH_ALLOW_LOOPBACK = True
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.hits = {}, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def publish(server, make_package, versions: dict[str, int], *, base="pkgs/") -> str:
    """Serve a listing of `versions` ({version: schema}) with their packages; -> its URL."""
    listing = {"base": base, "versions": {}}
    for version, schema in versions.items():
        package = make_package({"app.ts": hello_app(schema)}, manifest=manifest_for(version))
        server.files[f"/apps/{base}hello-{version}.tar.gz"] = package.read_bytes()
        listing["versions"][version] = {"package": f"hello-{version}.tar.gz"}
    server.files["/apps/hello.json"] = json.dumps(listing).encode()
    return f"{server.url}/apps/hello.json"


def test_it_installs_from_a_package_url(supervisor, server, alice, make_package):
    server.files["/hello.tar.gz"] = make_package().read_bytes()
    job = install(alice, f"{server.url}/hello.tar.gz")
    assert job.state == Job.State.SUCCEEDED, job.message
    assert job.app.listing_url == ""  # a package URL is not a listing


def test_it_installs_the_newest_version_of_a_listing(supervisor, server, alice, make_package):
    url = publish(server, make_package, {"1.0.0": 1, "1.1.0": 1, "2.0.0-beta.1": 2})
    job = install(alice, url)
    assert job.state == Job.State.SUCCEEDED, job.message
    app = job.app
    assert app.listing_url == url
    assert app.listing_latest_version == "1.1.0"  # pre-releases are not offered
    assert list(app.versions.values_list("version", flat=True)) == ["1.1.0"]
    assert server.hits == ["/apps/hello.json", "/apps/pkgs/hello-1.1.0.tar.gz"]
    assert app_update_available(app) == ""


def test_it_offers_and_installs_a_newer_listed_version(supervisor, server, alice, make_package):
    url = publish(server, make_package, {"1.0.0": 1})
    app = install(alice, url).app

    publish(server, make_package, {"1.0.0": 1, "1.2.0": 2})
    assert listing_refresh(app=app) == "1.2.0"
    app.refresh_from_db()
    assert app_update_available(app) == "1.2.0"

    # The same listing URL, installed again from "Install an app", joins the same app.
    job = install(alice, url)
    assert job.state == Job.State.SUCCEEDED, job.message
    assert job.app == app and App.objects.count() == 1
    assert sorted(app.versions.values_list("version", flat=True)) == ["1.0.0", "1.2.0"]
    app.refresh_from_db()
    assert app_update_available(app) == ""
    # ...and once everything is installed, installing it again says so.
    again = install(alice, url)
    assert again.state == Job.State.FAILED
    assert again.message == "Hello 1.2.0 is already installed."


def test_it_refreshes_all_listings_in_the_background(supervisor, server, alice, bob, make_package):
    url = publish(server, make_package, {"1.0.0": 1})
    apps = [install(user, url).app for user in (alice, bob)]
    publish(server, make_package, {"1.0.0": 1, "1.0.1": 1})
    server.hits.clear()
    assert listings_refresh_all() == 1
    assert server.hits == ["/apps/hello.json"]  # one fetch for both users' apps
    for app in apps:
        app.refresh_from_db()
        assert app_update_available(app) == "1.0.1"


def test_it_checks_a_listing_at_most_every_few_hours(supervisor, server, alice, make_package):
    app = install(alice, publish(server, make_package, {"1.0.0": 1})).app
    assert not listing_check_due(app=app)  # just checked at install
    App.objects.filter(pk=app.pk).update(listing_checked_at=None)
    assert listing_check_due(app=app)
    assert not listing_check_due(app=app)


def test_it_refuses_a_listing_whose_package_has_another_version(
    supervisor, server, alice, make_package
):
    url = publish(server, make_package, {"1.0.0": 1})
    server.files["/apps/pkgs/hello-1.0.0.tar.gz"] = make_package(
        manifest=manifest_for("6.6.6")
    ).read_bytes()
    job = install(alice, url)
    assert job.state == Job.State.FAILED
    assert "the listing offers 1.0.0, but the package's manifest says 6.6.6" in job.message
    assert_nothing_left()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>hello</html>", "neither an app package (.tar.gz or .zip) nor an app listing"),
        (b'{"versions": {"1.0": {}}}', "invalid version"),
        (b'{"versions": {}}', "The app listing has no versions."),
    ],
)
def test_it_refuses_urls_that_are_not_packages_or_listings(
    body, expected, supervisor, server, alice
):
    server.files["/thing"] = body
    job = install(alice, f"{server.url}/thing")
    assert job.state == Job.State.FAILED
    assert expected in job.message, job.message
    assert_nothing_left()


def test_it_reports_a_download_that_fails(supervisor, server, alice):
    job = install(alice, f"{server.url}/missing.tar.gz")
    assert job.state == Job.State.FAILED
    assert "answered 404" in job.message
    assert_nothing_left()


def test_it_keeps_the_ssrf_guard_on_for_installs(settings, supervisor, server, alice):
    settings.DS_FETCH_ALLOW_LOOPBACK = False
    job = install(alice, f"{server.url}/hello.tar.gz")
    assert job.state == Job.State.FAILED
    assert server.hits == []
    assert "127.0.0.1" in job.message
    assert not AppVersion.objects.exists()
    assert_nothing_left()
