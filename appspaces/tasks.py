"""Celery tasks of appspaces: each takes ids, calls one service, and is harmless when run twice.

Tasks that run a Job needing the sandbox supervisor (installs, creations, version changes)
share one base, `NeedsSupervisor`: a worker may start before the supervisor listens, so such
a job is put back (REQUEUED) and retried every few seconds for a while instead of failing.
The beat schedule of the periodic ones is CELERY_BEAT_SCHEDULE in dropserver_site/settings.py.
"""

from __future__ import annotations

from celery import Task, shared_task

from appspaces.installs import listings, upkeep
from appspaces.installs.service import install_job_run
from appspaces.jobs import REQUEUED
from appspaces.lifecycle import control, sweep
from appspaces.lifecycle.creation import appspace_create_run
from appspaces.lifecycle.version_change import version_change_run
from appspaces.models import App, Appspace
from appspaces.network import blocked
from appspaces.usage import collection, counters, quota


class NeedsSupervisor(Task):
    """Runs a job's service; while the supervisor is down the service answers REQUEUED and
    the task retries (20 x 3 s). The last try runs the job through, so it fails readably."""

    max_retries = 20
    default_retry_delay = 3

    def run_job(self, service, job_id: int) -> str:
        retry = not self.request.is_eager and self.request.retries < self.max_retries
        outcome = service(job_id=job_id, requeue_if_sandbox_down=retry)
        if outcome == REQUEUED:
            raise self.retry()
        return outcome


# --- Jobs ---------------------------------------------------------------------------------------


@shared_task(bind=True, base=NeedsSupervisor)
def install_app(self, job_id: int) -> str:
    return self.run_job(install_job_run, job_id)


@shared_task(bind=True, base=NeedsSupervisor)
def appspace_create_task(self, job_id: int) -> str:
    return self.run_job(appspace_create_run, job_id)


@shared_task(bind=True, base=NeedsSupervisor)
def appspace_version_change_task(self, job_id: int) -> str:
    return self.run_job(version_change_run, job_id)


# --- On demand ----------------------------------------------------------------------------------


@shared_task
def listing_refresh(app_id: int) -> str:
    app = App.objects.filter(pk=app_id).exclude(listing_url="").first()
    return listings.listing_refresh(app=app) if app else ""


@shared_task
def appspace_sandbox_refresh(appspace_id: int) -> str:
    appspace = Appspace.objects.filter(pk=appspace_id).first()
    return control.sandbox_refresh(appspace) if appspace else ""


@shared_task(ignore_result=True)
def disk_measure(appspace_id: int | None = None) -> int:
    """Every appspace's data dir, or one appspace's (the panel's "measure now")."""
    if appspace_id is None:
        return quota.disk_measure_all()
    appspace = Appspace.objects.filter(pk=appspace_id).first()
    return int(appspace is not None and quota.appspace_disk_measure(appspace=appspace) is not None)


# --- Periodic (beat) ----------------------------------------------------------------------------


@shared_task
def listings_refresh() -> int:
    return listings.listings_refresh_all()


@shared_task
def installs_sweep() -> dict[str, int]:
    return upkeep.installs_sweep()


@shared_task
def blocked_connections_collect() -> int:
    return blocked.blocked_connections_collect()


@shared_task
def trash_empty() -> int:
    return control.trash_empty()


@shared_task
def appspaces_sweep() -> dict[str, int]:
    return sweep.appspaces_sweep()


@shared_task(ignore_result=True)
def usage_collect() -> int:
    return collection.usage_collect_all()


@shared_task(ignore_result=True)
def usage_days_prune() -> int:
    return counters.usage_prune()
