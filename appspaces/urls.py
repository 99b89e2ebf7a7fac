from django.urls import path

from appspaces.views import dashboard, jobs, usage

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("usage/", usage.instance_usage, name="instance_usage"),
    path("jobs/<uuid:job_id>/", jobs.job_detail, name="job_detail"),
    path("jobs/<uuid:job_id>/status", jobs.job_status, name="job_status"),
    path("jobs/<uuid:job_id>/cancel", jobs.job_cancel_view, name="job_cancel"),
]

# --- Apps: install, versions, delete (appspaces/views/apps.py) ---
from appspaces.views import apps  # noqa: E402

urlpatterns += [
    path("apps/", apps.app_list, name="app_list"),
    path("apps/install", apps.app_install, name="app_install"),
    path("apps/installs/<uuid:job_id>/", apps.install_job_detail, name="install_job"),
    path(
        "apps/installs/<uuid:job_id>/accept",
        apps.install_job_accept_view,
        name="install_job_accept",
    ),
    path(
        "apps/installs/<uuid:job_id>/cancel",
        apps.install_job_cancel_view,
        name="install_job_cancel",
    ),
    path("apps/<uuid:app_id>/", apps.app_detail, name="app_detail"),
    path("apps/<uuid:app_id>/install", apps.app_install_version, name="app_install_version"),
    path("apps/<uuid:app_id>/update", apps.app_update, name="app_update"),
    path("apps/<uuid:app_id>/check", apps.app_check_listing, name="app_check_listing"),
    path("apps/<uuid:app_id>/delete", apps.app_delete_view, name="app_delete"),
    path(
        "apps/<uuid:app_id>/versions/<uuid:version_id>/delete",
        apps.app_version_delete_view,
        name="app_version_delete",
    ),
]

# --- Appspace login: open an appspace from the panel (appspaces/views/open.py) ---
from appspaces.views import open as open_views  # noqa: E402

urlpatterns += [
    path("appspaces/<uuid:appspace_id>/open", open_views.appspace_open, name="appspace_open"),
    path(
        "a/<str:subdomain>/open",
        open_views.appspace_open_by_subdomain,
        name="appspace_open_by_subdomain",
    ),
]

# --- Appspaces: create, manage, users, network, versions (appspaces/views/appspaces.py...) ---
from appspaces.views import appspace_users as appspace_user_views  # noqa: E402
from appspaces.views import appspace_versions, kept_backups, network  # noqa: E402
from appspaces.views import appspaces as appspace_views  # noqa: E402

urlpatterns += [
    path("appspaces/new", appspace_views.appspace_new, name="appspace_new"),
    path("appspaces/<uuid:appspace_id>/", appspace_views.appspace_detail, name="appspace_detail"),
    path("appspaces/<uuid:appspace_id>/log", appspace_views.appspace_log, name="appspace_log"),
    path(
        "appspaces/<uuid:appspace_id>/pause",
        appspace_views.appspace_pause_view,
        name="appspace_pause",
    ),
    path(
        "appspaces/<uuid:appspace_id>/resume",
        appspace_views.appspace_resume_view,
        name="appspace_resume",
    ),
    path(
        "appspaces/<uuid:appspace_id>/restart",
        appspace_views.appspace_restart_view,
        name="appspace_restart",
    ),
    path(
        "appspaces/<uuid:appspace_id>/limits",
        appspace_views.appspace_limits_view,
        name="appspace_limits",
    ),
    path(
        "appspaces/<uuid:appspace_id>/delete",
        appspace_views.appspace_delete_view,
        name="appspace_delete",
    ),
    path(
        "appspaces/<uuid:appspace_id>/version",
        appspace_versions.appspace_version_view,
        name="appspace_version",
    ),
    path(
        "appspaces/<uuid:appspace_id>/users/add",
        appspace_user_views.appspace_user_add_view,
        name="appspace_user_add",
    ),
    path(
        "appspaces/<uuid:appspace_id>/users/<uuid:member_id>/",
        appspace_user_views.appspace_user_edit_view,
        name="appspace_user_edit",
    ),
    path(
        "appspaces/<uuid:appspace_id>/users/<uuid:member_id>/remove",
        appspace_user_views.appspace_user_remove_view,
        name="appspace_user_remove",
    ),
    path(
        "appspaces/<uuid:appspace_id>/invitations/revoke",
        appspace_user_views.appspace_invitation_revoke_view,
        name="appspace_invitation_revoke",
    ),
    path(
        "appspaces/<uuid:appspace_id>/allowlist/add",
        network.allowlist_add_view,
        name="appspace_allowlist_add",
    ),
    path(
        "appspaces/<uuid:appspace_id>/allowlist/remove",
        network.allowlist_remove_view,
        name="appspace_allowlist_remove",
    ),
    path(
        "appspaces/<uuid:appspace_id>/blocked/approve",
        network.blocked_approve_view,
        name="appspace_blocked_approve",
    ),
    path(
        "appspaces/<uuid:appspace_id>/blocked/dismiss",
        network.blocked_dismiss_view,
        name="appspace_blocked_dismiss",
    ),
    path(
        "appspaces/<uuid:appspace_id>/requests/allow",
        network.request_allow_view,
        name="appspace_request_allow",
    ),
    path(
        "appspaces/<uuid:appspace_id>/requests/dismiss",
        network.request_dismiss_view,
        name="appspace_request_dismiss",
    ),
    path(
        "backups/kept/<uuid:backup_id>/download",
        kept_backups.kept_backup_download,
        name="kept_backup_download",
    ),
    path(
        "backups/kept/<uuid:backup_id>/delete",
        kept_backups.kept_backup_delete,
        name="kept_backup_delete",
    ),
]
