"""A small HTTP/1.1 client for tests against the live Daphne: every host is 127.0.0.1:<port>
with its own Host header, cookies are kept per host (host-only, as a browser would), and
redirects are followed only when asked, so each hop can be checked. Following includes the
panel's `<meta http-equiv="refresh">` pages, with the Referer and Sec-Fetch-Site a browser
sends for a navigation a page starts (only what the gateway's login checks)."""

from __future__ import annotations

import html
import http.client
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str
    history: list[Response] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        import json

        return json.loads(self.body)


class Browser:
    def __init__(self, port: int, *, timeout: float = 20.0):
        self.port = port
        self.timeout = timeout
        self.cookies: dict[str, dict[str, str]] = {}
        self.set_cookie_headers: list[tuple[str, str]] = []  # (host, raw) as received

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        follow: bool = False,
        cookies: bool = True,
        connection: http.client.HTTPConnection | None = None,
    ) -> Response:
        history: list[Response] = []
        hop_headers: dict[str, str] = {}
        while True:
            parts = urlsplit(url)
            host = parts.hostname or ""
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn = connection or http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout
            )
            all_headers = {"Host": f"{host}:{self.port}"}
            jar = self.cookies.get(host)
            if cookies and jar:
                all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
            all_headers.update(headers or {})
            all_headers.update(hop_headers)
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in all_headers.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            raw = conn.getresponse()
            response = Response(raw.status, raw.getheaders(), raw.read(), url, history)
            if connection is None:
                conn.close()
            for value in response.all("set-cookie"):
                self.set_cookie_headers.append((host, value))
                self._store(host, value)
            location = response.header("location")
            hop_headers = {}
            if follow and response.status == 200 and not location:
                location = _meta_refresh(response.text)
                if location:
                    hop_headers = _page_navigation(host, self.port, location, response)
            elif not follow or response.status not in (301, 302, 303, 307, 308):
                return response
            if not location:
                return response
            history.append(response)
            if location.startswith("/"):
                location = f"http://{host}:{self.port}{location}"
            url, method, body = location, "GET", None

    def get(self, url: str, **kwargs) -> Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, body: bytes = b"", **kwargs) -> Response:
        return self.request("POST", url, body=body, **kwargs)

    def _store(self, host: str, value: str) -> None:
        pair, *attributes = value.split(";")
        name, _, cookie_value = pair.strip().partition("=")
        attrs = {
            a.split("=", 1)[0].strip().lower(): a.partition("=")[2].strip() for a in attributes
        }
        if "domain" in attrs:
            return  # the gateway never lets one through; a browser would widen it
        jar = self.cookies.setdefault(host, {})
        if attrs.get("max-age") == "0" or not cookie_value and "max-age" in attrs:
            jar.pop(name, None)
        else:
            jar[name] = cookie_value


def _meta_refresh(text: str) -> str | None:
    found = re.search(r'<meta http-equiv="refresh" content="0; url=([^"]+)">', text)
    return html.unescape(found.group(1)) if found else None


def _page_navigation(host: str, port: int, location: str, page: Response) -> dict[str, str]:
    """What a browser sends when page `host` navigates to `location` by itself."""
    target = urlsplit(location).hostname or host
    headers = {"Sec-Fetch-Site": "same-origin" if target == host else "cross-site"}
    if page.header("referrer-policy") == "origin":
        headers["Referer"] = f"http://{host}:{port}/"
    return headers


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)
