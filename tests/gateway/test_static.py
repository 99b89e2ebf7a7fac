"""Static routes: served by the host from the app's files, never outside the declared folder,
with validators, conditional requests and ranges, without waking the sandbox."""

import pytest

from tests.gateway.app_files import BIG
from tests.gateway.test_dispatch import assert_platform_headers

pytestmark = pytest.mark.sandbox


@pytest.fixture
def appspace(stack):
    return stack.appspace()


def running(stack, appspace) -> bool:
    return any(s["id"] == str(appspace.public_id) for s in stack.supervisor.client.list())


def test_files_are_served_with_types_and_validators_without_waking_the_sandbox(stack, appspace):
    browser = stack.browser()
    response = browser.get(stack.url(appspace, "/assets/index.html"))
    assert response.status == 200
    assert response.body == b"<!doctype html><title>static</title><h1>static page</h1>\n"
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.header("etag").startswith('"')
    assert response.header("last-modified").endswith("GMT")
    assert response.header("cache-control") == "no-cache"
    assert_platform_headers(response)
    types = {
        "/assets/app.js": "text/javascript; charset=utf-8",
        "/assets/style.css": "text/css; charset=utf-8",
        "/assets/sub/deep.json": "application/json; charset=utf-8",
        "/assets/big.bin": "application/octet-stream",
        "/logo.txt": "text/plain; charset=utf-8",
    }
    for path, kind in types.items():
        response = browser.get(stack.url(appspace, path))
        assert (response.status, response.header("content-type")) == (200, kind), path
    assert not running(stack, appspace)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        # Dot segments and escaped separators: the app's URL would read another path (400).
        ("/assets/../secret.txt", 400),
        ("/assets/%2e%2e/secret.txt", 400),
        ("/assets/%2E%2E/app.ts", 400),
        ("/assets/..%2fsecret.txt", 400),
        ("/assets/%2e%2e%2fsecret.txt", 400),
        ("/assets/sub/..%2f..%2fsecret.txt", 400),
        ("/assets/sub%2f..%2f..%2fsecret.txt", 400),
        ("/assets/%2fetc%2fpasswd", 400),
        ("/assets/..%5csecret.txt", 400),
        ("/assets/.%2e/secret.txt", 400),
        ("/assets/%00secret.txt", 400),
        ("/private/../public/index.html", 400),
        # Read alike by everyone, and no file there (404).
        ("/assets//etc/passwd", 404),
        ("/assets/sub", 404),
        ("/assets/", 404),
    ],
)
def test_paths_that_leave_the_folder_are_refused(stack, appspace, path, status):
    response = stack.browser().get(stack.url(appspace, path))
    assert response.status == status
    assert b"app-root-secret" not in response.body
    assert b"createApp" not in response.body


def test_conditional_requests(stack, appspace):
    browser = stack.browser()
    url = stack.url(appspace, "/assets/app.js")
    first = browser.get(url)
    etag, modified = first.header("etag"), first.header("last-modified")
    not_modified = browser.get(url, headers={"If-None-Match": etag})
    assert (not_modified.status, not_modified.body) == (304, b"")
    assert not_modified.header("etag") == etag
    assert_platform_headers(not_modified)
    assert browser.get(url, headers={"If-None-Match": f'"nope", W/{etag}'}).status == 304
    assert browser.get(url, headers={"If-None-Match": '"other"'}).status == 200
    assert browser.get(url, headers={"If-Modified-Since": modified}).status == 304
    earlier = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert browser.get(url, headers={"If-Modified-Since": earlier}).status == 200
    # If-None-Match wins over If-Modified-Since.
    both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert browser.get(url, headers=both).status == 200


@pytest.mark.parametrize("path", ["/assets/logo.txt", "/assets/big.bin"])  # memory, disk
def test_ranges(stack, appspace, path):
    browser = stack.browser()
    url = stack.url(appspace, path)
    whole = browser.get(url).body
    assert whole == (BIG if path.endswith("big.bin") else b"logo\n")
    size = len(whole)
    part = browser.get(url, headers={"Range": "bytes=1-3"})
    assert (part.status, part.body) == (206, whole[1:4])
    assert part.header("content-range") == f"bytes 1-3/{size}"
    assert part.header("content-length") == "3"
    suffix = browser.get(url, headers={"Range": "bytes=-2"})
    assert (suffix.status, suffix.body) == (206, whole[-2:])
    tail = browser.get(url, headers={"Range": "bytes=2-"})
    assert (tail.status, tail.body) == (206, whole[2:])
    beyond = browser.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status == 416
    assert beyond.header("content-range") == f"bytes */{size}"
    several = browser.get(url, headers={"Range": "bytes=0-1,3-4"})
    assert (several.status, several.body) == (200, whole)  # one range only; ignored
    stale = browser.get(url, headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert (stale.status, stale.body) == (200, whole)
    fresh = browser.get(url, headers={"Range": "bytes=0-1", "If-Range": part.header("etag")})
    assert (fresh.status, fresh.body) == (206, whole[:2])


def test_head(stack, appspace):
    response = stack.browser().request("HEAD", stack.url(appspace, "/assets/big.bin"))
    assert response.status == 200
    assert response.body == b""
    assert response.header("content-length") == str(len(BIG))


def test_static_files_never_follow_a_link_out_of_the_folder(tmp_path):
    from appspaces.gateway.forward.static import resolve
    from packages.routes import RouteTable

    files = tmp_path / "files"
    (files / "public").mkdir(parents=True)
    (files / "secret.txt").write_text("secret")
    (tmp_path / "outside.txt").write_text("outside")
    (files / "public" / "ok.txt").write_text("ok")
    (files / "public" / "link.txt").symlink_to(files / "secret.txt")
    (files / "public" / "far.txt").symlink_to(tmp_path / "outside.txt")
    table = RouteTable.from_routes(
        [{"method": "GET", "path": "/assets/*", "auth": "public", "static": "@app/public"}]
    )
    found = resolve(str(files), table.match("GET", "/assets/ok.txt"), "v", 1024)
    assert found is not None and found.body == b"ok"
    for name in ("link.txt", "far.txt"):
        assert resolve(str(files), table.match("GET", f"/assets/{name}"), "v", 1024) is None
