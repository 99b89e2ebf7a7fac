"""The route matcher: validation, a table of cases, and random comparison with a reference."""

from __future__ import annotations

import random
from urllib.parse import unquote

import pytest

from packages.routes import METHODS, RouteError, RouteTable, static_file

ROUTES = [
    {"method": "GET", "path": "/", "auth": "public"},
    {"method": "GET", "path": "/assets/*", "auth": "public", "static": "@app/public"},
    {"method": "GET", "path": "/items/new"},
    {"method": "GET", "path": "/items/:id"},
    {"method": "POST", "path": "/items/:id", "auth": {"permission": "edit"}},
    {"method": "*", "path": "/items/:id/notes/:note"},
    {"method": "DELETE", "path": "/items/*"},
    {"method": "GET", "path": "/caf%C3%A9"},
    {"method": "GET", "path": "/favicon.ico", "auth": "public", "static": "@app/icon.ico"},
    {"method": "OPTIONS", "path": "/*", "auth": "public"},
]


@pytest.fixture(scope="module")
def table():
    return RouteTable.from_routes(ROUTES, permission_keys={"edit"})


@pytest.mark.parametrize(
    "method,path,index,params",
    [
        ("GET", "/", 0, {}),
        ("HEAD", "/", 0, {}),
        ("GET", "/assets/css/app.css", 1, {"*": "css/app.css"}),
        ("GET", "/assets/", 1, {"*": ""}),
        ("GET", "/assets", 1, {"*": ""}),
        ("GET", "/items/new", 2, {}),  # declared before /items/:id, so it wins
        ("GET", "/items/42", 3, {"id": "42"}),
        ("GET", "/items/42/", 3, {"id": "42"}),  # one trailing slash is ignored
        ("HEAD", "/items/42", 3, {"id": "42"}),
        ("POST", "/items/42", 4, {"id": "42"}),
        ("PUT", "/items/42/notes/7", 5, {"id": "42", "note": "7"}),
        ("GET", "/items/a%20b", 3, {"id": "a b"}),
        ("GET", "/items/a%2Fb", 3, {"id": "a/b"}),  # %2F stays inside its segment
        ("GET", "/items/%25", 3, {"id": "%"}),
        ("GET", "/items/caf%C3%A9", 3, {"id": "café"}),
        ("DELETE", "/items/a/b/c", 6, {"*": "a/b/c"}),
        ("DELETE", "/items/a%2Fb/c", 6, {"*": "a/b/c"}),
        ("GET", "/caf%C3%A9", 7, {}),
        ("GET", "/caf%c3%a9", 7, {}),
        ("GET", "/favicon.ico", 8, {}),
        ("OPTIONS", "/anything/at/all", 9, {"*": "anything/at/all"}),
        ("OPTIONS", "/", 9, {"*": ""}),
    ],
)
def test_it_matches(table, method, path, index, params):
    found = table.match(method, path)
    assert found is not None
    route, got = found
    assert (route.index, got) == (index, params)


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/"),
        ("GET", "/items"),
        ("GET", "/items/1/2"),
        ("GET", "/nope"),
        ("TRACE", "/"),
        ("get", "/"),
        ("GET", "//"),
        ("GET", "/items//1"),
        ("GET", "/assets/../secret"),
        ("GET", "/assets/%2e%2e/secret"),
        ("GET", "/assets/./x"),
        ("GET", "/items/%ff"),  # not UTF-8
        ("GET", "/items/%00"),
        ("GET", "items/1"),
        ("GET", ""),
        ("GET", "/favicon.ico/x"),
    ],
)
def test_it_refuses(table, method, path):
    assert table.match(method, path) is None


def test_the_first_declared_route_wins():
    routes = [{"method": "GET", "path": "/items/:id"}, {"method": "GET", "path": "/items/new"}]
    assert RouteTable.from_routes(routes).match("GET", "/items/new").route.index == 0
    assert RouteTable.from_routes(routes[::-1]).match("GET", "/items/new").route.index == 0
    wildcard_first = [{"method": "*", "path": "/*"}, {"method": "GET", "path": "/x"}]
    assert RouteTable.from_routes(wildcard_first).match("GET", "/x").route.index == 0


def test_it_exposes_auth_and_static_targets(table):
    post = table.match("POST", "/items/1").route
    assert (post.auth, post.permission) == ("permission", "edit")
    assert table.match("GET", "/").route.auth == "public"
    assert table.match("GET", "/items/1").route.auth == "user"  # the default
    assets = table.match("GET", "/assets/a.css").route
    assert assets.is_static and assets.static == "public" and assets.wildcard


def test_it_round_trips_through_to_list(table):
    again = RouteTable.from_routes(table.to_list(), permission_keys={"edit"})
    assert again.routes == table.routes


# --- Validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route,message",
    [
        ({"method": "GET", "path": "items"}, "path must be a string starting with '/'"),
        ({"method": "GET", "path": 5}, "path must be a string"),
        ({"method": "GET", "path": "/a//b"}, "empty segment"),
        ({"method": "GET", "path": "/a/"}, "empty segment"),
        ({"method": "GET", "path": "/a/*/b"}, "'*' is only allowed as the last segment"),
        ({"method": "GET", "path": "/a*"}, "'*' is only allowed as a whole last segment"),
        ({"method": "GET", "path": "/:1d"}, "parameter name '1d' must match"),
        ({"method": "GET", "path": "/:"}, "parameter name '' must match"),
        ({"method": "GET", "path": "/:a/:a"}, "parameter 'a' appears twice"),
        ({"method": "GET", "path": "/a/../b"}, "must not contain '.', '..'"),
        ({"method": "GET", "path": "/a/%2e%2E"}, "must not contain '.', '..'"),
        ({"method": "GET", "path": "/a%2Fb"}, "an encoded '/'"),
        ({"method": "GET", "path": "/a?b"}, "'?'"),
        ({"method": "GET", "path": "/a b"}, "spaces"),
        ({"method": "GET", "path": "/%ff"}, "not UTF-8"),
        ({"method": "FETCH", "path": "/"}, "method must be one of"),
        ({"path": "/"}, "method must be one of"),
        ({"method": "GET", "path": "/", "auth": "admin"}, 'auth must be "public", "user"'),
        ({"method": "GET", "path": "/", "auth": {"permission": "nope"}}, "'nope' is not declared"),
        ({"method": "GET", "path": "/", "auth": {"role": "edit"}}, "auth must be"),
        ({"method": "POST", "path": "/a/*", "static": "@app/a"}, "only answer GET"),
        ({"method": "*", "path": "/a/*", "static": "@app/a"}, "only answer GET"),
        ({"method": "GET", "path": "/a/*", "static": "public"}, 'static must be "@app/'),
        ({"method": "GET", "path": "/a/*", "static": "@app/../etc"}, "climbs out"),
        ({"method": "GET", "path": "/a/*", "static": "@app//etc"}, "absolute path"),
        ({"method": "GET", "path": "/:x/*", "static": "@app/a"}, "cannot have :parameters"),
        ({"method": "GET", "path": "/a", "static": "@app/"}, "must name that file"),
        ({"method": "GET", "path": "/a", "static": "@app"}, "must name that file"),
        ({"method": "GET", "path": "/a/*", "static": "@app/a", "handler": True}, "not both"),
        ("GET /", "must be an object"),
    ],
)
def test_it_refuses_invalid_routes(route, message):
    with pytest.raises(RouteError) as info:
        RouteTable.from_routes([{"method": "GET", "path": "/ok"}, route], permission_keys={"e"})
    assert len(info.value.errors) >= 1
    assert info.value.errors[0].startswith("route 1")
    assert message in info.value.errors[0], info.value.errors


def test_it_lists_every_invalid_route():
    with pytest.raises(RouteError) as info:
        RouteTable.from_routes(
            [{"method": "GET", "path": "x"}, {"method": "GET", "path": "/"}, {"method": "X"}]
        )
    assert [e.split(" ")[1] for e in info.value.errors] == ["0", "2", "2"]


def test_it_refuses_a_routes_value_that_is_not_a_list():
    with pytest.raises(RouteError, match="routes must be a list"):
        RouteTable.from_routes("GET /")


# --- Static files ---------------------------------------------------------------------------


def test_it_finds_static_files_inside_the_app_only(tmp_path, table):
    files = tmp_path / "files"
    (files / "public" / "css").mkdir(parents=True)
    (files / "public" / "css" / "app.css").write_text("body{}")
    (files / "icon.ico").write_bytes(b"ico")
    (files / "secret.txt").write_text("no")
    (tmp_path / "outside.txt").write_text("no")

    def serve(path):
        found = table.match("GET", path)
        return found and static_file(found, files)

    assert serve("/assets/css/app.css") == (files / "public/css/app.css").resolve()
    assert serve("/favicon.ico") == (files / "icon.ico").resolve()
    assert serve("/assets/css") is None  # a folder
    assert serve("/assets/") is None
    assert serve("/assets/missing.css") is None
    assert serve("/assets/..%2Fsecret.txt") is None
    assert serve("/assets/..%2F..%2Foutside.txt") is None
    assert serve("/") is None  # not a static route


# --- Random comparison with a plain reference implementation --------------------------------


def reference_match(routes, method, path):
    """The documented rules, written as plainly as possible."""
    if method not in METHODS or not path.startswith("/"):
        return None
    body = "" if path == "/" else path[1:-1] if path.endswith("/") else path[1:]
    segments = []
    for raw in body.split("/") if path != "/" else []:
        if raw == "":
            return None
        try:
            value = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None
        if value in (".", "..") or "\x00" in value:
            return None
        segments.append(value)
    for index, route in enumerate(routes):
        if route["method"] not in (method, "*") and (method, route["method"]) != ("HEAD", "GET"):
            continue
        pattern = [] if route["path"] == "/" else route["path"][1:].split("/")
        params, ok = {}, True
        for i, part in enumerate(pattern):
            if part == "*":
                params["*"] = "/".join(segments[i:])
                break
            if i >= len(segments):
                ok = False
                break
            if part.startswith(":"):
                params[part[1:]] = segments[i]
            elif unquote(part) != segments[i]:
                ok = False
                break
        else:
            ok = ok and len(segments) == len(pattern)
        if ok:
            return index, params
    return None


LITERALS = ["a", "b", "items", "c%20d", "caf%C3%A9", "x.y", "%25"]
REQUEST_SEGMENTS = LITERALS + ["c d", "café", "A", "%2F", "a%2Fb", "..", "%2e", "", "%ff", "7"]


def random_routes(rng: random.Random) -> list[dict]:
    routes = []
    for _ in range(rng.randint(1, 12)):
        parts, names = [], 0
        for _ in range(rng.randint(0, 3)):
            if rng.random() < 0.3:
                parts.append(f":p{names}")
                names += 1
            else:
                parts.append(rng.choice(LITERALS))
        if rng.random() < 0.25:
            parts.append("*")
        path = "/" + "/".join(parts)
        routes.append({"method": rng.choice([*METHODS, "*"]), "path": path})
    return routes


def test_it_agrees_with_the_reference_on_random_routes_and_paths():
    rng = random.Random(20250301)
    checked = matched = 0
    for _ in range(400):
        routes = random_routes(rng)
        table = RouteTable.from_routes(routes)
        for _ in range(40):
            path = "/" + "/".join(rng.choice(REQUEST_SEGMENTS) for _ in range(rng.randint(0, 4)))
            if rng.random() < 0.2:
                path += "/"
            method = rng.choice([*METHODS, "TRACE"])
            expected = reference_match(routes, method, path)
            found = table.match(method, path)
            got = (found.route.index, found.params) if found else None
            assert got == expected, (routes, method, path)
            checked += 1
            matched += got is not None
    assert matched > checked // 10  # the generator exercises matches, not only misses


def test_a_request_only_tries_the_routes_that_could_match_it():
    # What keeps matching cheap with many routes (the figures are in `make bench`): routes are
    # bucketed by their first literal segment, and a request tries one bucket plus the routes
    # that start with a parameter or wildcard.
    routes = []
    for i in range(150):
        routes.append({"method": "GET", "path": f"/section{i}/items/:id"})
        routes.append({"method": "POST", "path": f"/section{i}/items/:id/edit"})
    routes.append({"method": "GET", "path": "/:anything/*"})
    table = RouteTable.from_routes(routes)
    get = table._by_method["GET"]
    assert len(get.by_first_segment) == 150
    _regex, groups = get.by_first_segment["section7"]
    assert sorted(route.index for route, _, _ in groups.values()) == [14, 300]
    assert table.match("GET", "/section7/items/3") == (table.routes[14], {"id": "3"})
    assert table.match("GET", "/zzz/q").route.index == 300


def test_remembered_matches_stay_right_and_bounded():
    table = RouteTable.from_routes(
        [{"method": "GET", "path": "/items/:id"}, {"method": "GET", "path": "/*"}]
    )
    for round_ in range(2):  # the second round answers from the memo (or after it emptied)
        for i in range(RouteTable.MEMO_SIZE * 2):
            found = table.match("GET", f"/items/{i}")
            assert found.route.index == 0 and found.params == {"id": str(i)}, round_
            assert len(table._memo) <= RouteTable.MEMO_SIZE
    assert table.match("POST", "/items/1") is None
    assert table.match("POST", "/items/1") is None  # a remembered miss is still a miss
    long = "/items/" + "x" * RouteTable.MEMO_MAX_PATH
    assert table.match("GET", long).params == {"id": "x" * RouteTable.MEMO_MAX_PATH}
    assert ("GET", long) not in table._memo
