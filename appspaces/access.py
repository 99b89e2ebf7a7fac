"""The one way panel code reaches a tenant's objects: scoped to their owner, 404 otherwise.

Views never query App, Appspace or Job unscoped; an outsider learns nothing, not even
whether the id exists.
"""

from __future__ import annotations

from uuid import UUID

from django.http import Http404

from appspaces.models import App, Appspace, AppspaceUser, AppVersion, Job


def get_app_for_owner(user, public_id: UUID | str) -> App:
    try:
        return App.objects.get(public_id=public_id, owner=user)
    except (App.DoesNotExist, ValueError):
        raise Http404("No such app.") from None


def get_app_version_for_owner(user, public_id: UUID | str) -> AppVersion:
    try:
        return AppVersion.objects.select_related("app").get(public_id=public_id, app__owner=user)
    except (AppVersion.DoesNotExist, ValueError):
        raise Http404("No such app version.") from None


def get_appspace_for_owner(user, public_id: UUID | str) -> Appspace:
    try:
        return Appspace.objects.select_related("app", "app_version").get(
            public_id=public_id, owner=user
        )
    except (Appspace.DoesNotExist, ValueError):
        raise Http404("No such appspace.") from None


def get_job_for_owner(user, public_id: UUID | str) -> Job:
    try:
        return Job.objects.get(public_id=public_id, owner=user)
    except (Job.DoesNotExist, ValueError):
        raise Http404("No such job.") from None


def get_appspace_user_for_owner(user, appspace_id: UUID | str, member_id: UUID | str):
    """A user of one of `user`'s appspaces (the owner manages them; members do not)."""
    appspace = get_appspace_for_owner(user, appspace_id)
    try:
        return AppspaceUser.objects.select_related("user", "appspace__app_version").get(
            public_id=member_id, appspace=appspace
        )
    except (AppspaceUser.DoesNotExist, ValueError):
        raise Http404("No such user of this appspace.") from None
