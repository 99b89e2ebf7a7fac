"""Panel views of apps: my apps, installing (upload or URL) with live progress, an app's
versions and changelogs, newer versions from its listing, and deleting versions and apps."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from accounts.upload_gate import accepts_upload
from appspaces.access import get_app_for_owner, get_app_version_for_owner, get_job_for_owner
from appspaces.allowances import AllowanceError
from appspaces.installs.listings import listing_check_due
from appspaces.installs.service import install_job_accept, install_job_cancel, install_job_create
from appspaces.installs.staging import PACKAGE_FIELD, PackageUploadHandler
from appspaces.installs.versions import (
    VersionInUse,
    app_delete,
    app_update_available,
    app_version_delete,
    versions_newest_first,
)
from appspaces.models import App, Job
from appspaces.tasks import listing_refresh
from appspaces.views.app_forms import InstallForm


def installs_in_progress(user, app: App | None = None):
    jobs = Job.objects.filter(owner=user, kind=Job.Kind.INSTALL).exclude(state__in=Job.FINISHED)
    return jobs.filter(app=app) if app is not None else jobs


def apps_with_versions(user) -> list[dict]:
    """The user's apps, each with its versions newest first and a newer listed version."""
    rows = []
    for app in App.objects.filter(owner=user).prefetch_related("versions"):
        versions = versions_newest_first(app.versions.all())
        rows.append(
            {
                "app": app,
                "newest": versions[0] if versions else None,
                "count": len(versions),
                "update": app_update_available(app, versions),
            }
        )
    return rows


@login_required
def app_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "appspaces/apps.html",
        {"rows": apps_with_versions(request.user), "installs": installs_in_progress(request.user)},
    )


# --- Installing -----------------------------------------------------------------------------
# The package streams to an unnamed file through PackageUploadHandler, which must be in place
# before anything reads the body, and so before the CSRF check: `@accepts_upload` outside
# (signed-in users only), lookups next (an outsider's 404 before the body is read), then
# csrf_protect inside (Django's documented pattern for custom upload handlers). A refused
# package is only closed: it never had a name.


def _install_from_form(request: HttpRequest, *, app: App | None) -> tuple[InstallForm, Job | None]:
    upload = request.FILES.get(PACKAGE_FIELD)  # parses the body: the handler has now run
    handler = request.upload_handlers[0]
    too_large = isinstance(handler, PackageUploadHandler) and handler.too_large
    form = InstallForm(request.POST, request.FILES, upload_too_large=too_large)
    try:
        if not form.is_valid():
            return form, None
        try:
            job = install_job_create(
                owner=request.user,
                upload=upload,
                url=form.cleaned_data["url"] or None,
                app=app,
                filename=upload.name if upload else "",
            )
        except AllowanceError as exc:
            form.add_error(None, str(exc))
            return form, None
        return form, job
    finally:
        if upload is not None:
            upload.discard()  # named in the job's folder, or refused: nothing else stays


@accepts_upload(PackageUploadHandler)
@require_http_methods(["GET", "POST"])
def app_install(request: HttpRequest) -> HttpResponse:
    return _app_install(request)


@csrf_protect
def _app_install(request: HttpRequest) -> HttpResponse:
    form = InstallForm()
    if request.method == "POST":
        form, job = _install_from_form(request, app=None)
        if job is not None:
            return redirect("install_job", job_id=job.public_id)
    status = 400 if form.errors else 200
    return render(request, "appspaces/install.html", {"form": form}, status=status)


@accepts_upload(PackageUploadHandler)
@require_POST
def app_install_version(request: HttpRequest, app_id) -> HttpResponse:
    app = get_app_for_owner(request.user, app_id)  # 404 before the body is read
    return _app_install_version(request, app)


@csrf_protect
def _app_install_version(request: HttpRequest, app: App) -> HttpResponse:
    form, job = _install_from_form(request, app=app)
    if job is not None:
        return redirect("install_job", job_id=job.public_id)
    return _render_app(request, app, form=form, status=400)


def _install_job(request: HttpRequest, job_id) -> Job:
    job = get_job_for_owner(request.user, job_id)
    if job.kind != Job.Kind.INSTALL:
        raise Http404("No such install.")
    return job


@login_required
def install_job_detail(request: HttpRequest, job_id) -> HttpResponse:
    job = _install_job(request, job_id)
    return render(request, "appspaces/install_job.html", {"job": job})


@require_POST
@login_required
def install_job_accept_view(request: HttpRequest, job_id) -> HttpResponse:
    job = _install_job(request, job_id)
    if not install_job_accept(job=job):
        messages.info(request, "This install is no longer waiting for your confirmation.")
    return redirect("install_job", job_id=job.public_id)


@require_POST
@login_required
def install_job_cancel_view(request: HttpRequest, job_id) -> HttpResponse:
    job = _install_job(request, job_id)
    if install_job_cancel(job=job):
        messages.info(request, "The install was cancelled; nothing of it was kept.")
    return redirect("install_job", job_id=job.public_id)


# --- An app and its versions ----------------------------------------------------------------


def _render_app(request: HttpRequest, app: App, *, form=None, status: int = 200) -> HttpResponse:
    versions = versions_newest_first(app.versions.annotate(appspace_count=Count("appspaces")))
    if listing_check_due(app=app):
        transaction.on_commit(lambda: listing_refresh.delay(app.pk))
    context = {
        "app": app,
        "versions": versions,
        "newest": versions[0] if versions else None,
        "update": app_update_available(app, versions),
        "installs": installs_in_progress(request.user, app),
        "form": form or InstallForm(),
        "appspace_count": app.appspaces.count(),
    }
    return render(request, "appspaces/app_detail.html", context, status=status)


@login_required
def app_detail(request: HttpRequest, app_id) -> HttpResponse:
    return _render_app(request, get_app_for_owner(request.user, app_id))


@require_POST
@login_required
def app_check_listing(request: HttpRequest, app_id) -> HttpResponse:
    app = get_app_for_owner(request.user, app_id)
    if not app.listing_url:
        raise Http404("This app was not installed from a listing.")
    transaction.on_commit(lambda: listing_refresh.delay(app.pk))
    messages.info(request, "Checking the app's listing for a newer version.")
    return redirect("app_detail", app_id=app.public_id)


@require_POST
@login_required
def app_update(request: HttpRequest, app_id) -> HttpResponse:
    """Install the newest version the app's listing offers."""
    app = get_app_for_owner(request.user, app_id)
    if not app.listing_url:
        raise Http404("This app was not installed from a listing.")
    job = install_job_create(owner=request.user, url=app.listing_url, app=app)
    return redirect("install_job", job_id=job.public_id)


@login_required
@require_http_methods(["GET", "POST"])
def app_delete_view(request: HttpRequest, app_id) -> HttpResponse:
    app = get_app_for_owner(request.user, app_id)
    if request.method == "POST":
        try:
            app_delete(app=app)
        except VersionInUse as exc:
            messages.error(request, str(exc))
            return redirect("app_detail", app_id=app.public_id)
        messages.success(request, f"{app.name} and all its versions were deleted.")
        return redirect("app_list")
    return render(
        request,
        "appspaces/app_delete.html",
        {
            "app": app,
            "versions": versions_newest_first(app.versions.all()),
            "appspaces": app.appspaces.all(),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def app_version_delete_view(request: HttpRequest, app_id, version_id) -> HttpResponse:
    version = get_app_version_for_owner(request.user, version_id)
    if str(version.app.public_id) != str(app_id):
        raise Http404("No such app version.")
    if request.method == "POST":
        try:
            app_version_delete(version=version)
        except VersionInUse as exc:
            messages.error(request, str(exc))
            return redirect("app_detail", app_id=version.app.public_id)
        messages.success(request, f"Version {version.version} of {version.app.name} was deleted.")
        return redirect("app_detail", app_id=version.app.public_id)
    return render(
        request,
        "appspaces/app_version_delete.html",
        {"app": version.app, "version": version, "appspaces": version.appspaces.all()},
    )
