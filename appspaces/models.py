"""Apps, their installed versions, appspaces and who may use them, and the Job rows of long work."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


def data_dir() -> Path:
    # Read at call time: tests (and operators' scripts) may point it elsewhere.
    return Path(settings.DS_DATA_DIR)


class App(models.Model):
    """An app a user installed; its code lives in its versions."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="apps"
    )
    name = models.CharField(max_length=200)
    # Set when installed from a Dropserver-style listing, so newer versions can be offered.
    listing_url = models.URLField(max_length=2000, blank=True)
    listing_latest_version = models.CharField(max_length=64, blank=True)
    listing_checked_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "created"]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> Path:
        return data_dir() / "apps" / str(self.public_id)


class AppVersion(models.Model):
    """One installed version: read-only files, routes and migrations read in the sandbox."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=64)
    # Ordering key for semver (major, minor, patch, prerelease flag) kept as a sortable string.
    version_key = models.CharField(max_length=128, db_index=True)
    schema = models.PositiveIntegerField(default=0)
    manifest = models.JSONField(default=dict)
    routes = models.JSONField(default=list)
    migrations = models.JSONField(default=list)
    entrypoint = models.CharField(max_length=255)
    changelog = models.TextField(blank=True)
    size_bytes = models.BigIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["app", "-version_key"]
        constraints = [
            models.UniqueConstraint(fields=["app", "version"], name="unique_app_version"),
        ]

    def __str__(self) -> str:
        return f"{self.app.name} {self.version}"

    @property
    def path(self) -> Path:
        return self.app.path / self.version

    @property
    def files_dir(self) -> Path:
        return self.path / "files"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def permissions(self) -> list[dict]:
        return list(self.manifest.get("permissions") or [])

    @property
    def short_description(self) -> str:
        return str(self.manifest.get("short-description") or "")

    @property
    def release_date(self) -> str:
        return str(self.manifest.get("release-date") or "")

    @property
    def suggested_network(self) -> dict:
        network = self.manifest.get("network") or {}
        return {
            "server": list(network.get("server") or []),
            "browser": list(network.get("browser") or []),
        }


class Appspace(models.Model):
    """One running instance of an app version, with its own data, domain and sandbox uid."""

    class Status(models.TextChoices):
        CREATING = "creating", "being created"
        ACTIVE = "active", "active"
        PAUSED = "paused", "paused"
        MIGRATING = "migrating", "migrating"
        PROBLEM = "problem", "problem"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="appspaces"
    )
    app = models.ForeignKey(App, on_delete=models.PROTECT, related_name="appspaces")
    app_version = models.ForeignKey(AppVersion, on_delete=models.PROTECT, related_name="appspaces")
    subdomain = models.CharField(max_length=63, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    status_reason = models.CharField(max_length=500, blank=True)
    data_schema = models.PositiveIntegerField(default=0)
    memory_mb = models.PositiveIntegerField()
    cpu_percent = models.PositiveIntegerField()
    disk_mb = models.PositiveIntegerField()
    # Disk bandwidth in MB/s (appspaces/sandboxes.py); empty: DS_APPSPACE_DEFAULT_IO_*_MBPS.
    io_read_mbps = models.PositiveIntegerField(null=True, blank=True)
    io_write_mbps = models.PositiveIntegerField(null=True, blank=True)
    # Disk operations per second; empty: DS_APPSPACE_DEFAULT_IO_*_IOPS.
    io_read_iops = models.PositiveIntegerField(null=True, blank=True)
    io_write_iops = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    # Bumped on every change the gateway caches (status, routes, allowlist, users).
    config_version = models.PositiveIntegerField(default=1)
    # Disk use of the data dir, measured by the usage task; over disk_mb the sandbox gets its
    # data read-only until the owner frees space (nothing is deleted for them).
    disk_bytes = models.BigIntegerField(default=0)
    disk_measured = models.DateTimeField(null=True, blank=True)
    data_readonly = models.BooleanField(default=False)
    # The supervisor's raw counters at the last usage sample (they restart with the sandbox),
    # so the usage task can add only what happened since.
    usage_counters = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["subdomain"]
        constraints = [
            models.CheckConstraint(condition=~Q(subdomain=""), name="appspace_subdomain_not_empty"),
        ]

    def __str__(self) -> str:
        return self.subdomain

    @property
    def domain(self) -> str:
        return f"{self.subdomain}.{settings.DS_DOMAIN}"

    @property
    def url(self) -> str:
        return f"{settings.DS_SCHEME}://{self.domain}{settings.DS_PORT_SUFFIX}/"

    @property
    def sandbox_uid(self) -> int:
        """A uid of its own, so no two appspaces can touch each other's files or processes."""
        return settings.DS_SANDBOX_UID_BASE + self.pk

    @property
    def path(self) -> Path:
        return data_dir() / "appspaces" / str(self.public_id)

    @property
    def data_path(self) -> Path:
        return self.path / "data"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta"

    def touch_config(self) -> None:
        """Tell gateway caches in every process that this appspace changed. Call it on every
        change to what its sandbox spec holds (allowlist, limits, version, data_readonly): the
        version is the spec's generation, which lets the supervisor ignore stale specs."""
        Appspace.objects.filter(pk=self.pk).update(config_version=F("config_version") + 1)
        self.config_version = (
            Appspace.objects.filter(pk=self.pk).values_list("config_version", flat=True).get()
        )


class AppspaceUsageDay(models.Model):
    """What an appspace cost on one day (UTC): the figures its owner sees, summed by the usage
    task from the supervisor's cgroup counters and the disk measure."""

    appspace = models.ForeignKey(Appspace, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    cpu_seconds = models.FloatField(default=0)
    running_seconds = models.FloatField(default=0)
    memory_peak_bytes = models.BigIntegerField(default=0)
    disk_bytes_max = models.BigIntegerField(default=0)
    io_read_bytes = models.BigIntegerField(default=0)
    io_write_bytes = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)  # answered by the gateway (usage/requests.py)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["appspace", "day"], name="unique_usage_day"),
        ]

    def __str__(self) -> str:
        return f"{self.appspace} on {self.day}"


class AllowlistEntry(models.Model):
    """One host the appspace's server code may reach, or one origin its pages may load from."""

    class Kind(models.TextChoices):
        SERVER = "server", "server-side host"
        BROWSER = "browser", "browser-side origin"

    appspace = models.ForeignKey(Appspace, on_delete=models.CASCADE, related_name="allowlist")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    value = models.CharField(max_length=300)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "value"]
        constraints = [
            models.UniqueConstraint(fields=["appspace", "kind", "value"], name="unique_allowlist"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.value}"


class AppspaceUser(models.Model):
    """A friend the owner let into an appspace, with the app-declared permissions granted."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    appspace = models.ForeignKey(Appspace, on_delete=models.CASCADE, related_name="users")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="appspace_memberships"
    )
    display_name = models.CharField(max_length=100)
    permissions = models.JSONField(default=list)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["display_name"]
        constraints = [
            models.UniqueConstraint(fields=["appspace", "user"], name="unique_appspace_user"),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} in {self.appspace}"


class BlockedConnection(models.Model):
    """An outbound connection the sandbox refused, shown to the owner to approve or dismiss."""

    appspace = models.ForeignKey(Appspace, on_delete=models.CASCADE, related_name="blocked")
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(null=True, blank=True)
    count = models.PositiveIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    dismissed = models.BooleanField(default=False)
    # The supervisor counts per host:port since it started (its `first` time stamps that life):
    # what it reported last, so each pull adds only the attempts made since.
    source_first = models.FloatField(null=True, blank=True)
    source_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(fields=["appspace", "host", "port"], name="unique_blocked"),
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


class NetworkRequest(models.Model):
    """Network access the owner has not decided on yet, other than refused server connections:
    an origin the browser blocked under the appspace's CSP (reported to /.dropserver/csp-report),
    or a host or origin the app asked for with requestNetwork() and its (untrusted) reason."""

    class Kind(models.TextChoices):
        SERVER = "server", "server"
        BROWSER = "browser", "browser"

    class Source(models.TextChoices):
        REPORT = "report", "blocked in the browser"
        APP = "app", "asked for by the app"

    appspace = models.ForeignKey(
        Appspace, on_delete=models.CASCADE, related_name="network_requests"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    value = models.CharField(max_length=300)  # canonical allowlist entry text
    source = models.CharField(max_length=10, choices=Source.choices)
    directives = models.CharField(max_length=200, blank=True)  # CSP directives that blocked it
    reason = models.CharField(max_length=500, blank=True)  # the app's words, shown escaped
    count = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    dismissed = models.BooleanField(default=False)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["appspace", "kind", "value"], name="unique_network_request"
            ),
        ]

    def __str__(self) -> str:
        return self.value


class Job(models.Model):
    """Long work (install, create, migrate, backup, restore): the one source of truth for its
    state and progress. A task claims it with a conditional UPDATE, so running it twice is
    harmless; the panel polls it."""

    class Kind(models.TextChoices):
        INSTALL = "install", "install app"
        CREATE = "create", "create appspace"
        MIGRATE = "migrate", "change version"
        BACKUP = "backup", "back up"
        RESTORE = "restore", "restore"
        OFFSITE = "offsite", "copy off-site"

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        NEEDS_CONFIRMATION = "confirm", "waiting for your confirmation"
        SUCCEEDED = "succeeded", "done"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    FINISHED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    app = models.ForeignKey(App, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    app_version = models.ForeignKey(
        AppVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    appspace = models.ForeignKey(
        Appspace, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    step = models.CharField(max_length=100, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(auto_now=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.get_state_display()})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED


class FreedSubdomain(models.Model):
    """A name an appspace held until it was deleted (or renamed): quarantined for
    DS_SUBDOMAIN_QUARANTINE_DAYS (see appspaces/lifecycle/quarantine.py), and remembered after
    that, so the gateway clears browsers' leftovers of the old tenant for the next one
    (appspaces/gateway/reused_names.py). One row per name; a name freed again is updated."""

    name = models.CharField(max_length=63, unique=True)
    freed_at = models.DateTimeField(default=timezone.now)
    # The public_id of the user who held it (no foreign key: deleting a user frees the names
    # of their appspaces in the same transaction).
    previous_owner = models.UUIDField(null=True, blank=True)
    # Set when an administrator releases the name before its quarantine ends.
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-freed_at"]

    def __str__(self) -> str:
        return self.name


class AppspaceLoginToken(models.Model):
    """A one-time token carrying a panel login over to an appspace's own domain."""

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    appspace = models.ForeignKey(Appspace, on_delete=models.CASCADE, related_name="+")
    expires = models.DateTimeField()
    used = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"login token for {self.user} to {self.appspace}"


class AppspaceSession(models.Model):
    """The server side of an appspace's login cookie; revoking it logs the user out at once."""

    key_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="appspace_sessions"
    )
    appspace = models.ForeignKey(Appspace, on_delete=models.CASCADE, related_name="sessions")
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["appspace", "user"])]

    def __str__(self) -> str:
        return f"session of {self.user} in {self.appspace}"
