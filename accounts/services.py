"""Account workflows: the sign-up mode, invitations, the first-admin setup link, admin rights.

Public entry points for other features:
- `invitation_create(*, inviter, email, purpose=None)` -> (invitation, url), and the
  `accounts.signals.invitation_accepted` signal sent when it is used;
- `setup_link_issue()` -> the first-admin link, or None once an admin exists.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.addresses import address_conflict, address_normalise, unverified_claims_drop
from accounts.models import (
    InstanceSettings,
    Invitation,
    InvitationState,
    SetupKey,
    SignupMode,
    User,
    secret_hash,
)
from accounts.signals import access_changed, invitation_accepted

log = logging.getLogger(__name__)

# The session remembers which invitation the visitor opened, never the token itself.
INVITATION_SESSION_KEY = "ds_invitation_id"


class InvitationUnavailable(Exception):
    """The invitation can no longer be used (accepted, expired or revoked)."""

    def __init__(self, state: InvitationState) -> None:
        super().__init__(state)
        self.state = state


class LastAdminError(ValidationError):
    """The change would leave the instance without any active admin."""


class SetupState:
    VALID = "valid"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    DONE = "done"  # the instance already has an admin


class SetupRefused(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


# --- Sign-up mode ---------------------------------------------------------------------------


def signup_mode_get() -> SignupMode:
    return SignupMode(InstanceSettings.load().signup_mode)


def signup_mode_set(*, mode: SignupMode | str) -> None:
    instance = InstanceSettings.load()
    instance.signup_mode = SignupMode(mode)
    instance.save(update_fields=["signup_mode", "updated"])


def signup_allowed(*, invitation: Invitation | None) -> bool:
    """closed: nobody; invite: only with a pending invitation; open: anyone."""
    mode = signup_mode_get()
    if mode == SignupMode.OPEN:
        return True
    if mode == SignupMode.INVITE:
        return invitation is not None and invitation.is_pending
    return False


# --- Invitations ----------------------------------------------------------------------------


def invitation_url(token: str) -> str:
    return settings.DS_PANEL_URL + reverse("invitation_open", args=[token])


def invitation_email_check(email: str) -> str:
    """The normalised address, or ValidationError if it is malformed or already has an account
    (a verified address, or another account's login)."""
    email = address_normalise(email)
    validate_email(email)
    # Only a proven address (or another account's login) is taken: an unverified claim on
    # someone else's account must not keep the real owner from being invited.
    if address_conflict(email):
        raise ValidationError(f"{email} already has an account on this instance.", code="taken")
    return email


def invitation_issue(*, invitation: Invitation, inviter: User | None) -> str:
    """Give a new, unsaved invitation its token and expiry, save it, and return its link.

    The link is only known now: the database keeps a hash of its token.
    """
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    invitation.email = invitation.email.strip().lower()
    invitation.token_hash = secret_hash(token)
    invitation.inviter = inviter
    invitation.created = now
    invitation.expires_at = now + timedelta(days=settings.DS_INVITATION_DAYS)
    invitation.save()
    return invitation_url(token)


def invitation_create(
    *,
    inviter: User | None,
    email: str,
    purpose: dict | None = None,
    send_email: bool = True,
) -> tuple[Invitation, str]:
    """Invite `email` to sign up; the link is mailed once the transaction commits.

    Raises ValidationError for a malformed address or one that already has an account.
    """
    email = invitation_email_check(email)
    invitation = Invitation(email=email, purpose=purpose)
    url = invitation_issue(invitation=invitation, inviter=inviter)
    if send_email:
        transaction.on_commit(partial(invitation_send, invitation=invitation, url=url), robust=True)
    return invitation, url


def invitation_send(*, invitation: Invitation, url: str) -> bool:
    """Mail the link to the invited address; False (and a log line) if the mail failed."""
    context = {
        "invitation": invitation,
        "url": url,
        "inviter_name": invitation.inviter.name if invitation.inviter else "The admin",
        "panel_url": settings.DS_PANEL_URL,
    }
    subject = render_to_string("accounts/email/invitation_subject.txt", context).strip()
    body = render_to_string("accounts/email/invitation_message.txt", context)
    try:
        send_mail(subject, body, None, [invitation.email])
    except Exception:
        log.exception("Could not mail the invitation %s to %s", invitation.pk, invitation.email)
        return False
    return True


def invitation_for_token(token: str) -> Invitation | None:
    # Looked up by the token's hash: the table never holds a usable link.
    return Invitation.objects.filter(token_hash=secret_hash(token)).first()


def invitation_remember(*, request: HttpRequest, invitation: Invitation) -> None:
    request.session[INVITATION_SESSION_KEY] = invitation.pk


def invitation_from_session(request: HttpRequest | None) -> Invitation | None:
    if request is None or not hasattr(request, "session"):
        return None
    pk = request.session.get(INVITATION_SESSION_KEY)
    if not isinstance(pk, int):
        return None
    return Invitation.objects.filter(pk=pk).first()


def invitation_forget(*, request: HttpRequest) -> None:
    request.session.pop(INVITATION_SESSION_KEY, None)


def invitation_accept(
    *, invitation: Invitation, create_user: Callable[[], User | None]
) -> User | None:
    """Claim the invitation, create its user and finish, all in one transaction.

    The claim is a conditional UPDATE, so of two simultaneous sign-ups only one gets the
    row; the other raises InvitationUnavailable before creating anything. The invited
    address counts as verified: the link was mailed to it. `create_user` may return None
    (allauth declined to create the account), which rolls the claim back.
    """
    with transaction.atomic():
        now = timezone.now()
        claimed = Invitation.objects.pending(now).filter(pk=invitation.pk).update(accepted_at=now)
        if not claimed:
            current = Invitation.objects.filter(pk=invitation.pk).first()
            raise InvitationUnavailable(current.state if current else InvitationState.REVOKED)
        user = create_user()
        if user is None:
            transaction.set_rollback(True)
            return None
        invitation.accepted_at = now
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_by"])
        EmailAddress.objects.filter(user=user, email__iexact=invitation.email).update(verified=True)
        unverified_claims_drop(email=invitation.email, owner=user)
        invitation_accepted.send(sender=Invitation, invitation=invitation, user=user)
    return user


def invitations_revoke(*, invitations: Iterable[Invitation]) -> int:
    """Withdraw pending invitations; accepted ones stay as they are. Returns how many."""
    pks = [i.pk for i in invitations]
    return Invitation.objects.pending().filter(pk__in=pks).update(revoked_at=timezone.now())


# --- First admin ----------------------------------------------------------------------------


def setup_needed() -> bool:
    return not User.objects.filter(is_superuser=True, is_active=True).exists()


def setup_link_issue() -> str | None:
    """A fresh one-time link to create the first admin, or None if an active admin exists.

    Each call replaces the unused keys issued before, so only the latest printed link works.
    """
    if not setup_needed():
        return None
    key = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        SetupKey.objects.filter(used_at__isnull=True).delete()
        SetupKey.objects.create(
            key_hash=secret_hash(key),
            created=now,
            expires_at=now + timedelta(hours=settings.DS_SETUP_LINK_HOURS),
        )
    return settings.DS_PANEL_URL + reverse("setup", args=[key])


def setup_key_state(key: str) -> str:
    if not setup_needed():
        return SetupState.DONE
    setup_key = SetupKey.objects.filter(key_hash=secret_hash(key)).first()
    if setup_key is None:
        return SetupState.UNKNOWN
    if setup_key.used_at:
        return SetupState.USED
    if setup_key.expires_at <= timezone.now():
        return SetupState.EXPIRED
    return SetupState.VALID


def setup_admin_create(*, key: str, email: str, password: str, display_name: str = "") -> User:
    """Consume the setup key (conditional UPDATE: once only) and create the first admin."""
    with transaction.atomic():
        if not setup_needed():
            raise SetupRefused(SetupState.DONE)
        now = timezone.now()
        claimed = SetupKey.objects.filter(
            key_hash=secret_hash(key), used_at__isnull=True, expires_at__gt=now
        ).update(used_at=now)
        if not claimed:
            raise SetupRefused(setup_key_state(key))
        return User.objects.create_superuser(email, password, display_name=display_name)


# --- Admin rights ---------------------------------------------------------------------------


def _ensure_an_admin_remains(*, losing: set[int]) -> None:
    """Refuse a change that would take away the last active admin (rows locked meanwhile)."""
    admins = set(
        User.objects.select_for_update()
        .filter(is_superuser=True, is_active=True)
        .values_list("pk", flat=True)
    )
    if admins and not admins - losing:
        raise LastAdminError(
            "This would leave the instance without any active admin; "
            "make someone else an admin first.",
            code="last_admin",
        )


def users_deactivate(*, users: Iterable[User]) -> int:
    pks = {u.pk for u in users}
    with transaction.atomic():
        _ensure_an_admin_remains(losing=pks)
        count = User.objects.filter(pk__in=pks, is_active=True).update(is_active=False)
        access_changed.send(sender=User, user_pks=sorted(pks))
        return count


def users_make_admin(*, users: Iterable[User]) -> int:
    pks = {u.pk for u in users}
    return User.objects.filter(pk__in=pks, is_superuser=False).update(
        is_staff=True, is_superuser=True
    )


def users_remove_admin(*, users: Iterable[User]) -> int:
    pks = {u.pk for u in users}
    with transaction.atomic():
        _ensure_an_admin_remains(losing=pks)
        return User.objects.filter(pk__in=pks).update(is_staff=False, is_superuser=False)


def user_change_allowed(*, user: User, is_active: bool, is_superuser: bool) -> None:
    """Raise LastAdminError if saving `user` with these flags would leave no active admin."""
    if user.pk and not (is_active and is_superuser):
        with transaction.atomic():
            _ensure_an_admin_remains(losing={user.pk})
