"""The gateway's per-event-loop state: the supervisor client, known sandbox sockets, the
connection pool. One of each per process in production (Daphne runs one loop); tests that
run the gateway in their own loops get fresh ones instead of objects bound to a dead loop.
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings

from appspaces.gateway.forward.upstream import Pool
from appspaces.gateway.state.limits import limits
from sandbox import layout
from sandbox.client import AsyncSandboxClient
from sandbox.protocol import SandboxError
from sandbox.spec import SandboxSpec

log = logging.getLogger(__name__)


class SandboxLinks:
    """Socket paths of running sandboxes, without a supervisor round trip per request.

    `ensure` is asked when a sandbox is unknown, its spec changed, or a connection to it
    failed (it crashed or was stopped: `forget`); otherwise at most every
    DS_GATEWAY_ENSURE_INTERVAL seconds in the background, which also tells the supervisor
    the sandbox is in use (its idle stop and LRU eviction count from the last ensure).
    """

    def __init__(self) -> None:
        self._client: AsyncSandboxClient | None = None
        self._known: dict[str, tuple[SandboxSpec, str, float]] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def client(self) -> AsyncSandboxClient:
        path = layout.control_socket_path()
        if self._client is None or self._client.path != path:
            self._client = AsyncSandboxClient(path)
        return self._client

    async def socket_path(self, spec: SandboxSpec) -> str:
        known = self._known.get(spec.id)
        if known is not None and (known[0] is spec or known[0] == spec):
            if time.monotonic() - known[2] > limits().ensure_interval:
                self._refresh_later(spec)
            return known[1]
        return await self.ensure(spec)

    async def ensure(self, spec: SandboxSpec) -> str:
        path = await self.client.ensure(spec)
        self._known[spec.id] = (spec, path, time.monotonic())
        return path

    def forget(self, sandbox_id: str) -> None:
        self._known.pop(sandbox_id, None)

    async def touch(self, sandbox_id: str) -> None:
        await self.client.touch(sandbox_id)

    def _refresh_later(self, spec: SandboxSpec) -> None:
        if spec.id in self._refreshing:
            return
        self._refreshing.add(spec.id)
        task = asyncio.get_running_loop().create_task(self._refresh(spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, spec: SandboxSpec) -> None:
        try:
            await self.ensure(spec)
        except SandboxError as exc:
            log.info("sandbox %s: background ensure failed: %s", spec.id, exc)
            self.forget(spec.id)  # the next request asks again and reports the error
        finally:
            self._refreshing.discard(spec.id)


class Runtime:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.links = SandboxLinks()
        self.pool = Pool(max_idle=settings.DS_GATEWAY_POOL_IDLE)


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    loop = asyncio.get_running_loop()
    if _runtime is None or _runtime.loop is not loop:
        _runtime = Runtime(loop)
    return _runtime
