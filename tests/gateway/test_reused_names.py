"""A reused name: the gateway clears the old tenant's browser state once per browser
(appspaces/gateway/reused_names.py), with real requests against the live Daphne."""

import pytest

from appspaces.lifecycle.quarantine import subdomain_free
from appspaces.models import FreedSubdomain

pytestmark = pytest.mark.sandbox

CLEAR = '"cache", "storage"'


def reused(stack):
    appspace = stack.appspace()
    subdomain_free(name=appspace.subdomain, owner_id=None)
    appspace.touch_config()
    return appspace


def test_a_never_used_name_clears_nothing(stack):
    response = stack.browser().get(stack.url(stack.main, "/"))
    assert response.status == 200
    assert response.header("clear-site-data") is None
    assert not [c for c in response.all("set-cookie") if c.startswith("ds_tenant=")]


def test_a_reused_name_clears_each_browser_once(stack):
    appspace = reused(stack)
    browser = stack.browser()
    browser.cookies[stack.host(appspace)] = {"old_pref": "dark", "ds_appspace": "stale"}
    first = browser.get(stack.url(appspace, "/echo"))
    assert first.status == 200
    assert first.header("clear-site-data") == CLEAR
    cookies = first.all("set-cookie")
    assert f"ds_tenant={appspace.public_id}; Path=/; Max-Age=34560000; HttpOnly; SameSite=Lax" in (
        cookies
    )
    assert "old_pref=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax" in cookies
    assert not [c for c in cookies if c.startswith("ds_appspace=")]  # the platform's own
    assert "old_pref" not in first.json()["headers"].get("cookie", "")  # kept from the app
    # The marker is presented now: nothing more is cleared, and app cookies pass again.
    browser.cookies[stack.host(appspace)]["mine"] = "1"
    second = browser.get(stack.url(appspace, "/echo"))
    assert second.header("clear-site-data") is None and not second.all("set-cookie")
    assert "mine=1" in second.json()["headers"]["cookie"]
    assert "ds_tenant" not in second.json()["headers"]["cookie"]
    # Another browser (or one that lost the marker) is cleared too, on any response.
    for path in ("/assets/app.js", "/nope", "/user", "/.dropserver/style.css"):
        response = stack.browser().get(stack.url(appspace, path))
        assert response.header("clear-site-data") == CLEAR, path


def test_an_app_cannot_send_or_suppress_the_clearing(stack):
    appspace = reused(stack)
    loose = stack.browser().get(stack.url(appspace, "/loose"))
    assert loose.all("clear-site-data") == [CLEAR]
    # /loose sets app_pref: the app's new cookie is not expired by the clearing.
    browser = stack.browser()
    browser.cookies[stack.host(appspace)] = {"app_pref": "old"}
    response = browser.get(stack.url(appspace, "/loose"))
    assert response.all("clear-site-data") == [CLEAR]
    assert [c for c in response.all("set-cookie") if c.startswith("app_pref=")] == [
        "app_pref=dark; Path=/; HttpOnly"
    ]


def test_a_deleted_appspace_frees_its_name(stack):
    from appspaces.lifecycle.control import appspace_delete

    appspace = stack.appspace()
    appspace_delete(appspace=appspace, keep_backups=False)
    freed = FreedSubdomain.objects.get(name=appspace.subdomain)
    assert freed.previous_owner == stack.alice.public_id and freed.released_at is None


def test_a_freed_name_no_appspace_holds_clears_browsers_that_come_back(stack):
    subdomain_free(name="freedname", owner_id=None)
    freed = stack.browser().get(f"http://freedname.localhost:{stack.port}/sw.js")
    assert freed.status == 404 and freed.body == b"Not Found"
    assert freed.header("clear-site-data") == CLEAR
    never = stack.browser().get(f"http://nosuchname.localhost:{stack.port}/")
    assert never.status == 404 and never.header("clear-site-data") is None
