"""Every notice, for admins: who was told what and when (read-only; the evaluation owns them)."""

from django.contrib import admin

from accounts.notices.models import Notice


@admin.register(Notice)
class NoticeAdmin(admin.ModelAdmin):
    list_display = ("title", "recipient", "kind", "first_seen", "emailed_at", "resolved_at")
    list_filter = ("kind", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("title", "key", "recipient__email")
    list_select_related = ("recipient",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
