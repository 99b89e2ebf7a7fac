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
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from accounts.signals import access_changed
from appspaces.gateway.cache import LoadingCache
from appspaces.gateway.csp import REPORTING_ENDPOINTS, appspace_csp
from appspaces.gateway.headers import Header, Identity, platform_response_headers
from appspaces.lifecycle.quarantine import name_was_used
from appspaces.models import AllowlistEntry, Appspace, AppspaceSession, AppspaceUser, AppVersion
from appspaces.sandboxes import appspace_spec
from appspaces.sharing.sessions import sessions_revoked
from packages.routes import RouteError, RouteTable
from sandbox.spec import SandboxSpec

log = logging.getLogger(__name__)


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
        return self.status == Appspace.Status.ACTIVE


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


# --- Invalidation in this process -------------------------------------------------------------


def _now_and_on_commit(action) -> None:
    action()
    transaction.on_commit(action)  # runs at once outside a transaction


def forget_appspace(*, pk: int | None = None, subdomain: str | None = None) -> None:
    def drop() -> None:
        if subdomain is not None:
            configs.invalidate(subdomain)
        if pk is not None:
            configs.invalidate_where(lambda key, value: value is not None and value.pk == pk)

    _now_and_on_commit(drop)
    if pk is not None:
        _revalidate_on_commit(appspace_pk=pk)


def _revalidate_on_commit(*, appspace_pk: int | None = None, user_pk: int | None = None) -> None:
    """Once the change is visible, re-admit this process's open connections it may concern
    (connections.py); the caches were dropped just before, so they see the new facts."""

    def revalidate() -> None:
        from appspaces.gateway.connections import revalidate_threadsafe

        revalidate_threadsafe(appspace_pk=appspace_pk, user_pk=user_pk)

    transaction.on_commit(revalidate)


def forget_sessions(*, user_pk: int | None = None, appspace_pk: int | None = None) -> None:
    def matches(key: str, value: SessionInfo | None) -> bool:
        return (
            value is not None
            and (user_pk is None or value.user_pk == user_pk)
            and (appspace_pk is None or value.appspace_pk == appspace_pk)
        )

    _now_and_on_commit(lambda: sessions.invalidate_where(matches))
    _revalidate_on_commit(appspace_pk=appspace_pk, user_pk=user_pk)


def _appspace_changed(sender, instance: Appspace, **kwargs) -> None:
    forget_appspace(pk=instance.pk, subdomain=instance.subdomain)


def _appspace_part_changed(sender, instance, **kwargs) -> None:
    forget_appspace(pk=instance.appspace_id)


def _appspace_user_changed(sender, instance: AppspaceUser, **kwargs) -> None:
    forget_appspace(pk=instance.appspace_id)
    forget_sessions(user_pk=instance.user_id, appspace_pk=instance.appspace_id)


def _session_changed(sender, instance: AppspaceSession, **kwargs) -> None:
    key_hash = instance.key_hash
    _now_and_on_commit(lambda: sessions.invalidate(key_hash))


def _sessions_revoked(sender, *, appspace_pk: int | None, user_pk: int | None, **kwargs) -> None:
    forget_sessions(user_pk=user_pk, appspace_pk=appspace_pk)


def _user_changed(sender, instance, **kwargs) -> None:
    # A deactivated (or deleted) user loses every appspace at once. Saves happen on every
    # login (last_login), so active users are left alone.
    if not instance.is_active or kwargs.get("signal") is post_delete:
        _user_lost_access(instance.pk)


def _user_lost_access(user_pk: int) -> None:
    configs.clear()
    forget_sessions(user_pk=user_pk)  # and re-admits their open connections


def _access_changed(sender, *, user_pks=(), **kwargs) -> None:
    # Bulk changes (users_deactivate) save no model, so no post_save reaches us.
    for user_pk in user_pks:
        _user_lost_access(user_pk)


post_save.connect(_appspace_changed, sender=Appspace, dispatch_uid="gateway-appspace-save")
post_delete.connect(_appspace_changed, sender=Appspace, dispatch_uid="gateway-appspace-delete")
post_save.connect(_appspace_part_changed, sender=AllowlistEntry, dispatch_uid="gateway-allow-save")
post_delete.connect(_appspace_part_changed, sender=AllowlistEntry, dispatch_uid="gateway-allow-del")
post_save.connect(_appspace_user_changed, sender=AppspaceUser, dispatch_uid="gateway-member-save")
post_delete.connect(_appspace_user_changed, sender=AppspaceUser, dispatch_uid="gateway-member-del")
post_save.connect(_session_changed, sender=AppspaceSession, dispatch_uid="gateway-session-save")
post_delete.connect(_session_changed, sender=AppspaceSession, dispatch_uid="gateway-session-del")
post_save.connect(_user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="gateway-user-save")
post_delete.connect(_user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="gateway-user-del")
sessions_revoked.connect(_sessions_revoked, dispatch_uid="gateway-sessions-revoked")
access_changed.connect(_access_changed, dispatch_uid="gateway-access-changed")
