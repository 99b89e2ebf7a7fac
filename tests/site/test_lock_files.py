"""The lock files are what `make deps` installs: they must agree with the pins people edit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;#\\]+)")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[_name(match[1])] = match[2]
    return found


@pytest.mark.parametrize("source,lock", [("base.txt", "base.lock"), ("dev.txt", "dev.lock")])
def test_every_pin_is_in_its_lock_file_at_the_same_version(source, lock):
    locked = pins(REQUIREMENTS / lock)
    wanted = pins(REQUIREMENTS / source)
    if source == "dev.txt":
        wanted |= pins(REQUIREMENTS / "base.txt")
    stale = {n: (v, locked.get(n)) for n, v in wanted.items() if locked.get(n) != v}
    assert not stale, f"run `make lock`: {stale}"


@pytest.mark.parametrize("lock", ["base.lock", "dev.lock"])
def test_every_locked_package_carries_hashes(lock):
    entries = re.split(r"\n(?=[A-Za-z0-9])", (REQUIREMENTS / lock).read_text())
    packages = [e for e in entries if PIN.match(e)]
    assert len(packages) > 40
    assert all("--hash=sha256:" in e for e in packages)


def test_twisted_is_pinned_and_grapheme_is_gone():
    base = pins(REQUIREMENTS / "base.txt")
    assert base["twisted"] == pins(REQUIREMENTS / "base.lock")["twisted"]
    assert "grapheme" not in pins(REQUIREMENTS / "base.lock")
