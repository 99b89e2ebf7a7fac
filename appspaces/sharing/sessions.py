"""Appspace logins: one-time tokens from the panel, the sessions they become, and revocation.

The panel cannot set a cookie for an appspace's host, so "open" issues a one-time token bound
to the user and the appspace (about a minute, single use), redirects the browser to the
appspace, and the gateway redeems it for a server-side session and a host-only cookie. Only
the sha256 of tokens and session keys is stored: a leaked table logs nobody in.

Sessions are revoked on panel logout and when the user is removed from the appspace (both
wired below), and by `appspace_sessions_revoke(*, appspace, user)`, which removal code calls.
Every revocation tells this process's gateway caches at once (`sessions_revoked`).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_delete
from django.dispatch import Signal
from django.utils import timezone

from accounts.models import secret_hash
from appspaces.models import Appspace, AppspaceLoginToken, AppspaceSession, AppspaceUser

# Sent after sessions were revoked; kwargs appspace_pk and user_pk (None means "all").
sessions_revoked = Signal()

MAX_TOKEN_LENGTH = 128
MAX_NEXT_LENGTH = 2000
LOGIN_PATH = "/.dropserver/login"


# --- Who may enter ------------------------------------------------------------------------


def user_may_enter(user, appspace: Appspace) -> bool:
    """The owner and the appspace's users, if their account is active."""
    if not user.is_active:
        return False
    if appspace.owner_id == user.pk:
        return True
    return AppspaceUser.objects.filter(appspace=appspace, user=user).exists()


def appspaces_user_may_enter(user):
    """Appspaces `user` owns or is a user of (a queryset)."""
    return Appspace.objects.filter(Q(owner=user) | Q(users__user=user)).distinct()


# --- Login tokens ---------------------------------------------------------------------------


def safe_next_path(value: str | None) -> str:
    """`value` if it is a path on the same origin, else "/" (never another host)."""
    if not value or len(value) > MAX_NEXT_LENGTH or not value.startswith("/"):
        return "/"
    if value.startswith(("//", "/\\")) or any(c in value for c in "\\\r\n\t\x00"):
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "/"
    return value


def login_token_issue(*, user, appspace: Appspace) -> str:
    """A one-time token carrying `user`'s login to `appspace`; store only its hash."""
    token = secrets.token_urlsafe(32)
    AppspaceLoginToken.objects.create(
        token_hash=secret_hash(token),
        user=user,
        appspace=appspace,
        expires=timezone.now() + timedelta(seconds=settings.DS_GATEWAY_LOGIN_TOKEN_SECONDS),
    )
    return token


def appspace_login_url(*, appspace: Appspace, token: str, next_path: str) -> str:
    query = urlencode({"token": token, "next": safe_next_path(next_path)})
    return f"{settings.DS_SCHEME}://{appspace.domain}{settings.DS_PORT_SUFFIX}{LOGIN_PATH}?{query}"


def login_token_holder(*, token: str, appspace_pk: int) -> str | None:
    """The name a still-usable token would log in as, without spending it, or None.

    For the confirmation page shown when a login link arrives from another site: the visitor
    sees whose account they would enter before anything happens.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    login = (
        AppspaceLoginToken.objects.select_related("user", "appspace")
        .filter(
            token_hash=secret_hash(token),
            appspace_id=appspace_pk,
            used__isnull=True,
            expires__gt=timezone.now(),
        )
        .first()
    )
    if login is None or not user_may_enter(login.user, login.appspace):
        return None
    membership = AppspaceUser.objects.filter(appspace=login.appspace, user=login.user).first()
    if membership is not None:
        return membership.display_name
    return login.user.display_name or login.user.email


def login_token_redeem(*, token: str, appspace_pk: int) -> str | None:
    """Claim the token (a conditional UPDATE, so it works once) and start a session.

    Returns the new session key, or None when the token is unknown, used, expired, for
    another appspace, or its user may no longer enter.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    token_hash = secret_hash(token)
    now = timezone.now()
    with transaction.atomic():
        claimed = AppspaceLoginToken.objects.filter(
            token_hash=token_hash, appspace_id=appspace_pk, used__isnull=True, expires__gt=now
        ).update(used=now)
        if claimed != 1:
            return None
        login = AppspaceLoginToken.objects.select_related("user", "appspace").get(
            token_hash=token_hash
        )
        # The stored hash was found by equality in the database; compare once more in
        # constant time so a collation quirk can never match a different token.
        if not hmac.compare_digest(login.token_hash, token_hash):
            return None
        if not user_may_enter(login.user, login.appspace):
            return None
        return appspace_session_create(user=login.user, appspace=login.appspace)


# --- Sessions -------------------------------------------------------------------------------


def appspace_session_create(*, user, appspace: Appspace) -> str:
    key = secrets.token_urlsafe(32)
    AppspaceSession.objects.create(
        key_hash=secret_hash(key),
        user=user,
        appspace=appspace,
        expires=timezone.now() + timedelta(days=settings.DS_GATEWAY_SESSION_DAYS),
    )
    return key


def session_key_hash(key: str) -> str:
    return secret_hash(key)


def appspace_session_revoke(*, key: str) -> bool:
    """Log one browser out of one appspace (its logout button)."""
    if not key or len(key) > MAX_TOKEN_LENGTH:
        return False
    sessions = AppspaceSession.objects.filter(key_hash=secret_hash(key), revoked__isnull=True)
    found = list(sessions.values_list("appspace_id", "user_id")[:1])
    if not found or not sessions.update(revoked=timezone.now()):
        return False
    appspace_pk, user_pk = found[0]
    sessions_revoked.send(sender=AppspaceSession, appspace_pk=appspace_pk, user_pk=user_pk)
    return True


def appspace_sessions_revoke(*, appspace: Appspace, user) -> int:
    """Log `user` out of `appspace` everywhere, at once; call it when removing the user."""
    count = AppspaceSession.objects.filter(
        appspace=appspace, user=user, revoked__isnull=True
    ).update(revoked=timezone.now())
    sessions_revoked.send(sender=AppspaceSession, appspace_pk=appspace.pk, user_pk=user.pk)
    return count


def user_appspace_sessions_revoke(*, user) -> int:
    """Log `user` out of every appspace (panel logout)."""
    count = AppspaceSession.objects.filter(user=user, revoked__isnull=True).update(
        revoked=timezone.now()
    )
    sessions_revoked.send(sender=AppspaceSession, appspace_pk=None, user_pk=user.pk)
    return count


def appspace_logins_cleanup(*, older_than: timedelta = timedelta(days=1)) -> tuple[int, int]:
    """Delete spent tokens and dead sessions (for a periodic task); returns the counts."""
    cutoff = timezone.now() - older_than
    tokens, _ = AppspaceLoginToken.objects.filter(expires__lt=cutoff).delete()
    sessions, _ = AppspaceSession.objects.filter(
        Q(expires__lt=cutoff) | Q(revoked__lt=cutoff)
    ).delete()
    return tokens, sessions


# --- Wiring ---------------------------------------------------------------------------------


def _on_panel_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        user_appspace_sessions_revoke(user=user)


def _on_member_removed(sender, instance: AppspaceUser, **kwargs) -> None:
    # Whoever removes a user (a view, the admin, a shell), their sessions end with it.
    AppspaceSession.objects.filter(
        appspace_id=instance.appspace_id, user_id=instance.user_id, revoked__isnull=True
    ).update(revoked=timezone.now())
    sessions_revoked.send(
        sender=AppspaceSession, appspace_pk=instance.appspace_id, user_pk=instance.user_id
    )


user_logged_out.connect(_on_panel_logout, dispatch_uid="appspace-sessions-panel-logout")
post_delete.connect(_on_member_removed, sender=AppspaceUser, dispatch_uid="appspace-member-gone")
