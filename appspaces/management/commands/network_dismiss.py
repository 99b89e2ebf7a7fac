"""`manage.py network_dismiss SUB ENTRY [--json]`: dismiss one pending network request; it
stays refused and leaves the list of things to decide on."""

from __future__ import annotations

from appspaces.management.network_commands import NetworkCommand
from appspaces.models import BlockedConnection
from appspaces.network.blocked import blocked_connection_dismiss
from appspaces.network.requests import network_request_dismiss


class Command(NetworkCommand):
    help = "Dismiss a pending network request of an appspace (it stays refused)."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("entry", metavar="ENTRY", help="as network_requests lists it")

    def handle(self, *args, subdomain, entry, as_json, **options):
        self.as_json = as_json
        appspace = self.appspace(subdomain)
        found = self.find(appspace, entry)
        if isinstance(found, BlockedConnection):
            blocked_connection_dismiss(blocked=found)
        else:
            network_request_dismiss(request=found)
        self.emit(
            {"appspace": appspace.subdomain, "dismissed": str(found)},
            f"Dismissed {found} for {appspace.subdomain}: it stays refused.",
        )
