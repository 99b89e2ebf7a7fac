"""Panel URLs (the panel host only; appspace hosts never reach Django's URL resolver)."""

from django.contrib import admin
from django.urls import include, path

from accounts.urls import setup_urlpatterns
from dropserver_site.observe import health
from dropserver_site.observe.metrics import metrics_view

admin.site.site_header = "Dropserver administration"
admin.site.site_title = "Dropserver admin"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    # loopback or DS_METRICS_TOKEN only (dropserver_site/observe/metrics.py)
    path("metrics", metrics_view),
    path("", include("accounts.notices.urls")),  # before allauth's: /accounts/notices/
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("", include(setup_urlpatterns)),  # accounts: the first-admin setup link
    path("", include("appspaces.urls")),
    path("appspaces/<uuid:appspace_id>/backups/", include("backups.urls")),
]
