"""The platform's own paths on every appspace host, under `/.dropserver/` (apps never see them):
`login` redeems a one-time token from the panel for a session cookie, `logout` ends it,
`style.css` styles the gateway's pages (served from 'self', so the appspace's CSP allows it),
`csp-report` takes the browser's reports of what the CSP blocked (csp_reports.py).

A login link is redeemed on sight only when the browser proves it came from the panel: the
panel's pages make the browser send `Referer: <panel origin>/` (exactly; their Referrer-Policy
is `origin`) and, being another host, `Sec-Fetch-Site: same-site` or `cross-site`. Anything
else (no Referer, another page's Referer, `Sec-Fetch-Site` absent or `none`: a typed, pasted
or planted link, a script) gets the confirmation page, naming the account and the appspace the
link signs into; it is redeemed only when the visitor confirms, with a same-origin POST. A
planted link can therefore never log a visitor in to an account of the planter's choosing.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.encoding import iri_to_uri

from appspaces.gateway import csp_reports, pages
from appspaces.gateway.auth import RequestFacts, Visitor, open_url, same_origin_proven, visitor
from appspaces.gateway.headers import appspace_cookie_name
from appspaces.gateway.state.config import AppspaceConfig
from appspaces.sharing import sessions as appspace_sessions

PREFIX = "/.dropserver/"

_redeem = database_sync_to_async(appspace_sessions.login_token_redeem, thread_sensitive=False)
_revoke = database_sync_to_async(appspace_sessions.appspace_session_revoke, thread_sensitive=False)
_holder = database_sync_to_async(appspace_sessions.login_token_holder, thread_sensitive=False)

MAX_FORM_BYTES = 4096

LOGIN_FAILED = (
    "This login link did not work",
    "It has expired, was already used, or is for another appspace. Log in again to continue.",
)
CONFIRM_LOGIN = (
    "Log in to this appspace?",
    "Continue only if you just opened it from your Dropserver panel: a login link from "
    "anywhere else could log you in to somebody else's account.",
)
LOGGED_OUT = ("Logged out", "You are logged out of this appspace.")
METHOD_NOT_ALLOWED = ("Method not allowed", "This address does not accept that method.")


def session_cookie(value: str, *, max_age: int) -> bytes:
    """Host-only (no Domain), HttpOnly, SameSite=Lax, Secure over https."""
    parts = [
        f"{appspace_cookie_name()}={value}",
        "Path=/",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if settings.DS_HTTPS:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


async def handle(
    scope: dict,
    receive,
    send,
    *,
    config: AppspaceConfig,
    facts: RequestFacts,
    origin: bytes,
    host: str,
) -> None:
    path = scope["raw_path"].decode("latin-1")
    method = scope["method"]
    platform = config.platform_headers

    page = pages.page_sender(send, host=host, platform=platform, method=method)

    if path == csp_reports.PATH:
        return await csp_reports.handle(scope, receive, send, config=config, facts=facts)
    if path == pages.STYLESHEET_PATH and method in ("GET", "HEAD"):
        return await pages.send_stylesheet(send, platform, head_only=method == "HEAD")
    if path == appspace_sessions.LOGIN_PATH:
        if method == "GET":  # not HEAD: a link checker must not spend the token
            return await _login(scope, config, facts, page, send)
        if method == "POST":  # the confirmation of a link that came from another site
            if not same_origin_proven(facts, origin):
                return await page(403, pages.CROSS_ORIGIN)
            form = await _read_form(receive)
            if form is None:
                return await page(400, LOGIN_FAILED, login_url=open_url(config.subdomain, "/"))
            return await _redeem_and_redirect(config, facts, page, send, *form)
        return await page(405, METHOD_NOT_ALLOWED, [(b"allow", b"GET, POST")])
    if path == "/.dropserver/logout":
        if method != "POST":
            return await page(405, METHOD_NOT_ALLOWED, [(b"allow", b"POST")])
        if not same_origin_proven(facts, origin):
            return await page(403, pages.CROSS_ORIGIN)
        if facts.cookie_key:
            await _revoke(key=facts.cookie_key)
        clear = session_cookie("", max_age=0)
        return await page(200, LOGGED_OUT, [(b"set-cookie", clear)])
    return await page(404, pages.NOT_FOUND)


async def _login(scope: dict, config: AppspaceConfig, facts: RequestFacts, page, send) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=10)
    token = (query.get("token") or [""])[0]
    next_path = appspace_sessions.safe_next_path((query.get("next") or ["/"])[0])
    if not from_panel(scope, facts):
        holder = await _holder(token=token, appspace_pk=config.pk)
        if holder is None:
            who, _member = await visitor(config, facts)
            if who is Visitor.MEMBER:  # a reload of a spent link is fine when logged in
                location = iri_to_uri(next_path)
                return await pages.send_redirect(send, location, platform=config.platform_headers)
            return await page(400, LOGIN_FAILED, login_url=open_url(config.subdomain, next_path))
        return await page(
            200, CONFIRM_LOGIN, confirm_login={"token": token, "next": next_path, "as": holder}
        )
    return await _redeem_and_redirect(config, facts, page, send, token, next_path)


def from_panel(scope: dict, facts: RequestFacts) -> bool:
    """The browser says this navigation came from a panel page: its exact origin-only Referer
    (a page elsewhere can only send its own origin, or none) and a Sec-Fetch-Site of another
    host (`none` is typed or pasted, absent is a script or an old browser)."""
    if facts.fetch_site not in (b"cross-site", b"same-site"):
        return False
    expected = (settings.DS_PANEL_URL + "/").encode("latin-1")
    referers = [value for name, value in scope["headers"] if name == b"referer"]
    return referers == [expected]


async def _redeem_and_redirect(
    config: AppspaceConfig, facts: RequestFacts, page, send, token: str, next_path: str
) -> None:
    next_path = appspace_sessions.safe_next_path(next_path)
    key = await _redeem(token=token, appspace_pk=config.pk)
    redirect_headers = []
    if key is not None:
        max_age = settings.DS_GATEWAY_SESSION_DAYS * 24 * 3600
        redirect_headers.append((b"set-cookie", session_cookie(key, max_age=max_age)))
    else:
        who, _member = await visitor(config, facts)
        if who is not Visitor.MEMBER:  # a reload of a spent link is fine when logged in
            return await page(400, LOGIN_FAILED, login_url=open_url(config.subdomain, next_path))
    await pages.send_redirect(
        send, iri_to_uri(next_path), platform=config.platform_headers, headers=redirect_headers
    )


async def _read_form(receive) -> tuple[str, str] | None:
    """The token and next path of the confirmation form, or None if the body is not one."""
    body = await csp_reports.read_body(receive, MAX_FORM_BYTES)
    if body is None:
        return None
    form = parse_qs(body.decode("latin-1"), max_num_fields=10)
    token = (form.get("token") or [""])[0]
    if not token:
        return None
    return token, (form.get("next") or ["/"])[0]
