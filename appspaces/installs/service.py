"""App installs: the Job that turns a package (an upload, a package URL or an app listing) into
an installed app version, and the pipeline that a worker (or `manage.py install_app`) runs.

Steps: fetch -> extract -> read the manifest (errors end the job; warnings wait in `confirm`
until the owner accepts) -> place the files -> app-init in the sandbox (routes, migrations)
-> validate them -> warm the emit cache -> commit the rows. Until the commit, everything the
job wrote lives in its folder under uploads/ and in apps/<app>/<version>/; a failure or a
cancel removes both, so nothing half-installed survives. The job is claimed with a
conditional UPDATE and the commit only succeeds while the job is still running, so a task
delivered twice, or a cancel racing the commit, is harmless.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from appspaces.allowances import check_app
from appspaces.installs.pipeline import InstallPipeline
from appspaces.installs.staging import StoredUpload, job_staging_dir, upload_copy
from appspaces.jobs import (
    DONE,
    NOT_CLAIMED,
    JobFailed,
    enqueue_on_commit,
    job_claim,
    job_requeue,
    job_running,
)
from appspaces.models import App, Job
from packages.extraction import remove_tree
from sandbox import access
from sandbox.protocol import SandboxUnavailable

log = logging.getLogger(__name__)

CONFIRM_TEMPLATE = "appspaces/_install_confirm.html"


class InstallSourceError(ValueError):
    """install_job_create was given no source, or two."""


# --- The job: create, accept, cancel -------------------------------------------------------


def install_job_create(
    *,
    owner,
    upload: Path | StoredUpload | None = None,
    url: str | None = None,
    app: App | None = None,
    filename: str = "",
    accept_warnings: bool = False,
    enqueue: bool = True,
    extra: dict[str, Any] | None = None,
) -> Job:
    """A queued install job. `upload` is a package already under uploads/ (a path: moved into
    the job's folder; a StoredUpload: named there); `url` a package or listing URL. With
    `app`, a new version of that app."""
    if (upload is None) == (url is None):
        raise InstallSourceError("Give either a package or a URL.")
    if app is not None and app.owner_id != owner.pk:
        raise ValueError("the app belongs to someone else")
    if app is None:
        check_app(owner)  # AllowanceError; checked again under a lock when the app is committed
    params: dict[str, Any] = {
        **(extra or {}),
        "source": "upload" if upload is not None else "url",
        "app_id": str(app.public_id) if app else str(uuid.uuid4()),
        "new_app": app is None,
        "accept_warnings": accept_warnings,
        "confirm_template": CONFIRM_TEMPLATE,
    }
    if url is not None:
        params["url"] = params["label"] = url.strip()
    if filename:
        params["filename"] = params["label"] = Path(filename).name[:200]
    with transaction.atomic():
        job = Job.objects.create(
            kind=Job.Kind.INSTALL, owner=owner, app=app, params=params, step="Waiting to start"
        )
        staging = job_staging_dir(job)
        staging.mkdir(mode=0o700)
        if isinstance(upload, Path):
            os.replace(upload, staging / "package")
        elif upload is not None:
            upload.keep(staging / "package")  # an unnamed upload gets its only name here
        # Queued by root (a `manage.py` command): the workers run as DS_RUN_AS.
        access.give_tree_to_platform(staging)
        if enqueue:
            enqueue_on_commit("appspaces.tasks.install_app", job.pk)
    return job


def install_job_accept(*, job: Job, enqueue: bool = True) -> bool:
    """The owner accepted the warnings: the job is queued again and goes on. False if it was
    not waiting for that (already accepted, cancelled...)."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.state != Job.State.NEEDS_CONFIRMATION:
            return False
        locked.params = {**locked.params, "accept_warnings": True}
        locked.state = Job.State.QUEUED
        locked.step = "Waiting to continue"
        locked.message = ""
        locked.save(update_fields=["params", "state", "step", "message", "updated"])
        if enqueue:
            enqueue_on_commit("appspaces.tasks.install_app", locked.pk)
    return True


def install_job_cancel(*, job: Job) -> bool:
    """Cancel an install. A job that no worker holds (queued or waiting for confirmation) is
    cleaned up here and now; a running one stops at its next step and cleans up itself."""
    idle = Job.objects.filter(
        pk=job.pk, state__in=[Job.State.QUEUED, Job.State.NEEDS_CONFIRMATION]
    ).update(state=Job.State.CANCELLED, finished=timezone.now(), message="Cancelled.")
    if idle:
        remove_tree(job_staging_dir(job))
        return True
    return bool(
        Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
            state=Job.State.CANCELLED, finished=timezone.now(), message="Cancelled."
        )
    )


# --- Running it -----------------------------------------------------------------------------


def install_job_run(*, job_id: int, requeue_if_sandbox_down: bool = False) -> str:
    """Claim the job and run the pipeline. -> DONE (finished, waiting or failed: see the row),
    NOT_CLAIMED (someone else has it or it ended), or REQUEUED (the sandbox supervisor was not
    reachable and the job went back to the queue for a retry)."""
    job = job_claim(job_id)
    if job is None:
        _clean_if_finished(job_id)
        return NOT_CLAIMED
    pipeline = InstallPipeline(job)
    committed = False
    with job_running(job, cleanup=pipeline.clean_up):
        try:
            pipeline.run()
        except SandboxUnavailable as exc:
            if not requeue_if_sandbox_down:
                raise JobFailed(
                    "The sandbox supervisor is not running, so the app cannot be checked: "
                    "start `python manage.py sandboxd` (or `python manage.py serve`). "
                    f"({exc})"
                ) from None
            pipeline.remove_placed()
            return job_requeue(job)
        else:
            committed = pipeline.committed
        finally:
            pipeline.close()
    if committed:
        remove_tree(pipeline.staging)
        try:
            _queue_chained(pipeline.job)
        except Exception:
            log.exception("queueing the install chained after job %s failed", job.public_id)
    return DONE


def _clean_if_finished(job_id: int) -> None:
    job = Job.objects.filter(pk=job_id).first()
    if job is not None and job.is_finished:
        remove_tree(job_staging_dir(job))


def _queue_chained(job: Job) -> None:
    """Queue the next install a chain asked for (the examples install 1.0.0, then 2.0.0)."""
    chain = list(job.params.get("then") or [])
    if not chain or job.app is None:
        return
    step, rest = chain[0], chain[1:]
    package = Path(step["package"])
    if not package.is_file():
        log.warning("chained install skipped: %s is missing", package)
        return
    install_job_create(
        owner=job.owner,
        upload=upload_copy(package),
        app=job.app,
        filename=package.name,
        accept_warnings=bool(job.params.get("accept_warnings")),
        extra={"example": step.get("example", ""), "then": rest},
    )
