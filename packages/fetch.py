"""The platform's own outbound HTTP (package URLs, app listings), guarded against SSRF.

A URL given by a user makes *this server* connect somewhere, so every hop is checked:
  - http(s) only, no credentials in the URL;
  - the host name is resolved here, and if any address it resolves to is not public
    (loopback, private, link-local/metadata, CGNAT, multicast, reserved, or an IPv6 form of
    one of those — see `allowlist.is_public_address`) the fetch is refused;
  - the connection goes to exactly the address that was checked (no second lookup, so DNS
    rebinding cannot swap it), with the original Host header and TLS SNI/certificate name;
  - redirects are followed by hand, at most DS_FETCH_MAX_REDIRECTS, each hop checked again,
    never from https down to http;
  - the body streams to a file under a byte cap, with connect, per-read and total timeouts
    (a watchdog closes the socket at the total deadline, so a slow drip cannot hold on).
Environment proxies are deliberately ignored. Tests reach a local server by setting
DS_FETCH_ALLOW_LOOPBACK (loopback only: private and metadata addresses stay refused).

Longer than most modules on purpose: the SSRF guard (resolve once, check every address,
connect to that address, re-check redirects) is one security boundary, reviewed as one unit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import semver
from django.conf import settings

from packages.allowlist import (
    AllowlistError,
    is_loopback_address,
    is_public_address,
    normalize_hostname,
)

Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP address strings
Progress = Callable[[int, int | None], None]  # (bytes received, expected total or None)

CHUNK_BYTES = 64 * 1024
MAX_URL_LENGTH = 2048
MAX_LISTING_VERSIONS = 1000
USER_AGENT = "Dropserver (app installer)"
_REDIRECTS = {301, 302, 303, 307, 308}


class FetchError(Exception):
    """A fetch that failed or was refused; str() is a sentence for the user."""


class ListingError(FetchError):
    """An app listing that could be fetched but is not a valid listing."""


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_redirects: int

    @classmethod
    def from_settings(cls, *, max_bytes: int | None = None) -> FetchLimits:
        return cls(
            max_bytes=max_bytes or settings.DS_APP_MAX_PACKAGE_MB * 1024 * 1024,
            connect_timeout=settings.DS_FETCH_CONNECT_TIMEOUT,
            read_timeout=settings.DS_FETCH_READ_TIMEOUT,
            total_timeout=settings.DS_FETCH_TOTAL_TIMEOUT,
            max_redirects=settings.DS_FETCH_MAX_REDIRECTS,
        )


@dataclass(frozen=True)
class FetchedFile:
    """A downloaded body in a temporary file that the caller owns (and deletes)."""

    path: Path
    url: str  # after redirects
    size: int
    sha256: str
    content_type: str

    def unlink(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FetchedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlink()


# --- Checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # IDNA-encoded name, or an IP address
    port: int
    target: str  # path and query
    host_header: str


def _parse_url(url: str) -> _Target:
    if not isinstance(url, str) or not url.strip():
        raise FetchError("The URL is empty.")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise FetchError("The URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchError(f"{url[:100]!r} is not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError("Only http:// and https:// URLs can be fetched.")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with a user name or password are not supported.")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise FetchError("The URL has no host.")
    try:
        ip = ipaddress.ip_address(raw_host)
        host = ip.compressed
    except ValueError:
        try:
            host = normalize_hostname(raw_host)
        except AllowlistError as exc:
            raise FetchError(f"The URL's host is not valid: {exc}.") from None
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    if not 0 < port < 65536:
        raise FetchError("The URL's port is not valid.")
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == default_port else f"{shown_host}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme, host, port, target, host_header)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _resolve(target: _Target, resolver: Resolver, timeout: float) -> list[str]:
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [target.host]
    else:
        # getaddrinfo has no timeout of its own: wait for it in a thread, and do not join
        # that thread when it overruns.
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            addresses = pool.submit(resolver, target.host, target.port).result(timeout=timeout)
        except FutureTimeout:
            raise FetchError(f"Looking up {target.host} took too long.") from None
        except (OSError, UnicodeError):
            raise FetchError(f"The host {target.host} could not be found.") from None
        finally:
            pool.shutdown(wait=False)
    if not addresses:
        raise FetchError(f"The host {target.host} could not be found.")
    allow_loopback = bool(getattr(settings, "DS_FETCH_ALLOW_LOOPBACK", False))
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise FetchError(f"The host {target.host} has an unusable address.") from None
        if not (is_public_address(ip) or (allow_loopback and is_loopback_address(ip))):
            # The address itself stays out of the message: it would map the private network.
            raise FetchError(
                f"Refused to connect to {target.host}: it points to this server or to a "
                "private, local or reserved network address."
            )
    return addresses


# --- One request ----------------------------------------------------------------------------


class _Watchdog:
    """Shuts the socket down at the total deadline, whatever the reads are doing."""

    def __init__(self, sock: socket.socket, seconds: float):
        self.fired = False
        self.sock = sock
        self.timer = threading.Timer(max(seconds, 0.0), self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self.timer.cancel()


def _connect(target: _Target, addresses: list[str], limits: FetchLimits, deadline: float):
    last_error: OSError | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            sock = socket.create_connection(
                (address, target.port), timeout=min(limits.connect_timeout, remaining)
            )
        except OSError as exc:
            last_error = exc
            continue
        sock.settimeout(limits.read_timeout)
        if target.scheme == "https":
            context = ssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=target.host)
            except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                sock.close()
                raise FetchError(f"The TLS connection to {target.host} failed ({exc}).") from None
        return sock
    if isinstance(last_error, TimeoutError):
        raise FetchError(f"Connecting to {target.host} timed out.")
    raise FetchError(f"Could not connect to {target.host}.")


def _open(target: _Target, sock: socket.socket) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(target.host, target.port)
    conn.sock = sock  # already connected to the checked address
    conn.putrequest("GET", target.target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", target.host_header)
    conn.putheader("User-Agent", USER_AGENT)
    conn.putheader("Accept-Encoding", "identity")
    conn.putheader("Connection", "close")
    conn.endheaders()
    return conn.getresponse()


def _fetch(
    url: str,
    *,
    limits: FetchLimits,
    resolver: Resolver | None,
    sink: Callable[[bytes], None],
    progress: Progress | None = None,
) -> tuple[str, str, int]:
    """GET url following redirects; feed the body to sink. -> (final url, content type, size)."""
    resolver = resolver or system_resolver
    deadline = time.monotonic() + limits.total_timeout
    current = url
    for _hop in range(limits.max_redirects + 1):
        target = _parse_url(current)
        addresses = _resolve(target, resolver, min(limits.connect_timeout, limits.total_timeout))
        sock = _connect(target, addresses, limits, deadline)
        watchdog = _Watchdog(sock, deadline - time.monotonic())
        try:
            response = _open(target, sock)
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchError(f"{target.host} sent a redirect without a location.")
                following = urljoin(current, location.strip())
                if target.scheme == "https" and following.lower().startswith("http:"):
                    raise FetchError("Refused a redirect from https:// down to http://.")
                current = following
                continue
            if response.status != 200:
                raise FetchError(
                    f"{target.host} answered {response.status} {response.reason} for this URL."
                )
            encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise FetchError(f"{target.host} sent a compressed ({encoding}) response.")
            expected = _content_length(response)
            if expected is not None and expected > limits.max_bytes:
                raise _too_large(limits)
            size = 0
            while chunk := response.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limits.max_bytes:
                    raise _too_large(limits)
                sink(chunk)
                if progress is not None:
                    progress(size, expected)
            if watchdog.fired:  # the socket was shut at the deadline: the body is partial
                raise _took_too_long(limits)
            if expected is not None and size != expected:
                raise FetchError(f"The download from {target.host} was cut short.")
            return current, response.getheader("Content-Type") or "", size
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.fired or time.monotonic() >= deadline:
                raise _took_too_long(limits) from None
            if isinstance(exc, TimeoutError):
                raise FetchError(f"{target.host} stopped answering.") from None
            raise FetchError(f"The connection to {target.host} failed ({exc}).") from None
        finally:
            watchdog.cancel()
            sock.close()
    raise FetchError(f"Too many redirects (more than {limits.max_redirects}).")


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _took_too_long(limits: FetchLimits) -> FetchError:
    return FetchError(f"The download took longer than {limits.total_timeout:g} seconds.")


def _too_large(limits: FetchLimits) -> FetchError:
    limit = limits.max_bytes
    shown = f"{limit / 1024**2:g} MB" if limit >= 1024**2 else f"{limit / 1024:g} KB"
    return FetchError(f"The download is larger than {shown} (the limit).")


# --- Public API -----------------------------------------------------------------------------


def fetch_to_file(
    url: str,
    *,
    dest_dir: Path | None = None,
    limits: FetchLimits | None = None,
    resolver: Resolver | None = None,
    progress: Progress | None = None,
) -> FetchedFile:
    """Download url into a new temporary file in dest_dir (default: the system's temp dir).
    The file is deleted again on any failure; on success the caller owns it."""
    limits = limits or FetchLimits.from_settings()
    fd, name = tempfile.mkstemp(prefix="ds-fetch-", suffix=".part", dir=dest_dir)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:

            def sink(chunk: bytes) -> None:
                out.write(chunk)
                digest.update(chunk)

            final, content_type, size = _fetch(
                url, limits=limits, resolver=resolver, sink=sink, progress=progress
            )
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return FetchedFile(Path(name), final, size, digest.hexdigest(), content_type)


def fetch_bytes(
    url: str, *, max_bytes: int, limits: FetchLimits | None = None, resolver: Resolver | None = None
) -> tuple[bytes, str]:
    """A small body (at most max_bytes) in memory. -> (body, final url after redirects)."""
    if limits is None:
        limits = FetchLimits.from_settings(max_bytes=max_bytes)
    limits = dataclasses.replace(limits, max_bytes=min(max_bytes, limits.max_bytes))
    chunks: list[bytes] = []
    final, _, _ = _fetch(url, limits=limits, resolver=resolver, sink=chunks.append)
    return b"".join(chunks), final


# --- App listings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ListingVersion:
    version: semver.Version
    package_url: str
    manifest_url: str = ""
    changelog_url: str = ""
    icon_url: str = ""


@dataclass(frozen=True)
class AppListing:
    url: str  # where the listing was fetched from (after redirects)
    base_url: str
    versions: tuple[ListingVersion, ...] = ()  # ascending by semver precedence
    new_url: str = ""  # the listing moved there; versions are then empty


def fetch_listing(
    url: str, *, limits: FetchLimits | None = None, resolver: Resolver | None = None
) -> AppListing:
    """Fetch and validate a Dropserver-style app listing."""
    max_bytes = settings.DS_FETCH_MAX_LISTING_KB * 1024
    body, final_url = fetch_bytes(url, max_bytes=max_bytes, limits=limits, resolver=resolver)
    return parse_listing(body, final_url)


def parse_listing(body: bytes, url: str) -> AppListing:
    """Validate listing JSON fetched from url; relative URLs resolve against `base` (a folder;
    itself relative to url) or else against url."""
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ListingError("The app listing is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ListingError("The app listing must be a JSON object.")
    new_url = data.get("new-url")
    if new_url:
        return AppListing(url=url, base_url=url, new_url=_listing_url(url, new_url, "new-url"))
    base = url
    if data.get("base") is not None:
        base = _listing_url(url, data["base"], "base")
        if not base.endswith("/"):
            base += "/"  # base names a folder: "pkgs/app.tar.gz" goes inside it
    versions_data = data.get("versions")
    if not isinstance(versions_data, dict):
        raise ListingError('The app listing has no "versions" object.')
    if len(versions_data) > MAX_LISTING_VERSIONS:
        raise ListingError(f"The app listing has more than {MAX_LISTING_VERSIONS} versions.")
    versions: dict[semver.Version, ListingVersion] = {}
    for key, entry in versions_data.items():
        try:
            version = semver.Version.parse(key)
        except (ValueError, TypeError):
            raise ListingError(f"The app listing has an invalid version {key[:40]!r}.") from None
        if version in versions:
            raise ListingError(f"The app listing has version {key[:40]!r} twice.")
        if not isinstance(entry, dict):
            raise ListingError(f"Version {key} of the app listing must be an object.")
        if not entry.get("package"):
            raise ListingError(f'Version {key} of the app listing has no "package".')
        urls = {
            name: _listing_url(base, entry[name], f"{key}.{name}") if entry.get(name) else ""
            for name in ("package", "manifest", "changelog", "icon")
        }
        versions[version] = ListingVersion(
            version=version,
            package_url=urls["package"],
            manifest_url=urls["manifest"],
            changelog_url=urls["changelog"],
            icon_url=urls["icon"],
        )
    ordered = tuple(versions[v] for v in sorted(versions))
    return AppListing(url=url, base_url=base, versions=ordered)


def _listing_url(base: str, value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_URL_LENGTH:
        raise ListingError(f'The app listing\'s "{where}" must be a URL.')
    resolved = urljoin(base, value.strip())
    if urlsplit(resolved).scheme.lower() not in ("http", "https"):
        raise ListingError(f'The app listing\'s "{where}" must be an http(s) URL.')
    return resolved


def newest_version(
    listing: AppListing, *, include_prereleases: bool = False
) -> ListingVersion | None:
    """The highest version in the listing (pre-releases only when asked for)."""
    for entry in reversed(listing.versions):
        if include_prereleases or not entry.version.prerelease:
            return entry
    return None
