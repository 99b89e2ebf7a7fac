"""Signals other features hook into."""

from django.dispatch import Signal

# Sent with sender=Invitation, invitation=<Invitation>, user=<User> when a new account was
# created from an invitation. Receivers run inside the sign-up transaction: raising aborts
# the sign-up (nothing half-written stays), and work for Celery belongs in on_commit.
invitation_accepted = Signal()

# Sent with sender=User, user_pks=<iterable of pks> after accounts lost access without a model
# save (bulk deactivation): the gateway ends their open appspace connections.
access_changed = Signal()
