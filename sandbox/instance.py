"""One appspace sandbox as the supervisor tracks it: state, current process, crash history."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sandbox import layout
from sandbox.output import AskedTable, BlockedTable, LogSink
from sandbox.runner import SandboxProcess
from sandbox.spec import SandboxSpec
from sandbox.walls import cgroups
from sandbox.walls.relay import Relay

STOPPED, STARTING, RUNNING, STOPPING, FROZEN, CRASHED, PROBLEM = (
    "stopped",
    "starting",
    "running",
    "stopping",
    "frozen",
    "crashed",
    "problem",
)


@dataclass(frozen=True)
class LastRun:
    pid: int
    uptime_s: float  # from ready to the end
    ended_at: float  # time.monotonic()
    usage: cgroups.Usage

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "uptime_s": round(self.uptime_s, 3),
            "ended_ago_s": round(now - self.ended_at, 3),
            "cpu_usage_ns": self.usage.cpu_usage_ns,
            "io_read_bytes": self.usage.io_read_bytes,
            "io_write_bytes": self.usage.io_write_bytes,
            "memory_peak_bytes": self.usage.memory_peak_bytes,
        }


@dataclass
class Instance:
    """One appspace sandbox: its current process (if any) and its history."""

    id: str
    spec: SandboxSpec
    raw_spec: dict
    log: LogSink
    state: str = STOPPED
    process: SandboxProcess | None = None
    cgroup: cgroups.Cgroup | None = None
    started_at: float = 0.0
    last_used: float = 0.0
    crashes: deque[float] = field(default_factory=deque)
    next_start_at: float = 0.0
    last_exit: str | None = None
    problem: str | None = None
    blocked: BlockedTable = field(default_factory=BlockedTable)
    asked: AskedTable = field(default_factory=AskedTable)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    relay: Relay | None = None  # the relay socket to appspace hosts, while running
    # The final counters of the last run that ended (stopped or crashed after it was ready):
    # what a usage collector could not sample any more once its cgroup was gone.
    last_run: LastRun | None = None

    def socket(self) -> str:
        return str(layout.sandbox_socket_path(self.id))

    def to_json(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "id": self.id,
            "state": self.state,
            "pid": self.process.pid if self.process and self.state != STOPPED else None,
            "uptime_s": round(now - self.started_at, 3) if self.state == RUNNING else None,
            "idle_s": round(now - self.last_used, 3) if self.last_used else None,
            "crashes": len(self.crashes),
            "last_exit": self.last_exit,
            "problem": self.problem,
            "socket": self.socket(),
            "last_run": self.last_run.to_json(now) if self.last_run else None,
        }
