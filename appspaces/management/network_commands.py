"""What `network_requests`, `network_allow` and `network_dismiss` share: finding the appspace
by subdomain (any owner's: these are the operator's commands), pulling what its sandbox was
refused or asked for, finding a pending request by its entry text, and the `--json` output
with one readable error line and a non-zero exit."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from appspaces.models import Appspace, BlockedConnection, NetworkRequest
from appspaces.network.blocked import blocked_connections_pull, blocked_entry_text
from appspaces.sandboxes import parse_server_entry
from packages.allowlist import AllowlistError, parse_browser_origin
from sandbox.protocol import SandboxError


class NetworkCommand(BaseCommand):
    as_json = False

    def add_arguments(self, parser) -> None:
        parser.add_argument("subdomain", metavar="SUB", help="the appspace's subdomain")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print one JSON object"
        )

    def fail(self, message: str) -> None:
        if self.as_json:
            self.stdout.write(json.dumps({"error": message}))
            raise CommandError(message, returncode=1)
        raise CommandError(message)

    def emit(self, data: dict, text: str) -> None:
        self.stdout.write(json.dumps(data) if self.as_json else text)

    def appspace(self, subdomain: str) -> Appspace:
        appspace = Appspace.objects.filter(subdomain=str(subdomain).lower()).first()
        if appspace is None:
            self.fail(f"No appspace has the subdomain {subdomain!r}.")
        try:
            if appspace.status != Appspace.Status.CREATING:
                blocked_connections_pull(appspace=appspace)
        except SandboxError:  # the supervisor is not running: what is stored is still listed
            pass
        return appspace

    def find(self, appspace: Appspace, entry: str) -> NetworkRequest | BlockedConnection:
        """The pending (or dismissed) request or refused connection ENTRY names."""
        text = entry.strip()
        kind = "browser" if "://" in text else "server"
        try:
            parsed = parse_browser_origin(text) if kind == "browser" else parse_server_entry(text)
            candidates = {text, str(parsed)}
        except AllowlistError:
            candidates = {text}
        found = appspace.network_requests.filter(kind=kind, value__in=candidates).first()
        if found is not None:
            return found
        if kind == "server":
            for blocked in appspace.blocked.all():
                if blocked_entry_text(blocked) in candidates:
                    return blocked
        self.fail(
            f"{appspace.subdomain} has no pending request for {text!r}; "
            f"see `manage.py network_requests {appspace.subdomain}`."
        )
        raise AssertionError  # unreachable: fail() raises
