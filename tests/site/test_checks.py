"""dropserver_site/checks.py: `check --deploy` warns when appspaces can share cookies through
a public DS_DOMAIN that is not on the Public Suffix List (W001)."""

from __future__ import annotations

import pytest

from dropserver_site.checks import check_domain_on_public_suffix_list, is_public_domain


@pytest.mark.parametrize(
    "domain,public",
    [
        ("example.com", True),
        ("drop.example.co.uk", True),
        ("xn--fa-hia.de", True),
        ("sandcats.io", True),
        ("localhost", False),
        ("drop.localhost", False),
        ("drop.test", False),
        ("box.internal", False),
        ("nas.home.arpa", False),
        ("drop.lan", False),
        ("drop.unknowntld", False),
        ("127.0.0.1", False),
        ("[::1]", False),
    ],
)
def test_which_domains_are_public(domain, public):
    assert is_public_domain(domain) is public


@pytest.mark.parametrize(
    "domain,warned",
    [("example.com", True), ("sandcats.io", False), ("localhost", False), ("drop.test", False)],
)
def test_w001_only_for_public_domains_off_the_list(settings, domain, warned):
    settings.DS_DOMAIN = domain
    found = check_domain_on_public_suffix_list()
    assert [w.id for w in found] == (["dropserver.W001"] if warned else [])
    if warned:
        assert "send to every other appspace" in found[0].msg


def test_w002_says_when_asked_for_images_cannot_be_used(settings):
    from dropserver_site.checks import disk_images_check
    from sandbox.walls import diskimage

    settings.DS_SANDBOX_DISK_IMAGES = False
    assert disk_images_check(None) == []  # switched off on purpose: nothing to warn about
    usable, _ = diskimage.available()
    for wanted in (None, True):  # None: unset, the default (wherever the host can)
        settings.DS_SANDBOX_DISK_IMAGES = wanted
        assert diskimage.enabled() is usable
        # On this host (root, loop devices, e2fsprogs) the images work: nothing to warn about.
        assert [w.id for w in disk_images_check(None)] == ([] if usable else ["dropserver.W002"])


def test_w002_when_the_host_cannot_loop_mount_and_the_images_fall_back(settings, monkeypatch):
    from dropserver_site.checks import disk_images_check
    from sandbox.walls import diskimage

    monkeypatch.setattr(diskimage, "available", lambda: (False, "no /dev/loop-control"))
    settings.DS_SANDBOX_DISK_IMAGES = None
    assert not diskimage.enabled()
    (warning,) = disk_images_check(None)
    assert warning.id == "dropserver.W002" and "no /dev/loop-control" in warning.msg
