"""Request body caps enforced while Daphne reads a body, before any application sees it.

Twisted reads a whole request body (into a temporary file past 100 KB) before Daphne hands the
request to the ASGI application, so a cap checked by the gateway or by Django comes after the
bytes are on the host's disk: one client could fill it. `install()` makes Daphne's request
class refuse a body as soon as it is known to be too large for its host (a Content-Length over
the cap, or a chunked body passing it) with a bare 413, stop storing it, and close the
connection once the client has had a moment to read the answer.

The caps, by the Host header's site: an appspace host gets DS_GATEWAY_MAX_BODY_BYTES (what the
gateway would allow); the panel 256 KB, except an upload view (an app package, a backup
archive) requested with a signed-in user's upload ticket, which gets its upload's cap plus room
for the form around it (accounts/upload_gate.py); any other host, which only ever gets
a bare 404, 64 KB. The gateway and Django keep their own, finer checks.
"""

from __future__ import annotations

from django.conf import settings

from accounts.upload_gate import FORM_OVERHEAD, panel_max_body
from dropserver_site.hosts import Site
from dropserver_site.routing import site_of_host

__all__ = ["FORM_OVERHEAD", "UNKNOWN_HOST_MAX_BODY", "install", "max_body_bytes"]

UNKNOWN_HOST_MAX_BODY = 64 * 1024
# After answering, how long a client may go on sending (discarded) before the connection is
# dropped: closing at once while it still sends makes the kernel reset the connection, and the
# client may never read the 413.
LINGER_SECONDS = 2.0

_MESSAGE = b"The request is too large.\n"
_RESPONSE = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n%b" % (len(_MESSAGE), _MESSAGE)
)


def max_body_bytes(host_header: bytes, target: bytes = b"", cookie_header: bytes = b"") -> int:
    site, _ = site_of_host(host_header)
    if site is Site.APPSPACE:
        return settings.DS_GATEWAY_MAX_BODY_BYTES
    if site is Site.PANEL:
        return panel_max_body(target, cookie_header)
    return UNKNOWN_HOST_MAX_BODY


def install() -> None:
    """Wrap Daphne's request class (once per process); a no-op where Daphne is not installed."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # pragma: no cover - Daphne is a dependency
        return
    if getattr(WebRequest, "_ds_body_limits", False):
        return
    got_length = WebRequest.gotLength
    handle_content_chunk = WebRequest.handleContentChunk
    process = WebRequest.process

    def _cap(self) -> int:
        # Worked out on the first body byte only: most requests (GETs) have none.
        if self._ds_max_body is None:
            headers = self.requestHeaders
            hosts = headers.getRawHeaders(b"host") or [b""]
            cookies = b"; ".join(headers.getRawHeaders(b"cookie") or [])
            # Before the body, the request line is only on the channel (Twisted's names).
            target = getattr(self.channel, "_path", b"") or b""
            self._ds_max_body = max_body_bytes(hosts[0], target, cookies)
        return self._ds_max_body

    def _refuse(self) -> None:
        self._ds_refused = True
        channel = self.channel
        transport = getattr(channel, "transport", None)
        if transport is None:
            return
        transport.write(_RESPONSE)
        from twisted.internet import reactor

        if hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()  # FIN after the answer; reading goes on
            reactor.callLater(LINGER_SECONDS, transport.abortConnection)
        else:  # pragma: no cover - TCP transports have it
            transport.loseConnection()

    def gotLength(self, length):  # Twisted's names
        if length and length > _cap(self):
            got_length(self, None)  # a small in-memory buffer that nothing will fill
            _refuse(self)
            return
        got_length(self, length)

    def handleContentChunk(self, data):
        if self._ds_refused:
            return
        self._ds_received += len(data)
        if self._ds_received > _cap(self):
            _refuse(self)
            return
        handle_content_chunk(self, data)

    def guarded_process(self):
        if self._ds_refused:
            return None  # answered already; the connection is closing
        return process(self)

    WebRequest._ds_max_body = None  # per request, set on first use
    WebRequest._ds_received = 0
    WebRequest._ds_refused = False
    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.process = guarded_process
    WebRequest._ds_body_limits = True
