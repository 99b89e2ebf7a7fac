"""Which names an appspace may have: one DNS label, lower case, not reserved, not taken, not
freed recently by another owner's appspace."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest

from appspaces.lifecycle.quarantine import name_was_used, subdomains_release
from appspaces.lifecycle.subdomains import (
    SubdomainError,
    panel_label,
    subdomain_check_available,
    subdomain_normalize,
)
from appspaces.models import Appspace, FreedSubdomain
from tests.appspaces.appspace_fixtures import make_appspace, make_version


@pytest.mark.parametrize(
    "typed,stored",
    [
        ("notes", "notes"),
        ("My-Notes", "my-notes"),
        ("  family2026 ", "family2026"),
        ("a", "a"),
        ("1", "1"),
        ("x" * 63, "x" * 63),
        ("notes.localhost", "notes"),  # the whole address pasted
    ],
)
def test_it_accepts_dns_labels_in_lower_case(typed, stored):
    assert subdomain_normalize(typed) == stored


@pytest.mark.parametrize(
    "typed,reason",
    [
        ("", "Choose a name"),
        ("   ", "Choose a name"),
        ("a.b", "without dots"),
        ("notes.alice", "without dots"),  # no nesting under another appspace
        ("x" * 64, "at most 63"),
        ("-notes", "starting and ending"),
        ("notes-", "starting and ending"),
        ("no_tes", "letters a-z"),
        ("nötes", "letters a-z"),
        ("no tes", "letters a-z"),
        ("xn--nts-qla", "two hyphens"),
        ("ab--cd", "two hyphens"),
        ("www", "reserved"),
        ("WWW", "reserved"),
        ("admin", "reserved"),
        ("api", "reserved"),
        ("mail", "reserved"),
        ("dropid", "reserved"),
    ],
)
def test_it_refuses_what_is_not_a_usable_name(typed, reason):
    with pytest.raises(SubdomainError, match=reason):
        subdomain_normalize(typed)


def test_the_panels_label_is_reserved_whatever_it_is(settings):
    settings.DS_PANEL_HOST = f"control.{settings.DS_DOMAIN}"
    settings.DS_RESERVED_SUBDOMAINS = []
    assert panel_label() == "control"
    with pytest.raises(SubdomainError, match="reserved"):
        subdomain_normalize("control")
    assert subdomain_normalize("www") == "www"  # the list is the administrator's
    settings.DS_PANEL_HOST = f"panel.ops.{settings.DS_DOMAIN}"
    assert panel_label() == "ops"


@pytest.mark.django_db
def test_a_taken_name_is_refused(alice):
    make_appspace(alice, make_version(alice), subdomain="notes")
    with pytest.raises(SubdomainError, match="is taken"):
        subdomain_check_available("Notes")
    assert subdomain_check_available("notes2") == "notes2"


@pytest.mark.django_db
def test_a_deleted_appspaces_name_waits_for_others_until_the_date_it_frees(alice, bob, settings):
    settings.DS_SUBDOMAIN_QUARANTINE_DAYS = 30
    appspace = make_appspace(alice, make_version(alice), subdomain="notes")
    appspace.delete()
    freed = FreedSubdomain.objects.get(name="notes")
    assert freed.previous_owner == alice.public_id and freed.released_at is None
    until = freed.freed_at + timedelta(days=30)
    with pytest.raises(SubdomainError) as refused:
        subdomain_check_available("Notes", owner=bob)
    assert f"kept free until {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC" in str(refused.value)
    with pytest.raises(SubdomainError, match="kept free until"):
        subdomain_check_available("notes")  # no owner: anyone's
    # Its previous owner may take it back at once: whatever points at it was theirs.
    assert subdomain_check_available("notes", owner=alice) == "notes"
    # The quarantine ends with its days, or when an administrator releases the name...
    settings.DS_SUBDOMAIN_QUARANTINE_DAYS = 0
    assert subdomain_check_available("notes", owner=bob) == "notes"
    settings.DS_SUBDOMAIN_QUARANTINE_DAYS = 30
    assert subdomains_release(FreedSubdomain.objects.all()) == 1
    assert subdomain_check_available("notes", owner=bob) == "notes"
    # ...and the name stays known as used, for the gateway's clearing.
    assert name_was_used("notes") and not name_was_used("other")


@pytest.mark.django_db
def test_a_name_freed_again_starts_a_new_quarantine(alice, bob, settings):
    version = make_version(alice)
    make_appspace(alice, version, subdomain="notes").delete()
    subdomains_release(FreedSubdomain.objects.all())
    make_appspace(alice, version, subdomain="notes").delete()
    assert FreedSubdomain.objects.get(name="notes").released_at is None
    with pytest.raises(SubdomainError, match="kept free until"):
        subdomain_check_available("notes", owner=bob)


@pytest.mark.django_db
def test_an_appspace_that_was_never_created_frees_its_name_at_once(alice, bob):
    appspace = make_appspace(alice, make_version(alice), subdomain="notes")
    Appspace.objects.filter(pk=appspace.pk).update(status=Appspace.Status.CREATING)
    Appspace.objects.get(pk=appspace.pk).delete()
    assert not FreedSubdomain.objects.exists()
    assert subdomain_check_available("notes", owner=bob) == "notes"
