"""Dropserver's Django project: settings, URLs, the ASGI host router and the Celery app."""

from dropserver_site.celery import app as celery_app

__all__ = ("celery_app",)
