"""Template helpers for the account pages."""

from django import template

from accounts.models import Invitation
from accounts.services import invitation_from_session, signup_mode_get

register = template.Library()


@register.simple_tag
def signup_mode() -> str:
    """The instance's sign-up mode: "closed", "invite" or "open"."""
    return str(signup_mode_get())


@register.simple_tag(takes_context=True)
def session_invitation(context) -> Invitation | None:
    """The invitation this visitor opened, if any (whatever its state now)."""
    return invitation_from_session(context.get("request"))
