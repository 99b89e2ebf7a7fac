"""Response headers the panel sets on every answer that Django's own middleware does not.

`X-DNS-Prefetch-Control: off`: a page may not make the browser resolve names it merely links
to, a way out of the CSP for data spelled into a host name (appspaces get the same header
from the gateway, appspaces/gateway/headers.py).
"""

from __future__ import annotations

PANEL_HEADERS = {"X-DNS-Prefetch-Control": "off"}


class PanelHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        for name, value in PANEL_HEADERS.items():
            response[name] = value
        return response
