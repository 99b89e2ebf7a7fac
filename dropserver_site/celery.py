"""The Celery app: installs, backups, usage collection and cleanup run here."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import task_postrun, task_prerun

from packages.logcontext import request_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dropserver_site.settings")

app = Celery("dropserver_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _create_filesystem_broker_folders(sender: Celery, **kwargs) -> None:
    # kombu's filesystem transport (the embedded default) expects its folders to exist, in
    # the worker and in every process that queues a task.
    options = sender.conf.broker_transport_options or {}
    if str(sender.conf.broker_url).startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            if options.get(key):
                Path(options[key]).mkdir(parents=True, exist_ok=True)


@task_prerun.connect
def _bind_log_context(task_id=None, task=None, **kwargs) -> None:
    # Every log line of the task carries its id and name (packages/logcontext.py).
    request_context.set({"request_id": task_id, "task": getattr(task, "name", None)})


@task_postrun.connect
def _unbind_log_context(**kwargs) -> None:
    request_context.set(None)
