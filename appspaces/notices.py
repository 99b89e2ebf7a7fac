"""The conditions of appspaces and their backups that the notices report (notices/), read from
the database (and, for crash loops, the supervisor) on every evaluation: nothing here sends
anything, and no code that detects a failure needs to know about notices.

To owners: a backup failed (or an archive is damaged) or is overdue; the data is read-only over
the disk quota; network access waits for a decision; a newer version of an app is out, or an
appspace runs an older version than one installed; an appspace keeps crashing or has a
problem. To admins: any appspace backup or off-site copy failed, the off-site integrity check
or the last whole-instance backup failed.

Registered with accounts.notices.kinds when the appspaces app is ready (AppspacesConfig.ready).
Keys start with "appspace:<public id>" for what an appspace's page shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max, Q
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone

from accounts.notices.kinds import ADMINS, CheckUnavailable, Condition, register
from appspaces.installs.versions import app_update_available, parse_version
from appspaces.models import App, Appspace, BlockedConnection, NetworkRequest
from backups.models import Backup, BackupPolicy, InstanceBackup, OffsiteCheck
from backups.schedule import clamp_interval
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError

SUPERVISOR_TIMEOUT = 5.0


def subject(appspace: Appspace) -> str:
    return f"appspace:{appspace.public_id}"


def _page(appspace: Appspace, anchor: str = "") -> str:
    return reverse("appspace_detail", args=[appspace.public_id]) + anchor


# --- Backups --------------------------------------------------------------------------------


def _backup_states():
    """Every appspace that can have backups, with its newest ready and failed attempts, its
    damaged archives and the off-site copies that failed."""
    ready = Q(backups__state=Backup.State.READY)
    return (
        Appspace.objects.exclude(status=Appspace.Status.CREATING)
        .select_related("owner")
        .annotate(
            last_ready=Max("backups__created", filter=ready),
            last_failed=Max("backups__created", filter=Q(backups__state=Backup.State.FAILED)),
            damaged=Count("backups", filter=ready & ~Q(backups__verify_error="")),
            offsite_failed=Count(
                "backups", filter=ready & Q(backups__offsite_state=Backup.Offsite.FAILED)
            ),
        )
        .order_by("pk")
    )


def _failed_last(appspace) -> bool:
    return appspace.last_failed is not None and (
        appspace.last_ready is None or appspace.last_failed > appspace.last_ready
    )


def _failure_message(appspace) -> str:
    backup = (
        Backup.objects.filter(appspace=appspace, state=Backup.State.FAILED)
        .order_by("-created")
        .first()
    )
    return backup.message if backup else ""


@register("backup_failed", "A backup of my appspace failed or is overdue")
def backups_of_owners() -> Iterator[Condition]:
    now = timezone.now()
    policies = {p.appspace_id: p for p in BackupPolicy.objects.all()}
    for appspace in _backup_states():
        path = reverse("backup_list", args=[appspace.public_id])
        common = {"key": subject(appspace), "path": path, "recipient_id": appspace.owner_id}
        if _failed_last(appspace):
            yield Condition(
                title=f"The last backup of {appspace.subdomain} failed",
                detail=_failure_message(appspace),
                **common,
            )
        elif appspace.damaged:
            yield Condition(
                title=f"A backup of {appspace.subdomain} is damaged",
                detail="A stored archive no longer matches its checksums: make a new backup.",
                **common,
            )
        elif appspace.status == Appspace.Status.ACTIVE:
            policy = policies.get(appspace.pk)
            if policy is not None and not policy.enabled:
                continue
            hours = clamp_interval(
                policy.interval_hours if policy else settings.DS_BACKUP_DEFAULT_INTERVAL_HOURS
            )
            since = appspace.last_ready or appspace.created
            if since < now - timedelta(hours=2 * hours):
                yield Condition(
                    title=f"The backups of {appspace.subdomain} are overdue",
                    detail=f"It is backed up every {hours} h; the last backup was "
                    + (f"made {since:%Y-%m-%d %H:%M} UTC." if appspace.last_ready else "never."),
                    **common,
                )


@register("admin_backups", "Any backup or off-site copy failed", ADMINS)
def backups_of_instance() -> Iterator[Condition]:
    health = reverse("admin:backup_health")
    for appspace in _backup_states():
        problems = [
            text
            for text, true in (
                ("the last backup failed", _failed_last(appspace)),
                (f"{appspace.damaged} damaged archive(s)", appspace.damaged),
                (f"{appspace.offsite_failed} off-site copy(ies) failed", appspace.offsite_failed),
            )
            if true
        ]
        if problems:
            yield Condition(
                key=subject(appspace),
                title=f"Backups of {appspace.subdomain} ({appspace.owner.email}): "
                + "; ".join(problems),
                path=health,
            )
    check = OffsiteCheck.objects.order_by("-created").first()
    if check is not None and not check.ok:
        yield Condition(
            key="offsite-check",
            title="The off-site repository's integrity check failed"
            + (f" ({check.kind})" if check.kind else ""),
            path=health,
        )
    instance = InstanceBackup.objects.exclude(state=InstanceBackup.State.PENDING).first()
    if instance is not None and instance.state == InstanceBackup.State.FAILED:
        yield Condition(
            key="instance-backup",
            title=f"The whole-instance backup of {instance.created:%Y-%m-%d %H:%M} UTC failed",
            path=reverse("admin:backups_instancebackup_changelist"),
        )


# --- Quota, network, versions, crashes ------------------------------------------------------


@register("over_quota", "My appspace is over its disk quota (its data is read-only)")
def over_quota() -> Iterator[Condition]:
    for appspace in Appspace.objects.filter(data_readonly=True).order_by("pk"):
        used = str(filesizeformat(appspace.disk_bytes)).replace("\xa0", " ")
        yield Condition(
            key=subject(appspace),
            title=f"{appspace.subdomain} is over its disk quota: its data is read-only",
            detail=f"It uses {used} of {appspace.disk_mb} MB. Delete data in the app or raise "
            "its quota; it becomes writable again once under the quota.",
            path=_page(appspace, "#limits"),
            recipient_id=appspace.owner_id,
        )


@register("network_requests", "My appspace waits for my decision on network access")
def network_requests() -> Iterator[Condition]:
    waiting: dict[int, dict[str, int]] = {}
    requests = NetworkRequest.objects.filter(dismissed=False).values("appspace", "kind")
    for row in requests.annotate(n=Count("pk")):
        waiting.setdefault(row["appspace"], {})[row["kind"]] = row["n"]
    for row in (
        BlockedConnection.objects.filter(dismissed=False).values("appspace").annotate(n=Count("pk"))
    ):
        counts = waiting.setdefault(row["appspace"], {})
        counts["server"] = counts.get("server", 0) + row["n"]
    for appspace in Appspace.objects.filter(pk__in=waiting).order_by("pk"):
        counts = waiting[appspace.pk]
        parts = [f"{counts[k]} {k}-side" for k in ("server", "browser") if counts.get(k)]
        yield Condition(
            key=subject(appspace),
            title=f"{appspace.subdomain} waits for your decision on network access",
            detail="Waiting: " + " and ".join(parts) + ". Allow or dismiss each on its page.",
            path=_page(appspace, "#network"),
            recipient_id=appspace.owner_id,
        )


@register("app_update", "A newer version of an app I use is available")
def app_updates() -> Iterator[Condition]:
    apps = App.objects.prefetch_related("versions").order_by("pk")
    for app in apps.exclude(listing_url=""):
        latest = app_update_available(app, app.versions.all())
        if latest:
            yield Condition(
                key=f"app:{app.public_id}:{latest}",
                title=f"{app.name} {latest} is available",
                detail="Its listing offers a newer version than the ones installed here.",
                path=reverse("app_detail", args=[app.public_id]),
                recipient_id=app.owner_id,
            )
    spaces = Appspace.objects.exclude(status=Appspace.Status.CREATING).select_related("app_version")
    newest = {}
    for app in apps.filter(appspaces__isnull=False).distinct():
        versions = [(parse_version(v.version), v.version) for v in app.versions.all()]
        newest[app.pk] = max(versions)[1] if versions else ""
    for appspace in spaces.order_by("pk"):
        target = newest.get(appspace.app_id, "")
        if target and parse_version(target) > parse_version(appspace.app_version.version):
            yield Condition(
                key=f"{subject(appspace)}:upgrade:{target}",
                title=f"{appspace.subdomain} can move to version {target}",
                detail=f"It runs version {appspace.app_version.version}.",
                path=_page(appspace, "#versions"),
                recipient_id=appspace.owner_id,
            )


@register("crash_loop", "My appspace keeps crashing or has a problem")
def crash_loops() -> Iterator[Condition]:
    try:
        with SandboxClient(timeout=SUPERVISOR_TIMEOUT) as client:
            listing = {str(entry.get("id")): entry for entry in client.list()}
    except (OSError, SandboxError) as exc:
        raise CheckUnavailable(f"the supervisor did not answer: {exc}") from None
    for appspace in Appspace.objects.exclude(status=Appspace.Status.CREATING).order_by("pk"):
        entry = listing.get(str(appspace.public_id)) or {}
        if appspace.status == Appspace.Status.PROBLEM:
            title, detail = f"{appspace.subdomain} has a problem", appspace.status_reason
        elif appspace.status == Appspace.Status.ACTIVE and entry.get("state") == "problem":
            title = f"{appspace.subdomain} keeps crashing"
            detail = (
                "It is not started again until you restart it "
                f"({entry.get('problem') or 'crash loop'}). Its log may say why."
            )
        else:
            continue
        yield Condition(
            key=subject(appspace),
            title=title,
            detail=detail,
            path=_page(appspace, "#log"),
            recipient_id=appspace.owner_id,
        )
