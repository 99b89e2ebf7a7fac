"""Django admin for instance admins: apps, their versions and jobs, read-only; appspaces, with
their users and allowlist.

Installing, deleting and cancelling go through the panel's services (they clean up files and
refuse to delete what an appspace uses), so the admin only looks at apps; for appspaces it may
change their status, limits, users and allowlist, not create or delete them. Freed subdomains
(names of deleted appspaces) are listed, and their quarantine can be ended early.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.template.defaultfilters import filesizeformat

from appspaces.lifecycle.control import (
    AppspaceError,
    appspace_pause,
    appspace_restart,
    appspace_resume,
)
from appspaces.lifecycle.quarantine import quarantine_end, subdomains_release
from appspaces.models import (
    AllowlistEntry,
    App,
    Appspace,
    AppspaceUsageDay,
    AppspaceUser,
    AppVersion,
    FreedSubdomain,
    Job,
)
from appspaces.sandboxes import parse_server_entry, publish_users
from appspaces.tasks import appspace_sandbox_refresh
from appspaces.usage.counters import today
from backups.models import Backup
from backups.services import BackupError, backup_job_create
from packages.allowlist import AllowlistError, parse_browser_origin
from sandbox.walls import diskimage


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AppVersionInline(admin.TabularInline):
    model = AppVersion
    fields = ("version", "schema", "entrypoint", "size_bytes", "created")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(App)
class AppAdmin(ReadOnlyAdmin):
    list_display = ("name", "owner", "listing_url", "listing_latest_version", "created")
    search_fields = ("name", "owner__email", "listing_url", "public_id")
    list_select_related = ("owner",)
    readonly_fields = (
        "public_id", "owner", "name", "listing_url", "listing_latest_version",
        "listing_checked_at", "created",
    )  # fmt: skip
    inlines = [AppVersionInline]


@admin.register(AppVersion)
class AppVersionAdmin(ReadOnlyAdmin):
    list_display = ("app", "version", "schema", "size_bytes", "created")
    search_fields = ("app__name", "app__owner__email", "version", "public_id")
    list_select_related = ("app",)
    readonly_fields = (
        "public_id", "app", "version", "version_key", "schema", "entrypoint", "size_bytes",
        "manifest", "routes", "migrations", "changelog", "created",
    )  # fmt: skip


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "kind", "owner", "state", "step", "progress", "created")
    list_filter = ("kind", "state")
    search_fields = ("public_id", "owner__email", "message")
    list_select_related = ("owner",)
    date_hierarchy = "created"
    readonly_fields = (
        "public_id", "kind", "owner", "app", "app_version", "appspace", "state", "step",
        "progress", "params", "warnings", "message", "created", "updated", "finished",
    )  # fmt: skip


# --- Appspaces, their users and allowlists --------------------------------------------------
# Admins may pause an appspace (status), change its limits and its users and allowlist; the
# allowlist goes through the same validator as the panel. Creating and deleting appspaces go
# through the panel's services (folders, sandboxes, backups), so not through the admin.


class AllowlistEntryForm(forms.ModelForm):
    class Meta:
        model = AllowlistEntry
        fields = ("kind", "value")

    def clean(self) -> dict:
        cleaned = super().clean()
        kind, value = cleaned.get("kind"), cleaned.get("value")
        if kind and value:
            server = kind == AllowlistEntry.Kind.SERVER
            parse = parse_server_entry if server else parse_browser_origin
            try:
                cleaned["value"] = str(parse(value))
            except AllowlistError as exc:
                raise ValidationError({"value": str(exc)}) from None
        return cleaned


class AllowlistEntryInline(admin.TabularInline):
    model = AllowlistEntry
    form = AllowlistEntryForm
    fields = ("kind", "value", "created")
    readonly_fields = ("created",)
    extra = 0


class AppspaceUserForm(forms.ModelForm):
    class Meta:
        model = AppspaceUser
        fields = ("user", "display_name", "permissions")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["permissions"].required = False  # [] is "no permission"
        self.fields["permissions"].help_text = 'Permission keys the app declares, e.g. ["edit"].'

    def clean_permissions(self):
        value = self.cleaned_data.get("permissions") or []
        if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
            raise ValidationError('A list of permission keys, e.g. ["edit"].')
        return value


class AppspaceUserInline(admin.TabularInline):
    model = AppspaceUser
    form = AppspaceUserForm
    fields = ("user", "display_name", "permissions", "created")
    readonly_fields = ("created",)
    raw_id_fields = ("user",)
    extra = 0


@admin.register(Appspace)
class AppspaceAdmin(admin.ModelAdmin):
    """Every appspace with what an admin acts on: its owner, app and version, state, disk
    against the quota, CPU today, last good backup; filters by app, owner and state; pause,
    resume, restart and back up now as actions (the same services as the owner's buttons)."""

    list_display = (
        "subdomain", "owner", "app_and_version", "status", "disk", "quota_state", "cpu_today",
        "last_backup", "disk_quota",
    )  # fmt: skip
    list_filter = (
        "status",
        "data_readonly",
        ("app", admin.RelatedOnlyFieldListFilter),
        ("owner", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("subdomain", "owner__email", "app__name", "public_id")
    list_select_related = ("owner", "app", "app_version")
    actions = ["pause", "resume", "restart", "back_up_now"]
    fields = (
        "public_id", "subdomain", "owner", "app", "app_version", "status", "status_reason",
        "data_schema", "memory_mb", "cpu_percent", "disk_mb", "disk_quota", "disk_bytes",
        "data_readonly", "created",
    )  # fmt: skip
    readonly_fields = (
        "public_id", "subdomain", "owner", "app", "app_version", "data_schema", "disk_bytes",
        "data_readonly", "created", "disk_quota",
    )  # fmt: skip
    inlines = [AppspaceUserInline, AllowlistEntryInline]

    def get_queryset(self, request):
        # Subqueries, not two joins: a Sum over a join with backups would count a day per backup.
        cpu = AppspaceUsageDay.objects.filter(appspace=OuterRef("pk"), day=today())
        ready = Backup.objects.filter(appspace=OuterRef("pk"), state=Backup.State.READY)
        return (
            super()
            .get_queryset(request)
            .annotate(
                cpu_today=Subquery(cpu.values("cpu_seconds")[:1]),
                last_backup=Subquery(ready.order_by("-created").values("created")[:1]),
            )
        )

    @admin.display(description="app", ordering="app__name")
    def app_and_version(self, obj: Appspace) -> str:
        return f"{obj.app.name} {obj.app_version.version}"

    @admin.display(description="disk", ordering="disk_bytes")
    def disk(self, obj: Appspace) -> str:
        quota = obj.disk_mb * 1024 * 1024
        share = f" ({round(obj.disk_bytes * 100 / quota)}%)" if quota else ""
        return f"{filesizeformat(obj.disk_bytes)} of {filesizeformat(quota)}{share}"

    @admin.display(description="quota")
    def quota_state(self, obj: Appspace) -> str:
        if obj.data_readonly:
            return "read-only (over quota)"
        return "over quota" if obj.disk_bytes > obj.disk_mb * 1024 * 1024 else "ok"

    @admin.display(description="CPU today", ordering="cpu_today")
    def cpu_today(self, obj: Appspace) -> str:
        return f"{obj.cpu_today or 0:.1f} s"

    @admin.display(description="last backup", ordering="last_backup")
    def last_backup(self, obj: Appspace) -> str:
        return f"{obj.last_backup:%Y-%m-%d %H:%M} UTC" if obj.last_backup else "never"

    def _each(self, request, queryset, verb: str, action) -> None:
        done, refused = 0, []
        for appspace in queryset:
            try:
                action(appspace)
                done += 1
            except (AppspaceError, BackupError) as exc:
                refused.append(f"{appspace.subdomain}: {exc}")
        if done:
            self.message_user(request, f"{verb}: {done} appspace(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)

    @admin.action(description="Pause the selected appspaces")
    def pause(self, request, queryset) -> None:
        self._each(request, queryset, "Paused", lambda a: appspace_pause(appspace=a))

    @admin.action(description="Resume the selected appspaces")
    def resume(self, request, queryset) -> None:
        self._each(request, queryset, "Resumed", lambda a: appspace_resume(appspace=a))

    @admin.action(description="Restart the selected appspaces' sandboxes")
    def restart(self, request, queryset) -> None:
        self._each(request, queryset, "Restarted", lambda a: appspace_restart(appspace=a))

    @admin.action(description="Back up the selected appspaces now")
    def back_up_now(self, request, queryset) -> None:
        self._each(request, queryset, "Backups queued", lambda a: backup_job_create(appspace=a))

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="disk quota")
    def disk_quota(self, obj: Appspace) -> str:
        """Which mechanism holds the quota (sandbox.walls.diskimage): enforced or the fallback."""
        if diskimage.mechanism(obj.data_path) == "image":
            return f"enforced (ext4 image, {obj.disk_mb} MB)"
        return f"measured (read-only above {obj.disk_mb} MB)"

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        obj.touch_config()

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        appspace = form.instance
        transaction.on_commit(lambda: publish_users(appspace), robust=True)
        transaction.on_commit(lambda: appspace_sandbox_refresh.delay(appspace.pk), robust=True)


@admin.register(FreedSubdomain)
class FreedSubdomainAdmin(ReadOnlyAdmin):
    """Rows are never deleted here: the gateway needs them to clear the old tenant's browser
    state for the next appspace under the name. Releasing ends the quarantine."""

    list_display = ("name", "freed_at", "previous_owner_email", "available_from", "released_at")
    search_fields = ("name",)
    actions = ["release"]

    @admin.display(description="previous owner")
    def previous_owner_email(self, obj: FreedSubdomain) -> str:
        if obj.previous_owner is None:
            return "—"
        user = get_user_model().objects.filter(public_id=obj.previous_owner).first()
        return user.email if user is not None else "(deleted)"

    @admin.display(description="available to anyone from")
    def available_from(self, obj: FreedSubdomain) -> str:
        end = quarantine_end(obj)
        return "now" if end is None else f"{end:%Y-%m-%d %H:%M} UTC"

    @admin.action(description="Release the selected names now (end their quarantine)")
    def release(self, request, queryset) -> None:
        count = subdomains_release(queryset)
        self.message_user(request, f"{count} name(s) released.", messages.SUCCESS)
