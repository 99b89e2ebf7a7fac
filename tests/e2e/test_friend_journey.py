"""A friend's first day, in Debian's Chromium against the whole platform (Daphne, the sandbox
supervisor, a Celery worker): the admin invites them in the Django admin; they sign up from the
link, install Notes from a package file, create an appspace accepting the allowlist entries the
app suggests, open it and add a note; they add a second user without the "edit" permission, who
can read but not write; they remove that user, who is locked out on their next request; they
upgrade to Notes 2.0.0, whose migration keeps the notes and whose new "done" column works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from packages.build import build_package
from packages.extraction import ExtractionLimits
from tests.conftest import PASSWORD, make_user
from tests.db_sessions import in_thread
from tests.sandbox.fixtures import REPO

pytestmark = [pytest.mark.browser, pytest.mark.sandbox]

SUGGESTED = {"server": ["api.example.com"], "browser": ["https://tiles.example.com"]}
TIMEOUT = 90_000  # ms: an install runs the app twice in the sandbox
STEP = 20_000  # ms: anything else


def notes_package(tmp_path: Path, version: str) -> Path:
    """The example, as its author would publish it, suggesting two allowlist entries."""
    source = tmp_path / f"notes-{version}"
    shutil.copytree(REPO / "examples" / "notes" / version, source)
    manifest = json.loads((source / "dropapp.json").read_text())
    (source / "dropapp.json").write_text(json.dumps({**manifest, "network": SUGGESTED}))
    package = tmp_path / f"notes-{version}.tar.gz"
    build_package(source, package, limits=ExtractionLimits.for_app_packages())
    return package


def log_in(page, platform, email: str, password: str = PASSWORD) -> None:
    page.goto(platform.panel + "/accounts/login/")
    page.fill('input[name="login"]', email)
    page.fill('input[name="password"]', password)
    page.locator("main form").get_by_role("button").click()
    page.wait_for_url(platform.panel + "/")


def open_from_panel(page, platform, button: str):
    """Click the panel's open button; returns the appspace's response. The panel's redirect
    (of a form on a panel page) vouches for the login link (an origin-only Referer), so no
    confirmation is asked even though, under `localhost`, each subdomain is its own site to
    the browser."""
    with page.expect_navigation(url=platform.appspace_url("notes")) as opened:
        page.get_by_role("button", name=button, exact=True).click()
    return opened.value


def enter_by_address(page, platform) -> None:
    """Go to the appspace's address while logged in to the panel: the gateway sends the
    visitor to the panel, whose page moves on to the login link by itself (meta refresh, with
    the panel's origin as Referer), which vouches for it: straight in."""
    with page.expect_navigation(url=platform.appspace_url("notes")):
        page.goto(platform.appspace_url("notes"))


def issue_login_token(email: str, subdomain: str) -> str:
    """A login token as the panel issues it. In a thread: Playwright's sync API runs an event
    loop in this one, where the ORM may not run."""
    from accounts.models import User
    from appspaces.models import Appspace
    from appspaces.sharing.sessions import login_token_issue

    return in_thread(
        lambda: login_token_issue(
            user=User.objects.get(email=email),
            appspace=Appspace.objects.get(subdomain=subdomain),
        )
    )


def wait_for_job(page, link_text: str) -> None:
    """The job page updates itself and reloads once the job is done: wait for its link."""
    page.get_by_role("link", name=link_text).wait_for(timeout=TIMEOUT)


@pytest.fixture
def people(platform):
    # Before Playwright starts: its sync API runs an event loop, where the ORM may not. Daphne
    # checks passwords with the production hashers, not the tests' fast one.
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    for email, name, staff in (
        ("admin@example.com", "Admin", True),
        ("reader@example.com", "Rita", False),
    ):
        user = make_user(email, staff=staff, display_name=name)
        user.password = hasher.encode(PASSWORD, hasher.salt())
        user.save(update_fields=["password"])


def test_a_friend_installs_notes_shares_it_and_upgrades_it(platform, people, chromium, tmp_path):
    panel = platform.panel
    v1, v2 = notes_package(tmp_path, "1.0.0"), notes_package(tmp_path, "2.0.0")

    # The admin invites a friend in the Django admin.
    admin = chromium.new_context().new_page()
    admin.set_default_timeout(STEP)
    log_in(admin, platform, "admin@example.com")
    admin.goto(panel + "/admin/accounts/invitation/add/")
    admin.fill("#id_email", "friend@example.com")
    admin.click('input[name="_continue"]')
    link = admin.input_value("#invitation-link")
    assert link.startswith(panel + "/accounts/invitation/")

    # The friend signs up with the link.
    friend = chromium.new_context().new_page()
    friend.set_default_timeout(STEP)
    friend.goto(link)
    assert friend.input_value("#id_email") == "friend@example.com"  # locked to the invitation
    friend.fill("#id_password1", PASSWORD)
    friend.fill("#id_password2", PASSWORD)
    friend.locator("main form").get_by_role("button", name="Sign up").click()
    friend.wait_for_url(panel + "/")
    assert "Welcome," in friend.content()

    # Installs Notes 1.0.0 from the package file.
    friend.get_by_role("link", name="Install an app").first.click()
    friend.set_input_files('input[type="file"][name="package"]', str(v1))
    friend.get_by_role("button", name="Install", exact=True).click()
    wait_for_job(friend, "Open Notes")
    friend.get_by_role("link", name="Open Notes").click()

    # Creates an appspace, accepting what the app suggests.
    friend.get_by_role("link", name="New appspace with version 1.0.0").click()
    assert friend.is_checked('input[name="server_suggested"][value="api.example.com"]')
    assert friend.is_checked('input[name="browser_suggested"][value="https://tiles.example.com"]')
    assert "Visitors' browsers contact it directly" in friend.content().replace("&#x27;", "'")
    friend.fill("#id_subdomain", "notes")
    friend.get_by_role("button", name="Create the appspace").click()
    wait_for_job(friend, "Continue")
    friend.get_by_role("link", name="Continue").click()
    appspace_page = friend.url
    assert "running" in friend.locator("[data-appspace-state]").inner_text()

    # Opens it (the gateway's one-time login) and adds a note.
    csp = open_from_panel(friend, platform, "Open").headers["content-security-policy"]
    assert "https://tiles.example.com" in csp  # the accepted browser origin
    friend.fill("#text", "Buy milk")
    friend.locator("#add").get_by_role("button", name="Add").click()
    friend.locator("#notes li", has_text="Buy milk").wait_for()

    # Adds Rita without the "edit" permission.
    friend.goto(appspace_page)
    friend.fill("#id_email", "reader@example.com")
    friend.fill("#id_display_name", "Rita the reader")
    assert not friend.is_checked("#id_permissions_0")
    friend.locator('form[action$="/users/add#users"]').get_by_role("button", name="Add").click()
    assert "Rita the reader can now use notes" in friend.content()

    reader = chromium.new_context().new_page()
    reader.set_default_timeout(STEP)
    log_in(reader, platform, "reader@example.com")
    enter_by_address(reader, platform)
    reader.locator("#notes li", has_text="Buy milk").wait_for()
    assert reader.is_visible("#read-only") and not reader.is_visible("#add")
    status = reader.evaluate(
        """() => fetch("/api/notes", {method: "POST", headers: {"content-type":
        "application/json"}, body: JSON.stringify({text: "sneaky"})}).then((r) => r.status)"""
    )
    assert status == 403

    # The owner removes Rita: her very next request is refused.
    friend.goto(appspace_page)
    friend.get_by_role("button", name="Remove Rita the reader").click()
    assert "Rita the reader was removed" in friend.content()
    # Her session died with her membership: the gateway sends her to log in again, and the
    # panel refuses to log her in to an appspace she no longer belongs to.
    locked_out = reader.reload()
    assert locked_out.status == 403 and reader.url.startswith(panel + "/a/notes/open")
    api = reader.goto(platform.appspace_url("notes", "/api/notes"))
    assert api.status == 403 and reader.url.startswith(panel + "/a/notes/open")
    assert "Buy milk" not in reader.content()

    # Upgrades to Notes 2.0.0: install it, review the change, run the migration.
    friend.goto(panel + "/apps/")
    friend.get_by_role("link", name="Notes").first.click()
    form = friend.locator('form[action$="/install"]')
    form.locator('input[type="file"]').set_input_files(str(v2))
    form.get_by_role("button", name="Install this version").click()
    wait_for_job(friend, "Open Notes")
    friend.goto(appspace_page)
    friend.get_by_role("link", name="upgrade to it").click()
    review = friend.content()
    assert "from schema 1 to 2" in review and "Notes can be ticked off as done" in review
    friend.get_by_role("button", name="Upgrade to 2.0.0").click()
    wait_for_job(friend, "Continue")
    friend.get_by_role("link", name="Continue").click()
    assert "Notes</a> 2.0.0" in friend.content()

    # The note survived the migration, and the new column works.
    open_from_panel(friend, platform, "Open")
    done = friend.get_by_role("checkbox", name="Done: Buy milk")
    done.check()
    friend.locator("#notes li.done", has_text="Buy milk").wait_for()
    friend.reload()
    friend.locator("#notes li.done", has_text="Buy milk").wait_for()
    assert friend.get_by_role("checkbox", name="Done: Buy milk").is_checked()

    # A login link planted on another page (here: a blank page of a fresh browser) is not
    # redeemed on sight: the appspace says whose account it opens and waits for a click.
    token = issue_login_token("friend@example.com", "notes")
    stranger = chromium.new_context().new_page()
    stranger.set_default_timeout(STEP)
    link = platform.appspace_url("notes", f"/.dropserver/login?token={token}&next=%2F")
    stranger.set_content(f'<a href="{link}">cute cats</a>')
    stranger.click("a")
    confirm = stranger.get_by_role("button", name="Continue as friend@example.com")
    confirm.wait_for()
    assert "Log in to this appspace?" in stranger.content()
    with stranger.expect_navigation(url=platform.appspace_url("notes")):
        confirm.click()  # Chromium's same-origin POST, with Origin: null under no-referrer
    stranger.locator("#notes li", has_text="Buy milk").wait_for()

    # A login link typed or pasted into the address bar (Sec-Fetch-Site: none, no Referer)
    # is asked about too, naming the account and the appspace.
    token = issue_login_token("friend@example.com", "notes")
    typed = chromium.new_context().new_page()
    typed.set_default_timeout(STEP)
    shown = typed.goto(platform.appspace_url("notes", f"/.dropserver/login?token={token}"))
    assert shown.status == 200 and "set-cookie" not in shown.headers
    typed.get_by_role("button", name="Continue as friend@example.com").wait_for()
    assert f"notes.{settings.DS_DOMAIN}:{platform.port}" in typed.content()
    assert not typed.context.cookies()

    for name in ("daphne", "worker"):
        assert "Traceback" not in platform.log(name), platform.log(name)[-4000:]
    assert settings.DS_DOMAIN in platform.appspace_url("notes")
