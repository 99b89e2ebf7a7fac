"""The Celery app: installs, backups, usage collection and cleanup run here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dropserver_site.settings")

app = Celery("dropserver_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
