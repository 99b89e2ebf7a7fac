"""Account pages of the panel: invitation links, the first-admin setup page, the account page."""

from __future__ import annotations

from allauth.mfa.models import Authenticator
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods

from accounts.forms import DisplayNameForm, SetupForm
from accounts.models import SignupMode
from accounts.services import (
    SetupRefused,
    SetupState,
    invitation_for_token,
    invitation_remember,
    setup_admin_create,
    setup_key_state,
    signup_mode_get,
)

SETUP_REFUSAL_STATUS = {
    SetupState.UNKNOWN: 404,
    SetupState.USED: 410,
    SetupState.EXPIRED: 410,
    SetupState.DONE: 410,
}


@require_GET
@never_cache
def invitation_open(request: HttpRequest, token: str) -> HttpResponse:
    """The link in an invitation mail: remember it in the session, then on to sign-up."""
    if request.user.is_authenticated:
        return render(request, "accounts/invitation_signed_in.html")
    invitation = invitation_for_token(token)
    if invitation is None:
        return render(
            request, "accounts/invitation_unavailable.html", {"state": "unknown"}, status=404
        )
    if not invitation.is_pending:
        return render(
            request,
            "accounts/invitation_unavailable.html",
            {"state": invitation.state, "invitation": invitation},
            status=410,
        )
    if signup_mode_get() == SignupMode.CLOSED:
        return render(
            request, "accounts/invitation_unavailable.html", {"state": "closed"}, status=403
        )
    invitation_remember(request=request, invitation=invitation)
    return redirect("account_signup")


@sensitive_post_parameters("password1", "password2")
@require_http_methods(["GET", "POST"])
@never_cache
def setup(request: HttpRequest, key: str) -> HttpResponse:
    """Create the first admin with the one-time key `serve` printed."""
    state = setup_key_state(key)
    if state != SetupState.VALID:
        return _setup_refused(request, state)
    form = SetupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = setup_admin_create(
                key=key,
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
                display_name=form.cleaned_data["display_name"],
            )
        except SetupRefused as e:
            return _setup_refused(request, e.state)
        login(request, user, backend="allauth.account.auth_backends.AuthenticationBackend")
        messages.success(
            request,
            "Your admin account is ready. Consider turning on two-factor authentication now.",
        )
        return redirect("account_overview")
    return render(request, "accounts/setup.html", {"form": form})


def _setup_refused(request: HttpRequest, state: str) -> HttpResponse:
    return render(
        request,
        "accounts/setup_refused.html",
        {"state": state},
        status=SETUP_REFUSAL_STATUS.get(state, 404),
    )


@login_required
@require_http_methods(["GET", "POST"])
def account_overview(request: HttpRequest) -> HttpResponse:
    """Your account: display name, and links to email, password and two-factor settings."""
    form = DisplayNameForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Your display name was saved.")
        return redirect("account_overview")
    types = set(Authenticator.objects.filter(user=request.user).values_list("type", flat=True))
    return render(
        request,
        "accounts/overview.html",
        {
            "form": form,
            "totp_enabled": Authenticator.Type.TOTP in types,
            "recovery_codes_enabled": Authenticator.Type.RECOVERY_CODES in types,
        },
    )
