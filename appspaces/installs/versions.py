"""An app's versions: semver order, "is there a newer one", and deleting versions and apps.

Deleting is refused while an appspace uses the version (or the app): its data was migrated
to that version's schema and its sandbox runs that code. Files go once the rows are gone.
"""

from __future__ import annotations

from collections.abc import Iterable

import semver
from django.db import transaction
from django.utils import timezone

from appspaces.installs.staging import job_staging_dir
from appspaces.models import App, Appspace, AppVersion, Job
from packages.extraction import remove_tree

# Keys are compared as strings (in Python and in the database), so every part is a run of
# digits or a plain ASCII word; PostgreSQL collations ignore punctuation, so there is none.
_NUMBER_WIDTH = 10


class VersionInUse(Exception):
    """A version (or app) an appspace still runs; str() is a sentence for the user."""


def parse_version(value: str | semver.Version) -> semver.Version:
    return value if isinstance(value, semver.Version) else semver.Version.parse(value)


def version_sort_key(value: str | semver.Version) -> str:
    """A string that sorts like semver precedence for ordinary versions: numbers zero-padded,
    releases after their pre-releases. Exotic pre-release tags may sort approximately in SQL;
    code that must be exact compares `semver.Version`s."""
    v = parse_version(value)
    key = "".join(f"{part:0{_NUMBER_WIDTH}d}" for part in (v.major, v.minor, v.patch))
    if not v.prerelease:
        return key + "z"
    tags = []
    for tag in v.prerelease.split("."):
        tags.append(f"0{int(tag):0{_NUMBER_WIDTH}d}" if tag.isdigit() else f"a{tag}")
    return (key + "a" + "x".join(tags))[:128]


def versions_newest_first(versions: Iterable[AppVersion]) -> list[AppVersion]:
    return sorted(versions, key=lambda v: parse_version(v.version), reverse=True)


def app_newest_version(app: App) -> AppVersion | None:
    ordered = versions_newest_first(app.versions.all())
    return ordered[0] if ordered else None


def app_update_available(app: App, versions: Iterable[AppVersion] | None = None) -> str:
    """The listing's newest version if it is newer than every installed one, else ""."""
    if not app.listing_url or not app.listing_latest_version:
        return ""
    try:
        latest = parse_version(app.listing_latest_version)
    except ValueError:
        return ""
    installed = [parse_version(v.version) for v in (versions or app.versions.all())]
    if installed and max(installed) >= latest:
        return ""
    return str(latest)


def app_version_delete(*, version: AppVersion) -> None:
    """Delete one installed version and its files; VersionInUse while an appspace uses it."""
    with transaction.atomic():
        version = AppVersion.objects.select_for_update().select_related("app").get(pk=version.pk)
        _refuse_if_used(Appspace.objects.filter(app_version=version), f"Version {version.version}")
        path = version.path
        version.delete()
        transaction.on_commit(lambda: remove_tree(path))


def app_delete(*, app: App) -> None:
    """Delete an app, all its versions and files; VersionInUse while any appspace uses it."""
    with transaction.atomic():
        app = App.objects.select_for_update().get(pk=app.pk)
        _refuse_if_used(Appspace.objects.filter(app=app), f"The app {app.name!r}")
        # Installs running for it stop at their next step and clean up after themselves; the
        # packages of those no worker holds (queued, or waiting for confirmation) go here.
        installs = Job.objects.filter(app=app, kind=Job.Kind.INSTALL).exclude(
            state__in=Job.FINISHED
        )
        idle = list(installs.exclude(state=Job.State.RUNNING))
        installs.update(
            state=Job.State.CANCELLED,
            finished=timezone.now(),
            message="Cancelled: the app was deleted.",
        )
        paths = [app.path, *(job_staging_dir(job) for job in idle)]
        app.delete()
        transaction.on_commit(lambda: [remove_tree(path) for path in paths])


def _refuse_if_used(appspaces, what: str) -> None:
    names = list(appspaces.values_list("subdomain", flat=True)[:5])
    if names:
        raise VersionInUse(
            f"{what} cannot be deleted: "
            f"it is used by the appspace{'s' if len(names) > 1 else ''} {', '.join(names)}. "
            "Move or delete those appspaces first."
        )
