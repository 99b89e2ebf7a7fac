"""`manage.py network_requests SUB [--json]`: the network access waiting for a decision on an
appspace: server connections its sandbox refused, origins its pages were refused in browsers,
and what the app asked for with requestNetwork(), with the app's reason. Dismissed ones are
listed apart."""

from __future__ import annotations

from appspaces.management.network_commands import NetworkCommand
from appspaces.network.blocked import blocked_rows
from appspaces.network.requests import request_rows


class Command(NetworkCommand):
    help = "List an appspace's pending network requests (server and browser, with reasons)."

    def handle(self, *args, subdomain, as_json, **options):
        self.as_json = as_json
        appspace = self.appspace(subdomain)
        items = []
        for row in blocked_rows(appspace):
            b = row["blocked"]
            items.append(
                {
                    "kind": "server",
                    "entry": row["entry"] or str(b),
                    "source": "refused",
                    "count": b.count,
                    "reason": "",
                    "refused": row["refused"],
                    "dismissed": b.dismissed,
                    "last_seen": b.last_seen.isoformat(),
                }
            )
        for dismissed in (False, True):
            for row in request_rows(appspace, dismissed=dismissed):
                r = row["request"]
                items.append(
                    {
                        "kind": r.kind,
                        "entry": r.value,
                        "source": r.source,
                        "count": r.count,
                        "directives": r.directives,
                        "reason": r.reason,
                        "refused": row["refused"],
                        "dismissed": r.dismissed,
                        "last_seen": r.last_seen.isoformat(),
                    }
                )
        lines = []
        for i in items:
            state = "dismissed " if i["dismissed"] else ""
            line = f"{state}{i['kind']:7} {i['entry']}  ({i['source']}"
            line += f", {i['count']}x)" if i["source"] != "app" else ")"
            if i["reason"]:
                line += f"  reason: {i['reason']}"
            if i["refused"]:
                line += f"  cannot be allowed: {i['refused']}"
            lines.append(line)
        self.emit(
            {"appspace": appspace.subdomain, "requests": items},
            "\n".join(lines) or f"Nothing is waiting for a decision on {appspace.subdomain}.",
        )
