"""routes.request_path: which raw request paths the gateway may match at all (the live,
differential proof against Deno's parser is tests/gateway/test_paths.py)."""

from __future__ import annotations

import pytest

from packages.routes import BadPath, request_path

ACCEPTED = [
    "/",
    "/items/42",
    "/items/",
    "//double",
    "/caf%C3%A9",
    "/caf%c3%a9",
    "/100%25",
    "/%252e%252e",
    "/a;b=1/c",
    "/~user@host:8000/!$&'()*+,=",
    "/..a/.b/a../a.",
    "/.well-known/x",
    "/" + "x" * 5000,
]

REFUSED = [
    "/x\\..\\admin/secret",  # the example: "\" is "/" for http URLs
    "/a\\b",
    "/a/../b",
    "/a/./b",
    "/a/..",
    "/a/.",
    "/.",
    "/..",
    "/a/%2e%2e/b",
    "/a/%2E%2E/b",
    "/a/%2e%2E/b",
    "/a/.%2e/b",
    "/a/%2E./b",
    "/a/%2e/b",
    "/a%2Fb",
    "/a%2fb",
    "/a%5Cb",
    "/a%5cb",
    "/a%00b",
    "/a%zz",
    "/a%",
    "/a%2",
    "/a\tb",
    "/a\nb",
    "/a\rb",
    "/a b",
    "/a#b",
    "/a?b",
    "/a|b",
    "/a^b",
    "/a`b",
    "/a{b}",
    "/a<b>",
    '/a"b',
    "/a[b]",
    "/a\x7fb",
    "/a\x00b",
    "/café",
    "",
    "a/b",
    "*",
    "http://other/a",
]


def ids(paths: list[str]) -> list[str]:
    return [ascii(path)[1:-1][:40] or "empty" for path in paths]


@pytest.mark.parametrize("path", ACCEPTED, ids=ids(ACCEPTED))
def test_paths_every_url_parser_reads_alike_pass_unchanged(path):
    assert request_path(path) == path
    assert request_path(path.encode()) == path


@pytest.mark.parametrize("path", REFUSED, ids=ids(REFUSED))
def test_paths_an_app_would_read_differently_are_refused(path):
    with pytest.raises(BadPath):
        request_path(path)


def test_non_ascii_bytes_are_refused():
    with pytest.raises(BadPath):
        request_path("/café".encode())
    with pytest.raises(BadPath):
        request_path(b"/\xff")
