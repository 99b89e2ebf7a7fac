"""Notice test helpers.

- `quiet_instance` (autouse): no free-disk notice on a test machine with little space, unless a
  test asks for one.
- `evaluate(at)`: one pass, at a given time (reminders are due by that clock).
- `failing_backup(appspace)`: a real backup Job that fails (the owner's backup cap, a real
  BackupError), as the worker runs it; `good_backup(appspace)`: one that succeeds.
- `page(user, url)`: the panel page's text as that user sees it.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.notices.evaluate import notices_evaluate
from appspaces.models import Job
from backups.models import Backup
from backups.services import backup_create, backup_job_create, backup_job_run
from tests.backups.conftest import create_appspace, fill
from tests.sandbox.fixtures import (  # noqa: F401 (fixtures)
    http_request,
    make_app,
    start_supervisor,
    supervisor,
)

T0 = timezone.now()


@pytest.fixture(autouse=True)
def quiet_instance(settings):
    settings.DS_NOTICE_MIN_FREE_MB = 0
    settings.DS_BACKUP_REPOSITORY = ""


def evaluate(at=None, hours: float = 0) -> dict[str, int]:
    return notices_evaluate((at or timezone.now()) + timedelta(hours=hours))


def make_space(owner, **kwargs):
    space = create_appspace(owner, **kwargs)
    fill(space, {"notes.txt": "hello"})
    return space


def failing_backup(appspace, settings) -> Job:
    settings.DS_BACKUP_USER_CAP_MB = 1
    fill(appspace, {"big.bin": os.urandom(1536 * 1024)})  # incompressible, over the cap
    job = backup_job_create(appspace=appspace, enqueue=False)
    assert backup_job_run(job_id=job.pk) == Job.State.FAILED
    job.refresh_from_db()
    return job


def good_backup(appspace, settings) -> Backup:
    settings.DS_BACKUP_USER_CAP_MB = 0
    return backup_create(appspace=appspace, kind=Backup.Kind.MANUAL)


def page(user, url: str) -> str:
    client = Client(HTTP_HOST=settings.DS_PANEL_HOST)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()
