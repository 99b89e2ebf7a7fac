"""Host classification: the panel, appspaces one label deep, and nothing else."""

import pytest

from dropserver_site.hosts import Site, classify_host, split_host_header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("dropid.localhost:8000", (Site.PANEL, "")),
        ("DropID.LocalHost.", (Site.PANEL, "")),
        ("notes.localhost:8000", (Site.APPSPACE, "notes")),
        ("a.b.localhost", (Site.UNKNOWN, "")),
        ("localhost", (Site.UNKNOWN, "")),
        ("evil.com", (Site.UNKNOWN, "")),
        ("notes.localhost.evil.com", (Site.UNKNOWN, "")),
        ("-bad.localhost", (Site.UNKNOWN, "")),
        ("[::1]:8000", (Site.UNKNOWN, "")),
        ("notes.localhost:80x", (Site.UNKNOWN, "")),
        ("", (Site.UNKNOWN, "")),
    ],
)
def test_it_classifies_hosts(header, expected):
    host = split_host_header(header)
    assert classify_host(host, domain="localhost", panel_host="dropid.localhost") == expected
