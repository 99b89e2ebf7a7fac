"""Panel forms of backups: schedule and retention, and the typed confirmation of a restore."""

from __future__ import annotations

import hmac

from django import forms
from django.conf import settings

from backups.models import BackupPolicy


class PolicyForm(forms.ModelForm):
    class Meta:
        model = BackupPolicy
        fields = [
            "enabled",
            "interval_hours",
            "keep_daily",
            "keep_weekly",
            "keep_pre_migration_days",
        ]
        labels = {
            "enabled": "Back up automatically",
            "interval_hours": "Every (hours)",
            "keep_daily": "Keep daily backups (days)",
            "keep_weekly": "Keep weekly backups (weeks)",
            "keep_pre_migration_days": "Keep backups made before migrations (days)",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        bounds = {
            "interval_hours": (
                settings.DS_BACKUP_MIN_INTERVAL_HOURS,
                settings.DS_BACKUP_MAX_INTERVAL_HOURS,
            ),
            "keep_daily": (1, settings.DS_BACKUP_MAX_KEEP_DAILY),
            "keep_weekly": (0, settings.DS_BACKUP_MAX_KEEP_WEEKLY),
            "keep_pre_migration_days": (1, settings.DS_BACKUP_MAX_KEEP_PRE_MIGRATION_DAYS),
        }
        for name, (low, high) in bounds.items():
            field = self.fields[name]
            field.min_value, field.max_value = low, high
            field.widget.attrs.update(min=low, max=high)
            field.validators.append(_Between(low, high))
            field.help_text = f"Between {low} and {high} (set by the administrator)."


class _Between:
    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def __call__(self, value) -> None:
        if value is not None and not self.low <= value <= self.high:
            raise forms.ValidationError(f"Choose a value between {self.low} and {self.high}.")


class ConfirmRestoreForm(forms.Form):
    """The owner types the appspace's subdomain: a restore replaces all of its data."""

    confirm = forms.CharField(
        label="Type the appspace's name to confirm",
        max_length=63,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def __init__(self, *args, subdomain: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.subdomain = subdomain
        self.fields["confirm"].help_text = f"Type {subdomain} exactly."

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip()
        if not hmac.compare_digest(value.encode(), self.subdomain.encode()):
            raise forms.ValidationError(f"Type {self.subdomain} to confirm the restore.")
        return value


class UploadRestoreForm(ConfirmRestoreForm):
    archive = forms.FileField(
        label="Backup archive (.tar.zst)",
        help_text="A backup downloaded from Dropserver.",
    )

    def __init__(self, *args, upload_too_large: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.upload_too_large = upload_too_large

    def clean(self):
        if self.upload_too_large:
            raise forms.ValidationError(
                f"The archive is larger than {settings.DS_BACKUP_MAX_UPLOAD_MB} MB, the limit "
                "for uploads here."
            )
        return super().clean()
