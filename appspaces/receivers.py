"""What appspaces does when something happens elsewhere: signal receivers, connected once in
`AppspacesConfig.ready()` so that they are live in every process (web, worker, commands).

- the first admin account is created: queue the example apps kept by `install_examples`
  (installs/examples.py);
- an invited friend signs up: they join the appspaces they were invited to, with the
  permissions the owner chose (sharing/users.py), inside the sign-up transaction;
- an appspace is deleted, however that happens (the panel, a user deleted with their
  appspaces, a shell): its name is freed and quarantined (lifecycle/quarantine.py), inside
  the deleting transaction; a creation that failed or was undone served nothing and frees it
  at once;
- someone proves an address (allauth's confirmation link, e.g. one they added to an existing
  account): the appspaces shared with that address are theirs now. Never on an unverified
  address: anyone can type anyone's address into their account.
"""

from __future__ import annotations

from allauth.account.signals import email_confirmed
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from accounts.signals import invitation_accepted
from appspaces.installs.examples import examples_pending_queue
from appspaces.lifecycle.quarantine import subdomain_free
from appspaces.models import Appspace
from appspaces.sharing.users import appspace_shares_attach, invitation_attach


def examples_for_first_admin(sender, instance, created: bool, **kwargs) -> None:
    if not (created and instance.is_superuser and instance.is_active):
        return
    transaction.on_commit(lambda: examples_pending_queue(owner=instance), robust=True)


def invited_user_attach(sender, invitation, user, **kwargs) -> None:
    invitation_attach(invitation=invitation, user=user)


def shares_attach_on_confirm(sender, request, email_address, **kwargs) -> None:
    with transaction.atomic():
        appspace_shares_attach(user=email_address.user, email=email_address.email)


def subdomain_freed(sender, instance: Appspace, **kwargs) -> None:
    if instance.status == Appspace.Status.CREATING:
        return  # a creation that failed or was undone: nothing was ever served under the name
    owner_id = (
        get_user_model().objects.filter(pk=instance.owner_id).values_list("public_id", flat=True)
    ).first()
    subdomain_free(name=instance.subdomain, owner_id=owner_id)


def connect() -> None:
    post_save.connect(
        examples_for_first_admin,
        sender=settings.AUTH_USER_MODEL,
        dispatch_uid="appspaces.examples_for_admin",
    )
    invitation_accepted.connect(invited_user_attach, dispatch_uid="appspaces.invited_users_attach")
    email_confirmed.connect(
        shares_attach_on_confirm, dispatch_uid="appspaces.shares_attach_on_confirm"
    )
    post_delete.connect(subdomain_freed, sender=Appspace, dispatch_uid="appspaces.subdomain_freed")
