"""`manage.py appspace_status SUBDOMAIN [--json]`: one appspace's state, limits, usage, last
backup and what waits for its owner (network access requests)."""

from __future__ import annotations

from django.core.management.base import CommandError

from appspaces.cli import JsonCommand
from appspaces.models import Appspace, BlockedConnection, Job
from appspaces.usage.summary import usage_summary
from backups.models import Backup


def _iso(value) -> str | None:
    return value.isoformat() if value else None


class Command(JsonCommand):
    help = "Show an appspace's state, limits, usage, last backup and pending approvals."

    def add_arguments(self, parser):
        parser.add_argument("subdomain")

    def handle(self, *args, subdomain: str, **options):
        appspace = (
            Appspace.objects.select_related("owner", "app", "app_version")
            .filter(subdomain=subdomain.lower())
            .first()
        )
        if appspace is None:
            raise CommandError(f"No appspace {subdomain!r}.")
        usage = usage_summary(appspace)
        last = (
            Backup.objects.filter(appspace=appspace, state=Backup.State.READY)
            .order_by("-finished")
            .first()
        )
        failed = (
            Backup.objects.filter(appspace=appspace, state=Backup.State.FAILED)
            .order_by("-created")
            .first()
        )
        waiting = BlockedConnection.objects.filter(appspace=appspace, dismissed=False)
        jobs = Job.objects.filter(appspace=appspace).exclude(state__in=Job.FINISHED)
        data = {
            "subdomain": appspace.subdomain,
            "id": str(appspace.public_id),
            "owner": appspace.owner.email,
            "app": appspace.app.name,
            "version": appspace.app_version.version,
            "status": appspace.status,
            "status_reason": appspace.status_reason,
            "limits": {
                "memory_bytes": usage["memory_limit_bytes"],
                "cpu_percent": usage["cpu_percent"],
                "disk_bytes": usage["disk_quota_bytes"],
            },
            "usage": {
                "disk_bytes": usage["disk_bytes"],
                "disk_measured": _iso(usage["disk_measured"]),
                "over_quota": usage["over_quota"],
                "data_readonly": usage["data_readonly"],
                **{
                    p["key"]: {
                        k: p[k]
                        for k in (
                            "cpu_seconds",
                            "memory_peak_bytes",
                            "io_read_bytes",
                            "io_write_bytes",
                        )
                    }
                    for p in usage["periods"]
                },  # fmt: skip
            },
            "last_backup": {
                "id": str(last.public_id),
                "finished": _iso(last.finished),
                "size_bytes": last.size_bytes,
                "verified": bool(last.verified_at),
            }
            if last
            else None,
            "last_failed_backup": _iso(failed.created) if failed else None,
            "pending_approvals": [
                {"host": b.host, "port": b.port, "attempts": b.count, "last": _iso(b.last_seen)}
                for b in waiting.order_by("host", "port")
            ],
            "jobs": [{"kind": j.kind, "state": j.state, "step": j.step} for j in jobs],
        }
        lines = [
            f"{appspace.subdomain}: {appspace.get_status_display()}"
            + (f" ({appspace.status_reason})" if appspace.status_reason else ""),
            f"  app        {appspace.app.name} {appspace.app_version.version}, owner "
            f"{appspace.owner.email}",
            f"  limits     {appspace.memory_mb} MB memory, {appspace.cpu_percent}% CPU, "
            f"{appspace.disk_mb} MB disk",
            f"  disk       {usage['disk_bytes'] // 2**20} MB"
            + (" (over quota: data read-only)" if usage["data_readonly"] else ""),
            f"  today      {usage['today']['cpu_seconds']:.1f} s CPU, memory peak "
            f"{usage['today']['memory_peak_bytes'] // 2**20} MB",
            f"  backup     {_iso(last.finished) if last else 'never'}",
            f"  approvals  {len(data['pending_approvals'])} network request(s) waiting",
        ]
        self.done(data, "\n".join(lines))
