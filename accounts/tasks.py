"""The periodic task (housekeeping queue; limits in settings._TASK_KINDS)."""

from celery import shared_task

from accounts.notices.evaluate import notices_evaluate as evaluate


@shared_task
def notices_evaluate() -> dict[str, int]:
    return evaluate()
