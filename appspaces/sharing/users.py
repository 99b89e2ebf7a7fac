"""Who may use an appspace besides its owner: adding friends by email (an account now, or an
invitation that attaches them when they sign up), their app-declared permissions, renaming and
removing them (their appspace sessions end at once). A person is found by a verified address
only (accounts/addresses.py); shares to an address attach when someone proves it. After every
change the appspace's users are published again for `ctx.appspace.users()` (meta/users.json).

A pending invitation to an appspace is an accounts Invitation whose `purpose` is
`{"appspace": "<uuid>", "display_name": "...", "permissions": [...]}`.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from accounts.addresses import address_normalise, user_for_address
from accounts.models import Invitation
from accounts.services import invitation_create, invitations_revoke
from appspaces.models import Appspace, AppspaceUser
from appspaces.sandboxes import publish_users
from appspaces.sharing.sessions import appspace_sessions_revoke

log = logging.getLogger(__name__)

MAX_DISPLAY_NAME = 100


class AppspaceUserError(ValueError):
    """A change to an appspace's users that cannot be made; str() says why, for the owner."""


def declared_permissions(appspace: Appspace) -> list[str]:
    return [p["key"] for p in appspace.app_version.permissions if isinstance(p, dict)]


def permissions_check(appspace: Appspace, permissions) -> list[str]:
    """Only keys the appspace's app version declares, in its order."""
    declared = declared_permissions(appspace)
    unknown = sorted(set(permissions) - set(declared))
    if unknown:
        raise AppspaceUserError(
            f"The app does not declare the permission{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}."
        )
    return [key for key in declared if key in set(permissions)]


def _display_name(name: str, fallback: str) -> str:
    name = " ".join((name or "").split())[:MAX_DISPLAY_NAME]
    return name or fallback[:MAX_DISPLAY_NAME]


def _publish(appspace: Appspace) -> None:
    def publish() -> None:
        try:
            publish_users(appspace)
        except OSError:
            log.exception("could not publish the users of %s", appspace)

    transaction.on_commit(publish, robust=True)


def appspace_invitations_pending(appspace: Appspace):
    return Invitation.objects.pending().filter(purpose__appspace=str(appspace.public_id))


def appspace_user_add(
    *,
    appspace: Appspace,
    email: str,
    display_name: str = "",
    permissions: list[str] | tuple[str, ...] = (),
    send_email: bool = True,
):
    """Let the person with `email` into the appspace. -> the AppspaceUser if they have an
    account here, else (Invitation, its link): they are attached when they sign up with it."""
    email = address_normalise(email)
    try:
        validate_email(email)
    except ValidationError:
        raise AppspaceUserError("Enter a valid email address.") from None
    permissions = permissions_check(appspace, permissions)
    # Only an account that proved the address gets the share; otherwise an invitation goes
    # to the address itself, and whoever can read that mail joins (appspace_shares_attach).
    user = user_for_address(email)
    with transaction.atomic():
        if user is not None:
            if user.pk == appspace.owner_id:
                raise AppspaceUserError("That is you: the owner can always use the appspace.")
            if AppspaceUser.objects.filter(appspace=appspace, user=user).exists():
                raise AppspaceUserError(f"{email} is already a user of this appspace.")
            member = AppspaceUser.objects.create(
                appspace=appspace,
                user=user,
                display_name=_display_name(display_name, user.name),
                permissions=permissions,
            )
            _publish(appspace)
            return member
        if appspace_invitations_pending(appspace).filter(email__iexact=email).exists():
            raise AppspaceUserError(f"{email} is already invited to this appspace.")
        purpose = {
            "appspace": str(appspace.public_id),
            "display_name": _display_name(display_name, email.split("@")[0]),
            "permissions": permissions,
        }
        try:
            return invitation_create(
                inviter=appspace.owner, email=email, purpose=purpose, send_email=send_email
            )
        except ValidationError as exc:
            raise AppspaceUserError(" ".join(exc.messages)) from None


def appspace_user_update(
    *, member: AppspaceUser, display_name: str, permissions: list[str] | tuple[str, ...]
) -> AppspaceUser:
    member.display_name = _display_name(display_name, member.user.name)
    member.permissions = permissions_check(member.appspace, permissions)
    member.save(update_fields=["display_name", "permissions"])  # the gateway hears of it
    _publish(member.appspace)
    return member


def appspace_user_remove(*, member: AppspaceUser) -> None:
    """They lose access at once: the row goes and every session of theirs there ends."""
    appspace, user = member.appspace, member.user
    with transaction.atomic():
        member.delete()
        appspace_sessions_revoke(appspace=appspace, user=user)
        _publish(appspace)


def appspace_invitation_revoke(*, appspace: Appspace, email: str) -> int:
    pending = list(appspace_invitations_pending(appspace).filter(email__iexact=email.strip()))
    return invitations_revoke(invitations=pending)


def invitation_attach(*, invitation, user) -> list[AppspaceUser]:
    """On sign-up from an invitation (its address is verified by the link): join every
    appspace the address was invited to."""
    return appspace_shares_attach(user=user, email=invitation.email, used=invitation)


def appspace_shares_attach(*, user, email: str, used=None) -> list[AppspaceUser]:
    """`user` just proved `email` (an invitation link, or allauth's confirmation): join every
    appspace pending invitations to that address are for, and spend them. Never call it for
    an unverified address: it hands the address's shares to whoever claims it."""
    now = timezone.now()
    email = address_normalise(email)
    pending = Invitation.objects.pending(now).filter(
        email__iexact=email, purpose__appspace__isnull=False
    )
    if used is not None:
        pending = pending.exclude(pk=used.pk)
    others = list(pending)
    joined = []
    for inv in [used, *others] if used is not None else others:
        purpose = inv.purpose if isinstance(inv.purpose, dict) else {}
        appspace = Appspace.objects.filter(public_id=_uuid(purpose.get("appspace"))).first()
        if appspace is None or appspace.owner_id == user.pk:
            continue
        keys = set(declared_permissions(appspace))
        granted = [k for k in purpose.get("permissions") or [] if k in keys]
        member, created = AppspaceUser.objects.get_or_create(
            appspace=appspace,
            user=user,
            defaults={
                "display_name": _display_name(str(purpose.get("display_name") or ""), user.name),
                "permissions": granted,
            },
        )
        if created:
            joined.append(member)
            _publish(appspace)
    if others:
        Invitation.objects.filter(pk__in=[i.pk for i in others]).update(
            accepted_at=now, accepted_by=user
        )
    return joined


def _uuid(value) -> str | None:
    import uuid

    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError):
        return None
