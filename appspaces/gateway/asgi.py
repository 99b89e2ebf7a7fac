"""ASGI entry points of the appspace gateway (placeholder until the gateway lands)."""

from __future__ import annotations

from collections.abc import Callable

_UNAVAILABLE = (
    b"<!doctype html><title>Appspace unavailable</title>"
    b"<h1>This appspace is not available yet</h1>"
)


async def gateway_http(scope: dict, receive: Callable, send: Callable) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(_UNAVAILABLE)).encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"content-security-policy", b"default-src 'none'"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _UNAVAILABLE})


async def gateway_websocket(scope: dict, receive: Callable, send: Callable) -> None:
    await receive()
    await send({"type": "websocket.close", "code": 1013})
