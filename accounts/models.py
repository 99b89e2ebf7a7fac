"""Users of the instance (email is the login), its sign-up mode, invitations and setup keys."""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone

# The notices' models are this app's (accounts/notices/): Django finds them through here.
from accounts.notices.models import Notice, NoticePreference  # noqa: F401


def secret_hash(secret: str) -> str:
    """What we store instead of a bearer secret: a leaked table gives no usable links.

    The secrets are 256 random bits, so a plain SHA-256 is enough (no salt or stretching).
    """
    return hashlib.sha256(secret.encode()).hexdigest()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra) -> User:
        if not email:
            raise ValueError("Users need an email address.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra) -> User:
        """Used by `createsuperuser` and the setup link: the operator typed this address
        themselves, so it counts as verified (allauth would otherwise demand a confirmation
        mail before the first admin can log in, and a fresh instance may have no mail set up).
        """
        from allauth.account.models import EmailAddress

        extra.update(is_staff=True, is_superuser=True)
        user = self._create_user(email, password, **extra)
        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
        return user


class User(AbstractUser):
    username = None
    first_name = None
    last_name = None
    email = models.EmailField("email address", unique=True)
    display_name = models.CharField(max_length=100, blank=True)
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    def __str__(self) -> str:
        return self.email

    @property
    def name(self) -> str:
        return self.display_name or self.email.split("@", 1)[0]


class SignupMode(models.TextChoices):
    CLOSED = "closed", "Closed: nobody can sign up, not even with an invitation"
    INVITE = "invite", "By invitation: only people holding a valid invitation"
    OPEN = "open", "Open: anyone can sign up (email verification still required)"


class InstanceSettings(models.Model):
    """The instance-wide switches an admin changes at run time (a single row, pk=1)."""

    SINGLETON_PK = 1

    signup_mode = models.CharField(
        max_length=10, choices=SignupMode.choices, default=SignupMode.INVITE
    )
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "instance settings"
        verbose_name_plural = "instance settings"

    def __str__(self) -> str:
        return "Instance settings"

    def save(self, *args, **kwargs) -> None:
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> InstanceSettings:
        obj, _ = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return obj


class InvitationState(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class InvitationQuerySet(models.QuerySet["Invitation"]):
    def pending(self, now=None) -> InvitationQuerySet:
        now = now or timezone.now()
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now)


class Invitation(models.Model):
    """A single-use, expiring link that lets one email address sign up.

    Only a hash of the link's token is stored. `purpose` is free for the feature that sent
    the invitation (e.g. `{"appspace": "<uuid>"}`); receivers of the `invitation_accepted`
    signal read it to attach the new user to whatever they were invited to.
    """

    email = models.EmailField()
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    inviter = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="invitations_sent",
    )
    purpose = models.JSONField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="accepted_invitations",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["email"])]

    def __str__(self) -> str:
        return f"Invitation for {self.email}"

    @property
    def state(self) -> InvitationState:
        if self.accepted_at:
            return InvitationState.ACCEPTED
        if self.revoked_at:
            return InvitationState.REVOKED
        if self.expires_at <= timezone.now():
            return InvitationState.EXPIRED
        return InvitationState.PENDING

    @property
    def is_pending(self) -> bool:
        return self.state == InvitationState.PENDING


class SetupKey(models.Model):
    """A one-time key that lets the operator of an instance without admins create the first one."""

    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Setup key of {self.created:%Y-%m-%d %H:%M}"


class Allowance(models.Model):
    """An admin's per-person override of the DS_ALLOWANCE_* defaults (appspaces/allowances.py
    enforces them). An empty field means the default; 0 means no limit."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="allowance"
    )
    appspaces = models.PositiveIntegerField(
        null=True, blank=True, help_text="Appspaces they may own. Empty: the default; 0: no limit."
    )
    apps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Apps they may install. Empty: the default; 0: no limit."
    )
    disk_mb = models.PositiveIntegerField(
        "disk (MB)",
        null=True,
        blank=True,
        help_text="Sum of their appspaces' disk quotas. Empty: the default; 0: no limit.",
    )
    memory_mb = models.PositiveIntegerField(
        "memory (MB)",
        null=True,
        blank=True,
        help_text="Sum of their appspaces' memory limits. Empty: the default; 0: no limit.",
    )

    def __str__(self) -> str:
        return f"Allowance of {self.user}"
