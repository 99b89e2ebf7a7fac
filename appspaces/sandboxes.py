"""How apps and appspaces become sandbox specs, and what the host publishes into their meta dir.

Everything that asks the supervisor for a sandbox builds its spec here, so the gateway,
installs, migrations and backups agree on uid, directories, allowlist and limits.
"""

from __future__ import annotations

from django.conf import settings

from appspaces.models import AllowlistEntry, Appspace, AppVersion, Job
from packages.allowlist import AllowlistError, InstanceHosts, ServerEntry
from packages.allowlist import parse_server_entry as parse_any_server_entry
from sandbox import layout
from sandbox.spec import Limits, SandboxSpec

# Install-time sandboxes (app-init, cache warming) get uids far above any appspace's, one
# per job, so two concurrent installs never share a uid either.
INSTALL_UID_OFFSET = 1 << 24


def appspace_limits(appspace: Appspace) -> Limits:
    defaults = Limits.defaults()
    return Limits(
        memory_mb=appspace.memory_mb,
        cpu_percent=appspace.cpu_percent,
        pids=defaults.pids,
        tmpfs_mb=defaults.tmpfs_mb,
        heap_mb=min(defaults.heap_mb, appspace.memory_mb * 3 // 4),
        io_read_mbps=appspace.io_read_mbps or settings.DS_APPSPACE_DEFAULT_IO_READ_MBPS,
        io_write_mbps=appspace.io_write_mbps or settings.DS_APPSPACE_DEFAULT_IO_WRITE_MBPS,
        io_read_iops=settings.DS_APPSPACE_DEFAULT_IO_READ_IOPS,
        io_write_iops=settings.DS_APPSPACE_DEFAULT_IO_WRITE_IOPS,
        disk_mb=appspace.disk_mb,
    )


def instance_hosts() -> InstanceHosts:
    return InstanceHosts(
        domain=settings.DS_DOMAIN, panel=settings.DS_PANEL_HOST, port=settings.DS_PUBLIC_PORT
    )


def parse_server_entry(value: str) -> ServerEntry:
    """An owner's server entry, judged with this instance's hosts in mind: an appspace host of
    this instance is allowed (`instance`, reached through the gateway), its panel never."""
    return parse_any_server_entry(value, instance=instance_hosts())


def gateway_address() -> str:
    """`ip:port` of the web server's own listener (Daphne), where the relay sends requests to
    appspace hosts: with the TLS edge, Daphne on loopback behind it (the request never leaves
    the host, so TLS would add nothing); without, the address serve binds."""
    if settings.DS_TLS_ON:
        return f"127.0.0.1:{settings.DS_WEB_PORT}"
    bind = settings.DS_BIND
    if bind in ("", "0.0.0.0", "localhost"):
        bind = "127.0.0.1"
    elif bind == "::":
        bind = "::1"
    return f"[{bind}]:{settings.DS_PORT}" if ":" in bind else f"{bind}:{settings.DS_PORT}"


def appspace_spec(appspace: Appspace, *, version: AppVersion | None = None) -> SandboxSpec:
    """The spec of an appspace's sandbox (of `version` while migrating to it).

    Its generation is the appspace's config version, so a gateway still holding the spec from
    before a change (its cache lives DS_GATEWAY_CACHE_TTL) can never bring the old one back.
    """
    version = version or appspace.app_version
    entries = []
    for value in appspace.allowlist.filter(kind=AllowlistEntry.Kind.SERVER).values_list(
        "value", flat=True
    ):
        try:
            entries.append(parse_server_entry(value))
        except AllowlistError:
            continue  # shown to the owner as "Not applied" (an entry from before a rule)
    allow_net = [e.deno_net_value() for e in entries if not e.instance]
    relay_hosts = sorted(e.deno_net_value() for e in entries if e.instance)
    return SandboxSpec.for_appspace(
        appspace_id=str(appspace.public_id),
        app_id=str(version.app.public_id),
        version=version.version,
        uid=appspace.sandbox_uid,
        entrypoint=version.entrypoint,
        allow_net=tuple(sorted(allow_net)),
        limits=appspace_limits(appspace),
        data_readonly=appspace.data_readonly,
        generation=appspace.config_version,
        relay_hosts=tuple(relay_hosts),
        relay_upstream=gateway_address() if relay_hosts else "",
        relay_public_port=settings.DS_PUBLIC_PORT if relay_hosts else 0,
    )


def install_spec(job: Job, *, app_id: str, version: str, entrypoint: str) -> SandboxSpec:
    """The spec of an install job's app-init and cache warming: no data, no network."""
    return SandboxSpec.for_app_version(
        job_id=f"install-{job.public_id}",
        app_id=app_id,
        version=version,
        uid=settings.DS_SANDBOX_UID_BASE + INSTALL_UID_OFFSET + job.pk % INSTALL_UID_OFFSET,
        entrypoint=entrypoint,
    )


def publish_users(appspace: Appspace) -> None:
    """Write the appspace's users (owner first) where `ctx.appspace.users()` reads them."""
    owner = appspace.owner
    users = [
        {
            "id": str(owner.public_id),
            "displayName": owner.name,
            "permissions": [p["key"] for p in appspace.app_version.permissions],
        }
    ]
    for member in appspace.users.select_related("user"):
        users.append(
            {
                "id": str(member.user.public_id),
                "displayName": member.display_name,
                "permissions": list(member.permissions),
            }
        )
    layout.write_users(appspace.meta_path, users)
