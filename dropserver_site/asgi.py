"""ASGI entry point: Daphne serves the panel (Django) and the appspace gateway from here."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dropserver_site.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from appspaces.gateway import observe  # noqa: E402
from appspaces.gateway.asgi import gateway_http, gateway_websocket  # noqa: E402
from dropserver_site import body_limits  # noqa: E402
from dropserver_site.edge.ask import loopback_app  # noqa: E402
from dropserver_site.observe import logs  # noqa: E402
from dropserver_site.observe.access import observed  # noqa: E402
from dropserver_site.routing import HostRouter, not_found  # noqa: E402
from dropserver_site.tuning import tune_web_process  # noqa: E402

# Under Daphne, refuse oversized bodies while they arrive, not once they are on disk.
body_limits.install()

# Collector, log records and Twisted's own access lines, set for the per-request cost.
tune_web_process()
# An access line per request: written in blocks, at most a second late (WARNING and above
# at once), rather than a system call each.
logs.write_in_blocks(seconds=1.0)

application = ProtocolTypeRouter(
    {
        # One access line per request, every host; the gateway counts its appspaces' answers.
        "http": observed(
            HostRouter(panel=django_asgi_app, appspace=gateway_http, loopback=loopback_app),
            on_answer=observe.answered,
        ),
        # The panel has no WebSocket endpoints of its own.
        "websocket": HostRouter(panel=not_found, appspace=gateway_websocket),
    }
)
