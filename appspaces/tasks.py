"""Celery tasks of apps: they take ids, call one service, and are harmless when run twice."""

from __future__ import annotations

from celery import shared_task

from appspaces import install_upkeep, listings
from appspaces.install import REQUEUED, install_job_run
from appspaces.models import App

SANDBOX_RETRIES = 20  # x 3 s: a worker may start before the supervisor is listening


@shared_task(bind=True, max_retries=SANDBOX_RETRIES, default_retry_delay=3)
def install_app(self, job_id: int) -> str:
    """Run an install job; if the supervisor is not up yet the job waits and is retried."""
    retry = not self.request.is_eager and self.request.retries < self.max_retries
    outcome = install_job_run(job_id=job_id, requeue_if_sandbox_down=retry)
    if outcome == REQUEUED:
        raise self.retry()
    return outcome


@shared_task
def listing_refresh(app_id: int) -> str:
    app = App.objects.filter(pk=app_id).exclude(listing_url="").first()
    return listings.listing_refresh(app=app) if app else ""


@shared_task
def listings_refresh() -> int:
    return listings.listings_refresh_all()


@shared_task
def installs_sweep() -> dict[str, int]:
    return install_upkeep.installs_sweep()


from appspaces import usage  # noqa: E402, F401  (registers its tasks)

# --- Appspaces: creation, version changes, network approvals, upkeep ---


@shared_task(bind=True, max_retries=SANDBOX_RETRIES, default_retry_delay=3)
def appspace_create_task(self, job_id: int) -> str:
    """Run a creation job; if the supervisor is not up yet the job waits and is retried."""
    from appspaces.appspace_creation import appspace_create_run
    from appspaces.appspace_lifecycle import REQUEUED as CREATE_REQUEUED

    retry = not self.request.is_eager and self.request.retries < self.max_retries
    outcome = appspace_create_run(job_id=job_id, requeue_if_sandbox_down=retry)
    if outcome == CREATE_REQUEUED:
        raise self.retry()
    return outcome


@shared_task(bind=True, max_retries=SANDBOX_RETRIES, default_retry_delay=3)
def appspace_version_change_task(self, job_id: int) -> str:
    from appspaces.version_change import REQUEUED as CHANGE_REQUEUED
    from appspaces.version_change import version_change_run

    retry = not self.request.is_eager and self.request.retries < self.max_retries
    outcome = version_change_run(job_id=job_id, requeue_if_sandbox_down=retry)
    if outcome == CHANGE_REQUEUED:
        raise self.retry()
    return outcome


@shared_task
def blocked_connections_collect() -> int:
    from appspaces.network_approvals import blocked_connections_collect as collect

    return collect()


@shared_task
def appspace_sandbox_refresh(appspace_id: int) -> str:
    from appspaces.appspace_lifecycle import sandbox_refresh
    from appspaces.models import Appspace

    appspace = Appspace.objects.filter(pk=appspace_id).first()
    return sandbox_refresh(appspace) if appspace else ""


@shared_task
def trash_empty() -> int:
    from appspaces.appspace_lifecycle import trash_empty as empty

    return empty()


@shared_task
def appspaces_sweep() -> dict[str, int]:
    from appspaces.appspace_lifecycle import appspaces_sweep as sweep

    return sweep()
