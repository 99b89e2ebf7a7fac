"""Prints what `serve` shows at start: the panel URL and, on a fresh instance, the setup link."""

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import setup_link_issue
from dropserver_site.edge.caddy import internal_root_path


class Command(BaseCommand):
    help = "Print the panel URL and, while the instance has no admin, a one-time setup link."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"\nDropserver is running: {settings.DS_PANEL_URL}/")
        if settings.DS_TLS == "internal":
            self.stdout.write(
                "Certificates come from a local CA: trust its root in your browser, "
                f"{internal_root_path()}"
            )
        if url := setup_link_issue():
            self.stdout.write(
                "This instance has no admin yet. Create the first admin account here "
                f"(the link works once):\n    {url}"
            )
