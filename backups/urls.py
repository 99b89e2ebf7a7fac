"""Included under appspaces/<uuid:appspace_id>/backups/ (dropserver_site/urls.py)."""

from django.urls import path

from backups.views import pages as views

urlpatterns = [
    path("", views.backup_list, name="backup_list"),
    path("now", views.backup_now, name="backup_now"),
    path("policy", views.backup_policy_update, name="backup_policy"),
    path("upload", views.backup_upload_restore, name="backup_upload_restore"),
    path("<uuid:backup_id>/restore", views.backup_restore_view, name="backup_restore"),
    path("<uuid:backup_id>/download", views.backup_download, name="backup_download"),
    path("<uuid:backup_id>/delete", views.backup_delete_view, name="backup_delete"),
]
