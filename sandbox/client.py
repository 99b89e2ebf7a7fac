"""Clients of the supervisor's control socket: a sync one (Celery tasks, views, commands) and an
asyncio one (the gateway; one persistent pipelined connection, so `ensure` costs one round trip).

Web processes and workers never start Deno themselves; they call these. Errors arrive as the
exceptions of `sandbox.protocol` (SandboxUnavailable, SandboxStartFailed, SandboxProblem, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from sandbox import layout, protocol
from sandbox.protocol import SandboxError, SandboxUnavailable
from sandbox.spec import SandboxSpec

Spec = SandboxSpec | dict[str, Any]
MARGIN = 5.0  # seconds on top of the supervisor's own time limits
DATA_HOLD_WAIT = 600.0  # a data hold may first create or check a large image (mkfs, e2fsck)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    ok: bool
    result: dict[str, Any] | None
    stderr_tail: str
    timed_out: bool
    oom: bool
    outcome: str
    duration_ms: float


def _spec_json(spec: Spec) -> dict[str, Any]:
    return spec.to_json() if isinstance(spec, SandboxSpec) else spec


def _unpack(response: dict[str, Any]) -> Any:
    if response.get("ok"):
        return response.get("result")
    raise protocol.error_from_json(response.get("error"))


def _start_wait() -> float:
    # A start may first wait out a crash backoff (bounded by the start timeout) or an eviction.
    return settings.DS_SANDBOX_START_TIMEOUT * 2 + settings.DS_SANDBOX_STOP_GRACE + MARGIN


def _not_running(path: Path, exc: BaseException) -> SandboxUnavailable:
    return SandboxUnavailable(
        f"the sandbox supervisor is not reachable at {path} ({exc}): "
        "is `manage.py sandboxd` (or `manage.py serve`) running?"
    )


class SandboxClient:
    """Blocking client; thread-safe (one request at a time over one kept-open connection)."""

    def __init__(self, socket_path: str | Path | None = None, timeout: float = 30.0):
        self.path = Path(socket_path) if socket_path else layout.control_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _disconnect(self) -> None:
        if self._file:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._sock:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._file = None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise _not_running(self.path, exc) from None
        self._sock, self._file = sock, sock.makefile("rb")

    def call(self, op: str, *, wait: float | None = None, **args: Any) -> Any:
        """One request; `wait` bounds the wait for its answer (default: the client timeout)."""
        request_id = next(self._ids)
        frame = protocol.encode({"id": request_id, "op": op, **args})
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None:
                    self._connect()
                assert self._sock is not None and self._file is not None
                try:
                    self._sock.sendall(frame)
                    break
                except OSError as exc:
                    # A kept-open connection may have been closed by a supervisor restart;
                    # nothing was sent, so one fresh attempt is safe.
                    self._disconnect()
                    if attempt == 2:
                        raise _not_running(self.path, exc) from None
            try:
                self._sock.settimeout(wait or self.timeout)
                line = self._file.readline(protocol.MAX_FRAME + 1)
            except OSError as exc:
                self._disconnect()
                raise SandboxUnavailable(f"no answer from the supervisor to {op}: {exc}") from None
            if not line:
                self._disconnect()
                raise SandboxUnavailable(f"the supervisor closed the connection during {op}")
        response = protocol.decode(line)
        if response.get("id") != request_id:
            self.close()
            raise SandboxError(f"mismatched response id for {op}")
        return _unpack(response)

    # --- typed operations ---------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def ensure(self, spec: Spec) -> str:
        """Start the sandbox if needed; the path of its HTTP unix socket."""
        result = self.call("ensure", spec=_spec_json(spec), wait=_start_wait())
        return result["socket"]

    def touch(self, sandbox_id: str) -> None:
        self.call("touch", sandbox=sandbox_id)

    def stop(self, sandbox_id: str) -> dict[str, Any]:
        return self.call("stop", sandbox=sandbox_id)

    def restart(self, spec: Spec) -> str:
        result = self.call("restart", spec=_spec_json(spec), wait=_start_wait())
        return result["socket"]

    def freeze(self, sandbox_id: str) -> None:
        self.call("freeze", sandbox=sandbox_id)

    def thaw(self, sandbox_id: str) -> None:
        self.call("thaw", sandbox=sandbox_id)

    def usage(self, sandbox_id: str) -> dict[str, Any]:
        return self.call("usage", sandbox=sandbox_id)

    def list(self) -> list[dict[str, Any]]:
        return self.call("list")

    def blocked(self, sandbox_id: str) -> list[dict[str, Any]]:
        return self.call("blocked", sandbox=sandbox_id)

    def network_requests(self, sandbox_id: str) -> list[dict[str, Any]]:
        """What the app asked for with requestNetwork(): [{kind, value, reason, at}]."""
        return self.call("network_requests", sandbox=sandbox_id)

    def data_hold(self, spec: Spec) -> dict[str, Any]:
        """Mount the appspace's data image until `data_release` ({mounted, holds})."""
        return self.call("data_hold", spec=_spec_json(spec), wait=DATA_HOLD_WAIT)

    def data_release(self, spec: Spec, *, everyone: bool = False) -> dict[str, Any]:
        return self.call("data_release", spec=_spec_json(spec), everyone=everyone)

    def run_once(
        self,
        spec: Spec,
        mode: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Run app-init, migrate ({"from": A, "to": B}) or warm; waits for the job to end."""
        wait = (timeout or 120.0) * 2 + 60.0  # may queue behind another job
        result = self.call(
            "run_once", wait=wait, spec=_spec_json(spec), mode=mode, args=args, timeout=timeout
        )
        return RunResult(**result)

    def data_remove(self, appspace_id: str, part: str | None = None) -> list[str]:
        """Delete an appspace's folders (data, meta, log, socket dir; or only `part`, a
        `.restore-*`/`.previous-*` folder) as the supervisor: for callers that are not root.
        Its sandbox must be stopped."""
        return self.call("data_remove", appspace=appspace_id, part=part, wait=600.0)["removed"]

    def data_hand_over(self, appspace_id: str, part: str, uid: int) -> None:
        """Give `appspaces/<id>/<part>/data` to the appspace's uid (0700/0600), as root."""
        self.call("data_hand_over", appspace=appspace_id, part=part, uid=uid, wait=600.0)

    def data_view(self, appspace_id: str, uid: int) -> str:
        """A read-only view of the appspace's data, readable by the DS_RUN_AS user: its path."""
        return self.call("data_view", appspace=appspace_id, uid=uid)["path"]

    def data_view_close(self, appspace_id: str) -> None:
        self.call("data_view_close", appspace=appspace_id)

    def data_swap(self, appspace_id: str, part: str) -> None:
        """Exchange `appspaces/<id>/<part>/data` with the live data, as root."""
        self.call("data_swap", appspace=appspace_id, part=part)

    def data_usage(self, appspace_id: str) -> dict[str, int]:
        """The disk an appspace's data uses (`sandbox.data.usage.DiskUsage` fields), measured by
        the supervisor: for callers that are not root."""
        return self.call("data_usage", appspace=appspace_id, wait=600.0)


class AsyncSandboxClient:
    """asyncio client: one persistent connection, requests pipelined and matched by id."""

    def __init__(self, socket_path: str | Path | None = None, timeout: float = 30.0):
        self.path = Path(socket_path) if socket_path else layout.control_socket_path()
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._read_task: asyncio.Task | None = None
        self._connecting = asyncio.Lock()

    async def _ensure_connected(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    str(self.path), limit=protocol.MAX_FRAME
                )
            except OSError as exc:
                raise _not_running(self.path, exc) from None
            self._read_task = asyncio.create_task(self._read_loop(self._reader))
            return self._writer

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        error: BaseException = SandboxUnavailable("the supervisor closed the connection")
        try:
            while line := await reader.readline():
                response = protocol.decode(line)
                future = self._pending.pop(response.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(response)
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            error = SandboxUnavailable(f"lost the supervisor connection: {exc}")
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(error)

    async def call(self, op: str, *, wait: float | None = None, **args: Any) -> Any:
        writer = await self._ensure_connected()
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            writer.write(protocol.encode({"id": request_id, "op": op, **args}))
            await writer.drain()
            response = await asyncio.wait_for(future, wait or self.timeout)
        except (OSError, TimeoutError) as exc:
            raise SandboxUnavailable(f"no answer from the supervisor to {op}: {exc!r}") from None
        finally:
            self._pending.pop(request_id, None)
        return _unpack(response)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
        self._writer = None

    async def ping(self) -> dict[str, Any]:
        return await self.call("ping")

    async def ensure(self, spec: Spec) -> str:
        return (await self.call("ensure", spec=_spec_json(spec), wait=_start_wait()))["socket"]

    async def touch(self, sandbox_id: str) -> None:
        await self.call("touch", sandbox=sandbox_id)

    async def stop(self, sandbox_id: str) -> dict[str, Any]:
        return await self.call("stop", sandbox=sandbox_id)

    async def usage(self, sandbox_id: str) -> dict[str, Any]:
        return await self.call("usage", sandbox=sandbox_id)

    async def blocked(self, sandbox_id: str) -> list[dict[str, Any]]:
        return await self.call("blocked", sandbox=sandbox_id)

    async def network_requests(self, sandbox_id: str) -> list[dict[str, Any]]:
        return await self.call("network_requests", sandbox=sandbox_id)

    async def list(self) -> list[dict[str, Any]]:
        return await self.call("list")

    async def restart(self, spec: Spec) -> str:
        return (await self.call("restart", spec=_spec_json(spec), wait=_start_wait()))["socket"]

    async def freeze(self, sandbox_id: str) -> None:
        await self.call("freeze", sandbox=sandbox_id)

    async def thaw(self, sandbox_id: str) -> None:
        await self.call("thaw", sandbox=sandbox_id)

    async def run_once(
        self,
        spec: Spec,
        mode: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        wait = (timeout or 120.0) * 2 + 60.0
        result = await self.call(
            "run_once", wait=wait, spec=_spec_json(spec), mode=mode, args=args, timeout=timeout
        )
        return RunResult(**result)
