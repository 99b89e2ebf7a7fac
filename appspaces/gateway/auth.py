"""Who is asking, and may they: request facts, the appspace session, route auth and the
same-origin rules (CSRF, CORS preflights, WebSocket handshakes), decided before any app code.
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings

from appspaces.gateway import pages
from appspaces.gateway.state import config as gateway_config
from appspaces.gateway.state.config import AppspaceConfig, Member
from packages.routes import Route, RouteMatch

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestFacts:
    """What the gateway needs from the request headers, read in one pass."""

    __slots__ = (
        "chunked",
        "content_length",
        "cookie_key",
        "fetch_site",
        "header_bytes",
        "header_count",
        "host",
        "hosts",
        "origin",
        "preflight",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]], cookie_name: bytes):
        self.host = ""
        self.hosts = 0  # more than one Host header is a bad request (RFC 9112 3.2)
        self.cookie_key: str | None = None
        self.origin: bytes | None = None
        self.fetch_site: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.preflight = False
        count = size = 0
        for name, value in headers:
            count += 1
            size += len(name) + len(value) + 4
            if name == b"host":
                self.hosts += 1
                if self.hosts == 1:  # the one the host router dispatched on
                    self.host = value.decode("latin-1")
            elif name == b"cookie":
                if self.cookie_key is None and cookie_name in value:
                    self.cookie_key = _cookie(value, cookie_name)
            elif name == b"origin":
                self.origin = value.lower()
            elif name == b"sec-fetch-site":
                self.fetch_site = value.lower()
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() else -1
            elif name == b"transfer-encoding":
                self.chunked = True
            elif name == b"access-control-request-method":
                self.preflight = True
        self.header_count = count
        self.header_bytes = size


def _cookie(value: bytes, prefix: bytes) -> str | None:
    for part in value.split(b";"):
        part = part.strip()
        if part.startswith(prefix):
            return part[len(prefix) :].decode("latin-1") or None
    return None


def cookie_prefix(name: str) -> bytes:
    return name.encode("latin-1") + b"="


def own_origin(host: str, scheme: str) -> bytes:
    """This appspace's origin as browsers write it in an Origin header."""
    name, _, port = host.lower().partition(":")
    name = name.rstrip(".")
    if port and port != ("443" if scheme == "https" else "80"):
        return f"{scheme}://{name}:{port}".encode("latin-1")
    return f"{scheme}://{name}".encode("latin-1")


def public_scheme(scope: dict, https: bool) -> str:
    """The scheme browsers use for this instance (Daphne may sit behind a TLS proxy)."""
    return "https" if https or scope.get("scheme") in ("https", "wss") else "http"


def cross_origin_refused(method: str, facts: RequestFacts, origin: bytes) -> bool:
    """CSRF and CORS: a state-changing request or a preflight from another origin is refused.

    Browsers send Origin on every cross-origin request that is not a GET/HEAD navigation,
    and Sec-Fetch-Site on all of them; a sibling appspace is "same-site" but not our origin.
    Requests with neither (scripts, webhooks) carry no browser's cookies and pass.

    `Origin: null` is what a browser sends for a form POST from a page under our own
    `Referrer-Policy: no-referrer` (and from sandboxed frames anywhere): there only
    Sec-Fetch-Site can prove the request is our own.
    """
    if method == "OPTIONS" and facts.preflight:
        return facts.origin is not None and facts.origin != origin
    if method in SAFE_METHODS:
        return False
    if facts.origin == b"null":
        return facts.fetch_site != b"same-origin"
    if facts.origin is not None:
        return facts.origin != origin
    return facts.fetch_site in (b"cross-site", b"same-site")


def same_origin_proven(facts: RequestFacts, origin: bytes) -> bool:
    """Stricter, for the platform's own POSTs (logout): the browser must say same-origin."""
    if facts.origin is not None and facts.origin != b"null":
        return facts.origin == origin
    return facts.fetch_site == b"same-origin"


class Visitor(enum.Enum):
    ANONYMOUS = "anonymous"
    MEMBER = "member"
    OUTSIDER = "outsider"  # a valid session whose user may no longer enter


async def visitor(config: AppspaceConfig, facts: RequestFacts) -> tuple[Visitor, Member | None]:
    key = facts.cookie_key
    if not key:
        return Visitor.ANONYMOUS, None
    info = await gateway_config.sessions.get(hashlib.sha256(key.encode("latin-1")).hexdigest())
    if info is None or info.appspace_pk != config.pk or info.expires <= time.time():
        return Visitor.ANONYMOUS, None
    member = config.members.get(info.user_pk)
    if member is None:
        return Visitor.OUTSIDER, None
    return Visitor.MEMBER, member


class Decision(enum.Enum):
    ALLOW = "allow"
    LOG_IN = "log in"
    NOT_A_USER = "not a user"
    NO_PERMISSION = "no permission"


def decide(route: Route, who: Visitor, member: Member | None) -> Decision:
    if route.auth == "public":
        return Decision.ALLOW
    if who is Visitor.ANONYMOUS:
        return Decision.LOG_IN
    if member is None:
        return Decision.NOT_A_USER
    if route.auth == "permission" and route.permission not in member.identity.permissions:
        return Decision.NO_PERMISSION
    return Decision.ALLOW


def open_url(subdomain: str, next_path: str) -> str:
    """The panel view that logs a visitor in to this appspace (appspace_open_by_subdomain)."""
    return f"{settings.DS_PANEL_URL}/a/{subdomain}/open?next={quote(next_path, safe='')}"


def request_target(scope: dict) -> str:
    query = scope.get("query_string") or b""
    path = scope["raw_path"].decode("latin-1")
    return f"{path}?{query.decode('latin-1')}" if query else path


# --- Admission: route and auth, shared by HTTP and WebSockets -----------------------------

NOT_A_USER = (
    "No access",
    "You are logged in, but your account is not a user of this appspace. Ask its owner to add you.",
)
LOG_IN_REQUIRED = ("Log in required", "Log in to use this part of the appspace.")
ROUTES_BROKEN = (
    "This appspace cannot be served",
    "Its app declared routes this server cannot use. Tell the appspace's owner.",
)


@dataclass(slots=True)
class Refusal:
    status: int
    text: tuple[str, str]
    headers: list
    context: dict


@dataclass(slots=True)
class Admission:
    match: RouteMatch
    member: Member | None  # None: the app sees an anonymous visitor


async def admit(
    config: AppspaceConfig, facts: RequestFacts, method: str, path: str, scope: dict
) -> Admission | Refusal:
    """Route and auth: what the visitor may reach at `path`, or why not."""
    if config.routes is None:
        return Refusal(502, ROUTES_BROKEN, [], {})
    match = config.routes.match(method, path)
    if match is None:
        return Refusal(404, pages.NOT_FOUND, [], {})
    if facts.cookie_key is None:
        who, member = Visitor.ANONYMOUS, None  # the common case, without a coroutine
    else:
        who, member = await visitor(config, facts)
    decision = decide(match.route, who, member)
    if decision is Decision.ALLOW:
        return Admission(match, member if who is Visitor.MEMBER else None)
    if decision is Decision.LOG_IN:
        url = open_url(config.subdomain, request_target(scope))
        if method in ("GET", "HEAD"):
            return Refusal(302, ("", ""), [(b"location", url.encode("latin-1"))], {})
        return Refusal(401, LOG_IN_REQUIRED, [], {"login_url": url})
    if decision is Decision.NOT_A_USER:
        return Refusal(403, NOT_A_USER, [], {"logout": True})
    text = (
        "No access",
        f"Your account does not have the “{match.route.permission}” permission in this "
        "appspace. Ask its owner for it.",
    )
    return Refusal(403, text, [], {})


def unavailable(config: AppspaceConfig) -> Refusal:
    title, message = pages.UNAVAILABLE.get(config.status, pages.UNAVAILABLE["problem"])
    headers = []
    if config.status in ("migrating", "creating"):
        headers.append((b"retry-after", b"30"))
    reason = config.status_reason if config.status == "problem" else ""
    return Refusal(503, (title, message), headers, {"reason": reason})
