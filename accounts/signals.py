"""Signals other features hook into."""

from django.dispatch import Signal

# Sent with sender=Invitation, invitation=<Invitation>, user=<User> when a new account was
# created from an invitation. Receivers run inside the sign-up transaction: raising aborts
# the sign-up (nothing half-written stays), and work for Celery belongs in on_commit.
invitation_accepted = Signal()
