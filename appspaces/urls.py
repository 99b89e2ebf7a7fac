from django.urls import path

from appspaces.views import dashboard, jobs

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
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
