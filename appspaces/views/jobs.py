"""Job progress: a page with a live bar, the JSON it polls, and cancel."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from appspaces.access import get_job_for_owner
from appspaces.jobs import job_as_json, job_cancel


@login_required
def job_detail(request: HttpRequest, job_id) -> HttpResponse:
    job = get_job_for_owner(request.user, job_id)
    return render(request, "appspaces/job.html", {"job": job})


@login_required
def job_status(request: HttpRequest, job_id) -> JsonResponse:
    job = get_job_for_owner(request.user, job_id)
    response = JsonResponse(job_as_json(job))
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def job_cancel_view(request: HttpRequest, job_id) -> HttpResponse:
    job = get_job_for_owner(request.user, job_id)
    if job_cancel(job):
        messages.info(request, "Cancelled.")
    return redirect("job_detail", job_id=job.public_id)
