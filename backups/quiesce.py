"""Holding an appspace still while its data is copied: its sandbox's cgroup is frozen through the
supervisor, so no write is ever half-copied (an SQLite file and its journal are taken at one
instant, as after a power cut, which SQLite recovers from).

A sandbox that is not running cannot be frozen, and the supervisor has no way to keep one from
starting; so the copy goes ahead and is checked afterwards: if the sandbox started (or tried
to) meanwhile, `Raced` is raised and the caller copies again, this time frozen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError, SandboxNotFound, SandboxUnavailable

log = logging.getLogger(__name__)

_SETTLING = ("starting", "stopping")
_CLOCK_SLACK = 0.05  # seconds: the supervisor reports idle time in ms, plus the round trip


class QuiesceError(Exception):
    """The appspace could not be held still; str() is for the user."""


class Raced(Exception):
    """The sandbox started while its data was copied without it being frozen."""


class Quiescer:
    def __init__(self, sandbox_id: str, client: SandboxClient | None = None):
        self.sandbox_id = sandbox_id
        self.client = client or SandboxClient()
        self.downtime_ms = 0.0
        self.frozen = False

    def _info(self) -> dict[str, Any] | None:
        try:
            info = self.client.usage(self.sandbox_id)
        except SandboxNotFound:
            return None
        info["_last_used"] = (
            time.monotonic() - info["idle_s"] if info.get("idle_s") is not None else None
        )
        return info

    def _supervisor_up(self) -> bool:
        try:
            self.client.ping()
            return True
        except SandboxUnavailable:
            return False

    @contextmanager
    def hold(self, *, deadline: float = 30.0) -> Iterator[None]:
        """Freeze the sandbox (or make sure it is not running) for the body; thaw after.
        Raises Raced after the body if an unfrozen sandbox started meanwhile."""
        self.frozen = False
        if not self._supervisor_up():
            # No supervisor: no sandbox runs (they die with it). Nothing to hold.
            yield
            return
        before = self._freeze_or_observe(deadline)
        started = time.monotonic()
        try:
            yield
        finally:
            if self.frozen:
                self._thaw()
                self.downtime_ms += (time.monotonic() - started) * 1000
        if not self.frozen and _changed(before, self._info()):
            raise Raced()

    def _freeze_or_observe(self, deadline: float) -> dict[str, Any] | None:
        give_up = time.monotonic() + deadline
        while True:
            info = self._info()
            state = info["state"] if info else "stopped"
            if state == "frozen":
                # Left frozen by a backup whose worker died: it is still, so go ahead; the
                # thaw at the end puts it back in service.
                self.frozen = True
                return info
            if state == "running":
                try:
                    self.client.freeze(self.sandbox_id)
                    self.frozen = True
                    return info
                except SandboxUnavailable:
                    pass  # it stopped or crashed in between: look again
                except SandboxError as exc:
                    raise QuiesceError(f"The appspace could not be paused: {exc}") from None
            elif state not in _SETTLING:
                return info  # stopped, crashed, problem: nothing runs
            if time.monotonic() > give_up:
                raise QuiesceError(
                    f"The appspace stayed {state} for {deadline:g} s; the backup was not made."
                )
            time.sleep(0.05)

    def _thaw(self) -> None:
        for attempt in range(3):
            try:
                self.client.thaw(self.sandbox_id)
                return
            except SandboxNotFound:
                return
            except SandboxUnavailable as exc:
                if not self._supervisor_up():
                    return  # the supervisor went away, and its sandboxes with it
                log.warning("thaw of %s failed (attempt %d): %s", self.sandbox_id, attempt, exc)
                time.sleep(0.2)
        log.error("sandbox %s could not be thawed; the backup sweep will retry", self.sandbox_id)


def _changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    if before is None or after is None:
        return before is not after
    for key in ("state", "pid", "crashes", "last_exit"):
        if before.get(key) != after.get(key):
            return True
    a, b = before.get("_last_used"), after.get("_last_used")
    if (a is None) != (b is None):
        return True
    return a is not None and b is not None and abs(a - b) > _CLOCK_SLACK


def thaw_quietly(sandbox_id: str) -> None:
    """Thaw a sandbox a dead backup left frozen (no-op if it is not frozen or unknown)."""
    client = SandboxClient(timeout=10)
    try:
        client.thaw(sandbox_id)
    except SandboxError:
        pass
    finally:
        client.close()
