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


def _route(router, host: bytes) -> tuple[str, dict]:
    """Which app the router hands a request for `host` to, and the scope it passes."""
    import asyncio

    seen: list = []

    async def app(name, scope, receive, send):
        seen.append((name, scope))

    router_instance = router(
        panel=lambda s, r, se: app("panel", s, r, se),
        appspace=lambda s, r, se: app("appspace", s, r, se),
    )
    sent: list = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": [(b"host", host)]}
    asyncio.run(router_instance(scope, None, send))
    if seen:
        return seen[0]
    assert sent[0]["status"] == 404
    return "unknown", scope


def test_the_host_router_follows_settings_changes_despite_its_memo(settings):
    from dropserver_site.routing import HostRouter

    settings.DS_DOMAIN, settings.DS_PANEL_HOST = "example.com", "dropid.example.com"
    assert _route(HostRouter, b"dropid.example.com")[0] == "panel"
    name, scope = _route(HostRouter, b"notes.example.com:443")
    assert name == "appspace" and scope["appspace_subdomain"] == "notes"
    settings.DS_DOMAIN, settings.DS_PANEL_HOST = "example.org", "dropid.example.org"
    assert _route(HostRouter, b"notes.example.com:443")[0] == "unknown"
    assert _route(HostRouter, b"dropid.example.com")[0] == "unknown"


def test_random_host_headers_cannot_grow_the_host_router_memo(settings):
    from dropserver_site import routing

    settings.DS_DOMAIN, settings.DS_PANEL_HOST = "example.com", "dropid.example.com"
    for i in range(routing._SITES_MAX + 50):
        _route(routing.HostRouter, f"h{i}.example.com".encode())
    assert len(routing._sites) <= routing._SITES_MAX
    assert _route(routing.HostRouter, b"h7.example.com")[1]["appspace_subdomain"] == "h7"
