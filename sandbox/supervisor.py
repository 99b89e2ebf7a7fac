"""The supervisor: the only owner of Deno processes on a host (asyncio, single-threaded).

It starts appspace sandboxes on demand (`ensure`), stops them when idle or to make room (LRU),
restarts them after crashes with backoff until they are marked "problem", freezes them for
backups, reads their usage and blocked hosts, and runs one-shot jobs (app-init, migrate, cache
warming). The control socket in front of it lives in `sandbox.daemon`.

Longer than most modules on purpose: it is the one owner of every sandbox's state machine
(single-threaded asyncio); splitting it would spread that state across modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import subprocess
import time
from typing import Any

from django.conf import settings

from sandbox import access, layout
from sandbox.instance import (
    CRASHED,
    FROZEN,
    PROBLEM,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    Instance,
    LastRun,
)
from sandbox.metrics import COLD_STARTS, EVICTIONS, record, sandbox_label
from sandbox.oneshots import JobRunner
from sandbox.output import LogSink
from sandbox.protocol import (
    SandboxBadRequest,
    SandboxHostUnsafe,
    SandboxNotFound,
    SandboxProblem,
    SandboxStartFailed,
    SandboxUnavailable,
)
from sandbox.runner import ProcessExited, SandboxProcess, describe_exit
from sandbox.spec import SandboxSpec, SpecError
from sandbox.walls import cgroups, diskimage, launcher, mounts, preflight, prepare, relay

log = logging.getLogger("sandbox")


class Supervisor:
    def __init__(self, host: preflight.HostCheck):
        self.host = host
        self.instances: dict[str, Instance] = {}
        self.jobs = JobRunner(self)
        self._tasks: set[asyncio.Task] = set()
        self.data_holds: dict[str, int] = {}  # data dir -> callers working on it (data_hold)

    # --- helpers shared with jobs -------------------------------------------------------------

    @property
    def platform_gid(self) -> int | None:
        """The DS_RUN_AS user's group, let into sealed socket dirs (`sandbox.access`); None
        without root or without that user."""
        user = access.run_as_user() if self.host.root else None
        return user.gid if user else None

    def require_usable_host(self, sandbox_id: str) -> None:
        if not self.host.usable:
            raise SandboxHostUnsafe(self.host.message(), problems=self.host.problems)
        if not self.host.safe:
            preflight.warn_unsafe(self.host, sandbox_id)

    def new_cgroup(self, name: str, spec: SandboxSpec, cpu_percent: int = 0) -> cgroups.Cgroup:
        """The sandbox's cgroup; `cpu_percent` overrides the spec's quota (the start boost)."""
        backend = self.host.cgroup_backend
        if backend is None:
            return cgroups.NullCgroup(name)
        with contextlib.suppress(OSError, cgroups.CgroupError):
            backend.open(name).remove()  # a leftover of a crashed supervisor
        limits = cgroups.CgroupLimits(
            memory_bytes=spec.limits.memory_mb * 1024 * 1024,
            cpu_percent=cpu_percent or spec.limits.cpu_percent,
            pids=spec.limits.pids,
            io=self.io_limits(spec),
        )
        return backend.create(name, limits)

    def io_limits(self, spec: SandboxSpec) -> tuple[cgroups.IoLimit, ...]:
        """The spec's IO limits on the block device under its data dir, found at each start
        (the dir may be a loop-mounted image now and a plain folder later)."""
        lim = spec.limits
        if not spec.data_dir or not any(
            (lim.io_read_mbps, lim.io_write_mbps, lim.io_read_iops, lim.io_write_iops)
        ):
            return ()
        try:
            device = cgroups.throttle_device(spec.data_dir)
        except OSError:
            device = None
        if device is None:
            log.warning(
                "sandbox %s: no block device under %s, IO unlimited", spec.id, spec.data_dir
            )
            return ()
        mb = 1024 * 1024
        return (
            cgroups.IoLimit(
                device,
                read_bps=lim.io_read_mbps * mb,
                write_bps=lim.io_write_mbps * mb,
                read_iops=lim.io_read_iops,
                write_iops=lim.io_write_iops,
            ),
        )

    def argv(
        self,
        spec: SandboxSpec,
        mode: str,
        args: dict | None = None,
        *,
        files: prepare.StartFiles | None = None,
        warming: bool = False,
    ) -> tuple[list[str], dict[str, str], int | None]:
        """(argv, env, uid) for the host we are on; only UNSAFE_DEV ever lacks a layer."""
        uid = spec.uid if self.host.root else None
        if self.host.bwrap:
            files = files or prepare.StartFiles()
            argv = launcher.bwrap_argv(
                spec,
                mode,
                args,
                cache_fds=files.cache,
                warming=warming,
                seccomp_fd=files.seccomp,
            )
            return argv, {}, uid
        argv, env = launcher.direct_argv(spec, mode, args)
        return argv, env, uid

    def open_start_files(self, spec: SandboxSpec, *, warming: bool = False) -> prepare.StartFiles:
        """What bubblewrap reads at start; close it (`.close()`) once the process runs."""
        if not self.host.bwrap:
            return prepare.StartFiles()
        return prepare.open_start_files(
            spec, seccomp_filter=self.host.seccomp_filter, warming=warming
        )

    def log_sink(self, sandbox_id: str) -> LogSink:
        return LogSink(
            layout.sandbox_log_dir(sandbox_id),
            max_bytes=settings.DS_SANDBOX_LOG_MAX_BYTES,
            keep=settings.DS_SANDBOX_LOG_KEEP,
        )

    def attach_data(self, spec: SandboxSpec) -> bool:
        if self.data_holds.get(spec.data_dir or "") and diskimage.is_mounted(spec.data_dir):
            # Mounted for a backup or restore of the stopped appspace: start on that mount (a
            # changed quota applies at the next start with nothing held).
            return True
        return diskimage.attach_for(spec, as_root=self.host.root)

    def detach_data(self, spec: SandboxSpec) -> None:
        if not self.data_holds.get(spec.data_dir or ""):
            diskimage.detach_for(spec)

    # --- data holds: a stopped appspace's image mounted while the platform works on it ------

    def data_hold(self, raw_spec: Any) -> dict:
        """Mount the appspace's data image (if it has one) until the matching `data_release`:
        backups, restores and disk measures of a stopped appspace read and write its data at
        the usual path. Synchronous on purpose: no start or stop interleaves with the mount."""
        spec = _parse_spec(raw_spec)
        if spec.data_dir is None:
            raise SandboxBadRequest("data_hold needs a data_dir")
        held = self.data_holds.get(spec.data_dir, 0)
        if not held and not self._data_in_use(spec):
            try:
                diskimage.attach_for(spec, as_root=self.host.root)
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxUnavailable(f"cannot mount the data of {spec.id}: {exc}") from None
        self.data_holds[spec.data_dir] = held + 1
        return {"mounted": diskimage.is_mounted(spec.data_dir), "holds": held + 1}

    def data_release(self, raw_spec: Any, everyone: Any = False) -> dict:
        """One hold fewer (`everyone`: all of them, before the data is deleted or swapped); the
        image is unmounted with the last hold unless a sandbox or job runs on it."""
        spec = _parse_spec(raw_spec)
        if spec.data_dir is None:
            raise SandboxBadRequest("data_release needs a data_dir")
        left = 0 if everyone is True else max(self.data_holds.get(spec.data_dir, 0) - 1, 0)
        if left:
            self.data_holds[spec.data_dir] = left
        else:
            self.data_holds.pop(spec.data_dir, None)
            if not self._data_in_use(spec):
                diskimage.detach_for(spec)
        return {"holds": left}

    def _data_in_use(self, spec: SandboxSpec) -> bool:
        return self.is_active(spec.id) or self.jobs.busy_with(spec)

    def running_with_data(self, data_dir: str) -> Instance | None:
        for inst in self.instances.values():
            if inst.spec.data_dir == data_dir and inst.state in (RUNNING, STARTING, FROZEN):
                return inst
        return None

    def is_active(self, sandbox_id: str) -> bool:
        inst = self.instances.get(sandbox_id)
        return inst is not None and inst.state in (RUNNING, STARTING, STOPPING, FROZEN)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _get(self, sandbox_id: Any) -> Instance:
        inst = self.instances.get(sandbox_id) if isinstance(sandbox_id, str) else None
        if inst is None:
            raise SandboxNotFound(f"no sandbox {sandbox_id!r}")
        return inst

    # --- ensure: the hot path of every request ------------------------------------------------

    async def ensure(self, raw_spec: Any) -> dict[str, Any]:
        sandbox_id = raw_spec.get("id") if isinstance(raw_spec, dict) else None
        inst = self.instances.get(sandbox_id) if isinstance(sandbox_id, str) else None
        if inst is not None and inst.state == RUNNING and inst.raw_spec == raw_spec:
            inst.last_used = time.monotonic()  # no validation: this exact spec passed it
            return {"socket": inst.socket(), "started": False}
        spec = _parse_spec(raw_spec)
        return await self._ensure_slow(spec, raw_spec)

    async def _ensure_slow(self, spec: SandboxSpec, raw_spec: dict) -> dict[str, Any]:
        inst = self.instances.get(spec.id)
        if inst is None:
            inst = Instance(spec.id, spec, raw_spec, self.log_sink(spec.id))
            self.instances[spec.id] = inst
        async with inst.lock:
            if spec.generation < inst.spec.generation:
                # A caller working from a stale cache: the newer spec we know stands.
                spec, raw_spec = inst.spec, inst.raw_spec
            elif _same_but_generation(spec, inst.spec):
                # A newer generation that changes nothing the sandbox sees: no restart.
                inst.spec, inst.raw_spec = spec, raw_spec
            if inst.state == PROBLEM:
                raise SandboxProblem(
                    f"sandbox {spec.id} is in the problem state: {inst.problem}",
                    reason=inst.problem,
                )
            if inst.state == FROZEN:
                raise SandboxUnavailable(f"sandbox {spec.id} is frozen (backup running)")
            if self.jobs.busy_with(spec):
                raise SandboxUnavailable(f"a job (migration?) is running on appspace {spec.id}")
            if inst.state == RUNNING:
                if inst.raw_spec == raw_spec:
                    inst.last_used = time.monotonic()
                    return {"socket": inst.socket(), "started": False}
                inst.log.write("sup", "spec changed: restarting")
                await self._stop_locked(inst)
            delay = inst.next_start_at - time.monotonic()
            if delay > settings.DS_SANDBOX_START_TIMEOUT:
                raise SandboxStartFailed(
                    f"sandbox {spec.id} crashed recently; restarting in {delay:.1f}s",
                    reason="backoff",
                    retry_after=round(delay, 3),
                )
            if delay > 0:
                await asyncio.sleep(delay)  # crash backoff
            await self._make_room(inst, spec)
            inst.spec, inst.raw_spec = spec, raw_spec
            await self._start_locked(inst)
            return {"socket": inst.socket(), "started": True}

    async def _make_room(self, inst: Instance, spec: SandboxSpec) -> None:
        """Cap on running sandboxes and a free-memory floor; evict least recently used."""
        while True:
            active = [
                i
                for i in self.instances.values()
                if i is not inst and i.state in (RUNNING, STARTING, STOPPING, FROZEN)
            ]
            over_cap = len(active) >= settings.DS_SANDBOX_MAX_RUNNING
            low_memory = _mem_available_mb() - spec.limits.memory_mb < (
                settings.DS_SANDBOX_MIN_FREE_MB
            )
            if not over_cap and not low_memory:
                return
            candidates = sorted(
                (i for i in active if i.state == RUNNING and not i.lock.locked()),
                key=lambda i: i.last_used,
            )
            if not candidates:
                what = "running sandboxes cap" if over_cap else "free memory floor"
                raise SandboxUnavailable(f"at capacity ({what}); try again shortly")
            victim = candidates[0]
            async with victim.lock:
                if victim.state == RUNNING:
                    victim.log.write("sup", "stopping: least recently used, making room")
                    reason = "running cap" if over_cap else "free memory"
                    record(lambda reason=reason: EVICTIONS.labels(reason).inc())
                    await self._stop_locked(victim)

    async def _start_locked(self, inst: Instance) -> None:
        spec = inst.spec
        self.require_usable_host(spec.id)
        inst.state = STARTING
        inst.last_exit = None
        inst.started_at = 0.0  # set when ready: a run that never got there has no usage
        t0 = time.monotonic()
        files = prepare.StartFiles()
        try:
            prepare.prepare_common(spec, as_root=self.host.root)
            self.attach_data(spec)
            mounts.mount_run_dir(spec, as_root=self.host.root)
            if spec.relay_hosts:
                uid, owner = relay.expected_peer(spec, as_root=self.host.root)
                inst.relay = relay.Relay(spec, layout.sandbox_relay_path(spec.id), uid)
                await inst.relay.start(owner=owner)
            if self.host.bwrap and spec.allow_net:
                launcher.write_sandbox_etc()
            # Deno's start-up is CPU-heavy for ~50 ms on several threads; under a small quota
            # it would sit out whole CFS periods. Boost until ready, then apply the limit.
            boost = max(spec.limits.cpu_percent, settings.DS_SANDBOX_START_CPU_PERCENT)
            inst.cgroup = self.new_cgroup(f"sb-{spec.id}", spec, cpu_percent=boost)
            files = self.open_start_files(spec)
            argv, env, uid = self.argv(spec, "appspace", files=files)
            proc = SandboxProcess(
                name=spec.id,
                argv=argv,
                env=env,
                uid=uid,
                cgroup=inst.cgroup,
                log_sink=inst.log,
                on_event=lambda event: self._on_event(inst, event),
                pass_fds=files.fds(),
            )
            inst.process = proc
            t1 = time.monotonic()
            await proc.start()
        except (OSError, subprocess.SubprocessError, cgroups.CgroupError, SpecError) as exc:
            self._cleanup(inst)
            inst.state = STOPPED
            raise SandboxStartFailed(
                f"cannot start sandbox {spec.id}: {exc}", reason="prepare"
            ) from None
        except SandboxStartFailed:
            self._cleanup(inst)
            inst.state = STOPPED
            raise
        finally:
            files.close()
        t2 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(proc.ready), settings.DS_SANDBOX_START_TIMEOUT)
        except (TimeoutError, ProcessExited) as exc:
            await proc.reap()
            usage = inst.cgroup.usage()
            reason = (
                f"not ready within {settings.DS_SANDBOX_START_TIMEOUT:g}s"
                if isinstance(exc, TimeoutError)
                else describe_exit(exc.code, usage.oom_kills)
            )
            self._record_crash(inst, reason)
            self._cleanup(inst)
            raise SandboxStartFailed(
                f"sandbox {spec.id} failed to start: {reason}",
                reason=reason,
                stderr_tail=proc.tail.text(),
            ) from None
        try:
            inst.cgroup.set_cpu(spec.limits.cpu_percent)
            if self.host.root:
                # The socket is bound: the dir becomes root's (the web servers' group may in).
                mounts.seal_run_dir(spec.id, spec.uid, self.platform_gid)
        except OSError as exc:
            await proc.terminate(0)
            self._cleanup(inst)
            inst.state = STOPPED
            raise SandboxStartFailed(
                f"cannot apply the CPU limit or seal the socket dir: {exc}", reason="cgroup"
            ) from None
        inst.state = RUNNING
        inst.started_at = inst.last_used = time.monotonic()
        elapsed = inst.started_at - t0
        record(lambda: COLD_STARTS.labels(sandbox_label(spec.id)).observe(elapsed))
        inst.log.write(
            "sup",
            f"started pid={proc.pid} uid={spec.uid} in {(inst.started_at - t0) * 1000:.1f}ms "
            f"(prepare {(t1 - t0) * 1000:.1f}, spawn {(t2 - t1) * 1000:.1f}, "
            f"ready {(inst.started_at - t2) * 1000:.1f})",
        )
        self._spawn(self._watch(inst, proc))

    def _on_event(self, inst: Instance, event: dict) -> None:
        if event.get("event") == "blocked":
            inst.blocked.record(event.get("host"), event.get("port"))
        elif event.get("event") == "network_request":
            inst.asked.record(event.get("server"), event.get("browser"), event.get("reason"))

    async def _watch(self, inst: Instance, proc: SandboxProcess) -> None:
        code = await proc.exited
        if inst.process is not proc or inst.state in (STOPPING, STOPPED):
            return  # an orderly stop handles its own cleanup
        async with inst.lock:
            if inst.process is not proc or inst.state in (STOPPING, STOPPED):
                return
            usage = inst.cgroup.usage() if inst.cgroup else cgroups.Usage()
            await proc.reap()
            reason = describe_exit(code, usage.oom_kills)
            inst.log.write("sup", f"crashed: {reason}")
            log.warning("sandbox %s crashed: %s", inst.id, reason)
            self._record_crash(inst, reason)
            self._cleanup(inst)

    def _record_crash(self, inst: Instance, reason: str) -> None:
        now = time.monotonic()
        inst.crashes.append(now)
        while inst.crashes and now - inst.crashes[0] > settings.DS_SANDBOX_CRASH_WINDOW:
            inst.crashes.popleft()
        inst.last_exit = reason
        if len(inst.crashes) >= settings.DS_SANDBOX_CRASH_LIMIT:
            inst.state = PROBLEM
            inst.problem = (
                f"crashed {len(inst.crashes)} times in "
                f"{settings.DS_SANDBOX_CRASH_WINDOW:g}s; last: {reason}"
            )
            inst.log.write("sup", f"problem state: {inst.problem}")
        else:
            inst.state = CRASHED
            backoff = settings.DS_SANDBOX_RESTART_BACKOFF * 2 ** (len(inst.crashes) - 1)
            inst.next_start_at = now + min(backoff, 60.0)

    def _cleanup(self, inst: Instance) -> None:
        inst.log.close()  # reopened on the next line: a stopped sandbox holds no descriptor
        if inst.cgroup is not None and inst.process is not None and inst.started_at:
            try:
                usage = inst.cgroup.usage()
            except (OSError, cgroups.CgroupError) as exc:
                log.warning("sandbox %s: final usage unreadable: %s", inst.id, exc)
            else:
                now = time.monotonic()
                inst.last_run = LastRun(
                    pid=inst.process.pid,
                    uptime_s=now - inst.started_at,
                    ended_at=now,
                    usage=usage,
                )
            inst.started_at = 0.0
        if inst.cgroup is not None:
            try:
                inst.cgroup.remove()
            except (OSError, cgroups.CgroupError) as exc:
                log.error("sandbox %s: cgroup cleanup failed: %s", inst.id, exc)
            inst.cgroup = None
        if inst.relay is not None:
            inst.relay.close()
            inst.relay = None
        mounts.remove_run_dir(inst.id)
        self.detach_data(inst.spec)

    async def _stop_locked(self, inst: Instance) -> None:
        proc = inst.process
        if proc is None or inst.state in (STOPPED, CRASHED, PROBLEM):
            return
        if inst.state == FROZEN and inst.cgroup is not None:
            inst.cgroup.thaw()
        inst.state = STOPPING
        await proc.terminate(settings.DS_SANDBOX_STOP_GRACE)
        inst.log.write("sup", "stopped")
        self._cleanup(inst)
        inst.state = STOPPED

    # --- the other control operations ---------------------------------------------------------

    def touch(self, sandbox_id: Any) -> dict:
        inst = self._get(sandbox_id)
        inst.last_used = time.monotonic()
        return {"state": inst.state}

    async def stop(self, sandbox_id: Any) -> dict:
        inst = self._get(sandbox_id)
        async with inst.lock:
            was = inst.state
            await self._stop_locked(inst)
            if inst.state in (CRASHED,):
                inst.state = STOPPED
        return {"stopped": was in (RUNNING, FROZEN, STARTING), "state": inst.state}

    async def restart(self, raw_spec: Any) -> dict:
        """Stop if running, forget crash history and the problem state, start again."""
        spec = _parse_spec(raw_spec)
        inst = self.instances.get(spec.id)
        if inst is not None:
            async with inst.lock:
                if spec.generation < inst.spec.generation:
                    spec, raw_spec = inst.spec, inst.raw_spec
                await self._stop_locked(inst)
                inst.state, inst.problem, inst.next_start_at = STOPPED, None, 0.0
                inst.crashes.clear()
        return await self._ensure_slow(spec, raw_spec)

    async def freeze(self, sandbox_id: Any) -> dict:
        inst = self._get(sandbox_id)
        async with inst.lock:
            if inst.state != RUNNING or inst.cgroup is None:
                raise SandboxUnavailable(f"sandbox {inst.id} is {inst.state}, not running")
            try:
                inst.cgroup.freeze()
            except cgroups.CgroupError as exc:
                raise SandboxUnavailable(str(exc)) from None
            inst.state = FROZEN
            inst.log.write("sup", "frozen")
        return {"state": inst.state}

    async def thaw(self, sandbox_id: Any) -> dict:
        inst = self._get(sandbox_id)
        async with inst.lock:
            if inst.state == FROZEN and inst.cgroup is not None:
                inst.cgroup.thaw()
                inst.state = RUNNING
                inst.last_used = time.monotonic()
                inst.log.write("sup", "thawed")
        return {"state": inst.state}

    def usage(self, sandbox_id: Any) -> dict:
        inst = self._get(sandbox_id)
        data: dict[str, Any] = inst.to_json()
        if inst.cgroup is not None and inst.state in (RUNNING, FROZEN, STARTING):
            data.update(vars(inst.cgroup.usage()))
        return data

    def list(self) -> list[dict]:
        return [inst.to_json() for inst in self.instances.values()]

    def blocked(self, sandbox_id: Any) -> list[dict]:
        return self._get(sandbox_id).blocked.to_json()

    def network_requests(self, sandbox_id: Any) -> list[dict]:
        return self._get(sandbox_id).asked.to_json()

    # --- background duties --------------------------------------------------------------------

    async def reap_idle(self) -> None:
        """Stops sandboxes idle for longer than DS_SANDBOX_IDLE_TIMEOUT (frozen ones wait)."""
        timeout = settings.DS_SANDBOX_IDLE_TIMEOUT
        period = min(max(timeout / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for inst in list(self.instances.values()):
                idle = now - inst.last_used > timeout
                if inst.state == RUNNING and idle and not inst.lock.locked():
                    self._spawn(self._stop_idle(inst, timeout))

    async def _stop_idle(self, inst: Instance, timeout: float) -> None:
        try:
            async with inst.lock:
                if inst.state == RUNNING and time.monotonic() - inst.last_used > timeout:
                    inst.log.write("sup", "stopping: idle")
                    await self._stop_locked(inst)
        except Exception:
            log.exception("sandbox %s: idle stop failed", inst.id)

    async def shutdown(self) -> None:
        async def stop(inst: Instance) -> None:
            async with inst.lock:
                await self._stop_locked(inst)

        await asyncio.gather(*(stop(i) for i in self.instances.values()), return_exceptions=True)
        await self.jobs.shutdown()
        for data_dir in list(self.data_holds):  # held by callers that did not release them
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                diskimage.detach(data_dir)
        self.data_holds.clear()
        for inst in self.instances.values():
            inst.log.close()


def _parse_spec(raw_spec: Any) -> SandboxSpec:
    try:
        return SandboxSpec.from_json(raw_spec)
    except SpecError as exc:
        raise SandboxBadRequest(f"invalid spec: {exc}") from None


def _mem_available_mb() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1 << 30


def _same_but_generation(a: SandboxSpec, b: SandboxSpec) -> bool:
    return dataclasses.replace(a, generation=0) == dataclasses.replace(b, generation=0)
