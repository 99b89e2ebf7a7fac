"""The supervisor process: single-instance lock, stale cleanup, the control socket, shutdown.

`manage.py sandboxd` calls `run()`. The control socket (DS_DATA_DIR/run/sandboxd.sock: root and
the DS_RUN_AS group, 0660; or 0600 without root or without that user) speaks the
newline-delimited JSON protocol of `sandbox.protocol`; each connection's caller is read from
`SO_PEERCRED` and each request checked against `sandbox.access`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
from typing import Any

from sandbox import access, layout, protocol
from sandbox.data import files as datafiles
from sandbox.protocol import SandboxBadRequest, SandboxError, SandboxForbidden
from sandbox.supervisor import Supervisor
from sandbox.walls import cgroups, diskimage, mounts, preflight

log = logging.getLogger("sandbox")


class AlreadyRunning(RuntimeError):
    pass


def _lock_instance() -> int:
    """One supervisor per DS_DATA_DIR: two would each think they own the same cgroups."""
    run = layout.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    os.chmod(run, 0o711)
    fd = os.open(run / "sandboxd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another sandboxd holds {run / 'sandboxd.lock'}") from None
    return fd


def cleanup_stale(host: preflight.HostCheck) -> None:
    """Leftovers of a supervisor that died: processes in our cgroups, cgroups, socket dirs."""
    backend = host.cgroup_backend
    if backend is not None:
        for name in backend.children():
            log.warning("removing stale sandbox cgroup %s (and killing what is in it)", name)
            try:
                backend.open(name).remove()
            except (OSError, cgroups.CgroupError) as exc:
                log.error("cannot remove stale cgroup %s: %s", name, exc)
    run = layout.run_dir()
    mounts.unmount_stale(run)  # socket-dir and warm tmpfs mounts
    diskimage.unmount_stale()  # data images: mounted again at each appspace's next start
    for entry in run.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name != "etc":
            shutil.rmtree(entry, ignore_errors=True)
    layout.control_socket_path().unlink(missing_ok=True)


class ControlServer:
    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        write_lock = asyncio.Lock()
        tasks: set[asyncio.Task] = set()
        caller = access.peer_caller(writer.get_extra_info("socket"))
        if caller.role is None:
            log.warning("refused a control connection from uid %d (pid %d)", caller.uid, caller.pid)

        async def respond(message: dict) -> None:
            async with write_lock:
                writer.write(protocol.encode(message))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        async def serve_one(request: dict) -> None:
            request_id = request.get("id")
            try:
                result = await self.dispatch(request, caller)
                await respond({"id": request_id, "ok": True, "result": result})
            except SandboxError as exc:
                await respond({"id": request_id, "ok": False, "error": exc.to_json()})
            except Exception as exc:
                log.exception("control op %r failed", request.get("op"))
                error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
                await respond({"id": request_id, "ok": False, "error": error})

        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    await respond(
                        {
                            "id": None,
                            "ok": False,
                            "error": {"code": "bad_request", "message": "frame too long"},
                        }
                    )
                    break
                try:
                    request = protocol.decode(line)
                except ValueError:
                    await respond(
                        {
                            "id": None,
                            "ok": False,
                            "error": {
                                "code": "bad_request",
                                "message": "frame is not a JSON object",
                            },
                        }
                    )
                    continue
                if caller.role is None:
                    # Nothing is done for a stranger: one answer saying why, then hang up.
                    try:
                        caller.check(request.get("op"))
                    except SandboxForbidden as exc:
                        await respond(
                            {"id": request.get("id"), "ok": False, "error": exc.to_json()}
                        )
                    break
                task = asyncio.create_task(serve_one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            # The supervisor is stopping and asyncio.run cancels open connections: end quietly
            # (Python 3.11's stream callback would log a cancelled handler as an error).
            pass
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def dispatch(self, request: dict[str, Any], caller: access.Caller) -> Any:
        sup = self.supervisor
        op = request.get("op")
        if op not in protocol.OPS:
            raise SandboxBadRequest(f"unknown op {op!r}; known: {', '.join(protocol.OPS)}")
        caller.check(op)
        if op == "ping":
            host = sup.host
            return {
                "pid": os.getpid(),
                "cgroups": host.cgroup_backend.version if host.cgroup_backend else None,
                "safe": host.safe,
                "problems": host.problems,
            }
        if op == "ensure":
            return await sup.ensure(request.get("spec"))
        if op == "touch":
            return sup.touch(request.get("sandbox"))
        if op == "stop":
            return await sup.stop(request.get("sandbox"))
        if op == "restart":
            return await sup.restart(request.get("spec"))
        if op == "freeze":
            return await sup.freeze(request.get("sandbox"))
        if op == "thaw":
            return await sup.thaw(request.get("sandbox"))
        if op == "usage":
            return sup.usage(request.get("sandbox"))
        if op == "list":
            return sup.list()
        if op == "blocked":
            return sup.blocked(request.get("sandbox"))
        if op == "network_requests":
            return sup.network_requests(request.get("sandbox"))
        if op == "data_hold":
            return sup.data_hold(request.get("spec"))
        if op == "data_release":
            return sup.data_release(request.get("spec"), request.get("everyone", False))
        if op == "run_once":
            return await sup.jobs.run_once(
                request.get("spec"),
                request.get("mode"),
                request.get("args"),
                request.get("timeout"),
            )
        if op == "data_remove":
            return await datafiles.remove(sup, request.get("appspace"), request.get("part"))
        if op == "data_hand_over":
            return await datafiles.hand_over(
                request.get("appspace"), request.get("part"), request.get("uid")
            )
        if op == "data_swap":
            return await datafiles.swap(request.get("appspace"), request.get("part"))
        if op == "data_view":
            return await datafiles.view(request.get("appspace"), request.get("uid"))
        if op == "data_view_close":
            return await datafiles.view_close(request.get("appspace"))
        if op == "data_usage":
            return await datafiles.measure(request.get("appspace"))
        raise SandboxBadRequest(f"unknown op {op!r}; known: {', '.join(protocol.OPS)}")


async def serve(ready: asyncio.Event | None = None) -> None:
    host = preflight.check_host()
    if not host.safe:
        if host.unsafe_dev:
            log.warning("UNSAFE DEVELOPMENT MODE: %s", host.message())
        else:
            log.error("%s. Sandboxes will refuse to start.", host.message())
    lock_fd = _lock_instance()
    try:
        if host.root:
            cleanup_stale(host)
        supervisor = Supervisor(host)
        server = ControlServer(supervisor)
        path = layout.control_socket_path()
        path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # the socket is born 0600: root only, until chowned below
        try:
            unix_server = await asyncio.start_unix_server(
                server.handle, path=str(path), limit=protocol.MAX_FRAME
            )
        finally:
            os.umask(old_umask)
        uid, gid, mode = access.socket_owner()
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reaper = asyncio.create_task(supervisor.reap_idle())
        log.info(
            "sandbox supervisor ready on %s (cgroups %s)",
            path,
            host.cgroup_backend.version if host.cgroup_backend else "none",
        )
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("sandbox supervisor stopping")
        reaper.cancel()
        unix_server.close()
        await supervisor.shutdown()
        path.unlink(missing_ok=True)
        if host.cgroup_backend is not None:
            with contextlib.suppress(OSError, cgroups.CgroupError):
                host.cgroup_backend.remove_parent()
    finally:
        os.close(lock_fd)


def run() -> None:
    asyncio.run(serve())
