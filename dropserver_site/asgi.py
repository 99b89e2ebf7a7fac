"""ASGI entry point: Daphne serves the panel (Django) and the appspace gateway from here."""

import gc
import logging
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

# Under Daphne, refuse oversized bodies while they arrive, not once they are on disk.
body_limits.install()

# Everything loaded so far lives as long as the process: keep it out of the garbage
# collector's full passes, which otherwise scan all of Django on every few thousand requests.
gc.freeze()
# A request allocates a few hundred objects that reference counting frees; the collector's
# default (a pass every 700 net allocations) ran every few requests and cost ~10% of a gateway
# request's CPU (measured with bench/gateway.py). Cycles are still collected, in fewer passes.
gc.set_threshold(20_000, 20, 20)
# No log format of a web process prints where a line was logged from, nor its thread or
# process: skip finding them on every line (the logging HOWTO's "Optimization" section).
logging._srcfile = None
logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
