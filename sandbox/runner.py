"""One sandbox process as the supervisor's event loop sees it: output, events, exit, stopping.

Exit is watched through a pidfd (no SIGCHLD handler, no watcher thread: the supervisor stays
single-threaded, which keeps fork + preexec safe). Output is read through non-blocking pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sandbox.output import LineSplitter, LogSink, Tail
from sandbox.walls import spawn
from sandbox.walls.cgroups import Cgroup, NullCgroup

log = logging.getLogger("sandbox")

EVENT_PREFIX = b"@@ds "
MAX_EVENT_LINE = 1024 * 1024  # app-init results can be long
EventHandler = Callable[[dict], None]


class _PipeReader(asyncio.Protocol):
    def __init__(self, owner: SandboxProcess, stream: str):
        self.owner = owner
        self.stream = stream
        self.splitter = LineSplitter(MAX_EVENT_LINE)
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        for line in self.splitter.feed(data):
            self.owner._line(self.stream, line)

    def connection_lost(self, exc: Exception | None) -> None:
        for line in self.splitter.flush():
            self.owner._line(self.stream, line)
        if not self.closed.done():
            self.closed.set_result(None)


class SandboxProcess:
    def __init__(
        self,
        *,
        name: str,
        argv: list[str],
        env: dict[str, str],
        uid: int | None,
        cgroup: Cgroup,
        log_sink: LogSink,
        on_event: EventHandler | None = None,
        umask: int = 0o077,
        pass_fds: tuple[int, ...] = (),
    ):
        self.name = name
        self.argv = argv
        self.env = env
        self.uid = uid
        self.cgroup = cgroup
        self.log = log_sink
        self.on_event = on_event
        self.umask = umask
        self.pass_fds = pass_fds
        self.tail = Tail()
        self.result: dict | None = None
        self.popen: subprocess.Popen | None = None
        self.started_at = 0.0
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.exited: asyncio.Future[int] = loop.create_future()
        self._pidfd: int | None = None
        self._readers: list[_PipeReader] = []

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.started_at = time.monotonic()
        self.popen = spawn.start(
            self.argv,
            uid=self.uid,
            cgroup_procs=self.cgroup.procs_files(),
            env=self.env,
            umask=self.umask,
            pass_fds=self.pass_fds,
        )
        if isinstance(self.cgroup, NullCgroup):
            self.cgroup.attach(self.popen.pid)
        self._pidfd = os.pidfd_open(self.popen.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        for stream, pipe in (("out", self.popen.stdout), ("err", self.popen.stderr)):
            reader = _PipeReader(self, stream)
            await loop.connect_read_pipe(lambda r=reader: r, pipe)
            self._readers.append(reader)

    def _line(self, stream: str, raw: bytes) -> None:
        if stream == "out" and raw.startswith(EVENT_PREFIX):
            try:
                event = json.loads(raw[len(EVENT_PREFIX) :])
            except ValueError:
                event = None
            if isinstance(event, dict):
                self._event(event)
                return
        text = raw.decode(errors="replace")
        self.tail.add(text)
        self.log.write(stream, text)

    def _event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "ready":
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "result":
            self.result = event
        if self.on_event:
            self.on_event(event)

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.popen is not None and self._pidfd is not None
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        code = self.popen.wait()
        if not self.exited.done():
            self.exited.set_result(code)
        if not self.ready.done():
            self.ready.set_exception(ProcessExited(code))
            self.ready.exception()  # retrieved here: a start that timed out never awaits it

    async def wait_output_closed(self, timeout: float = 1.0) -> None:
        """Let the last lines (the result event) arrive after exit."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(r.closed for r in self._readers)), timeout=timeout
            )

    def deno_pids(self) -> list[int]:
        """Deno's pid inside the cgroup; bubblewrap's own two processes are left alone so
        that Deno gets the SIGTERM and --die-with-parent does not cut it short."""
        pids = []
        for pid in self.cgroup.procs():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "deno":
                    pids.append(pid)
        return pids

    async def terminate(self, grace: float) -> None:
        """SIGTERM to Deno (graceful shutdown), then SIGKILL to the whole cgroup."""
        if self.exited.done():
            await self.reap()
            return
        targets = self.deno_pids() or ([self.pid] if self.pid else [])
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), timeout=grace)
        await self.reap()

    async def reap(self, timeout: float = 5.0) -> None:
        """Kill whatever is left in the cgroup and wait until the process and cgroup are empty."""
        deadline = time.monotonic() + timeout
        while True:
            if self.exited.done() and not self.cgroup.procs():
                break
            self.cgroup.kill_once()
            if self.popen and not self.exited.done():
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
            if time.monotonic() > deadline:
                log.error("sandbox %s: processes survive SIGKILL", self.name)
                break
            await asyncio.sleep(0.005)
        await self.wait_output_closed()


class ProcessExited(Exception):
    def __init__(self, code: int):
        super().__init__(f"exited with status {code}")
        self.code = code


def describe_exit(code: int, oom_kills: int = 0) -> str:
    """Human words for how a sandbox ended (bubblewrap passes Deno's status through)."""
    if oom_kills:
        return "killed by its memory limit (out of memory)"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    if code > 128 and code - 128 in signal.valid_signals():
        try:
            return f"killed by signal {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    if code == 70:
        return "exited with status 70 (Deno aborted, e.g. a Worker asked for permissions)"
    return f"exited with status {code}"
