"""Template context every panel page needs."""

from django.conf import settings
from django.http import HttpRequest


def platform(request: HttpRequest) -> dict:
    return {"DS_PANEL_URL": settings.DS_PANEL_URL, "DS_DOMAIN": settings.DS_DOMAIN}
