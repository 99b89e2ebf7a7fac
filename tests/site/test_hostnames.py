"""Host names are normalised as browsers (UTS #46 / IDNA 2008) and Deno do, not as Python's
`str.encode("idna")` (IDNA 2003), which reaches a different domain for the names below."""

from __future__ import annotations

import pytest

from appspaces.lifecycle.subdomains import SubdomainError, subdomain_normalize
from dropserver_site.hosts import normalize_host
from packages.allowlist import (
    AllowlistError,
    normalize_hostname,
    parse_browser_origin,
    parse_server_entry,
)
from packages.fetch import FetchError, fetch_bytes
from packages.hostnames import HostnameError
from packages.manifest import parse_manifest

# (typed, what browsers and Deno reach, what IDNA 2003 made of it)
KNOWN_DIFFERENCES = [
    pytest.param("faß.de", "xn--fa-hia.de", "fass.de", id="sharp-s"),
    pytest.param("ς.gr", "xn--3xa.gr", "xn--4xa.gr", id="final-sigma"),
    pytest.param("βόλος.com", "xn--nxasmm1c.com", "xn--nxasmq6b.com", id="final-sigma-in-word"),
    pytest.param(
        "\u0915\u094d\u200d\u0937.in", "xn--11b2ezcw70k.in", "xn--11b2ezc.in", id="zwj-after-virama"
    ),
]


@pytest.mark.parametrize("typed,browsers,idna2003", KNOWN_DIFFERENCES)
def test_names_become_what_browsers_reach_not_idna_2003(typed, browsers, idna2003):
    assert typed.encode("idna").decode() == idna2003  # the old, wrong answer
    assert normalize_hostname(typed) == browsers
    assert parse_server_entry(typed).deno_net_value() == browsers
    assert parse_browser_origin(f"https://{typed}").csp_source() == f"https://{browsers}"
    assert parse_server_entry(f"*.{typed}:443").deno_net_value() == f"*.{browsers}:443"


@pytest.mark.parametrize(
    "typed,expected",
    [
        pytest.param("API.Example.COM", "api.example.com", id="upper-case"),
        pytest.param("api。example。com", "api.example.com", id="ideographic-full-stop"),
        pytest.param("ａｐｉ．ｅｘａｍｐｌｅ．ｃｏｍ", "api.example.com", id="full-width"),
        pytest.param("api.example.com.", "api.example.com", id="trailing-dot"),
        pytest.param("api.example.com。", "api.example.com", id="trailing-full-width-dot"),
        pytest.param("BÜCHER.example", "xn--bcher-kva.example", id="upper-case-non-ascii"),
        pytest.param("xn--fa-hia.de", "xn--fa-hia.de", id="already-punycode"),
    ],
)
def test_mappings_browsers_apply(typed, expected):
    assert normalize_hostname(typed) == expected


@pytest.mark.parametrize(
    "typed,reason",
    [
        pytest.param("a\u200db.example.com", r"Joiner U\+200D not allowed", id="zwj-alone"),
        pytest.param("a\u200cb.example.com", r"Joiner U\+200C not allowed", id="zwnj-alone"),
        pytest.param("xn--zz.example.com", "Invalid A-label", id="bad-punycode"),
        pytest.param("a_b.example.com", "letters, digits and hyphens", id="underscore"),
        pytest.param("-a.example.com", "letters, digits and hyphens", id="leading-hyphen"),
        pytest.param("。", "the host name is empty", id="only-a-dot"),
        pytest.param("１２７．０．０．１", "an incomplete IP address", id="full-width-ip"),
    ],
)
def test_invalid_names_are_refused_with_a_sentence(typed, reason):
    # IDNA 2003 silently dropped the joiners: "ab" and "a<ZWJ>b" were one name to us.
    with pytest.raises(AllowlistError, match=reason):
        normalize_hostname(typed)


def test_a_manifest_suggests_the_name_deno_will_reach(tmp_path):
    (tmp_path / "app.ts").write_text("export {}")
    raw = {
        "name": "Notes",
        "version": "1.0.0",
        "network": {"server": ["faß.de"], "browser": ["https://ς.gr"]},
    }
    result = parse_manifest(raw, tmp_path)
    assert result.ok, result.errors
    assert [e.deno_net_value() for e in result.manifest.network.server] == ["xn--fa-hia.de"]
    assert [o.csp_source() for o in result.manifest.network.browser] == ["https://xn--3xa.gr"]


def test_fetching_resolves_the_name_browsers_would(tmp_path):
    asked = []

    def resolver(host, port):
        asked.append(host)
        return []  # nothing: the fetch stops here, nothing is sent anywhere

    with pytest.raises(FetchError):
        fetch_bytes("https://faß.de/app.tar.gz", max_bytes=1000, resolver=resolver)
    assert asked == ["xn--fa-hia.de"]


def test_configured_domains_use_idna_2008():
    assert normalize_host("Faß.DE.") == "xn--fa-hia.de"
    assert normalize_host("Example.COM.") == "example.com"
    with pytest.raises(HostnameError, match="U\\+200D"):
        normalize_host("a\u200db.example")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "typed,stored", [("ＮＯＴＥＳ", "notes"), ("Notes", "notes")], ids=["full-width", "upper-case"]
)
def test_subdomains_fold_as_browsers_do(typed, stored):
    assert subdomain_normalize(typed) == stored


@pytest.mark.django_db
def test_non_ascii_subdomains_are_refused_with_a_sentence():
    with pytest.raises(SubdomainError, match="letters a-z"):
        subdomain_normalize("faß")
