"""Django admin for instance admins: apps, their versions and jobs, read-only.

Installing, deleting and cancelling go through the panel's services (they clean up files and
refuse to delete what an appspace uses), so the admin only looks.
"""

from __future__ import annotations

from django.contrib import admin

from appspaces.models import App, AppVersion, Job


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
