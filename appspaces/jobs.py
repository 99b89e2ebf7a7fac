"""Job rows: how long work (installs, migrations, backups, restores) claims, reports and ends.

A task claims its job with a conditional UPDATE, so a retried or duplicated task finds it
already taken and does nothing. Progress, warnings and the human-readable message live on
the row; the panel polls it. Cancellation is a flag the owner sets and the task checks
between steps.

Services queue their tasks by name (`enqueue`, `enqueue_on_commit`): the task modules call
the services, so a service importing its task module would close an import loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Task, current_app
from celery.exceptions import NotRegistered
from django.db import transaction
from django.utils import timezone

from appspaces.metrics import JOB_SECONDS, record
from appspaces.models import Job

log = logging.getLogger(__name__)

# What running a claimed job's Task answers: it ran to an end (DONE, whatever the job's state),
# someone else holds it or it had ended (NOT_CLAIMED), or the sandbox supervisor was down and
# the job waits to be retried (REQUEUED; see appspaces.tasks.NeedsSupervisor).
REQUEUED, DONE, NOT_CLAIMED = "requeued", "done", "not claimed"


def registered_task(name: str) -> Task:
    """The task registered as `name` ("appspaces.tasks.install_app"). A worker imports every
    app's tasks module at start; a web process or a command may not have yet, so a miss
    imports them (Celery's autodiscovery) and looks again."""
    try:
        return current_app.tasks[name]
    except NotRegistered:
        current_app.loader.import_default_modules()
        return current_app.tasks[name]


def enqueue(task: str, *args) -> None:
    """Queue the task registered as `task` with `args`. It is the task object itself, from
    Celery's registry, so its queue, time limits and eager mode apply exactly as with
    `.delay()`."""
    registered_task(task).delay(*args)


def enqueue_on_commit(task: str, *args, robust: bool = False) -> None:
    """`enqueue` once the current transaction commits (at once outside one): a worker never
    looks for a row that is not there yet."""
    transaction.on_commit(lambda: enqueue(task, *args), robust=robust)


class JobCancelled(Exception):
    """The owner cancelled the job; the task unwinds and leaves nothing behind."""


def job_requeue(job: Job) -> str:
    """Put a running job back in the queue to wait for the sandbox supervisor (its task retries
    it, appspaces.tasks.NeedsSupervisor) -> REQUEUED; JobCancelled if the owner cancelled it
    meanwhile. The caller has undone what the try left first."""
    requeued = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        state=Job.State.QUEUED, step="Waiting for the sandbox supervisor", progress=0
    )
    if not requeued:
        raise JobCancelled()
    return REQUEUED


class JobFailed(Exception):
    """A failure the user can act on: its message is shown as it is."""


def job_claim(job_id: int) -> Job | None:
    """Take a queued job for this worker, or None if another worker has it or it ended."""
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, updated=timezone.now()
    )
    return Job.objects.get(pk=job_id) if claimed else None


def job_step(job: Job, step: str, progress: int) -> None:
    """Record the step being worked on; raise JobCancelled if the owner cancelled meanwhile."""
    job.step = step
    job.progress = max(0, min(100, progress))
    updated = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        step=job.step, progress=job.progress, updated=timezone.now()
    )
    if not updated:
        raise JobCancelled()


def job_progress(job: Job, progress: int) -> None:
    """Move the bar within a step (cheap enough to call per chunk; it writes only on change)."""
    progress = max(0, min(100, progress))
    if progress != job.progress:
        job_step(job, job.step, progress)


def job_finish(job: Job, state: str, message: str = "", **fields) -> None:
    job.state = state
    job.message = message
    job.finished = timezone.now()
    if state == Job.State.SUCCEEDED:
        job.progress = 100
    for name, value in fields.items():
        setattr(job, name, value)
    job.save(update_fields=["state", "message", "finished", "progress", "updated", *fields])
    seconds = (job.finished - job.created).total_seconds()
    record(lambda: JOB_SECONDS.labels(job.kind, state).observe(seconds))


def job_cancel(job: Job) -> bool:
    """Ask a job to stop; it ends as cancelled at its next step. False if already finished."""
    return bool(
        Job.objects.filter(pk=job.pk)
        .exclude(state__in=Job.FINISHED)
        .update(state=Job.State.CANCELLED, finished=timezone.now(), message="Cancelled.")
    )


@contextmanager
def job_running(job: Job, *, cleanup=None) -> Iterator[Job]:
    """Run the body as the job's work: a JobFailed or any other error ends it as failed with a
    readable message (never a traceback), a cancel ends it as cancelled; `cleanup` runs on
    every unsuccessful end so nothing half-done stays behind."""
    try:
        yield job
    except JobCancelled:
        if cleanup:
            cleanup()
        job.refresh_from_db(fields=["state", "message"])
        if job.state != Job.State.CANCELLED:
            job_finish(job, Job.State.CANCELLED, "Cancelled.")
    except JobFailed as exc:
        if cleanup:
            cleanup()
        job_finish(job, Job.State.FAILED, str(exc))
    except Exception:
        log.exception("job %s (%s) failed", job.public_id, job.kind)
        if cleanup:
            cleanup()
        with transaction.atomic():
            job_finish(
                job,
                Job.State.FAILED,
                "Something went wrong on the server; the administrator can find the details "
                f"in the worker's log (job {job.public_id}).",
            )


def job_as_json(job: Job) -> dict:
    return {
        "id": str(job.public_id),
        "kind": job.kind,
        "state": job.state,
        "state_display": job.get_state_display(),
        "step": job.step,
        "progress": job.progress,
        "warnings": job.warnings,
        "message": job.message,
        "finished": job.is_finished,
    }
