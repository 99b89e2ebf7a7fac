"""Panel forms of apps: install from an uploaded package or from a URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import forms

from appspaces.installs.staging import PACKAGE_FIELD, max_package_bytes, too_large_message


class InstallForm(forms.Form):
    """Exactly one source: a package file or the URL of a package or an app listing."""

    package = forms.FileField(
        label="Package file",
        required=False,
        help_text="A .tar.gz or .zip app package (see “package_app” in the app authors’ guide).",
        widget=forms.ClearableFileInput(attrs={"accept": ".tar.gz,.tgz,.zip"}),
    )
    url = forms.URLField(
        label="Or the URL of a package or an app listing",
        required=False,
        max_length=2000,
        assume_scheme="https",
        help_text="An app installed from a listing shows when a newer version is out.",
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/apps/notes.json"}),
    )

    def __init__(self, *args, upload_too_large: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.upload_too_large = upload_too_large
        assert PACKAGE_FIELD in self.fields

    @property
    def max_bytes(self) -> int:
        return max_package_bytes()

    def clean_url(self) -> str:
        url = (self.cleaned_data.get("url") or "").strip()
        if url and urlsplit(url).scheme.lower() not in ("http", "https"):
            raise forms.ValidationError("Only http:// and https:// URLs can be installed from.")
        return url

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.upload_too_large:
            self.add_error(PACKAGE_FIELD, too_large_message())
            return cleaned
        package, url = cleaned.get(PACKAGE_FIELD), cleaned.get("url")
        if package and url:
            raise forms.ValidationError("Choose a package file or a URL, not both.")
        if not package and not url and not self.errors:
            self.add_error(PACKAGE_FIELD, "Choose a package file, or give a URL below.")
        return cleaned
