"""The kinds of notice, registered by the parts that detect their conditions.

A check returns every condition of its kind that is true now (a Condition per recipient and
subject); the evaluation opens a notice for each new one and resolves the open notices whose
condition is no longer returned. A check that cannot tell (the supervisor did not answer)
raises CheckUnavailable, and that kind's notices stay as they are until the next pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

OWNERS, ADMINS = "owners", "admins"


class CheckUnavailable(Exception):
    """The state a check reads could not be read: neither raise nor resolve this time."""


@dataclass(frozen=True)
class Condition:
    """One true condition: for one person (`recipient_id`), or for every admin (None)."""

    key: str  # the subject, e.g. "appspace:<public id>"; one open notice per recipient and key
    title: str  # one line, for the panel and the email's subject; never a secret
    detail: str = ""
    path: str = "/"  # the panel page to act from (a path on the panel host)
    recipient_id: int | None = None


@dataclass(frozen=True)
class Kind:
    name: str  # stored on the notice and the preference
    label: str  # the preference's label
    audience: str  # OWNERS (anyone may receive it) or ADMINS (staff only)
    check: Callable[[], Iterable[Condition]]


_KINDS: dict[str, Kind] = {}


def register(name: str, label: str, audience: str = OWNERS):
    """Decorator for a check: `@register("backup_failed", "A backup failed or is overdue")`."""
    if audience not in (OWNERS, ADMINS):
        raise ValueError(f"audience must be {OWNERS!r} or {ADMINS!r}")

    def wrap(check: Callable[[], Iterable[Condition]]):
        _KINDS[name] = Kind(name, label, audience, check)
        return check

    return wrap


def kinds() -> list[Kind]:
    return list(_KINDS.values())


def kind_label(name: str) -> str:
    kind = _KINDS.get(name)
    return kind.label if kind else name


def kinds_for(user) -> list[Kind]:
    """The kinds a person can receive: admins' kinds only for staff."""
    return [k for k in _KINDS.values() if k.audience == OWNERS or user.is_staff]
