"""Sandbox test fixtures: see tests/sandbox/fixtures.py for the list (reusable by other packages).

These tests run real Deno inside real bubblewrap and cgroups and need root; they fail, never
skip, when something is missing, so a broken host cannot pass as a safe one.
"""

from tests.sandbox.fixtures import *  # noqa: F403
from tests.sandbox.netlab import net_lab  # noqa: F401  (private namespaces: IPv6, DNS)
