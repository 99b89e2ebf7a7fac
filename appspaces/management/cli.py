"""What the app and appspace commands share: checks whose failure message an operator reads."""

from __future__ import annotations

import uuid

from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError


def supervisor_problem() -> str | None:
    """Why the sandbox supervisor cannot take work now (a sentence for the operator), or None."""
    client = SandboxClient(timeout=5)
    try:
        client.ping()
    except SandboxError as exc:
        return (
            "The sandbox supervisor is not running: start `python manage.py sandboxd` "
            f"(or `python manage.py serve`) and try again. ({exc})"
        )
    finally:
        client.close()
    return None


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False
