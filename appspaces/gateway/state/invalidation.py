"""Invalidation of the gateway's caches, and re-admission of its open connections, when what
they were built from changes: an appspace, its allowlist, its members, a session, a user
(deactivated or deleted), or a bulk change (`access_changed`). Receivers connected once by
`AppspacesConfig.ready()`. The process that made the change applies it at once; the others
hear of it through the channel layer once it is committed (broadcast.py), and the cache TTL
stays the fallback if a message is lost.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from accounts.signals import access_changed
from appspaces.gateway.state import broadcast
from appspaces.gateway.state.config import SessionInfo, configs, sessions
from appspaces.gateway.state.connections import revalidate_threadsafe
from appspaces.models import AllowlistEntry, Appspace, AppspaceSession, AppspaceUser
from appspaces.sharing.sessions import sessions_revoked

# --- Events: what changed, applied here now, and everywhere once committed ------------------
# {"kind": "appspace", "pk": .., "subdomain": ..}   its config (also: allowlist, members)
# {"kind": "sessions", "user": .., "appspace": ..}  sessions of a user and/or an appspace
# {"kind": "session", "key_hash": ..}               one session
# {"kind": "user", "user": ..}                      a user lost every appspace (deactivated)


def _apply(event: dict) -> None:
    """Drop from this process's caches what `event` says may be stale."""
    kind = event.get("kind")
    if kind == "appspace":
        pk, subdomain = event.get("pk"), event.get("subdomain")
        if subdomain is not None:
            configs.invalidate(subdomain)
        if pk is not None:
            configs.invalidate_where(lambda key, value: value is not None and value.pk == pk)
    elif kind in ("sessions", "user"):
        user_pk, appspace_pk = event.get("user"), event.get("appspace")
        if kind == "user":
            configs.clear()

        def matches(key: str, value: SessionInfo | None) -> bool:
            return (
                value is not None
                and (user_pk is None or value.user_pk == user_pk)
                and (appspace_pk is None or value.appspace_pk == appspace_pk)
            )

        sessions.invalidate_where(matches)
    elif kind == "session":
        sessions.invalidate(event.get("key_hash"))


def _revalidate(event: dict) -> None:
    """Re-admit the open connections `event` may concern (connections.py), on fresh facts."""
    kind = event.get("kind")
    if kind == "appspace" and event.get("pk") is not None:
        revalidate_threadsafe(appspace_pk=event["pk"])
    elif kind in ("sessions", "user"):
        revalidate_threadsafe(appspace_pk=event.get("appspace"), user_pk=event.get("user"))


def changed(event: dict) -> None:
    """A change in this process: drop the cached facts now (readers in this transaction's
    wake stop using them) and again once committed, then re-admit open connections here and
    tell the other processes (broadcast.py)."""
    _apply(event)

    def committed() -> None:
        _apply(event)
        _revalidate(event)
        broadcast.publish(event)

    transaction.on_commit(committed)  # runs at once outside a transaction


def received(event: dict) -> None:
    """A change another process committed (broadcast.py)."""
    _apply(event)
    _revalidate(event)


def forget_appspace(*, pk: int | None = None, subdomain: str | None = None) -> None:
    changed({"kind": "appspace", "pk": pk, "subdomain": subdomain})


def forget_sessions(*, user_pk: int | None = None, appspace_pk: int | None = None) -> None:
    changed({"kind": "sessions", "user": user_pk, "appspace": appspace_pk})


# --- Receivers ----------------------------------------------------------------------------------


def _appspace_changed(sender, instance: Appspace, **kwargs) -> None:
    forget_appspace(pk=instance.pk, subdomain=instance.subdomain)


def _appspace_part_changed(sender, instance, **kwargs) -> None:
    forget_appspace(pk=instance.appspace_id)


def _appspace_user_changed(sender, instance: AppspaceUser, **kwargs) -> None:
    forget_appspace(pk=instance.appspace_id)
    forget_sessions(user_pk=instance.user_id, appspace_pk=instance.appspace_id)


def _session_changed(sender, instance: AppspaceSession, **kwargs) -> None:
    changed({"kind": "session", "key_hash": instance.key_hash})


def _sessions_revoked(sender, *, appspace_pk: int | None, user_pk: int | None, **kwargs) -> None:
    forget_sessions(user_pk=user_pk, appspace_pk=appspace_pk)


def _user_changed(sender, instance, **kwargs) -> None:
    # A deactivated (or deleted) user loses every appspace at once. Saves happen on every
    # login (last_login), so active users are left alone.
    if not instance.is_active or kwargs.get("signal") is post_delete:
        changed({"kind": "user", "user": instance.pk})


def _access_changed(sender, *, user_pks=(), **kwargs) -> None:
    # Bulk changes (users_deactivate) save no model, so no post_save reaches us.
    for user_pk in user_pks:
        changed({"kind": "user", "user": user_pk})


def connect() -> None:
    """Called once by AppspacesConfig.ready(): live in every process that changes these rows."""
    broadcast.set_handler(received)
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
