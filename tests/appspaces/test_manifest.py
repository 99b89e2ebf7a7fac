"""dropapp.json validation, and the allowlist entries its `network` field (and the owner) use."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from pathlib import Path

import pytest
import semver
from PIL import Image

from packages.allowlist import (
    AllowlistError,
    is_public_address,
    parse_browser_origin,
    parse_server_entry,
)
from packages.manifest import Manifest, load_manifest, parse_manifest
from packages.manifest.fields import grapheme_count

FULL = {
    "name": "Notes",
    "version": "1.2.0",
    "short-description": "Keep notes with friends",
    "icon": "icon.png",
    "accent-color": "rebeccapurple",
    "authors": ["Ada Lovelace <ada@example.com> (https://ada.example.com)", {"name": "Bob"}],
    "code": "https://git.example.com/notes",
    "website": "http://notes.example.com",
    "funding": "https://fund.example.com/notes",
    "license": "mit or apache-2.0",
    "license-file": "LICENSE",
    "changelog": "CHANGELOG.md",
    "release-date": "2025-03-01",
    "network": {
        "server": ["api.example.com", "*.example.org:443"],
        "browser": ["https://tiles.example.com", "https://*.cdn.example.net:8443"],
    },
    "permissions": [
        {"key": "edit", "name": "Edit notes", "description": "Create and change notes"},
        {"key": "admin_2", "name": "Administer"},
    ],
}


def png(path: Path, size: tuple[int, int] = (64, 64), fmt: str = "PNG") -> Path:
    Image.new("RGB", size, (200, 30, 90)).save(path, format=fmt)
    return path


def make_app(root: Path, manifest: dict | None = None, files: dict | None = None) -> Path:
    """An app folder with app.ts, the files FULL refers to, and the given manifest."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.ts").write_text("export {}")
    (root / "LICENSE").write_text("MIT License")
    (root / "CHANGELOG.md").write_text("## 1.2.0\n- Notes, now with ünïcode.\n")
    png(root / "icon.png")
    for name, content in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.unlink()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    (root / "dropapp.json").write_text(json.dumps(FULL if manifest is None else manifest))
    return root


def result_for(tmp_path, changes: dict, files: dict | None = None, drop=()):
    data = {**FULL, **changes}
    for key in drop:
        data.pop(key)
    return load_manifest(make_app(tmp_path / "app", data, files))


def errors_of(result) -> list[str]:
    return [str(e) for e in result.errors]


def warnings_of(result) -> list[str]:
    return [str(w) for w in result.warnings]


# --- A valid manifest -----------------------------------------------------------------------


def test_it_reads_every_field_into_typed_values(tmp_path):
    result = load_manifest(make_app(tmp_path / "app"))
    assert result.ok and result.warnings == ()
    m = result.manifest
    assert isinstance(m, Manifest)
    assert m.version == semver.Version(1, 2, 0)
    assert m.entrypoint == "app.ts"
    assert m.name == "Notes" and m.short_description == "Keep notes with friends"
    assert (m.icon.path, m.icon.media_type, m.icon.width) == ("icon.png", "image/png", 64)
    assert m.accent_color == "rebeccapurple"
    assert [(a.name, a.email, a.url) for a in m.authors] == [
        ("Ada Lovelace", "ada@example.com", "https://ada.example.com"),
        ("Bob", "", ""),
    ]
    assert m.license == "MIT OR Apache-2.0"  # normalised SPDX
    assert m.license_file == "LICENSE"
    assert "ünïcode" in m.changelog_text
    assert m.release_date == datetime.date(2025, 3, 1)
    assert [e.deno_net_value() for e in m.network.server] == [
        "api.example.com",
        "*.example.org:443",
    ]
    assert [o.csp_source() for o in m.network.browser] == [
        "https://tiles.example.com",
        "https://*.cdn.example.net:8443",
    ]
    assert m.permission_keys == {"edit", "admin_2"}
    assert m.permissions[0].description == "Create and change notes"


def test_it_round_trips_through_to_dict(tmp_path):
    root = make_app(tmp_path / "app")
    first = load_manifest(root).manifest
    again = parse_manifest(json.dumps(first.to_dict()), root)
    assert again.ok and again.manifest == first


def test_it_accepts_a_minimal_manifest_with_warnings(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    (root / "app.js").write_text("")
    (root / "dropapp.json").write_text('{"version": "0.1.0-beta.1+build.5"}')
    result = load_manifest(root)
    assert result.ok
    assert result.manifest.entrypoint == "app.js"
    assert result.manifest.version.prerelease == "beta.1"
    assert sorted(w.field for w in result.warnings) == ["license", "name"]


# --- Warnings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"name": "N" * 31}, "name: is longer than 30 characters"),
        ({"short-description": "d" * 61}, "short-description: is longer than 60 characters"),
        ({"license": ""}, "license: is missing"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"schema": 3}, "schema: is worked out by the platform"),
        ({"network": {"server": ["a.example.com", "A.EXAMPLE.COM"]}}, "network.server[1]: "),
        ({"authors": [{"name": "Ada", "twitter": "@ada"}]}, "authors[0].twitter: unknown field"),
    ],
)
def test_it_warns(tmp_path, changes, expected):
    result = result_for(tmp_path, changes)
    assert result.ok
    assert any(w.startswith(expected) for w in warnings_of(result)), warnings_of(result)


def test_it_counts_graphemes_not_code_points(tmp_path):
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # one grapheme, five code points
    assert result_for(tmp_path, {"name": family * 30}).warnings == ()


@pytest.mark.parametrize(
    "text,count",
    [
        ("\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", 1),  # ZWJ family
        ("\U0001f3f3\ufe0f\u200d\U0001f308", 1),  # rainbow flag: ZWJ and a variation selector
        ("\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea", 2),  # two regional-indicator flags
        ("\U0001f44d\U0001f3fd", 1),  # skin-tone modifier
        ("e\u0301\u0323a", 2),  # combining marks stay with their letter
        ("\u1100\u1161\u11a8", 1),  # a Hangul syllable from conjoining jamo
        ("\u0915\u094d\u0937", 1),  # Devanagari conjunct (UAX #29, Unicode 15.1)
        ("\r\n", 1),
        ("abc", 3),
        ("", 0),
    ],
)
def test_grapheme_clusters_are_counted_as_a_reader_would(text, count):
    assert grapheme_count(text) == count
    assert grapheme_count(text * 3, until=2) == min(2, 3 * count)


def test_a_long_name_of_combined_characters_is_still_one_character_each(tmp_path):
    flag = "\U0001f3f3\ufe0f\u200d\U0001f308"
    assert result_for(tmp_path, {"name": flag * 100}).ok
    assert not result_for(tmp_path, {"name": flag * 101}).ok


# --- Errors, each naming its field ----------------------------------------------------------


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"version": "1.2"}, "version: '1.2' is not a semantic version"),
        ({"version": "v1.2.0"}, "version: 'v1.2.0' is not a semantic version"),
        ({"version": 1}, "version: must be a string"),
        ({"name": "x" * 101}, "name: is longer than 100"),
        ({"name": "evil\u202etxt.exe"}, "name: contains control or text-direction"),
        ({"name": 42}, "name: must be a string"),
        ({"accent-color": "not-a-colour"}, "accent-color: 'not-a-colour' is not a CSS colour"),
        ({"accent-color": "red; background: url(x)"}, "accent-color:"),
        ({"accent-color": "currentcolor"}, "accent-color:"),
        ({"authors": "Ada"}, "authors: must be a list"),
        ({"authors": [{"email": "a@example.com"}]}, "authors[0].name: is required"),
        ({"authors": [{"name": "A", "email": "nope"}]}, "authors[0].email: 'nope' is not an"),
        ({"authors": [{"name": "A", "url": "javascript:alert(1)"}]}, "authors[0].url: "),
        ({"authors": [5]}, "authors[0]: must be a string or an object"),
        ({"code": "javascript:alert(1)"}, "code: 'javascript:alert(1)' must be an http"),
        ({"website": "ftp://example.com"}, "website: 'ftp://example.com' must be an http"),
        ({"funding": "https://"}, "funding: 'https://' has no host"),
        ({"website": "https://exa mple.com"}, "website: must not contain spaces"),
        ({"license": "Foo-1.0"}, "license: 'Foo-1.0' is not a valid SPDX"),
        ({"license": "MIT AND"}, "license: 'MIT AND' is not a valid SPDX"),
        ({"license-file": "COPYING"}, "license-file: file 'COPYING' is not in the package"),
        ({"license-file": "../LICENSE"}, "license-file: '../LICENSE' climbs out"),
        ({"changelog": "/etc/passwd"}, "changelog: '/etc/passwd' is an absolute path"),
        ({"release-date": "2025-3-1"}, "release-date: '2025-3-1' is not a date written"),
        ({"release-date": "2025-02-30"}, "release-date: '2025-02-30' is not a real date"),
        ({"network": ["api.example.com"]}, "network: must be an object"),
        ({"network": {"server": "api.example.com"}}, "network.server: must be a list"),
        ({"network": {"server": ["ok.example.com", "https://api.example.com"]}},
         "network.server[1]: 'https://api.example.com': write the host name only"),
        ({"network": {"server": ["10.1.2.3"]}}, "network.server[0]: '10.1.2.3': 10.1.2.3 is"),
        ({"network": {"browser": ["https://tiles.example.com/path"]}},
         "network.browser[0]: 'https://tiles.example.com/path': an origin has no path"),
        ({"network": {"browser": ["*"]}}, "network.browser[0]: '*': write a full origin"),
        ({"network": {"browser": ["http://tiles.example.com"]}},
         "network.browser[0]: 'http://tiles.example.com': only https:// origins"),
        ({"permissions": {"edit": "Edit"}}, "permissions: must be a list"),
        ({"permissions": [{"key": "Edit!", "name": "E"}]}, "permissions[0].key: must be 1-32"),
        ({"permissions": [{"key": "e" * 33, "name": "E"}]}, "permissions[0].key: must be 1-32"),
        ({"permissions": [{"key": "edit"}]}, "permissions[0].name: is required"),
        ({"permissions": [{"key": "e", "name": "E"}, {"key": "e", "name": "F"}]},
         "permissions[1].key: 'e' is declared twice"),
    ],
)  # fmt: skip
def test_it_refuses_bad_fields(tmp_path, changes, expected):
    result = result_for(tmp_path, changes)
    assert not result.ok and result.manifest is None
    assert any(e.startswith(expected) for e in errors_of(result)), errors_of(result)


def test_it_requires_a_version(tmp_path):
    assert errors_of(result_for(tmp_path, {}, drop=["version"])) == ["version: is required"]


def test_it_reports_every_error_at_once(tmp_path):
    result = result_for(tmp_path, {"version": "x", "code": "ftp://x", "release-date": "soon"})
    assert [e.field for e in result.errors] == ["version", "code", "release-date"]


def test_it_accepts_license_refs(tmp_path):
    result = result_for(tmp_path, {"license": "LicenseRef-Proprietary OR MIT"})
    assert result.ok and result.manifest.license == "LicenseRef-Proprietary OR MIT"


@pytest.mark.parametrize(
    "colour", ["#abc", "#AABBCC80", "rgb(1 2 3 / 50%)", "hsl(120deg 50% 50%)", "oklch(70% 0.1 200)"]
)
def test_it_accepts_any_css_colour(tmp_path, colour):
    assert result_for(tmp_path, {"accent-color": colour}).ok


# --- Entrypoint -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entrypoint,files,expected",
    [
        (None, {"app.ts": None, "app.js": ""}, "app.js"),
        ("src/main.ts", {"src/main.ts": ""}, "src/main.ts"),
        ("./src/main.js", {"src/main.js": ""}, "src/main.js"),
    ],
)
def test_it_finds_the_entrypoint(tmp_path, entrypoint, files, expected):
    changes = {} if entrypoint is None else {"entrypoint": entrypoint}
    result = result_for(tmp_path, changes, files)
    assert result.ok and result.manifest.entrypoint == expected


@pytest.mark.parametrize(
    "entrypoint,files,expected",
    [
        (None, {"app.js": ""}, "entrypoint: both app.ts and app.js exist"),
        (None, {"app.ts": None}, "entrypoint: not given, and neither app.ts nor app.js"),
        ("main.ts", {}, "entrypoint: file 'main.ts' is not in the package"),
        ("../app.ts", {}, "entrypoint: '../app.ts' climbs out of the package"),
        ("/app.ts", {}, "entrypoint: '/app.ts' is an absolute path"),
        ("app.py", {"app.py": ""}, "entrypoint: 'app.py' must be a .ts or .js file"),
        ("src.ts", {"src.ts/x": ""}, "entrypoint: file 'src.ts' is not in the package"),
    ],
)
def test_it_refuses_a_bad_entrypoint(tmp_path, entrypoint, files, expected):
    changes = {} if entrypoint is None else {"entrypoint": entrypoint}
    assert expected in errors_of(result_for(tmp_path, changes, files))[0]


def test_it_refuses_files_reached_through_symlinks(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    root = make_app(tmp_path / "app", {**FULL, "license-file": "LICENSE.txt"})
    os.symlink(outside, root / "LICENSE.txt")
    assert errors_of(load_manifest(root)) == ["license-file: 'LICENSE.txt' is a symbolic link"]


# --- Icons ----------------------------------------------------------------------------------

GOOD_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><circle r="5"/></svg>'


def test_it_accepts_square_icons_of_each_kind(tmp_path):
    for name, fmt in (("i.png", "PNG"), ("i.jpg", "JPEG"), ("i.webp", "WEBP")):
        root = make_app(tmp_path / name, {**FULL, "icon": name})
        png(root / name, (128, 128), fmt)
        result = load_manifest(root)
        assert result.ok, errors_of(result)
        assert result.manifest.icon.width == 128
    result = result_for(tmp_path, {"icon": "i.svg"}, {"i.svg": GOOD_SVG})
    assert result.ok and result.manifest.icon.media_type == "image/svg+xml"


SQUARE = 'viewBox="0 0 10 10"'
NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


@pytest.mark.parametrize(
    "svg,expected",
    [
        (f"<svg {NS} {SQUARE}><script>alert(1)</script></svg>", "must not contain <script>"),
        (f'<svg {NS} {SQUARE} onload="alert(1)"/>', "event handlers (onload)"),
        (f'<svg {NS} {SQUARE}><image href="https://evil.example/x.png"/></svg>', "outside"),
        (f'<svg {NS} {SQUARE}><use xlink:href="other.svg#x"/></svg>', "outside the file"),
        (f'<svg {NS} {SQUARE}><a href="java&#x0A;script:alert(1)"/></svg>', "outside"),
        (f'<svg {NS} {SQUARE}><set attributeName="href" to="javascript:x"/></svg>', "scripts"),
        (f'<svg {NS} {SQUARE}><rect style="fill:url(https://e.example/a)"/></svg>', "scripts"),
        (f"<svg {NS} {SQUARE}><style>@import 'https://e.example/a.css';</style></svg>",
         "outside the file"),
        (f"<svg {NS} {SQUARE}><foreignObject><div/></foreignObject></svg>", "foreignObject"),
        (f'<!DOCTYPE svg [<!ENTITY x "y">]><svg {NS} {SQUARE}>&x;</svg>', "DOCTYPE"),
        (f'<svg {NS} viewBox="0 0 20 10"/>', "must be square; the SVG is 20×10"),
        (f'<svg {NS} width="10" height="12"/>', "must be square"),
        (f"<svg {NS}/>", "needs a viewBox"),
        ("<html/>", "does not start with an <svg>"),
        ("<svg", "not well-formed"),
    ],
)  # fmt: skip
def test_it_refuses_svg_icons_that_are_active_or_not_square(tmp_path, svg, expected):
    result = result_for(tmp_path, {"icon": "i.svg"}, {"i.svg": svg})
    assert any(e.startswith("icon: ") and expected in e for e in errors_of(result)), errors_of(
        result
    )


def test_it_accepts_internal_svg_references(tmp_path):
    svg = (
        f'<svg {NS} width="32px" height="32"><defs><linearGradient id="g"/></defs>'
        '<rect fill="url(#g)" width="32" height="32"/><use href="#g"/></svg>'
    )
    assert result_for(tmp_path, {"icon": "i.svg"}, {"i.svg": svg}).ok


def test_it_refuses_raster_icons_that_are_wrong(tmp_path):
    root = make_app(tmp_path / "app", {**FULL, "icon": "i.png"})
    cases = [
        (lambda p: png(p, (64, 32)), "icon: must be square; it is 64×32 pixels"),
        (lambda p: p.write_bytes(os.urandom(51 * 1024)), "icon: the file is 51 KB"),
        (lambda p: p.write_bytes(b"not an image"), "icon: the file is not a valid PNG image"),
        (lambda p: png(p, fmt="JPEG"), "icon: the file is not a valid PNG image"),
        (lambda p: Image.new("1", (4096, 4096)).save(p, "PNG"), "icon: is 4096×4096 pixels"),
        (lambda p: png(p, (8, 8)), "icon: is 8×8 pixels; at least 16"),
    ]
    for write, expected in cases:
        write(root / "i.png")
        errors = errors_of(load_manifest(root))
        assert len(errors) == 1 and errors[0].startswith(expected), errors
    (root / "i.gif").write_bytes(b"GIF89a")
    result = parse_manifest({**FULL, "icon": "i.gif"}, root)
    assert errors_of(result) == ["icon: must be a .png, .jpg, .webp or .svg file"]


# --- The file itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"{not json", "dropapp.json: is not valid JSON"),
        (b'["version", "1.0.0"]', "dropapp.json: must be a JSON object"),
        (b'{"version": "1.0.0", "version": "2.0.0"}', "dropapp.json: the key 'version' appears"),
        (b'{"version": "1.0.0", "x": NaN}', "dropapp.json: NaN is not valid JSON"),
        (b"\xff\xfe{}", "dropapp.json: is not valid UTF-8"),
        (b"[" * 100_000, "dropapp.json: is larger than 64 KB"),
    ],
)
def test_it_refuses_a_broken_manifest_file(tmp_path, content, expected):
    root = make_app(tmp_path / "app")
    (root / "dropapp.json").write_bytes(content)
    errors = errors_of(load_manifest(root))
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_it_refuses_a_manifest_that_is_a_symlink(tmp_path):
    root = make_app(tmp_path / "app")
    (tmp_path / "elsewhere.json").write_text(json.dumps(FULL))
    (root / "dropapp.json").unlink()
    (root / "dropapp.json").symlink_to(tmp_path / "elsewhere.json")
    assert errors_of(load_manifest(root)) == ["dropapp.json: is a symbolic link"]


def test_it_explains_a_package_with_a_top_folder(tmp_path):
    make_app(tmp_path / "outer" / "notes")
    errors = errors_of(load_manifest(tmp_path / "outer"))
    assert errors == [
        "dropapp.json: not found at the root of the package "
        "(found notes/dropapp.json: package the folder's contents, not the folder)"
    ]


# --- Allowlist entries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("api.example.com", "api.example.com"),
        ("  API.Example.COM. ", "api.example.com"),
        ("*.example.org:443", "*.example.org:443"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("93.184.215.14:8080", "93.184.215.14:8080"),
        ("[2606:4700:4700::1111]:443", "[2606:4700:4700::1111]:443"),
        ("2606:4700:4700:0::1111", "[2606:4700:4700::1111]"),
    ],
)
def test_it_parses_server_entries(text, canonical):
    assert parse_server_entry(text).deno_net_value() == canonical


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty"),
        ("https://api.example.com", "without a scheme"),
        ("api.example.com/v1", "without a path"),
        ("user@api.example.com", "'@'"),
        ("*", "every host"),
        ("*.com.", "fully qualified"),
        ("api.*.example.com", "leading '*.'"),
        ("**.example.com", "leading '*.'"),
        ("api.example.com:0", "port must be a number from 1 to 65535"),
        ("api.example.com:65536", "port"),
        ("api.example.com:http", "without a scheme"),
        ("localhost", "fully qualified"),
        ("db.localhost", "local network"),
        ("printer.local:631", "local network"),
        ("metadata.google.internal", "local network"),
        ("127.0.0.1", "loopback, private"),
        ("10.0.0.8:5432", "loopback, private"),
        ("169.254.169.254", "loopback, private"),
        ("[::1]:80", "loopback, private"),
        ("[fd00:ec2::254]", "loopback, private"),
        ("fe80::1", "loopback, private"),
        ("[::ffff:192.168.1.1]", "loopback, private"),
        ("2130706433", "incomplete IP"),
        ("127.1", "incomplete IP"),
        ("under_score.example.com", "not a valid host name"),
        ("-bad.example.com", "not a valid host name"),
        ("a b.example.com", "spaces"),
    ],
)
def test_it_refuses_bad_server_entries(text, reason):
    with pytest.raises(AllowlistError, match=None) as info:
        parse_server_entry(text)
    assert reason in str(info.value)


def test_server_entries_match_hosts():
    wildcard = parse_server_entry("*.example.org:443")
    assert wildcard.matches("a.b.example.org", 443)
    assert wildcard.matches("example.org", 443)  # as Deno's --allow-net=*.example.org does
    assert not wildcard.matches("evilexample.org", 443)
    assert not wildcard.matches("a.example.org", 80)
    assert parse_server_entry("example.org").matches("example.org", 8080)


@pytest.mark.parametrize(
    "text,source",
    [
        ("https://tiles.example.com", "https://tiles.example.com"),
        ("https://tiles.example.com/", "https://tiles.example.com"),
        ("HTTPS://Tiles.Example.com:443", "https://tiles.example.com"),
        ("https://*.example.com:8443", "https://*.example.com:8443"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://93.184.215.14", "https://93.184.215.14"),
    ],
)
def test_it_parses_browser_origins(text, source):
    assert parse_browser_origin(text).csp_source() == source


@pytest.mark.parametrize(
    "text,reason",
    [
        ("*", "write a full origin"),
        ("https://*", "every site"),
        ("tiles.example.com", "write a full origin"),
        ("http://tiles.example.com", "only https://"),
        ("wss://tiles.example.com", "only https://"),
        ("https://tiles.example.com/x", "no path"),
        ("https://tiles.example.com?x", "no path"),
        ("https://u:p@tiles.example.com", "user name"),
        ("https://[2606:4700::1]", "IPv6"),
        ("https://192.168.1.1", "private or reserved"),
        ("https://router", "fully qualified"),
        ("https://*.example.*", "leading '*.'"),
        ("https://tiles.example.com:99999", "port"),
    ],
)
def test_it_refuses_bad_browser_origins(text, reason):
    with pytest.raises(AllowlistError) as info:
        parse_browser_origin(text)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "address,public",
    [
        ("93.184.215.14", True),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.255.0.9", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # CGNAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("::", False),
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("fe80::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::127.0.0.1", False),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2001:db8::1", False),
    ],
)
def test_the_address_policy(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public
