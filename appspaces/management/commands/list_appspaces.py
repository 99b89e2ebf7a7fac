"""`manage.py list_appspaces [--owner EMAIL] [--json]`: every appspace (or one person's), with
its app, state, disk and last good backup."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db.models import Max, Q

from accounts.addresses import user_for_address
from appspaces.cli import JsonCommand
from appspaces.models import Appspace
from backups.models import Backup


class Command(JsonCommand):
    help = "List appspaces: subdomain, owner, app and version, state, disk, last backup."

    def add_arguments(self, parser):
        parser.add_argument("--owner", metavar="EMAIL", help="only this person's appspaces")

    def handle(self, *args, owner: str | None = None, **options):
        appspaces = Appspace.objects.select_related("owner", "app", "app_version").annotate(
            last_backup=Max("backups__finished", filter=Q(backups__state=Backup.State.READY))
        )
        if owner:
            user = user_for_address(owner)
            if user is None:
                raise CommandError(f"No user has the email address {owner}.")
            appspaces = appspaces.filter(owner=user)
        rows = [
            {
                "subdomain": a.subdomain,
                "id": str(a.public_id),
                "owner": a.owner.email,
                "app": a.app.name,
                "version": a.app_version.version,
                "status": a.status,
                "data_readonly": a.data_readonly,
                "disk_bytes": a.disk_bytes,
                "disk_quota_bytes": a.disk_mb * 2**20,
                "last_backup": a.last_backup.isoformat() if a.last_backup else None,
            }
            for a in appspaces.order_by("subdomain")
        ]
        lines = [
            f"{r['subdomain']:<24} {r['status']:<10} {r['app']} {r['version']} "
            f"({r['owner']}) disk {r['disk_bytes'] // 2**20}/{r['disk_quota_bytes'] // 2**20} MB"
            f"{' READ-ONLY' if r['data_readonly'] else ''}, "
            f"last backup {r['last_backup'] or 'never'}"
            for r in rows
        ]
        self.done(
            {"count": len(rows), "appspaces": rows},
            "\n".join([*lines, f"{len(rows)} appspace(s)."]),
        )
