"""Panel forms of appspaces: creating one, its limits, allowlist entries, its users, deleting
it. Each validates with the same rules as the services (subdomains, the allowlist validator,
the administrator's limits, the app's declared permissions), so errors show next to fields."""

from __future__ import annotations

from django import forms
from django.conf import settings

from appspaces.lifecycle.control import limit_bounds
from appspaces.lifecycle.subdomains import SubdomainError, subdomain_check_available
from appspaces.models import AllowlistEntry, Appspace
from appspaces.network.approvals import browser_origin_warnings, server_entry_warnings
from appspaces.sandboxes import parse_server_entry
from backups.format.archive import read_metadata
from backups.format.metadata import ArchiveError
from packages.allowlist import AllowlistError, parse_browser_origin

MAX_EXTRA_ENTRIES = 50
CONFIRM_RISKY_LABEL = "I understand; allow it anyway"


def _limit_field(name: str) -> forms.IntegerField:
    bounds = limit_bounds()[name]
    return forms.IntegerField(
        label=f"{bounds.label} ({bounds.unit})",
        min_value=bounds.minimum,
        max_value=bounds.maximum,
        initial=min(max(bounds.default, bounds.minimum), bounds.maximum),
        help_text=f"Between {bounds.minimum} and {bounds.maximum}.",
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )


class LimitsForm(forms.Form):
    memory_mb = forms.IntegerField()
    cpu_percent = forms.IntegerField()
    disk_mb = forms.IntegerField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("memory_mb", "cpu_percent", "disk_mb"):
            self.fields[name] = _limit_field(name)


IO_FIELDS = ("io_read_mbps", "io_write_mbps")


class AppspaceLimitsForm(LimitsForm):
    """The limits form on an appspace's page: also its disk bandwidth (empty: the default)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in IO_FIELDS:
            field = _limit_field(name)
            field.required, field.initial = False, None
            field.help_text += " Empty: the instance's default."
            self.fields[name] = field


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").replace(",", "\n").splitlines() if line.strip()]


class CreateAppspaceForm(LimitsForm):
    """Everything but the app version, which the first step chose."""

    subdomain = forms.CharField(
        label="Address",
        max_length=80,
        help_text="Letters, digits and hyphens. This is the appspace's own web address.",
        widget=forms.TextInput(
            attrs={"autocapitalize": "none", "autocorrect": "off", "spellcheck": "false"}
        ),
    )
    server_suggested = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple
    )
    browser_suggested = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple
    )
    server_extra = forms.CharField(
        label="More server-side hosts",
        required=False,
        help_text="One per line, e.g. api.example.com or api.example.com:443.",
        widget=forms.Textarea(attrs={"rows": 2, "autocapitalize": "none", "spellcheck": "false"}),
    )
    browser_extra = forms.CharField(
        label="More browser-side origins",
        required=False,
        help_text="One per line, e.g. https://tiles.example.com.",
        widget=forms.Textarea(attrs={"rows": 2, "autocapitalize": "none", "spellcheck": "false"}),
    )
    confirm_risky = forms.BooleanField(label=CONFIRM_RISKY_LABEL, required=False)
    archive = forms.FileField(
        label="Start from a backup file",
        required=False,
        help_text="Optional: a backup archive (.tar.zst) of an appspace of this app.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zst,.tar.zst"}),
    )
    kept_backup = forms.ChoiceField(label="Or a backup you kept", required=False)

    def __init__(self, *args, version, owner, kept_backups=(), archive_too_large=False, **kw):
        super().__init__(*args, **kw)
        self.version = version
        self.owner = owner
        self.archive_too_large = archive_too_large
        self.kept = {str(b.public_id): b for b in kept_backups}
        suggested = version.suggested_network
        for kind in ("server", "browser"):
            field = self.fields[f"{kind}_suggested"]
            parse = parse_server_entry if kind == "server" else parse_browser_origin
            valid = []
            for value in suggested[kind]:
                try:
                    valid.append(str(parse(value)))
                except AllowlistError:
                    continue
            field.choices = [(v, v) for v in valid]
            field.initial = valid
        self.fields["kept_backup"].choices = [("", "—")] + [
            (key, f"{b.kept_label}, {b.created:%Y-%m-%d %H:%M} ({b.app_version_label or '?'})")
            for key, b in self.kept.items()
        ]
        if not self.kept:
            del self.fields["kept_backup"]
        self.fields["subdomain"].widget.attrs["aria-describedby"] = "id_subdomain_suffix"
        self.domain_suffix = f".{settings.DS_DOMAIN}"

    def clean_subdomain(self) -> str:
        try:
            return subdomain_check_available(self.cleaned_data["subdomain"], owner=self.owner)
        except SubdomainError as exc:
            raise forms.ValidationError(str(exc)) from None

    def _extra(self, name: str, parse, warn) -> list[str]:
        values = _lines(self.cleaned_data.get(name, ""))
        if len(values) > MAX_EXTRA_ENTRIES:
            raise forms.ValidationError(f"At most {MAX_EXTRA_ENTRIES} entries.")
        out, errors = [], []
        for value in values:
            try:
                parsed = parse(value)
            except AllowlistError as exc:
                errors.append(str(exc))
                continue
            out.append(str(parsed))
            self.risks.extend(warn(parsed))
        if errors:
            raise forms.ValidationError(errors)
        return out

    def clean(self) -> dict:
        cleaned = super().clean()
        self.risks: list[str] = []
        try:
            cleaned["server_extra"] = self._extra(
                "server_extra", parse_server_entry, server_entry_warnings
            )
        except forms.ValidationError as exc:
            self.add_error("server_extra", exc)
        try:
            cleaned["browser_extra"] = self._extra(
                "browser_extra", parse_browser_origin, browser_origin_warnings
            )
        except forms.ValidationError as exc:
            self.add_error("browser_extra", exc)
        if self.risks and not cleaned.get("confirm_risky"):
            self.add_error(
                "confirm_risky",
                forms.ValidationError(
                    [*self.risks, f"Tick “{CONFIRM_RISKY_LABEL}” to add these entries."]
                ),
            )
        self._clean_import(cleaned)
        return cleaned

    @property
    def server_allowlist(self) -> list[str]:
        return [*self.cleaned_data["server_suggested"], *self.cleaned_data["server_extra"]]

    @property
    def browser_allowlist(self) -> list[str]:
        return [*self.cleaned_data["browser_suggested"], *self.cleaned_data["browser_extra"]]

    def _clean_import(self, cleaned: dict) -> None:
        if self.archive_too_large:
            self.add_error(
                "archive",
                f"The file is larger than {settings.DS_BACKUP_MAX_UPLOAD_MB} MB, the limit here.",
            )
            return
        upload = cleaned.get("archive")
        kept = self.kept.get(cleaned.get("kept_backup") or "")
        if upload and kept:
            self.add_error("archive", "Choose a backup file or a kept backup, not both.")
            return
        if upload is not None:
            path, field = upload.stored_path, "archive"
        elif kept is not None:
            path, field = kept.path, "kept_backup"
        else:
            return
        try:
            meta = read_metadata(path)
        except (ArchiveError, OSError) as exc:
            self.add_error(field, f"This is not a backup Dropserver can read: {exc}")
            return
        app, version = self.version.app, self.version
        if meta.app_name and meta.app_name != app.name:
            self.add_error(field, f"This is a backup of {meta.app_name}, not of {app.name}.")
        elif meta.data_schema > version.schema:
            self.add_error(
                field,
                f"This backup's data (schema {meta.data_schema}) is newer than version "
                f"{version.version} understands (schema {version.schema}); choose a newer "
                "version.",
            )
        elif meta.total_bytes > (cleaned.get("disk_mb") or 0) * 1024 * 1024:
            self.add_error(
                "disk_mb",
                f"The backup holds {meta.total_bytes // (1024 * 1024) + 1} MB of data: allow "
                "at least that much disk.",
            )
        self.import_meta = meta

    @property
    def kept_choice(self):
        return self.kept.get(self.cleaned_data.get("kept_backup") or "")


class AllowlistAddForm(forms.Form):
    kind = forms.ChoiceField(choices=AllowlistEntry.Kind.choices, widget=forms.HiddenInput)
    value = forms.CharField(max_length=300)
    confirm_risky = forms.BooleanField(label=CONFIRM_RISKY_LABEL, required=False)

    def __init__(self, *args, kind: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        kind = kind or self.data.get(self.add_prefix("kind")) or AllowlistEntry.Kind.SERVER
        self.fields["kind"].initial = kind
        if kind == AllowlistEntry.Kind.BROWSER:
            self.fields["value"].label = "Allow an origin"
            self.fields["value"].widget.attrs["placeholder"] = "https://tiles.example.com"
        else:
            self.fields["value"].label = "Allow a host"
            self.fields["value"].widget.attrs["placeholder"] = "api.example.com"
        self.fields["value"].widget.attrs.update(autocapitalize="none", spellcheck="false")


class AppspaceUserAddForm(forms.Form):
    email = forms.EmailField(label="Email address")
    display_name = forms.CharField(
        label="Name in the app",
        max_length=100,
        required=False,
        help_text="Optional; their account's name otherwise.",
    )
    permissions = forms.MultipleChoiceField(
        label="Permissions", required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, appspace: Appspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["permissions"].choices = permission_choices(appspace)
        if not self.fields["permissions"].choices:
            self.fields["permissions"].help_text = "This app declares no permissions."


class AppspaceUserEditForm(forms.Form):
    display_name = forms.CharField(label="Name in the app", max_length=100)
    permissions = forms.MultipleChoiceField(
        label="Permissions", required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, appspace: Appspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["permissions"].choices = permission_choices(appspace)


def permission_choices(appspace: Appspace) -> list[tuple[str, str]]:
    choices = []
    for p in appspace.app_version.permissions:
        if isinstance(p, dict) and p.get("key"):
            text = str(p.get("name") or p["key"])
            if p.get("description"):
                text += f" — {p['description']}"
            choices.append((p["key"], text))
    return choices


class DeleteAppspaceForm(forms.Form):
    confirm = forms.CharField(
        label="Type the appspace's name to confirm",
        max_length=80,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "autocapitalize": "none", "spellcheck": "false"}
        ),
    )
    backups = forms.ChoiceField(
        label="Its backups",
        choices=[
            ("keep", "Keep them: you can download them, or start a new appspace from one."),
            ("delete", "Delete them too."),
        ],
        initial="keep",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, appspace: Appspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.appspace = appspace
        self.fields["confirm"].help_text = f"Type {appspace.subdomain}."

    def clean_confirm(self) -> str:
        typed = self.cleaned_data["confirm"].strip().lower()
        if typed != self.appspace.subdomain:
            raise forms.ValidationError(f"Type {self.appspace.subdomain} exactly.")
        return typed
