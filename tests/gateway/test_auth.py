"""Route auth, decided by the host before any app code: every route kind against every kind
of visitor, through the real panel login, the real redirects and the real sandbox."""

from urllib.parse import quote

import pytest

pytestmark = pytest.mark.sandbox

ROUTES = {"public": "/echo", "user": "/user", "edit": "/edit"}
# route kind -> visitor -> expected status
MATRIX = {
    "public": {"anonymous": 200, "outsider": 200, "user": 200, "permitted": 200, "owner": 200},
    "user": {"anonymous": 302, "outsider": 403, "user": 200, "permitted": 200, "owner": 200},
    "edit": {"anonymous": 302, "outsider": 403, "user": 403, "permitted": 200, "owner": 200},
}
CASES = [(route, who, status) for route, row in MATRIX.items() for who, status in row.items()]


def visitor(stack, who):
    """(browser, user) for a kind of visitor of stack.main (alice owns; bob has "edit")."""
    if who == "anonymous":
        return stack.browser(), None
    if who == "outsider":
        return stack.browser(stack.charlie), stack.charlie
    user = {"user": stack.carol, "permitted": stack.bob, "owner": stack.alice}[who]
    return stack.enter(stack.main, user), user


@pytest.mark.parametrize(("route", "who", "status"), CASES)
def test_route_auth(stack, route, who, status):
    browser, user = visitor(stack, who)
    response = browser.get(stack.url(stack.main, ROUTES[route]))
    if who == "outsider" and status == 403:
        # No session here: the gateway sends them to the panel, which says no.
        assert response.status == 302
        response = browser.get(response.header("location"), follow=True)
        assert response.status == 403
        assert b"charlie@example.com" in response.body
        assert b"isn't a user of that" in response.body
        return
    assert response.status == status, response.text[:500]
    if status == 302:
        next_path = quote(ROUTES[route], safe="")
        expected = stack.panel_url(f"/a/{stack.main.subdomain}/open?next={next_path}")
        assert response.header("location") == expected
    elif status == 403:
        assert b"permission" in response.body
        assert b"edit" in response.body
    else:
        seen = response.json()
        if user is None or who == "outsider":
            assert seen["user"] is None
        else:
            assert seen["user"]["id"] == str(user.public_id)


def test_the_app_learns_who_is_asking(stack):
    owner = stack.enter(stack.main, stack.alice).get(stack.url(stack.main, "/user")).json()
    assert owner["user"] == {
        "id": str(stack.alice.public_id),
        "displayName": "Alice",
        "permissions": ["edit", "admin"],  # the owner has every permission
    }
    member = stack.enter(stack.main, stack.bob).get(stack.url(stack.main, "/edit")).json()
    assert member["user"] == {
        "id": str(stack.bob.public_id),
        "displayName": "Bob Ünïcode",
        "permissions": ["edit"],
    }


def test_a_permission_nobody_was_granted_is_refused_even_to_members(stack):
    browser = stack.enter(stack.main, stack.bob)
    assert browser.get(stack.url(stack.main, "/nobody")).status == 403
    owner = stack.enter(stack.main, stack.alice)
    assert owner.get(stack.url(stack.main, "/nobody")).status == 200


def test_anonymous_state_changes_get_a_login_page_not_a_redirect(stack):
    response = stack.browser().post(
        stack.url(stack.main, "/submit"), b"x=1", headers={"Origin": stack.url(stack.main, "")}
    )
    assert response.status == 401
    assert b"/open?next=%2Fsubmit" in response.body


def test_the_redirect_keeps_the_query_and_comes_back(stack):
    browser = stack.browser(stack.bob)
    response = browser.get(stack.url(stack.main, "/user?x=1&y=%C3%A9"), follow=True)
    assert response.status == 200
    assert response.json()["url"].endswith("/user?x=1&y=%C3%A9")
    hops = [r.url.split("?")[0] for r in response.history]
    assert hops == [
        stack.url(stack.main, "/user"),
        stack.panel_url(f"/a/{stack.main.subdomain}/open"),
        stack.url(stack.main, "/.dropserver/login"),
    ]


def test_static_routes_are_authorised_too(stack):
    anonymous = stack.browser().get(stack.url(stack.main, "/private/secret.txt"))
    assert anonymous.status == 302
    member = stack.enter(stack.main, stack.carol).get(stack.url(stack.main, "/private/secret.txt"))
    assert member.status == 200
    assert member.body == b"members only\n"
    assert member.header("cache-control") == "private, no-cache"
