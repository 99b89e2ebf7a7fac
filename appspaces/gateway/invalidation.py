"""Invalidation of the gateway's caches in this process, and re-admission of its open
connections, when what they were built from changes: an appspace, its allowlist, its members,
a session, a user (deactivated or deleted), or a bulk change (`access_changed`). Receivers
connected once by `AppspacesConfig.ready()`; other processes see changes within the cache TTL.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from accounts.signals import access_changed
from appspaces.gateway.config import SessionInfo, configs, sessions
from appspaces.gateway.connections import revalidate_threadsafe
from appspaces.models import AllowlistEntry, Appspace, AppspaceSession, AppspaceUser
from appspaces.sharing.sessions import sessions_revoked


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

    transaction.on_commit(lambda: revalidate_threadsafe(appspace_pk=appspace_pk, user_pk=user_pk))


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


def connect() -> None:
    """Called once by AppspacesConfig.ready(): live in every process that changes these rows."""
    post_save.connect(_appspace_changed, sender=Appspace, dispatch_uid="gateway-appspace-save")
    post_delete.connect(_appspace_changed, sender=Appspace, dispatch_uid="gateway-appspace-delete")
    post_save.connect(
        _appspace_part_changed, sender=AllowlistEntry, dispatch_uid="gateway-allow-save"
    )
    post_delete.connect(
        _appspace_part_changed, sender=AllowlistEntry, dispatch_uid="gateway-allow-del"
    )
    post_save.connect(
        _appspace_user_changed, sender=AppspaceUser, dispatch_uid="gateway-member-save"
    )
    post_delete.connect(
        _appspace_user_changed, sender=AppspaceUser, dispatch_uid="gateway-member-del"
    )
    post_save.connect(_session_changed, sender=AppspaceSession, dispatch_uid="gateway-session-save")
    post_delete.connect(
        _session_changed, sender=AppspaceSession, dispatch_uid="gateway-session-del"
    )
    post_save.connect(
        _user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="gateway-user-save"
    )
    post_delete.connect(
        _user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="gateway-user-del"
    )
    sessions_revoked.connect(_sessions_revoked, dispatch_uid="gateway-sessions-revoked")
    access_changed.connect(_access_changed, dispatch_uid="gateway-access-changed")
