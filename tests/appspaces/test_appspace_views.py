"""The appspace's panel pages, without a sandbox supervisor: every view and action is its
owner's (an outsider and a friend who uses the appspace both get 404), and each does what the
owner asked. Alice owns, Bob is a user of her appspace, Charlie is an outsider."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from accounts.models import Invitation
from appspaces.models import AllowlistEntry, Appspace, AppspaceSession, AppspaceUser
from appspaces.sharing.sessions import appspace_session_create
from tests.appspaces.appspace_fixtures import (  # noqa: F401 (fixture)
    logged_in,
    make_appspace,
    make_version,
    own_uids,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def space(alice, bob):
    version = make_version(alice)
    appspace = make_appspace(alice, version, subdomain="notes", folders=True)
    AppspaceUser.objects.create(appspace=appspace, user=bob, display_name="Bob", permissions=[])
    return appspace


def member_of(space):
    return space.users.get().public_id


# (url name, extra args, method, data)
OWNER_ONLY = [
    ("appspace_detail", (), "get", None),
    ("appspace_log", (), "get", None),
    ("appspace_pause", (), "post", {}),
    ("appspace_resume", (), "post", {}),
    ("appspace_restart", (), "post", {}),
    ("appspace_limits", (), "post", {"memory_mb": 128, "cpu_percent": 10, "disk_mb": 50}),
    ("appspace_delete", (), "get", None),
    ("appspace_delete", (), "post", {"confirm": "notes", "backups": "delete"}),
    ("appspace_version", (), "get", None),
    ("appspace_user_add", (), "post", {"email": "dan@example.com"}),
    ("appspace_user_edit", ("member",), "get", None),
    ("appspace_user_edit", ("member",), "post", {"display_name": "B", "permissions": ["edit"]}),
    ("appspace_user_remove", ("member",), "post", {}),
    ("appspace_invitation_revoke", (), "post", {"email": "dan@example.com"}),
    ("appspace_allowlist_add", (), "post", {"server-kind": "server", "server-value": "a.io"}),
    ("appspace_allowlist_remove", (), "post", {"kind": "server", "value": "a.io"}),
    ("appspace_blocked_approve", (), "post", {"host": "x.io", "port": "443"}),
    ("appspace_blocked_dismiss", (), "post", {"host": "x.io", "port": "443"}),
    ("backup_list", (), "get", None),
]


@pytest.mark.parametrize("name,extra,method,data", OWNER_ONLY)
@pytest.mark.parametrize("who", ["charlie", "bob"])
def test_it_gives_404_to_an_outsider_and_to_a_user_of_the_appspace(
    request, space, name, extra, method, data, who
):
    user = request.getfixturevalue(who)
    args = [space.public_id] + [member_of(space) for _ in extra]
    client = logged_in(user)
    response = getattr(client, method)(reverse(name, args=args), data or {})
    assert response.status_code == 404
    space.refresh_from_db()
    assert space.status == Appspace.Status.ACTIVE
    assert space.users.count() == 1 and not space.allowlist.exists()


def test_an_unknown_appspace_is_404_and_an_anonymous_visitor_must_log_in(client, alice, space):
    import uuid

    assert logged_in(alice).get(reverse("appspace_detail", args=[uuid.uuid4()])).status_code == 404
    response = logged_in(alice).get("/appspaces/not-a-uuid/")
    assert response.status_code == 404
    anonymous = logged_in(alice)
    anonymous.logout()
    response = anonymous.get(reverse("appspace_detail", args=[space.public_id]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_its_page_shows_status_users_network_versions_log_and_the_open_button(alice, space):
    page = logged_in(alice).get(reverse("appspace_detail", args=[space.public_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "state unknown" in html  # no supervisor in this test
    assert reverse("appspace_open", args=[space.public_id]) in html
    assert "Bob" in html and "bob@example.com" in html
    assert "None: the app's code cannot reach the network." in html
    assert reverse("backup_list", args=[space.public_id]) in html
    assert "Nothing yet." in html
    assert "<script>" not in html and " style=" not in html  # strict CSP: no inline code


def test_the_log_tail_is_bounded_to_whole_lines_and_never_follows_a_link(alice, space, settings):
    settings.DS_APPSPACE_LOG_TAIL_KB = 1
    log_dir = settings.DS_DATA_DIR / "logs" / str(space.public_id)
    log_dir.mkdir(parents=True)
    lines = [f"2026-01-01T00:00:00Z out| line {n:04d}" for n in range(200)]
    (log_dir / "sandbox.log").write_text("\n".join(lines) + "\n")
    text = logged_in(alice).get(reverse("appspace_log", args=[space.public_id])).content.decode()
    assert text.endswith("line 0199\n") and len(text) <= 1024
    assert text.splitlines()[0].startswith("2026-")  # no half line at the top
    (log_dir / "sandbox.log").unlink()
    secret = settings.DS_DATA_DIR / "secret.txt"
    secret.write_text("not for the owner")
    (log_dir / "sandbox.log").symlink_to(secret)
    response = logged_in(alice).get(reverse("appspace_log", args=[space.public_id]))
    assert response.content == b""


def test_pause_and_resume(alice, space):
    client = logged_in(alice)
    client.post(reverse("appspace_pause", args=[space.public_id]))
    space.refresh_from_db()
    assert space.status == Appspace.Status.PAUSED
    assert b"Resume" in client.get(reverse("appspace_detail", args=[space.public_id])).content
    client.post(reverse("appspace_resume", args=[space.public_id]))
    space.refresh_from_db()
    assert space.status == Appspace.Status.ACTIVE


def test_limits_stay_within_what_the_admin_allows(alice, space, settings):
    settings.DS_APPSPACE_MAX_MEMORY_MB = 512
    client = logged_in(alice)
    url = reverse("appspace_limits", args=[space.public_id])
    response = client.post(url, {"memory_mb": 4096, "cpu_percent": 50, "disk_mb": 100})
    assert response.status_code == 400
    assert "Ensure this value is less than or equal to 512" in response.content.decode()
    response = client.post(url, {"memory_mb": 512, "cpu_percent": 20, "disk_mb": 100})
    assert response.status_code == 302
    space.refresh_from_db()
    assert (space.memory_mb, space.cpu_percent) == (512, 20)


# --- Users ----------------------------------------------------------------------------------


def users_json(space) -> list[dict]:
    return json.loads((space.meta_path / "users.json").read_text())


def test_adding_an_existing_user_lets_them_in_with_the_chosen_permissions(
    alice, charlie, space, django_capture_on_commit_callbacks
):
    client = logged_in(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("appspace_user_add", args=[space.public_id]),
            {"email": "Charlie@Example.com", "display_name": "Chuck", "permissions": ["edit"]},
        )
    assert response.status_code == 302
    member = space.users.get(user=charlie)
    assert (member.display_name, member.permissions) == ("Chuck", ["edit"])
    assert [u["displayName"] for u in users_json(space)] == ["Alice", "Bob", "Chuck"]
    assert users_json(space)[0]["permissions"] == ["edit"]  # the owner has them all


@pytest.mark.parametrize(
    "data,error",
    [
        ({"email": "bob@example.com"}, "already a user of this appspace"),
        ({"email": "alice@example.com"}, "That is you"),
        ({"email": "not an address"}, "Enter a valid email address"),
        ({"email": "dan@example.com", "permissions": ["admin"]}, "not one of the available"),
    ],
)
def test_adding_a_user_explains_what_is_wrong_next_to_the_field(alice, space, data, error):
    response = logged_in(alice).post(reverse("appspace_user_add", args=[space.public_id]), data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert space.users.count() == 1 and not Invitation.objects.exists()


def test_a_friend_without_an_account_is_invited_and_joins_on_sign_up(
    alice, space, mailoutbox, django_capture_on_commit_callbacks
):
    from accounts.models import User
    from accounts.services import invitation_accept

    client = logged_in(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("appspace_user_add", args=[space.public_id]),
            {"email": "dan@example.com", "display_name": "Dan", "permissions": ["edit"]},
        )
    invitation = Invitation.objects.get(email="dan@example.com")
    assert invitation.inviter == alice and invitation.is_pending
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["dan@example.com"]
    page = client.get(reverse("appspace_detail", args=[space.public_id])).content.decode()
    assert "dan@example.com" in page and "invited" in page
    assert "dan@example.com" in client.get(reverse("dashboard")).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        dan = invitation_accept(
            invitation=invitation,
            create_user=lambda: User.objects.create_user("dan@example.com", "pw-123456789x"),
        )
    member = space.users.get(user=dan)
    assert (member.display_name, member.permissions) == ("Dan", ["edit"])
    assert "Dan" in [u["displayName"] for u in users_json(space)]


def test_a_pending_invitation_can_be_withdrawn(alice, space):
    from appspaces.sharing.users import appspace_user_add

    appspace_user_add(appspace=space, email="dan@example.com", send_email=False)
    client = logged_in(alice)
    client.post(
        reverse("appspace_invitation_revoke", args=[space.public_id]), {"email": "dan@example.com"}
    )
    assert not Invitation.objects.get(email="dan@example.com").is_pending
    page = client.get(reverse("appspace_detail", args=[space.public_id])).content.decode()
    assert "was withdrawn" in page
    page = client.get(reverse("appspace_detail", args=[space.public_id])).content.decode()
    assert "dan@example.com" not in page


def test_permissions_are_only_those_the_app_declares_and_renaming_works(alice, bob, space):
    member = space.users.get()
    client = logged_in(alice)
    url = reverse("appspace_user_edit", args=[space.public_id, member.public_id])
    assert client.get(url).status_code == 200
    response = client.post(url, {"display_name": "Bobby", "permissions": ["root"]})
    assert response.status_code == 400
    response = client.post(url, {"display_name": "Bobby", "permissions": ["edit"]})
    assert response.status_code == 302
    member.refresh_from_db()
    assert (member.display_name, member.permissions) == ("Bobby", ["edit"])


def test_removing_a_user_ends_their_sessions_at_once(alice, bob, space):
    member = space.users.get()
    key = appspace_session_create(user=bob, appspace=space)
    assert AppspaceSession.objects.filter(user=bob, revoked__isnull=True).count() == 1
    logged_in(alice).post(reverse("appspace_user_remove", args=[space.public_id, member.public_id]))
    assert not space.users.exists()
    assert not AppspaceSession.objects.filter(user=bob, revoked__isnull=True).exists()
    assert key  # the cookie's key is worthless now: its session is revoked


# --- Allowlist ------------------------------------------------------------------------------


def test_allowlist_entries_are_validated_next_to_the_field(alice, space):
    client = logged_in(alice)
    url = reverse("appspace_allowlist_add", args=[space.public_id])
    bad = client.post(url, {"server-kind": "server", "server-value": "http://api.example.com/x"})
    assert bad.status_code == 400
    assert "without a scheme" in bad.content.decode()
    private = client.post(url, {"server-kind": "server", "server-value": "10.0.0.1"})
    assert "private" in private.content.decode() and private.status_code == 400
    origin = client.post(
        url, {"browser-kind": "browser", "browser-value": "http://cdn.example.com"}
    )
    assert origin.status_code == 400 and "only https://" in origin.content.decode()
    assert not space.allowlist.exists()

    good = client.post(url, {"server-kind": "server", "server-value": "API.Example.com:443"})
    assert good.status_code == 302
    client.post(url, {"browser-kind": "browser", "browser-value": "https://tiles.example.com"})
    assert set(space.allowlist.values_list("kind", "value")) == {
        ("server", "api.example.com:443"),
        ("browser", "https://tiles.example.com"),
    }
    again = client.post(url, {"server-kind": "server", "server-value": "api.example.com:443"})
    assert "already allowed" in again.content.decode()
    client.post(
        reverse("appspace_allowlist_remove", args=[space.public_id]),
        {"kind": "server", "value": "api.example.com:443"},
    )
    assert list(space.allowlist.values_list("kind", flat=True)) == ["browser"]


@pytest.mark.parametrize("value", ["8.8.8.8:53", "8.8.8.8", "*.example.com"])
def test_dns_and_wildcard_entries_need_a_confirmation(alice, space, value):
    client = logged_in(alice)
    url = reverse("appspace_allowlist_add", args=[space.public_id])
    response = client.post(url, {"server-kind": "server", "server-value": value})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Tick the box to allow it anyway" in html
    assert not space.allowlist.exists()
    data = {"server-kind": "server", "server-value": value, "server-confirm_risky": "on"}
    assert client.post(url, data).status_code == 302
    assert space.allowlist.filter(kind=AllowlistEntry.Kind.SERVER).count() == 1


# --- Delete ---------------------------------------------------------------------------------


def test_deleting_needs_the_name_typed(alice, space):
    client = logged_in(alice)
    url = reverse("appspace_delete", args=[space.public_id])
    response = client.post(url, {"confirm": "note", "backups": "delete"})
    assert response.status_code == 400 and "Type notes exactly" in response.content.decode()
    assert Appspace.objects.filter(pk=space.pk).exists()


def test_dashboard_lists_mine_those_shared_with_me_and_everyone_for_staff(
    alice, bob, charlie, admin_user, space
):
    mine = logged_in(alice).get(reverse("dashboard")).content.decode()
    assert reverse("appspace_detail", args=[space.public_id]) in mine
    assert "CPU last 7 days" in mine  # what it costs, at a glance
    shared = logged_in(bob).get(reverse("dashboard")).content.decode()
    assert "Shared with me" in shared and "Open notes" in shared
    assert f'href="{reverse("appspace_detail", args=[space.public_id])}"' not in shared
    outsider = logged_in(charlie).get(reverse("dashboard")).content.decode()
    assert "notes" not in outsider.split("My apps")[0]
    staff = logged_in(admin_user).get(reverse("dashboard")).content.decode()
    assert "Everyone's appspaces" in staff and "alice@example.com" in staff
    assert "Everyone" not in mine
