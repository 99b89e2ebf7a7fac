"""Celery tasks of backups: they take ids, call one service, and are harmless when run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from backups import retention, schedule, sweep, verification
from backups.instance import repository as instance_repo
from backups.instance import snapshot
from backups.offsite import copies
from backups.restore import restore_job_run
from backups.services import backup_job_run

log = logging.getLogger(__name__)


@shared_task
def backup_run(job_id: int) -> str:
    sweep.backups_recover()  # a backup this one would wait for may have died with its worker
    return backup_job_run(job_id=job_id)


@shared_task
def restore_run(job_id: int) -> str:
    return restore_job_run(job_id=job_id)


@shared_task
def backups_schedule() -> int:
    return len(schedule.backups_schedule())


@shared_task
def backups_prune() -> int:
    return retention.backups_prune_all()


@shared_task
def backups_sweep() -> dict[str, int]:
    return sweep.backups_sweep()


@shared_task
def backups_verify() -> dict[str, int]:
    return verification.backups_verify_due()


@shared_task
def instance_backup_scheduled() -> str:
    return snapshot.instance_backup_due()


@shared_task(bind=True, max_retries=None)
def offsite_upload(self, job_id: int) -> str:
    retries = settings.DS_BACKUP_OFFSITE_RETRIES
    state = copies.offsite_job_run(job_id=job_id, final=self.request.retries >= retries)
    if state == "retry":  # back off: 1, 2, 4, ... times DS_BACKUP_OFFSITE_RETRY_SECONDS
        delay = settings.DS_BACKUP_OFFSITE_RETRY_SECONDS * 2**self.request.retries
        raise self.retry(countdown=delay)
    return state


@shared_task
def offsite_prune() -> int:
    copies.offsite_catch_up()  # failed or interrupted copies are tried again first
    done = copies.offsite_prune_all()
    instance_retention()
    return done


@shared_task
def instance_retention() -> int | None:
    """Instance snapshots in the repository, by their policy (None: no repository, or failed)."""
    if not copies.offsite_enabled():
        return None
    try:
        return len(instance_repo.retention())
    except instance_repo.RepositoryUnavailable as exc:
        log.warning("%s", exc)
        return None


@shared_task
def offsite_check() -> bool | None:
    result = copies.offsite_check()
    return None if result is None else result.ok
