"""allauth adapter: who may sign up, following the instance's sign-up mode."""

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest

from accounts.services import invitation_from_session, signup_allowed


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return signup_allowed(invitation=invitation_from_session(request))
