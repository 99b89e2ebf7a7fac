"""allauth adapter: who may sign up (the instance's sign-up mode) — filled in by the accounts work."""

from allauth.account.adapter import DefaultAccountAdapter


class AccountAdapter(DefaultAccountAdapter):
    pass
