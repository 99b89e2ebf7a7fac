"""ASGI entry point: Daphne serves the panel (Django) and the appspace gateway from here."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dropserver_site.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from appspaces.gateway.asgi import gateway_http, gateway_websocket  # noqa: E402
from appspaces.gateway.observe import observed  # noqa: E402
from dropserver_site import body_limits  # noqa: E402
from dropserver_site.edge.ask import loopback_app  # noqa: E402
from dropserver_site.routing import HostRouter, not_found  # noqa: E402

# Under Daphne, refuse oversized bodies while they arrive, not once they are on disk.
body_limits.install()

# Everything loaded so far lives as long as the process: keep it out of the garbage
# collector's full passes, which otherwise scan all of Django on every few thousand requests.
gc.freeze()

application = ProtocolTypeRouter(
    {
        "http": HostRouter(
            panel=django_asgi_app, appspace=observed(gateway_http), loopback=loopback_app
        ),
        # The panel has no WebSocket endpoints of its own.
        "websocket": HostRouter(panel=not_found, appspace=gateway_websocket),
    }
)
