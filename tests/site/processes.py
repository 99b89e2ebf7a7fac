"""Helpers for tests that run real processes: free ports, process trees, reading output."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int, *, with_cmdline: bool = False) -> list:
    """All live descendants of pid, from /proc (what the host sees, not what they claim)."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
            cmdlines[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [(p, cmdlines.get(p, "")) for p in found] if with_cmdline else found


def read_until(proc: subprocess.Popen, marker: str, *, timeout: float) -> str:
    """Read a child's output until `marker` appears; fail with what it printed if it doesn't."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    output = ""
    deadline = time.monotonic() + timeout
    while marker not in output:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise AssertionError(f"{marker!r} never appeared; output was:\n{output}")
        if selector.select(timeout=min(remaining, 0.5)):
            output += proc.stdout.read() or ""
    os.set_blocking(proc.stdout.fileno(), True)
    return output
