"""App routes: validation at install, and THE route matcher.

Longer than most modules on purpose: validation, the request-path canonicalisation and the
matcher must agree exactly (what the gateway authorises is what the app runs), so they are
one unit, reviewed together.

The gateway matches every appspace request here, in Python, enforces the route's auth, and
hands the sandbox harness the matched route's *index* (its position in the app's `routes`
list) and its params. The harness does not match again: there is exactly one implementation
of the rules below, so what the gateway authorised is what the app runs.

Patterns
    /                 the root only
    /items            a literal (percent-encoded or not: `/caf%C3%A9` and `/café` are equal)
    /items/:id        `:name` matches one non-empty segment; params are percent-decoded
    /assets/*         a trailing `*` matches the rest (also nothing), as param "*"
Names are `[A-Za-z_][A-Za-z0-9_]*` and unique in a pattern; `*` only as the last segment; no
empty segments, `.` or `..`.

Matching rules
    - The first route declared that matches wins (so put specific routes first).
    - Methods: GET HEAD POST PUT PATCH DELETE OPTIONS, or `*` for all of them; a HEAD request
      also matches GET routes. Other request methods match nothing.
    - Request paths are split on `/` *before* percent-decoding, so `%2F` never creates a
      segment. One trailing slash is ignored (`/items/` is `/items`). Paths with empty
      segments (`//`) or `.`/`..` segments (also as `%2e`) or invalid UTF-8 match nothing:
      browsers never send them, so they are refused (404), not normalised. (The gateway
      refuses `.`/`..`, `%2F` and the like even earlier, with 400: see `request_path`.)
    - The `*` param is the decoded rest, segments joined by `/`.

One path, one meaning
    Before matching, the gateway passes the raw request path through `request_path`: only
    a path that the WHATWG URL parser (what `new URL(request.url).pathname` in the app, and
    every browser, runs) leaves exactly as it is may be matched; anything else is refused
    (400 for HTTP, 403 for a WebSocket handshake), never normalised. So the path the route
    table matched and authorised is, character for character, the path the app dispatches
    on. The sandbox harness checks the same thing again before it calls the app.

Speed (it runs on every request): per method, routes are bucketed by their first literal
segment, and each bucket (plus the routes that start with a parameter or wildcard) is
compiled into one regex alternation, in declaration order; the leftmost alternative that
matches wins, which is exactly "first declared wins". A request costs a dict lookup and one
`fullmatch` in C. Measured against a plain Python loop over routes and a single alternation
of all routes: about as fast for a handful of routes, several times faster at hundreds.
Paths without `%` skip decoding entirely.

Longer than most modules on purpose: route validation at install and the matcher the gateway
runs must agree on every rule, so they are reviewed (and tested) as one unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

from packages.paths import UnsafePath, clean_relative_path

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_ROUTES = 1000
MAX_PATTERN_LENGTH = 1024
WILDCARD = "*"
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORBIDDEN_IN_PATTERN = re.compile(r"[\x00-\x20\x7f?#\\]")


class RouteError(ValueError):
    """Invalid routes; `errors` has one sentence per problem, naming the route."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Route:
    index: int  # position in the app's routes: what the harness is told to run
    method: str  # one of METHODS, or "*"
    path: str  # the pattern as declared
    auth: str  # "public" | "user" | "permission"
    permission: str = ""  # the permission key when auth == "permission"
    static: str = ""  # for static routes: the file or folder inside the app's files
    is_static: bool = False
    param_names: tuple[str, ...] = ()
    wildcard: bool = False

    def to_dict(self) -> dict[str, Any]:
        auth: Any = {"permission": self.permission} if self.auth == "permission" else self.auth
        data: dict[str, Any] = {"method": self.method, "path": self.path, "auth": auth}
        if self.is_static:
            data["static"] = "@app/" + self.static
        return data


class RouteMatch(NamedTuple):
    route: Route
    params: dict[str, str]


# --- Validation -----------------------------------------------------------------------------


def _canon(segment: str) -> str:
    """A decoded segment in the form matched against: `%` and `/` escaped, nothing else."""
    return segment.replace("%", "%25").replace("/", "%2F")


def _uncanon(value: str) -> str:
    return value.replace("%2F", "/").replace("%25", "%") if "%" in value else value


def _parse_pattern(path: Any) -> tuple[list[tuple[str, str]], str]:
    """-> ([(kind, value)], error). kind is "literal" (canonical), "param" or "wildcard"."""
    if not isinstance(path, str) or not path.startswith("/"):
        return [], "path must be a string starting with '/'"
    if len(path) > MAX_PATTERN_LENGTH:
        return [], f"path is longer than {MAX_PATTERN_LENGTH} characters"
    if _FORBIDDEN_IN_PATTERN.search(path):
        return [], "path must not contain spaces, control characters, '?', '#' or '\\'"
    if path == "/":
        return [], ""
    parts = path[1:].split("/")
    segments: list[tuple[str, str]] = []
    names: set[str] = set()
    for position, part in enumerate(parts):
        if part == "":
            return [], "path has an empty segment ('//' or a trailing '/')"
        if part == WILDCARD:
            if position != len(parts) - 1:
                return [], "'*' is only allowed as the last segment"
            segments.append(("wildcard", WILDCARD))
        elif part.startswith(":"):
            name = part[1:]
            if not _PARAM_NAME.match(name):
                return [], f"parameter name {name!r} must match [A-Za-z_][A-Za-z0-9_]*"
            if name in names:
                return [], f"parameter {name!r} appears twice"
            names.add(name)
            segments.append(("param", name))
        else:
            if "*" in part:
                return [], "'*' is only allowed as a whole last segment"
            try:
                decoded = unquote(part, errors="strict")
            except UnicodeDecodeError:
                return [], "path has percent-escapes that are not UTF-8"
            if decoded in (".", "..") or "/" in decoded or "\x00" in decoded:
                return [], "path must not contain '.', '..' or an encoded '/'"
            segments.append(("literal", _canon(decoded)))
    return segments, ""


def _parse_auth(raw: Any, permission_keys: frozenset[str]) -> tuple[str, str, str]:
    """-> (auth, permission, error)."""
    if raw is None or raw == "user":
        return "user", "", ""
    if raw == "public":
        return "public", "", ""
    if isinstance(raw, Mapping) and set(raw) == {"permission"}:
        key = raw["permission"]
        if not isinstance(key, str) or key not in permission_keys:
            return "", "", f"auth permission {str(key)[:40]!r} is not declared in the manifest"
        return "permission", key, ""
    return "", "", 'auth must be "public", "user" or {"permission": key}'


def _parse_route(
    index: int, raw: Any, permission_keys: frozenset[str]
) -> tuple[Route | None, list[str]]:
    if not isinstance(raw, Mapping):
        return None, [f"route {index}: must be an object"]
    label = f"route {index} ({str(raw.get('method'))[:10]} {str(raw.get('path'))[:80]})"
    errors = []
    method = raw.get("method")
    if not isinstance(method, str) or method.upper() not in (*METHODS, WILDCARD):
        errors.append(f"method must be one of {', '.join(METHODS)} or '*'")
        method = ""
    else:
        method = method.upper()
    segments, error = _parse_pattern(raw.get("path"))
    if error:
        errors.append(error)
    auth, permission, error = _parse_auth(raw.get("auth"), permission_keys)
    if error:
        errors.append(error)
    static, is_static = "", "static" in raw and raw["static"] is not None
    if is_static:
        static, static_errors = _parse_static(raw, method, segments)
        errors.extend(static_errors)
    if errors:
        return None, [f"{label}: {e}" for e in errors]
    route = Route(
        index=index,
        method=method,
        path=raw["path"],
        auth=auth,
        permission=permission,
        static=static,
        is_static=is_static,
        param_names=tuple(v for k, v in segments if k == "param"),
        wildcard=bool(segments) and segments[-1][0] == "wildcard",
    )
    return route, []


def _parse_static(
    raw: Mapping[str, Any], method: str, segments: list[tuple[str, str]]
) -> tuple[str, list[str]]:
    errors = []
    target = raw["static"]
    if raw.get("handler"):
        errors.append("a route has either a handler or static files, not both")
    if method not in ("GET", "HEAD"):
        errors.append("static routes only answer GET (and HEAD)")
    if any(kind == "param" for kind, _ in segments):
        errors.append("static routes cannot have :parameters")
    if not isinstance(target, str) or not (target == "@app" or target.startswith("@app/")):
        errors.append('static must be "@app/<folder or file inside the app>"')
        return "", errors
    try:
        rest = target[len("@app/") :]
        rel = clean_relative_path(rest) if rest else ""
    except UnsafePath as exc:
        errors.append(f"static {target[:80]!r} {exc}")
        return "", errors
    is_folder = bool(segments) and segments[-1][0] == "wildcard"
    if not is_folder and not rel:
        errors.append("a static route for a single file must name that file (or end in /*)")
    return rel, errors


# --- The table ------------------------------------------------------------------------------


class RouteTable:
    """The compiled routes of one app version. Build once, match on every request.

    Matches of short paths are remembered (a bounded memo, emptied when full: an app's pages
    are requested over and over, a scanner's random paths only churn it). A RouteMatch is
    shared between requests: treat its params as read-only.
    """

    MEMO_SIZE = 512
    MEMO_MAX_PATH = 200

    def __init__(self, routes: Sequence[Route]):
        self.routes = tuple(routes)
        self._by_method = {method: self._compile(method) for method in METHODS}
        self._memo: dict[tuple[str, str], RouteMatch | None] = {}

    @classmethod
    def from_routes(cls, raw_routes: Any, *, permission_keys: Iterable[str] = ()) -> RouteTable:
        """Validate routes as the app declared them; RouteError lists every problem."""
        if not isinstance(raw_routes, Sequence) or isinstance(raw_routes, str | bytes):
            raise RouteError(["routes must be a list"])
        if len(raw_routes) > MAX_ROUTES:
            raise RouteError([f"an app may declare at most {MAX_ROUTES} routes"])
        keys = frozenset(permission_keys)
        routes, errors = [], []
        for index, raw in enumerate(raw_routes):
            route, route_errors = _parse_route(index, raw, keys)
            errors.extend(route_errors)
            if route is not None:
                routes.append(route)
        if errors:
            raise RouteError(errors)
        return cls(routes)

    def to_list(self) -> list[dict[str, Any]]:
        return [route.to_dict() for route in self.routes]

    def _compile(self, method: str) -> _MethodTable:
        accepted = {method, WILDCARD} | ({"GET"} if method == "HEAD" else set())
        entries = []  # (first literal segment or None for "any", route, regex, names)
        for route in self.routes:
            if route.method not in accepted:
                continue
            segments, _ = _parse_pattern(route.path)
            if not segments:
                first: str | None = ""  # the root
            elif segments[0][0] == "literal":
                first = segments[0][1]
            else:
                first = None
            entries.append((first, route, segments))
        keys = {first for first, _, _ in entries if first is not None}

        def alternation(key: str | None):
            chosen = [(r, segs) for first, r, segs in entries if first is None or first == key]
            return _compile_alternation(chosen)

        return _MethodTable({key: alternation(key) for key in keys}, alternation(None))

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The first declared route matching method and path, with its decoded params; None
        for no match. `path` is the request path as sent, still percent-encoded and without
        the query string: in the gateway, `scope["raw_path"].decode("utf-8")` (404 when that
        fails), never the already-decoded `scope["path"]`, in which %2F became a `/`."""
        key = (method, path)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._match(method, path)
        if len(path) <= self.MEMO_MAX_PATH:
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _match(self, method: str, path: str) -> RouteMatch | None:
        table = self._by_method.get(method)
        if table is None:
            return None
        canonical = canonical_path(path)
        if canonical is None:
            return None
        end = canonical.find("/", 1)
        first = canonical[1:end] if end != -1 else canonical[1:]
        compiled = table.by_first_segment.get(first, table.other)
        if compiled is None:
            return None
        regex, groups = compiled
        found = regex.fullmatch(canonical)
        if found is None:
            return None
        route, param_groups, wildcard_group = groups[found.lastgroup]
        params = {name: _uncanon(found.group(g)) for name, g in param_groups}
        if wildcard_group:
            params[WILDCARD] = _uncanon(found.group(wildcard_group) or "")
        return RouteMatch(route, params)


_Compiled = tuple[re.Pattern[str], dict[str, tuple[Route, tuple[tuple[str, str], ...], str]]]


class _MethodTable(NamedTuple):
    """Routes of one method, bucketed by their first literal segment: a request only tries
    the routes that could match it (those with its first segment, and those starting with a
    parameter or wildcard), still in declaration order."""

    by_first_segment: dict[str, _Compiled | None]
    other: _Compiled | None


def _compile_alternation(routes: list[tuple[Route, list[tuple[str, str]]]]) -> _Compiled | None:
    """One regex for the routes, in order: the leftmost alternative that matches wins."""
    alternatives, groups = [], {}
    for route, segments in routes:
        group = f"r{route.index}"
        regex, params, wildcard_group = [], [], ""
        for kind, value in segments:
            if kind == "literal":
                regex.append(re.escape("/" + value))
            elif kind == "param":
                name = f"{group}_{len(params)}"
                regex.append(f"/(?P<{name}>[^/]+)")
                params.append((value, name))
            else:
                wildcard_group = f"{group}_w"
                regex.append(f"(?:/(?P<{wildcard_group}>.*))?")
        alternatives.append(f"(?P<{group}>{''.join(regex)})")
        groups[group] = (route, tuple(params), wildcard_group)
    if not alternatives:
        return None
    return re.compile("|".join(alternatives), re.DOTALL), groups


# --- The request path: one meaning for the gateway and the app ---------------------------


class BadPath(ValueError):
    """A request path the gateway refuses: the app's URL parser would read it differently
    from the route table, or it hides a separator in a percent-escape."""


# RFC 3986 `pchar` plus "/": unreserved, sub-delims, ":", "@", and "%" (checked below). None
# of these is in WHATWG's path percent-encode set, and "\" (a separator for http URLs),
# "#", "?", tab/CR/LF (which URL parsers strip), spaces, controls and non-ASCII are not here.
_PATH_CHARS = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Escapes of "/", "\" and NUL: a separator or terminator in disguise for whoever decodes.
_ENCODED_SEPARATOR = re.compile(r"%(?:2[Ff]|5[Cc]|00)")
# What WHATWG reads as "." and ".." (the escape %2e in either case counts as a dot).
_DOT_SEGMENTS = frozenset({".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"})


def request_path(raw_path: bytes | str) -> str:
    r"""The request path (`scope["raw_path"]`, without the query string) if it is a fixed
    point of WHATWG URL path parsing, so `new URL("http://h" + path).pathname == path`;
    raises BadPath otherwise. Refused: anything but ASCII `pchar`s and `/` (so no `\`,
    `#`, `?`, tab/CR/LF, spaces, controls, `"<>^\`{|}`, non-ASCII), `%` not followed by two
    hex digits, `%2F`/`%5C`/`%00` in any case, and `.`/`..` segments, also spelled with
    `%2e` in any case. Hand-written (three regexes), not a binding of a WHATWG parser: the
    rule is a stricter whitelist than "a fixed point", and tests/gateway/test_paths.py checks
    it against Deno's own parser, the one apps use.
    """
    if isinstance(raw_path, bytes):
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise BadPath("the path has bytes that are not ASCII") from None
    else:
        path = raw_path
    if not _PATH_CHARS.fullmatch(path):
        raise BadPath("the path has characters a URL parser would change or strip")
    if "%" in path:
        if _PERCENT.search(path):
            raise BadPath("the path has a '%' that does not start a %XX escape")
        if _ENCODED_SEPARATOR.search(path):
            raise BadPath("the path has an escaped '/', '\\' or NUL")
    if "." in path or "%" in path:
        for segment in path.split("/"):
            if segment.lower() in _DOT_SEGMENTS:
                raise BadPath("the path has a '.' or '..' segment")
    return path


def canonical_path(path: str) -> str | None:
    """`/a/b` form with decoded segments (`%`, `/` re-escaped); "" for the root; None when
    the path is refused (see the module docstring)."""
    if path == "/":
        return ""
    if not path.startswith("/"):
        return None
    body = path[1:-1] if path.endswith("/") else path[1:]
    if not body:
        return None  # "//"
    segments = body.split("/")
    if "%" not in body:
        if "" in segments or "." in segments or ".." in segments:
            return None
        return "/" + body
    decoded = []
    for segment in segments:
        if not segment:
            return None
        try:
            value = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            return None
        if value in (".", "..") or "\x00" in value:
            return None
        decoded.append(_canon(value))
    return "/" + "/".join(decoded)


def static_file(match: RouteMatch, files_root: Path) -> Path | None:
    """The regular file a matched static route serves from the app's files, or None (404).
    Blocking file-system calls: run it off the event loop."""
    route = match.route
    if not route.is_static:
        return None
    rel = route.static
    if route.wildcard:
        try:
            rest = clean_relative_path(match.params.get(WILDCARD, ""))
        except UnsafePath:
            return None
        if not rest:
            return None
        rel = f"{rel}/{rest}" if rel else rest
    root = Path(files_root).resolve()
    candidate = (root / rel).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate
