"""The gateway's settings, read once per process: each attribute of Django's lazy settings
costs microseconds, and every request reads a dozen. Read again when a test overrides one."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed

from appspaces.gateway.headers import appspace_cookie_name, platform_cookie_names


@dataclass(frozen=True, slots=True)
class Limits:
    max_body: int
    max_headers: int
    max_header_bytes: int
    max_response_head: int
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    ensure_interval: float
    https: bool
    cookie_prefix: bytes  # b"<appspace cookie name>="
    platform_cookie_names: frozenset[str]


_current: Limits | None = None


def limits() -> Limits:
    global _current
    if _current is None:
        _current = Limits(
            max_body=settings.DS_GATEWAY_MAX_BODY_BYTES,
            max_headers=settings.DS_GATEWAY_MAX_HEADERS,
            max_header_bytes=settings.DS_GATEWAY_MAX_HEADER_BYTES,
            max_response_head=settings.DS_GATEWAY_MAX_RESPONSE_HEAD,
            connect_timeout=settings.DS_GATEWAY_CONNECT_TIMEOUT,
            first_byte_timeout=settings.DS_GATEWAY_FIRST_BYTE_TIMEOUT,
            idle_timeout=settings.DS_GATEWAY_IDLE_TIMEOUT,
            ensure_interval=settings.DS_GATEWAY_ENSURE_INTERVAL,
            https=settings.DS_HTTPS,
            cookie_prefix=appspace_cookie_name().encode("latin-1") + b"=",
            platform_cookie_names=platform_cookie_names(),
        )
    return _current


def _forget(**kwargs) -> None:
    global _current
    _current = None


setting_changed.connect(_forget, dispatch_uid="gateway-limits")
