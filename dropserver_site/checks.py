"""Dropserver's own system checks (`manage.py check --deploy`).

W002 (sandbox.walls.diskimage): disk images are asked for but this host cannot use them, so
the disk quota falls back to the measured one. (Images are off by default until a stopped
appspace can be backed up from its image; docs/operations.md says what that means.)

W001: an app's script can set a cookie for the parent domain (`Domain=<DS_DOMAIN>`), and
browsers send it to every sibling appspace, unless DS_DOMAIN is itself on the Public Suffix
List, as public Sandstorm hosts (sandcats.io) do. The platform strips such cookies from app
*responses*, but not from what the app's own script sets with `document.cookie`.
See docs/security.md, "Small exits".
"""

from __future__ import annotations

import ipaddress
from functools import cache

from django.conf import settings
from django.core.checks import Tags, Warning, register

from dropserver_site.hosts import is_dev_domain

# Names no public DNS resolves (RFC 2606, 6761, 6762, 8375 and common LAN suffixes): a
# development or private instance, whose cookies no stranger's browser shares.
_PRIVATE_SUFFIXES = (
    "localhost",
    "test",
    "example",
    "invalid",
    "local",
    "internal",
    "lan",
    "localdomain",
    "home.arpa",
)


@cache
def _psl():
    from publicsuffixlist import PublicSuffixList  # the list bundled with the pinned package

    return PublicSuffixList()


def is_public_domain(domain: str) -> bool:
    """A name under a real top-level domain, reachable by anyone's browser."""
    try:
        ipaddress.ip_address(domain.strip("[]"))
        return False
    except ValueError:
        pass
    if is_dev_domain(domain) or any(
        domain == s or domain.endswith("." + s) for s in _PRIVATE_SUFFIXES
    ):
        return False
    return _psl().publicsuffix(domain, accept_unknown=False) is not None


def is_public_suffix(domain: str) -> bool:
    return _psl().is_public(domain)


@register(Tags.security, deploy=True)
def check_domain_on_public_suffix_list(app_configs=None, **kwargs):
    domain = settings.DS_DOMAIN
    if not is_public_domain(domain) or is_public_suffix(domain):
        return []
    return [
        Warning(
            f"DS_DOMAIN ({domain}) is not on the Public Suffix List: an app's script can set a "
            f"cookie for .{domain} that browsers then send to every other appspace.",
            hint=(
                f"Submit {domain} to the Public Suffix List (https://publicsuffix.org/submit/, "
                "its PRIVATE section), as public Sandstorm hosts do; until browsers ship it, "
                "appspaces can plant cookies on each other. See docs/security.md, class 9."
            ),
            id="dropserver.W001",
        )
    ]


def _measured_quota_warning(reason: str) -> Warning:
    return Warning(
        f"The disk quota is measured, not enforced by the kernel ({reason}).",
        hint="Apps can write past their quota until the next measure (about a minute), "
        "then their data becomes read-only. See docs/operations.md, 'Disk quota'.",
        id="dropserver.W002",
    )


@register()
def disk_images_check(app_configs, **kwargs):
    """W002: images are wanted (DS_SANDBOX_DISK_IMAGES unset, the default, or on) but this host
    cannot loop-mount (not root, no loop devices, no e2fsprogs): the measured quota is the only
    one. Switched off on purpose (DS_SANDBOX_DISK_IMAGES=0): no warning."""
    from sandbox.walls import diskimage

    if settings.DS_SANDBOX_DISK_IMAGES is False:
        return []
    why = diskimage.measured_because()
    return [_measured_quota_warning(why)] if why else []
