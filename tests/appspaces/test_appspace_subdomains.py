"""Which names an appspace may have: one DNS label, lower case, not reserved, not taken."""

from __future__ import annotations

import pytest

from appspaces.lifecycle.subdomains import (
    SubdomainError,
    panel_label,
    subdomain_check_available,
    subdomain_normalize,
)
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
