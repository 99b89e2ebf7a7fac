"""The panel's side of notices: the email preferences (an account settings page), dismissing
one, and `shown_for` for the pages that list them (the dashboard, an appspace's page).

Every lookup is scoped to the signed-in person: someone else's notice is a 404."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.notices.kinds import ADMINS, kind_label, kinds_for
from accounts.notices.models import Notice, NoticePreference


def shown_for(user, subject: str | None = None) -> list[dict]:
    """The person's open, undismissed notices, for a template; with `subject` (a key such as
    "appspace:<id>") only those whose key is it or starts with it and a colon."""
    rows = Notice.objects.shown().filter(recipient=user)
    if subject is not None:
        rows = rows.filter(Q(key=subject) | Q(key__startswith=subject + ":"))
    return [{"notice": n, "label": kind_label(n.kind)} for n in rows]


class PreferencesForm(forms.Form):
    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        off = set(
            NoticePreference.objects.filter(user=user, email=False).values_list("kind", flat=True)
        )
        for kind in kinds_for(user):
            self.fields[kind.name] = forms.BooleanField(
                label=kind.label + (" (admins)" if kind.audience == ADMINS else ""),
                required=False,
                initial=kind.name not in off,
            )

    def save(self, user) -> None:
        for name, wanted in self.cleaned_data.items():
            NoticePreference.objects.update_or_create(
                user=user, kind=name, defaults={"email": bool(wanted)}
            )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def notice_settings(request: HttpRequest) -> HttpResponse:
    form = PreferencesForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        form.save(request.user)
        messages.success(request, "Your notice preferences were saved.")
        return redirect("notice_settings")
    return render(
        request,
        "notices/settings.html",
        {
            "form": form,
            "notices": shown_for(request.user),
            "remind_hours": f"{settings.DS_NOTICE_REMIND_HOURS:g}",
        },
    )


@require_POST
@login_required
def notice_dismiss(request: HttpRequest, notice_id) -> HttpResponse:
    """Hide an open notice of yours and stop its reminders; if its condition clears and comes
    back, that is a new notice."""
    notice = get_object_or_404(Notice.objects.open(), public_id=notice_id, recipient=request.user)
    Notice.objects.filter(pk=notice.pk, dismissed_at__isnull=True).update(
        dismissed_at=timezone.now()
    )
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = "dashboard"
    return redirect(next_url)
