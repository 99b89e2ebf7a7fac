"""Appspace login: one-time tokens from the panel, host-only session cookies, logout, and
revocation on panel logout and member removal."""

import hashlib
import html
import re
import time
from datetime import timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from appspaces.models import AppspaceLoginToken, AppspaceSession, AppspaceUser
from appspaces.sharing.sessions import appspace_sessions_revoke
from tests.gateway.browser import csrf_token
from tests.gateway.conftest import wait_for

pytestmark = pytest.mark.sandbox


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def login_link(stack, appspace, user, next_path="/user"):
    """The appspace login URL the panel hands out, not followed yet."""
    browser = stack.browser(user)
    response = browser.get(stack.panel_url(f"/a/{appspace.subdomain}/open?next={next_path}"))
    assert response.status == 200, response.text[:300]
    assert response.header("referrer-policy") == "origin"
    found = re.search(r'<meta http-equiv="refresh" content="0; url=([^"]+)">', response.text)
    return browser, html.unescape(found.group(1))


def from_panel(stack) -> dict[str, str]:
    """What Chromium sends for a navigation from a panel page (the panel is another host)."""
    return {"Sec-Fetch-Site": "cross-site", "Referer": stack.panel_url("/")}


def test_the_session_cookie_is_host_only_and_only_hashes_are_stored(stack):
    browser, link = login_link(stack, stack.main, stack.bob)
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert link.startswith(stack.url(stack.main, "/.dropserver/login?token="))
    response = browser.get(link, headers=from_panel(stack))
    assert response.status == 302
    assert response.header("location") == "/user"
    cookie = response.header("set-cookie")
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    assert name_value.startswith("ds_appspace=")
    assert {"Path=/", "HttpOnly", "SameSite=Lax"} <= set(attributes)
    assert not [a for a in attributes if a.lower().startswith(("domain", "secure"))]
    key = name_value.split("=", 1)[1]
    session = AppspaceSession.objects.get(key_hash=sha256(key))
    assert (session.user, session.appspace) == (stack.bob, stack.main)
    assert not AppspaceSession.objects.filter(key_hash=key).exists()
    login = AppspaceLoginToken.objects.get(token_hash=sha256(token))
    assert login.used is not None
    assert (login.expires - timezone.now()).total_seconds() < 61


def test_a_login_token_works_once(stack):
    _, link = login_link(stack, stack.main, stack.carol)
    visitor = stack.browser()
    assert visitor.get(link, headers=from_panel(stack)).status == 302
    again = stack.browser().get(link, headers=from_panel(stack))
    assert again.status == 400
    assert b"did not work" in again.body
    assert again.header("set-cookie") is None
    # The visitor who used it reloads it (the browser sends no panel Referer then): just in.
    for headers in ({"Sec-Fetch-Site": "none"}, from_panel(stack)):
        reloaded = visitor.get(link, headers=headers)
        assert reloaded.status == 302 and reloaded.header("location") == "/user"
        assert reloaded.header("set-cookie") is None


def test_an_expired_login_token_is_refused(stack):
    _, link = login_link(stack, stack.main, stack.carol)
    token = parse_qs(urlsplit(link).query)["token"][0]
    AppspaceLoginToken.objects.filter(token_hash=sha256(token)).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    response = stack.browser().get(link, headers=from_panel(stack))
    assert response.status == 400
    assert response.header("set-cookie") is None


def test_a_login_token_only_works_for_its_appspace(stack):
    other = stack.appspace(members={stack.carol: []})
    _, link = login_link(stack, stack.main, stack.carol)
    moved = link.replace(stack.host(stack.main), stack.host(other))
    refused = stack.browser().get(moved, headers=from_panel(stack))
    assert refused.status == 400
    assert refused.header("set-cookie") is None
    assert stack.browser().get(link, headers=from_panel(stack)).status == 302  # not spent


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_login_only_redirects_to_paths_of_the_appspace(stack, target):
    _, link = login_link(stack, stack.main, stack.bob, next_path=quote(target, safe=""))
    query = parse_qs(urlsplit(link).query)
    assert query["next"] == ["/"]  # the panel cleaned it already...
    token = query["token"][0]
    forged = stack.url(
        stack.main, f"/.dropserver/login?token={token}&next={quote(target, safe='')}"
    )
    response = stack.browser().get(forged, headers=from_panel(stack))  # ...and the gateway
    assert response.status == 302
    assert response.header("location") == "/"


def test_a_login_link_from_another_site_waits_for_the_visitor_to_confirm(stack):
    _, link = login_link(stack, stack.main, stack.bob)
    token = parse_qs(urlsplit(link).query)["token"][0]
    visitor = stack.browser()
    shown = visitor.get(link, headers={"Sec-Fetch-Site": "cross-site"})
    # Nothing is spent or set yet; the page says whose account the link opens.
    assert shown.status == 200
    assert shown.header("set-cookie") is None
    assert AppspaceLoginToken.objects.get(token_hash=sha256(token)).used is None
    assert b"Continue as Bob" in shown.body
    assert b'action="/.dropserver/login"' in shown.body

    # The planting site cannot submit the confirmation itself...
    login_url = stack.url(stack.main, "/.dropserver/login")
    form = f"token={token}&next=%2Fuser".encode()
    forged = visitor.post(
        login_url,
        form,
        headers={
            "Origin": "http://evil.localhost",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert forged.status == 403
    assert AppspaceLoginToken.objects.get(token_hash=sha256(token)).used is None

    # ...the visitor's own click on the appspace's page does.
    confirmed = visitor.post(
        login_url,
        form,
        headers={
            "Origin": stack.url(stack.main, ""),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert confirmed.status == 302
    assert confirmed.header("location") == "/user"
    assert "ds_appspace=" in confirmed.header("set-cookie")
    # Spent now: a second submission only works because this visitor is logged in.
    assert (
        visitor.post(login_url, form, headers={"Origin": stack.url(stack.main, "")}).status == 302
    )

    # Chromium's own submission of that form, under the gateway's no-referrer policy.
    again = stack.browser().get(
        login_link(stack, stack.main, stack.bob)[1], headers={"Sec-Fetch-Site": "cross-site"}
    )
    token = again.body.split(b'name="token" value="')[1].split(b'"')[0].decode()
    by_chromium = stack.browser().post(
        login_url,
        f"token={token}".encode(),
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert by_chromium.status == 302 and "ds_appspace=" in by_chromium.header("set-cookie")

    # A spent or unknown token from another site shows no name, only that it failed.
    stranger = stack.browser().get(link, headers={"Sec-Fetch-Site": "cross-site"})
    assert stranger.status == 400 and b"Bob" not in stranger.body


def test_a_login_link_the_panel_sent_is_redeemed_at_once_even_cross_site(stack):
    # Under localhost every subdomain is its own site; the panel's page asks for an
    # origin-only Referer, which no other page can send.
    _, link = login_link(stack, stack.main, stack.bob)
    panel_origin = stack.panel_url("/")
    redeemed = stack.browser().get(
        link, headers={"Sec-Fetch-Site": "cross-site", "Referer": panel_origin}
    )
    assert redeemed.status == 302 and "ds_appspace=" in redeemed.header("set-cookie")

    # Any other Referer (or a longer one from the panel) is another page's: asked first.
    for referer in ("http://evil.localhost/", panel_origin + "accounts/", stack.url(stack.main)):
        _, link = login_link(stack, stack.main, stack.bob)
        asked = stack.browser().get(
            link, headers={"Sec-Fetch-Site": "cross-site", "Referer": referer}
        )
        assert asked.status == 200 and b"Continue as Bob" in asked.body, referer


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-referer-no-fetch-site"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="typed"),
        pytest.param({"Sec-Fetch-Site": "none", "Referer": "PANEL"}, id="none-with-panel-referer"),
        pytest.param({"Referer": "PANEL"}, id="panel-referer-no-fetch-site"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="cross-site-no-referer"),
        pytest.param({"Sec-Fetch-Site": "same-site", "Referer": "OTHER"}, id="other-appspace"),
        pytest.param(
            {"Sec-Fetch-Site": "same-origin", "Referer": "PANEL"}, id="same-origin-panel-referer"
        ),
    ],
)
def test_a_login_link_not_provably_from_the_panel_shows_whose_account_it_opens(stack, headers):
    other = stack.appspace(members={stack.bob: []})
    _, link = login_link(stack, stack.main, stack.bob)
    token = parse_qs(urlsplit(link).query)["token"][0]
    sessions = AppspaceSession.objects.filter(appspace=stack.main).count()
    sent = {
        name: {"PANEL": stack.panel_url("/"), "OTHER": stack.url(other, "/")}.get(value, value)
        for name, value in headers.items()
    }
    shown = stack.browser().get(link, headers=sent)
    assert shown.status == 200, shown.text[:300]
    assert shown.header("set-cookie") is None
    assert b"Continue as Bob" in shown.body
    entered = f"You will enter <strong>{stack.host(stack.main)}:{stack.port}</strong>"
    assert entered.encode() in shown.body
    assert AppspaceLoginToken.objects.get(token_hash=sha256(token)).used is None
    assert AppspaceSession.objects.filter(appspace=stack.main).count() == sessions


def test_a_login_link_from_a_sibling_appspace_waits_for_the_visitor_to_confirm(stack):
    # A sibling appspace is "same-site" with the panel: only the panel's Referer vouches.
    _, link = login_link(stack, stack.main, stack.bob)
    sibling = {"Sec-Fetch-Site": "same-site", "Referer": "http://other.localhost/"}
    asked = stack.browser().get(link, headers=sibling)
    assert asked.status == 200 and b"Continue as Bob" in asked.body
    assert stack.browser().get(link, headers={"Sec-Fetch-Site": "same-site"}).status == 200
    from_panel = {"Sec-Fetch-Site": "same-site", "Referer": stack.panel_url("/")}
    assert stack.browser().get(link, headers=from_panel).status == 302


def test_the_login_confirmation_refuses_an_oversized_or_empty_form(stack):
    login_url = stack.url(stack.main, "/.dropserver/login")
    origin = {"Origin": stack.url(stack.main, "")}
    assert stack.browser().post(login_url, b"x" * 10_000, headers=origin).status == 400
    assert stack.browser().post(login_url, b"next=%2F", headers=origin).status == 400
    assert stack.browser().request("PUT", login_url, headers=origin).status == 405


def test_logout_revokes_the_session(stack):
    browser = stack.enter(stack.main, stack.bob)
    key = browser.cookies[stack.host(stack.main)]["ds_appspace"]
    origin = {"Origin": stack.url(stack.main, "")}
    cross = browser.post(
        stack.url(stack.main, "/.dropserver/logout"), headers={"Origin": "http://evil.localhost"}
    )
    assert cross.status == 403
    assert browser.get(stack.url(stack.main, "/user")).status == 200
    response = browser.post(stack.url(stack.main, "/.dropserver/logout"), headers=origin)
    assert response.status == 200
    assert b"logged out" in response.body
    assert "Max-Age=0" in response.header("set-cookie")
    assert AppspaceSession.objects.get(key_hash=sha256(key)).revoked is not None
    # Even a browser that kept the cookie is anonymous now.
    kept = stack.browser()
    kept.cookies[stack.host(stack.main)] = {"ds_appspace": key}
    assert kept.get(stack.url(stack.main, "/user")).status == 302


def test_panel_logout_logs_out_of_every_appspace_at_once(stack):
    browser = stack.enter(stack.main, stack.bob)
    other = stack.appspace(members={stack.bob: []})
    response = browser.get(stack.url(other, "/user"), follow=True)
    assert response.status == 200
    dashboard = browser.get(stack.panel_url("/"))
    assert dashboard.status == 200
    body = f"csrfmiddlewaretoken={csrf_token(dashboard.text)}".encode()
    logout = browser.post(
        stack.panel_url("/accounts/logout/"),
        body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": stack.panel_url(""),
        },
    )
    assert logout.status == 302, logout.text[:300]
    # No waiting: the logout ran in the gateway's own process.
    assert browser.get(stack.url(stack.main, "/user")).status == 302
    assert browser.get(stack.url(other, "/user")).status == 302
    assert not AppspaceSession.objects.filter(user=stack.bob, revoked__isnull=True).exists()


def test_removing_a_user_in_another_process_locks_them_out_within_the_cache_ttl(stack):
    appspace = stack.appspace(members={stack.carol: []})
    browser = stack.enter(appspace, stack.carol)
    assert browser.get(stack.url(appspace, "/user")).status == 200
    started = time.monotonic()
    appspace_sessions_revoke(appspace=appspace, user=stack.carol)
    AppspaceUser.objects.filter(appspace=appspace, user=stack.carol).delete()
    wait_for(lambda: browser.get(stack.url(appspace, "/user")).status == 302, timeout=5)
    assert time.monotonic() - started < 1 + 1.5  # DS_GATEWAY_CACHE_TTL=1 in the test Daphne


def test_a_session_whose_user_was_removed_elsewhere_gets_a_clear_403(stack):
    appspace = stack.appspace(members={stack.carol: []})
    browser = stack.enter(appspace, stack.carol)
    # Removed without revoking (as a raw database change would): the gateway still knows.
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {AppspaceUser._meta.db_table} WHERE appspace_id = %s", [appspace.pk]
        )

    def refused():
        response = browser.get(stack.url(appspace, "/user"))
        return response if response.status == 403 else None

    response = wait_for(refused, timeout=5)
    assert b"not a user of this appspace" in response.body
    assert b'action="/.dropserver/logout"' in response.body
    public = browser.get(stack.url(appspace, "/echo")).json()
    assert public["user"] is None  # public routes still work, anonymously


def test_the_open_views_only_serve_the_owner_and_users(stack):
    member, outsider = Client(HTTP_HOST="dropid.localhost"), Client(HTTP_HOST="dropid.localhost")
    member.force_login(stack.carol)
    outsider.force_login(stack.charlie)
    url = reverse("appspace_open", args=[stack.main.public_id])
    response = member.post(url, {"next": "/user"})
    assert response.status_code == 302
    assert response["Location"].startswith(
        f"http://{stack.main.subdomain}.localhost:8000/.dropserver/login?token="
    )
    assert outsider.post(url).status_code == 404
    assert member.get(url).status_code == 405
    by_name = reverse("appspace_open_by_subdomain", args=[stack.main.subdomain])
    assert outsider.get(by_name).status_code == 403
    opened = member.get(by_name)
    assert opened.status_code == 200 and opened["Referrer-Policy"] == "origin"
    assert b'http-equiv="refresh"' in opened.content
    missing = reverse("appspace_open_by_subdomain", args=["nosuchthing"])
    assert member.get(missing).status_code == 404
    anonymous = Client(HTTP_HOST="dropid.localhost").get(by_name)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("account_login"))


def test_a_head_request_does_not_spend_a_login_token(stack):
    _, link = login_link(stack, stack.main, stack.carol)
    assert stack.browser().request("HEAD", link).status == 405
    assert stack.browser().get(link, headers=from_panel(stack)).status == 302
