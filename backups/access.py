"""The one way panel code reaches backups: through their appspace's owner, 404 otherwise."""

from __future__ import annotations

from uuid import UUID

from django.http import Http404

from appspaces.access import get_appspace_for_owner
from backups.models import Backup


def get_backup_for_owner(user, appspace_id: UUID | str, backup_id: UUID | str) -> Backup:
    """A READY backup of one of the user's appspaces (pending or failed ones are not listed)."""
    appspace = get_appspace_for_owner(user, appspace_id)
    try:
        return Backup.objects.select_related("appspace").get(
            public_id=backup_id, appspace=appspace, state=Backup.State.READY
        )
    except (Backup.DoesNotExist, ValueError):
        raise Http404("No such backup.") from None


def get_kept_backup_for_owner(user, backup_id: UUID | str) -> Backup:
    """A READY backup of a deleted appspace that `user` chose to keep."""
    try:
        return Backup.objects.get(
            public_id=backup_id, appspace__isnull=True, kept_owner=user, state=Backup.State.READY
        )
    except (Backup.DoesNotExist, ValueError):
        raise Http404("No such backup.") from None
