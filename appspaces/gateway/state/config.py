"""What the gateway knows about each appspace and each appspace session, cached per process.

Loaded from the database off the event loop (LoadingCache), re-read at least every
DS_GATEWAY_CACHE_TTL seconds, and dropped at once when this process changes an appspace, its
users, its allowlist or a session (signal receivers below; `transaction.on_commit` drops them
again once the change is visible to the loader, then has the open connections it concerns
re-admitted: connections.py). Changes made by other processes (a Celery task, a shell) are
seen within DS_GATEWAY_CACHE_TTL seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from appspaces.gateway.csp import REPORTING_ENDPOINTS, appspace_csp
from appspaces.gateway.headers import Header, Identity, platform_response_headers
from appspaces.gateway.state.cache import LoadingCache
from appspaces.lifecycle.quarantine import name_was_used
from appspaces.models import AllowlistEntry, Appspace, AppspaceSession, AppVersion
from appspaces.sandboxes import appspace_spec
from packages.routes import RouteError, RouteTable
from sandbox.spec import SandboxSpec

log = logging.getLogger(__name__)

_ACTIVE = Appspace.Status.ACTIVE  # read once: an enum lookup through the model on each request


@dataclass(frozen=True, slots=True)
class Member:
    """Someone who may enter: the owner (every permission) or an appspace user."""

    user_pk: int
    identity: Identity
    headers: tuple[Header, ...]  # the identity headers, encoded once


@dataclass(frozen=True, slots=True)
class AppspaceConfig:
    pk: int
    public_id: str
    subdomain: str
    status: str
    status_reason: str
    owner_pk: int
    routes: RouteTable | None  # None when the stored routes are invalid (never served)
    csp: str
    platform_headers: list[Header]
    spec: SandboxSpec
    files_dir: str
    version_tag: str  # part of static ETags: the same path in another version is another file
    members: dict[int, Member] = field(default_factory=dict)
    name_reused: bool = False  # another appspace held the name before (reused_names.py)

    @property
    def active(self) -> bool:
        return self.status == _ACTIVE


@dataclass(frozen=True, slots=True)
class SessionInfo:
    user_pk: int
    appspace_pk: int
    expires: float  # a Unix time


# Routes never change after install, so each version's table is compiled once per process.
_route_tables: OrderedDict[int, RouteTable | None] = OrderedDict()
_route_tables_lock = threading.Lock()  # loaders run in several threads


def _route_table(version: AppVersion) -> RouteTable | None:
    with _route_tables_lock:
        if version.pk in _route_tables:
            return _route_tables[version.pk]
    keys = [p.get("key") for p in version.permissions if isinstance(p, dict)]
    try:
        table: RouteTable | None = RouteTable.from_routes(version.routes, permission_keys=keys)
    except RouteError as exc:
        # The app wrote these (app-init runs its code): refuse to serve rather than guess.
        log.error("app version %s has invalid routes: %s", version.public_id, exc)
        table = None
    with _route_tables_lock:
        _route_tables[version.pk] = table
        while len(_route_tables) > 256:
            _route_tables.popitem(last=False)
    return table


def load_config(subdomain: str) -> AppspaceConfig | None:
    """Blocking: run through the cache (a thread), never on the event loop."""
    appspace = (
        Appspace.objects.select_related("owner", "app_version__app")
        .filter(subdomain=subdomain)
        .first()
    )
    if appspace is None:
        return None
    version = appspace.app_version
    browser = AllowlistEntry.objects.filter(
        appspace=appspace, kind=AllowlistEntry.Kind.BROWSER
    ).values_list("value", flat=True)
    csp = appspace_csp(browser, report_to=settings.DS_HTTPS)
    permission_keys = tuple(
        p["key"]
        for p in version.permissions
        if isinstance(p, dict) and isinstance(p.get("key"), str)
    )
    members: dict[int, Member] = {}
    owner = appspace.owner
    if owner.is_active:
        members[owner.pk] = _member(owner.pk, str(owner.public_id), owner.name, permission_keys)
    for member in appspace.users.select_related("user").filter(user__is_active=True):
        if member.user_id != owner.pk:
            granted = tuple(p for p in member.permissions if isinstance(p, str))
            members[member.user_id] = _member(
                member.user_id, str(member.user.public_id), member.display_name, granted
            )
    return AppspaceConfig(
        pk=appspace.pk,
        public_id=str(appspace.public_id),
        subdomain=appspace.subdomain,
        status=appspace.status,
        status_reason=appspace.status_reason,
        owner_pk=owner.pk,
        routes=_route_table(version),
        csp=csp,
        platform_headers=platform_response_headers(
            csp=csp, reporting=REPORTING_ENDPOINTS if settings.DS_HTTPS else ""
        ),
        spec=appspace_spec(appspace),
        files_dir=str(version.files_dir),
        version_tag=hashlib.sha256(str(version.public_id).encode()).hexdigest()[:10],
        members=members,
        name_reused=name_was_used(appspace.subdomain),
    )


def _member(user_pk: int, user_id: str, name: str, permissions: tuple[str, ...]) -> Member:
    identity = Identity(user_id=user_id, display_name=name, permissions=permissions)
    return Member(user_pk, identity, identity.headers())


def load_session(key_hash: str) -> SessionInfo | None:
    row = (
        AppspaceSession.objects.filter(
            key_hash=key_hash,
            revoked__isnull=True,
            expires__gt=timezone.now(),
            user__is_active=True,
        )
        .values_list("user_id", "appspace_id", "expires")
        .first()
    )
    if row is None:
        return None
    user_pk, appspace_pk, expires = row
    return SessionInfo(user_pk, appspace_pk, _timestamp(expires))


def _timestamp(value: datetime) -> float:
    return value.timestamp()


def _ttl() -> float:
    return settings.DS_GATEWAY_CACHE_TTL


configs: LoadingCache[str, AppspaceConfig | None] = LoadingCache(
    "appspace config", load_config, ttl=_ttl
)
sessions: LoadingCache[str, SessionInfo | None] = LoadingCache(
    "appspace session", load_session, ttl=_ttl, max_entries=50_000
)
