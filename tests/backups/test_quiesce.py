"""Holding an appspace still: freeze/thaw around the copy, and the copy taken again (frozen)
when a stopped sandbox started while its data was copied."""

from __future__ import annotations

import pytest

from backups.quiesce import QuiesceError, Quiescer
from backups.snapshot import take_snapshot
from sandbox.protocol import SandboxNotFound, SandboxUnavailable


class FakeSupervisor:
    """The supervisor as the quiescer sees it: a sandbox whose state a script drives."""

    def __init__(self, states: list[dict | None]):
        self.states = states  # what successive usage() calls answer (the last one repeats)
        self.calls: list[str] = []

    def ping(self):
        return {}

    def usage(self, sandbox_id):
        self.calls.append("usage")
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state is None:
            raise SandboxNotFound("no sandbox")
        return dict(state)

    def freeze(self, sandbox_id):
        self.calls.append("freeze")

    def thaw(self, sandbox_id):
        self.calls.append("thaw")

    def close(self):
        pass


STOPPED = {"state": "stopped", "pid": None, "crashes": 0, "last_exit": None, "idle_s": None}
RUNNING = {"state": "running", "pid": 42, "crashes": 0, "last_exit": None, "idle_s": 0.001}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text("a")
    return root


def test_it_freezes_a_running_sandbox_and_thaws_it_after(data, tmp_path):
    fake = FakeSupervisor([RUNNING])
    snap = take_snapshot(data, tmp_path / "s", Quiescer("x", client=fake))
    assert [c for c in fake.calls if c != "usage"] == ["freeze", "thaw"]
    assert snap.rounds == 1 and snap.downtime_ms > 0


def test_it_thaws_even_when_the_copy_fails(data, tmp_path, monkeypatch):
    fake = FakeSupervisor([RUNNING])
    monkeypatch.setattr("backups.snapshot._Copier.prune", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        take_snapshot(data, tmp_path / "s", Quiescer("x", client=fake))
    assert fake.calls[-1] == "thaw"


def test_it_copies_again_frozen_when_a_stopped_sandbox_started_meanwhile(data, tmp_path):
    # Before round one: unknown; after it: running (a request started it) -> raced. Round two
    # sees it running and freezes it.
    fake = FakeSupervisor([None, RUNNING, RUNNING])
    snap = take_snapshot(data, tmp_path / "s", Quiescer("x", client=fake))
    assert snap.rounds == 2
    assert [c for c in fake.calls if c != "usage"] == ["freeze", "thaw"]


def test_it_trusts_a_stopped_sandbox_that_stayed_stopped(data, tmp_path):
    fake = FakeSupervisor([STOPPED])
    snap = take_snapshot(data, tmp_path / "s", Quiescer("x", client=fake))
    assert snap.rounds == 1 and "freeze" not in fake.calls and snap.downtime_ms == 0


def test_it_gives_up_on_a_sandbox_that_never_settles(data, tmp_path):
    fake = FakeSupervisor([{**RUNNING, "state": "starting"}])
    quiescer = Quiescer("x", client=fake)
    with pytest.raises(QuiesceError, match="stayed starting"), quiescer.hold(deadline=0.2):
        pass


def test_it_needs_no_supervisor_when_none_runs(data, tmp_path):
    class Down(FakeSupervisor):
        def ping(self):
            raise SandboxUnavailable("not running")

    fake = Down([RUNNING])
    snap = take_snapshot(data, tmp_path / "s", Quiescer("x", client=fake))
    assert snap.rounds == 1 and fake.calls == []
