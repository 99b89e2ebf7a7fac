"""`manage.py network_allow SUB ENTRY [--confirm-risky] [--json]`: allow one pending network
request (as the owner's one click does: an allowlist entry; the CSP changes at once, a server
entry restarts the sandbox). ENTRY is as `network_requests` lists it."""

from __future__ import annotations

from appspaces.management.network_commands import NetworkCommand
from appspaces.models import BlockedConnection
from appspaces.network.approvals import RiskyEntry
from appspaces.network.blocked import blocked_connection_approve
from appspaces.network.requests import network_request_allow
from packages.allowlist import AllowlistError


class Command(NetworkCommand):
    help = "Allow a pending network request of an appspace."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("entry", metavar="ENTRY", help="host[:port] or https://origin")
        parser.add_argument(
            "--confirm-risky",
            action="store_true",
            help="allow it even though it is risky (DNS, wildcards): the warning says why",
        )

    def handle(self, *args, subdomain, entry, confirm_risky, as_json, **options):
        self.as_json = as_json
        appspace = self.appspace(subdomain)
        found = self.find(appspace, entry)
        try:
            if isinstance(found, BlockedConnection):
                allowed = blocked_connection_approve(blocked=found, confirm_risky=confirm_risky)
            else:
                allowed = network_request_allow(request=found, confirm_risky=confirm_risky)
        except RiskyEntry as exc:
            self.fail(f"{' '.join(exc.warnings)} Add --confirm-risky to allow it anyway.")
        except AllowlistError as exc:
            self.fail(f"{entry} cannot be allowed: {exc}")
        self.emit(
            {"appspace": appspace.subdomain, "kind": allowed.kind, "allowed": allowed.value},
            f"{allowed.value} is allowed ({allowed.kind} side) for {appspace.subdomain}.",
        )
