from django.urls import path

from appspaces.views import dashboard, jobs

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("jobs/<uuid:job_id>/", jobs.job_detail, name="job_detail"),
    path("jobs/<uuid:job_id>/status", jobs.job_status, name="job_status"),
    path("jobs/<uuid:job_id>/cancel", jobs.job_cancel_view, name="job_cancel"),
]
