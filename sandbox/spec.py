"""What a sandbox is asked to be: the spec (id, uid, directories, allowlist, limits) and its checks.

A spec travels as JSON over the control socket. The supervisor validates every field again
(it is root and must not be talked into mounting `/` or running as uid 0), so validation
lives here, next to the type, and raises `SpecError` with a message a caller can show.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from sandbox import layout

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
UID_MAX = 2**31 - 2


class SpecError(ValueError):
    """A spec that the supervisor refuses; the message says which field and why."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 256
    cpu_percent: int = 50  # of one CPU; 200 means two CPUs
    pids: int = 64  # tasks (threads count): Deno needs ~16, Workers more
    tmpfs_mb: int = 16
    heap_mb: int = 128  # V8 old space; ArrayBuffers are bounded by memory_mb only
    # Disk IO of the data dir's block device (blkio.throttle / io.max); 0: no limit.
    io_read_mbps: int = 0
    io_write_mbps: int = 0
    io_read_iops: int = 0
    io_write_iops: int = 0
    disk_mb: int = 0  # the data image's size (sandbox.walls.diskimage); 0: no image

    @classmethod
    def defaults(cls) -> Limits:
        return cls(
            memory_mb=settings.DS_SANDBOX_MEMORY_MB,
            cpu_percent=settings.DS_SANDBOX_CPU_PERCENT,
            pids=settings.DS_SANDBOX_PIDS,
            tmpfs_mb=settings.DS_SANDBOX_TMPFS_MB,
            heap_mb=settings.DS_SANDBOX_HEAP_MB,
        )

    def validate(self) -> None:
        checks = {
            "memory_mb": (32, 64 * 1024),
            "cpu_percent": (1, 100 * 256),
            "pids": (8, 4096),
            "tmpfs_mb": (1, 4096),
            "heap_mb": (16, 64 * 1024),
            "io_read_mbps": (0, 1 << 20),
            "io_write_mbps": (0, 1 << 20),
            "io_read_iops": (0, 1 << 24),
            "io_write_iops": (0, 1 << 24),
            "disk_mb": (0, 16 * 1024 * 1024),
        }
        for name, (low, high) in checks.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SpecError(f"limits.{name} must be an integer in [{low}, {high}]")
        if self.heap_mb > self.memory_mb:
            raise SpecError("limits.heap_mb cannot exceed limits.memory_mb")


@dataclass(frozen=True)
class SandboxSpec:
    """One sandbox. `data_dir` is None for app-init and cache warming (no appspace yet).

    `data_readonly` (an appspace over its disk quota): the data dir is mounted read-only and
    Deno gets no write grant on it; the app still reads its data and serves requests.

    `relay_hosts` (appspace hosts of this instance, `name` or `name:port`): the app reaches
    them through the supervisor's relay (`sandbox.walls.relay`), which sends each request to the
    platform's gateway at `relay_upstream` (`ip:port`) with `Host: name[:relay_public_port]`,
    as an anonymous client. They never open the network in general.

    `generation` orders the specs of one sandbox (an appspace's config version): callers
    build specs from caches, and a stale one must never undo a newer one — a narrowed
    allowlist or a read-only data dir would otherwise come back with the next request.
    """

    id: str
    uid: int
    app_dir: str
    cache_dir: str
    data_dir: str | None = None
    meta_dir: str | None = None
    entrypoint: str = "app.ts"
    allow_net: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    data_readonly: bool = False
    generation: int = 0
    relay_hosts: tuple[str, ...] = ()
    relay_upstream: str = ""
    relay_public_port: int = 0

    @classmethod
    def for_appspace(
        cls,
        *,
        appspace_id: str,
        app_id: str,
        version: str,
        uid: int,
        entrypoint: str = "app.ts",
        allow_net: tuple[str, ...] | list[str] = (),
        limits: Limits | None = None,
        data_readonly: bool = False,
        generation: int = 0,
        relay_hosts: tuple[str, ...] | list[str] = (),
        relay_upstream: str = "",
        relay_public_port: int = 0,
    ) -> SandboxSpec:
        """The spec of an appspace's sandbox, with the standard layout under DS_DATA_DIR."""
        return cls(
            id=appspace_id,
            uid=uid,
            app_dir=str(layout.app_files_dir(app_id, version)),
            cache_dir=str(layout.app_cache_dir(app_id, version)),
            data_dir=str(layout.appspace_data_dir(appspace_id)),
            meta_dir=str(layout.appspace_meta_dir(appspace_id)),
            entrypoint=entrypoint,
            allow_net=tuple(allow_net),
            limits=limits or Limits.defaults(),
            data_readonly=data_readonly,
            generation=generation,
            relay_hosts=tuple(relay_hosts),
            relay_upstream=relay_upstream,
            relay_public_port=relay_public_port,
        )

    @classmethod
    def for_app_version(
        cls, *, job_id: str, app_id: str, version: str, uid: int, entrypoint: str = "app.ts"
    ) -> SandboxSpec:
        """The spec of an install-time job (app-init, cache warming): no data, no network."""
        return cls(
            id=job_id,
            uid=uid,
            app_dir=str(layout.app_files_dir(app_id, version)),
            cache_dir=str(layout.app_cache_dir(app_id, version)),
            entrypoint=entrypoint,
            limits=Limits.defaults(),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["allow_net"] = list(self.allow_net)
        data["relay_hosts"] = list(self.relay_hosts)
        return data

    @classmethod
    def from_json(cls, data: Any) -> SandboxSpec:
        if not isinstance(data, dict):
            raise SpecError("spec must be an object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown spec fields: {sorted(unknown)}")
        try:
            limits_data = data.get("limits") or {}
            if not isinstance(limits_data, dict):
                raise SpecError("limits must be an object")
            limits = replace(Limits.defaults(), **limits_data)
            spec = cls(
                **{
                    **data,
                    "limits": limits,
                    "allow_net": tuple(data.get("allow_net", ())),
                    "relay_hosts": tuple(data.get("relay_hosts", ())),
                }
            )
        except TypeError as exc:
            raise SpecError(f"malformed spec: {exc}") from None
        spec.validate()
        return spec

    def validate(self) -> None:
        """Checks that need no file system access beyond resolving paths under DS_DATA_DIR."""
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise SpecError("id must be 1-64 characters of [A-Za-z0-9_-], starting alnum")
        base = settings.DS_SANDBOX_UID_BASE
        if not isinstance(self.uid, int) or isinstance(self.uid, bool):
            raise SpecError("uid must be an integer")
        if not base <= self.uid <= UID_MAX:
            raise SpecError(f"uid {self.uid} refused: sandbox uids start at {base}")
        _check_dir(self.app_dir, layout.apps_dir(), "app_dir")
        _check_dir(self.cache_dir, layout.apps_dir(), "cache_dir")
        if self.data_dir is not None:
            _check_dir(self.data_dir, layout.appspaces_dir(), "data_dir")
        if self.meta_dir is not None:
            _check_dir(self.meta_dir, layout.appspaces_dir(), "meta_dir")
        entry = PurePosixPath(self.entrypoint) if isinstance(self.entrypoint, str) else None
        if (
            entry is None
            or entry.is_absolute()
            or ".." in entry.parts
            or entry.suffix not in (".ts", ".js", ".mts", ".mjs", ".tsx", ".jsx")
        ):
            raise SpecError("entrypoint must be a relative .ts/.js path inside the app")
        if not layout.is_within(Path(self.app_dir) / entry, Path(self.app_dir)):
            raise SpecError("entrypoint escapes the app directory")
        for entry_net in self.allow_net:
            validate_allow_net_entry(entry_net)
        validate_relay(self.relay_hosts, self.relay_upstream, self.relay_public_port)
        if not isinstance(self.data_readonly, bool):
            raise SpecError("data_readonly must be true or false")
        if not isinstance(self.generation, int) or isinstance(self.generation, bool):
            raise SpecError("generation must be an integer")
        if not isinstance(self.limits, Limits):
            raise SpecError("limits must be an object")
        self.limits.validate()


def _check_dir(value: Any, parent: Path, name: str) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise SpecError(f"{name} must be an absolute path")
    # Real paths, so a symlink planted anywhere on the way cannot point the mount elsewhere.
    if not layout.is_within(Path(value), parent) or Path(value).resolve() == parent.resolve():
        raise SpecError(f"{name} must be inside {parent}")


def validate_allow_net_entry(entry: Any) -> None:
    """`host`, `host:port`, `*.domain[:port]` or an IP literal ([v6] bracketed) with port.

    No CIDR ranges or bare `*`: the owner approves names. IP literals in ranges that are
    denied anyway (loopback, private, link-local...) are refused up front with a clear error.
    """
    if not isinstance(entry, str) or not entry or len(entry) > 260:
        raise SpecError("allow_net entries must be non-empty strings")
    host, port = split_host_port(entry)
    if port is not None and not 1 <= port <= 65535:
        raise SpecError(f"allow_net {entry!r}: port out of range")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        if not ip.is_global:
            raise SpecError(f"allow_net {entry!r}: non-public addresses are never reachable")
        return
    name = host[2:] if host.startswith("*.") else host
    labels = name.split(".")
    if name == "localhost" and not host.startswith("*."):
        return  # allowed to be listed; Deno's --deny-net still refuses what it resolves to
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise SpecError(f"allow_net {entry!r}: not a host name")


def validate_relay(hosts: Any, upstream: Any, public_port: Any) -> None:
    """Relay hosts are plain names (`name` or `name:port`: no wildcard, no address); the
    upstream is the gateway's `ip:port`, and with hosts there must be one."""
    for entry in hosts:
        if not isinstance(entry, str) or len(entry) > 260:
            raise SpecError("relay_hosts entries must be host names")
        host, port = split_host_port(entry)
        labels = host.split(".")
        if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
            raise SpecError(f"relay_hosts {entry!r}: not a host name")
        if port is not None and not 1 <= port <= 65535:
            raise SpecError(f"relay_hosts {entry!r}: port out of range")
    if not isinstance(public_port, int) or isinstance(public_port, bool):
        raise SpecError("relay_public_port must be an integer")
    if not hosts and not upstream:
        return
    if not hosts or not isinstance(upstream, str) or not 1 <= public_port <= 65535:
        raise SpecError("relay_hosts, relay_upstream and relay_public_port go together")
    address, port = split_host_port(upstream)
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise SpecError("relay_upstream must be ip:port (the gateway's listener)") from None
    if port is None or not 1 <= port <= 65535:
        raise SpecError("relay_upstream must be ip:port (the gateway's listener)")


def split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            raise SpecError(f"allow_net {entry!r}: unclosed [")
        host, rest = entry[: end + 1], entry[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SpecError(f"allow_net {entry!r}: junk after ]")
        port_text = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    elif ":" in entry:
        raise SpecError(f"allow_net {entry!r}: IPv6 addresses must be in [brackets]")
    else:
        host, port_text = entry, None
    host = host.lower()
    if port_text is None:
        return host, None
    if not port_text.isdigit():
        raise SpecError(f"allow_net {entry!r}: bad port")
    return host, int(port_text)
