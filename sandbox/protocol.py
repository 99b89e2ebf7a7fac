"""The supervisor's control protocol: newline-delimited JSON frames, error codes and exceptions.

Request:  {"id": <int>, "op": "<op>", ...arguments}\n
Response: {"id": <same>, "ok": true, "result": ...}\n
      or  {"id": <same>, "ok": false, "error": {"code": "<code>", "message": "...", ...}}\n
Requests on one connection may be pipelined; responses carry the request's id and may come
back out of order (a slow `ensure` never holds up another sandbox's). See docs/sandbox.md.
"""

from __future__ import annotations

import json
from typing import Any

MAX_FRAME = 1024 * 1024  # one JSON document per line, at most this many bytes

OPS = (
    "ping",
    "ensure",
    "touch",
    "stop",
    "restart",
    "freeze",
    "thaw",
    "usage",
    "list",
    "blocked",
    "network_requests",
    "run_once",
    "data_hold",
    "data_release",
    "data_remove",
    "data_usage",
    "data_hand_over",
    "data_swap",
    "data_view",
    "data_view_close",
)


class SandboxError(Exception):
    """Base of everything the sandbox client raises."""

    code = "internal"

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class SandboxUnavailable(SandboxError):
    """The supervisor cannot serve this now (not running, at capacity, frozen): retry later."""

    code = "unavailable"


class SandboxHostUnsafe(SandboxUnavailable):
    """This host lacks what sandboxes need (bubblewrap, cgroups, root); the message says what."""

    code = "host_unsafe"


class SandboxStartFailed(SandboxError):
    """The sandbox was started and did not become ready; `reason` and `stderr_tail` say why."""

    code = "start_failed"

    @property
    def reason(self) -> str:
        return str(self.details.get("reason", self.message))

    @property
    def stderr_tail(self) -> str:
        return str(self.details.get("stderr_tail", ""))


class SandboxProblem(SandboxStartFailed):
    """Crashed too often in the crash window: not restarted until `restart` is asked for."""

    code = "problem"


class SandboxBusy(SandboxError):
    """A conflicting operation is running (a job with this id, a migration on running data)."""

    code = "busy"


class SandboxNotFound(SandboxError):
    code = "not_found"


class SandboxBadRequest(SandboxError):
    """The request or the spec is invalid; not worth retrying."""

    code = "bad_request"


class SandboxForbidden(SandboxError):
    """This caller may not ask for this (its uid, from SO_PEERCRED; see `sandbox.access`)."""

    code = "forbidden"


ERRORS: dict[str, type[SandboxError]] = {
    cls.code: cls
    for cls in (
        SandboxError,
        SandboxUnavailable,
        SandboxHostUnsafe,
        SandboxStartFailed,
        SandboxProblem,
        SandboxBusy,
        SandboxNotFound,
        SandboxBadRequest,
        SandboxForbidden,
    )
}


def error_from_json(data: Any) -> SandboxError:
    if not isinstance(data, dict):
        return SandboxError(f"malformed error: {data!r}")
    details = {k: v for k, v in data.items() if k not in ("code", "message")}
    cls = ERRORS.get(str(data.get("code")), SandboxError)
    return cls(str(data.get("message", "")), **details)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a frame must be a JSON object")
    return message
