"""The platform-wide Django app: management commands (serve) and Dropserver's system checks."""

from django.apps import AppConfig


class DropserverSiteConfig(AppConfig):
    name = "dropserver_site"
    verbose_name = "Dropserver"

    def ready(self) -> None:
        from dropserver_site import checks  # noqa: F401 (registers the checks)
        from dropserver_site.conditions import instance  # noqa: F401 (registers notice kinds)
        from dropserver_site.edge import checks as tls_checks  # noqa: F401
