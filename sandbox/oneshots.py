"""One-shot sandbox runs for install-time and maintenance work: app-init, migrate, warm.

Each job runs the same bubblewrap layout as an appspace (so the emit cache written by `warm`
is valid at the paths appspaces see), in its own cgroup, without network, under a time limit,
and reports {exit_code, result, stderr_tail, timed_out, oom, duration_ms}.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from sandbox import access, layout
from sandbox.instance import Instance
from sandbox.output import LogSink
from sandbox.protocol import SandboxBadRequest, SandboxBusy, SandboxStartFailed
from sandbox.runner import SandboxProcess, describe_exit
from sandbox.spec import SandboxSpec, SpecError
from sandbox.walls import cgroups, mounts, preflight, prepare

JOB_MODES = ("app-init", "migrate", "warm")
DEFAULT_TIMEOUT = {"app-init": 15.0, "migrate": 120.0, "warm": 60.0}
MAX_TIMEOUT = 3600.0


class JobHost(Protocol):
    """What the job runner needs from the supervisor that owns it (sandbox/supervisor.py):
    the host's layers, a cgroup, the argv and files of a start, a log, and what runs now."""

    host: preflight.HostCheck

    def require_usable_host(self, sandbox_id: str) -> None: ...
    def new_cgroup(self, name: str, spec: SandboxSpec, cpu_percent: int = 0) -> cgroups.Cgroup: ...
    def argv(
        self,
        spec: SandboxSpec,
        mode: str,
        args: dict | None = None,
        *,
        files: prepare.StartFiles | None = None,
        warming: bool = False,
    ) -> tuple[list[str], dict[str, str], int | None]: ...
    def open_start_files(
        self, spec: SandboxSpec, *, warming: bool = False
    ) -> prepare.StartFiles: ...
    def log_sink(self, sandbox_id: str) -> LogSink: ...
    def running_with_data(self, data_dir: str) -> Instance | None: ...
    def is_active(self, sandbox_id: str) -> bool: ...


class JobRunner:
    def __init__(self, supervisor: JobHost):
        self.supervisor = supervisor
        self.running: dict[str, SandboxProcess] = {}
        self.specs: dict[str, SandboxSpec] = {}  # of the jobs holding a slot or running
        self._slots: asyncio.Semaphore | None = None

    def busy_with(self, spec: SandboxSpec) -> bool:
        """A job runs under this id or on this data (an appspace must not start meanwhile)."""
        return any(
            s.id == spec.id or (spec.data_dir is not None and s.data_dir == spec.data_dir)
            for s in self.specs.values()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(settings.DS_SANDBOX_MAX_JOBS, 1))
        return self._slots

    async def run_once(
        self, raw_spec: Any, mode: Any, args: Any = None, timeout: Any = None
    ) -> dict[str, Any]:
        try:
            spec = SandboxSpec.from_json(raw_spec)
        except SpecError as exc:
            raise SandboxBadRequest(f"invalid spec: {exc}") from None
        if mode not in JOB_MODES:
            raise SandboxBadRequest(f"mode must be one of {', '.join(JOB_MODES)}")
        if args is not None and not isinstance(args, dict):
            raise SandboxBadRequest("args must be an object")
        if mode == "migrate":
            if spec.data_dir is None:
                raise SandboxBadRequest("migrate needs a data_dir")
            for key in ("from", "to"):
                value = (args or {}).get(key)
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise SandboxBadRequest(f"migrate needs args.{key}: a non-negative integer")
            if inst := self.supervisor.running_with_data(spec.data_dir):
                raise SandboxBusy(f"appspace sandbox {inst.id} is running on this data: stop it")
        limit = DEFAULT_TIMEOUT[mode] if timeout is None else timeout
        if not isinstance(limit, int | float) or not 0 < limit <= MAX_TIMEOUT:
            raise SandboxBadRequest(f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds")
        if self.busy_with(spec) or self.supervisor.is_active(spec.id):
            raise SandboxBusy(f"a sandbox or job with id {spec.id} is running")
        self.supervisor.require_usable_host(spec.id)
        key = f"{spec.id}/{id(spec)}"
        self.specs[key] = spec  # claimed before queueing, so two identical jobs never both run
        try:
            async with self._semaphore():
                return await self._run(spec, mode, args, float(limit))
        finally:
            self.specs.pop(key, None)

    async def _run(self, spec: SandboxSpec, mode: str, args: Any, limit: float) -> dict[str, Any]:
        sup = self.supervisor
        as_root = sup.host.root
        # Warming is two runs with /cache writable: `deno cache` emits every module, then an
        # app-init run fills V8's code cache (the app's top level runs, as at any app-init; it
        # has no write permission on /cache, only Deno itself writes there).
        steps = [("warm", True), ("app-init", True)] if mode == "warm" else [(mode, False)]
        # Warming writes a tmpfs of its own (capped, in its memory cgroup), never the shared
        # cache on disk; root copies the result out with no-follow opens once the job is over.
        staged = mode == "warm" and sup.host.bwrap
        try:
            prepare.prepare_common(spec, as_root=as_root)
            if mode == "migrate":
                sup.attach_data(spec)  # the data the appspace runs on, not the dir under it
            if staged:
                mounts.mount_warm_stage(spec, as_root=as_root)
            boost = max(spec.limits.cpu_percent, settings.DS_SANDBOX_START_CPU_PERCENT)
            cgroup = sup.new_cgroup(f"job-{spec.id}", spec, cpu_percent=boost)
        except (OSError, cgroups.CgroupError) as exc:
            raise SandboxStartFailed(
                f"cannot prepare job {spec.id}: {exc}", reason="prepare"
            ) from None
        log_sink = sup.log_sink(spec.id)
        started = time.monotonic()
        outcome: dict[str, Any] = {}
        try:
            for step, warming in steps:
                remaining = limit - (time.monotonic() - started)
                outcome = await self._step(spec, step, args, warming, cgroup, log_sink, remaining)
                if not outcome["ok"]:
                    break
        finally:
            self.running.pop(spec.id, None)
            with contextlib.suppress(OSError, cgroups.CgroupError):
                cgroup.remove()
            if mode == "migrate":
                sup.detach_data(spec)
            if staged:
                if outcome.get("ok"):
                    outcome = self._install_cache(spec, outcome, log_sink)
                with contextlib.suppress(OSError):
                    mounts.remove_run_dir(spec.id)
            log_sink.close()
        outcome["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        return outcome

    def _install_cache(self, spec: SandboxSpec, outcome: dict, log_sink: LogSink) -> dict:
        """Copy the warm job's tmpfs into a new cache (root's, or the DS_RUN_AS user's) and swap
        it in. The tmpfs was
        the job uid's: nothing in it is followed (`mounts.copy_out`)."""
        cache = Path(spec.cache_dir)
        token = secrets.token_hex(4)
        fresh = cache.with_name(f".{cache.name}.new-{token}")
        old = cache.with_name(f".{cache.name}.old-{token}")
        try:
            mounts.copy_out(
                layout.sandbox_run_dir(spec.id),
                fresh,
                max_bytes=spec.limits.memory_mb * 1024 * 1024,
            )
            with contextlib.suppress(sqlite3.Error):
                prepare.checkpoint_cache_databases(str(fresh))
            # The platform's, like the version's files: the web servers delete versions.
            access.give_tree_to_platform(fresh)
            if cache.exists():
                os.rename(cache, old)
            os.rename(fresh, cache)
        except OSError as exc:
            log_sink.write("sup", f"job warm: the cache could not be installed: {exc}")
            return {**outcome, "ok": False, "outcome": f"cache not installed: {exc}"}
        finally:
            mounts.remove_tree(fresh)
            mounts.remove_tree(old)
        return outcome

    async def _step(
        self,
        spec: SandboxSpec,
        mode: str,
        args: Any,
        warming: bool,
        cgroup: cgroups.Cgroup,
        log_sink: LogSink,
        limit: float,
    ) -> dict[str, Any]:
        sup = self.supervisor
        files = sup.open_start_files(spec, warming=warming)
        try:
            argv, env, uid = sup.argv(spec, mode, args, files=files, warming=warming)
            proc = SandboxProcess(
                name=spec.id,
                argv=argv,
                env=env,
                uid=uid,
                cgroup=cgroup,
                log_sink=log_sink,
                umask=0o022 if warming else 0o077,  # the cache is read by every appspace uid
                pass_fds=files.fds(),
            )
            log_sink.write("sup", f"job {mode} starting")
            self.running[spec.id] = proc
            try:
                await proc.start()
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxStartFailed(
                    f"cannot start job {spec.id}: {exc}", reason="spawn"
                ) from None
        finally:
            files.close()
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(proc.exited), max(limit, 0.001))
        except TimeoutError:
            timed_out = True
        usage = cgroup.usage()
        await proc.reap()
        code = proc.exited.result()
        result = proc.result
        if result is not None:
            result = {k: v for k, v in result.items() if k != "event"}
        outcome = "timed out" if timed_out else describe_exit(code, usage.oom_kills)
        log_sink.write("sup", f"job {mode} finished: {outcome}")
        return {
            "exit_code": code,
            "ok": code == 0 and not timed_out,
            "result": result,
            "stderr_tail": proc.tail.text(),
            "timed_out": timed_out,
            "oom": usage.oom_kills > 0,
            "outcome": outcome,
        }

    async def shutdown(self) -> None:
        for proc in list(self.running.values()):
            with contextlib.suppress(Exception):
                await proc.terminate(0.5)
