"""Who an email address belongs to: only a *verified* address identifies a person.

Anyone can type any address into their account (allauth's "add email"); until its owner
clicks the confirmation link mailed there, it proves nothing. So every lookup of a person by
address (adding an appspace user, refusing an invitation because the address already has an
account, attaching pending shares) goes through `user_for_address`, which matches verified
allauth EmailAddress rows only. An unverified claim never blocks the real owner either:
sign-up and "add email" ignore it (`address_conflict`), and when the owner confirms the
address, the other accounts' unverified claims on it are dropped (`unverified_claims_drop`).
"""

from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.account.signals import email_confirmed

from accounts.models import User


def address_normalise(email: str) -> str:
    """How addresses are stored and compared: stripped and lower-case (as allauth does)."""
    return (email or "").strip().lower()


def verified_addresses(email: str):
    """The verified EmailAddress rows for `email` (at most one: allauth's unique constraint)."""
    return EmailAddress.objects.filter(email__iexact=address_normalise(email), verified=True)


def user_for_address(email: str) -> User | None:
    """The account that proved it owns `email`, or None. Unverified claims never match."""
    address = verified_addresses(email).select_related("user").first()
    return address.user if address is not None else None


def address_conflict(email: str, *, user: User | None = None) -> bool:
    """Whether `email` cannot be taken by `user` (or a new account): another account has
    proven it, or holds it as its login (the users table keeps that unique)."""
    email = address_normalise(email)
    owner = user_for_address(email)
    if owner is not None and (user is None or owner.pk != user.pk):
        return True
    logins = User.objects.filter(email__iexact=email)
    if user is not None:
        logins = logins.exclude(pk=user.pk)
    return logins.exists()


def unverified_claims_drop(*, email: str, owner: User) -> int:
    """Delete other accounts' unverified, non-primary rows for an address `owner` just proved."""
    deleted, _ = (
        EmailAddress.objects.filter(email__iexact=address_normalise(email), verified=False)
        .exclude(user=owner)
        .exclude(primary=True)
        .delete()
    )
    return deleted


def _on_email_confirmed(sender, request, email_address: EmailAddress, **kwargs) -> None:
    unverified_claims_drop(email=email_address.email, owner=email_address.user)


email_confirmed.connect(_on_email_confirmed, dispatch_uid="accounts.unverified-claims-drop")
