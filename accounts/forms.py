"""Forms of the account pages: invitation-aware sign-up, first-admin setup, display name."""

from __future__ import annotations

from allauth.account.adapter import get_adapter
from allauth.account.forms import SignupForm as AllauthSignupForm
from allauth.account.models import EmailAddress
from allauth.core import context
from django import forms
from django.contrib.auth import password_validation
from django.http import HttpRequest
from django.shortcuts import render

from accounts.addresses import address_conflict
from accounts.models import User
from accounts.services import (
    InvitationUnavailable,
    invitation_accept,
    invitation_forget,
    invitation_from_session,
)


class SignupForm(AllauthSignupForm):
    """allauth's sign-up form; with an invitation, locked to the invited address.

    Locking matters: the invited address is marked verified on acceptance (the link was
    mailed there), which must never extend to an address the visitor typed instead.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        invitation = invitation_from_session(context.request)
        self.invitation = invitation if invitation and invitation.is_pending else None
        if self.invitation:
            field = self.fields["email"]
            field.initial = self.invitation.email
            field.widget.attrs["readonly"] = True
            field.help_text = "Your invitation is for this address."

    def clean_email(self) -> str:
        value = super().clean_email()
        if self.invitation and value != self.invitation.email.lower():
            raise forms.ValidationError(
                f"This invitation is for {self.invitation.email}; sign up with that address."
            )
        return value

    def validate_unique_email(self, value: str) -> str:
        """allauth counts every account holding the address, verified or not; here only a
        proven address (or another account's login) does, so a claim someone typed into
        their own account cannot keep the address's owner from signing up."""
        if address_conflict(value):
            return super().validate_unique_email(value)  # allauth's enumeration handling
        self.account_already_exists = False
        return get_adapter().validate_unique_email(value)

    def save(self, request: HttpRequest) -> User:
        user = super().save(request)
        # allauth records no address that another account claims, even unverified, which
        # would leave this account without one (no confirmation mail, nothing to verify).
        if not EmailAddress.objects.filter(user=user).exists() and not address_conflict(
            user.email, user=user
        ):
            EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=False)
        return user

    def try_save(self, request: HttpRequest):
        if not self.invitation or self.account_already_exists:
            return super().try_save(request)
        holder: dict = {}

        def create_user() -> User | None:
            user, holder["response"] = super(SignupForm, self).try_save(request)
            return user

        try:
            user = invitation_accept(invitation=self.invitation, create_user=create_user)
        except InvitationUnavailable as e:
            invitation_forget(request=request)
            response = render(
                request,
                "accounts/invitation_unavailable.html",
                {"state": e.state, "invitation": self.invitation},
                status=410,
            )
            return None, response
        if user is not None:
            invitation_forget(request=request)
        return user, holder.get("response")


class SetupForm(forms.Form):
    """The first admin's account: email and a password checked by Django's validators."""

    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    display_name = forms.CharField(max_length=100, required=False)
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password (again)",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(
                "An account with this address exists already. Choose another address; "
                "you can make that account an admin later, in the admin pages."
            )
        return email

    def clean(self) -> dict:
        cleaned = super().clean()
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords differ.")
        elif password1:
            probe = User(
                email=cleaned.get("email", ""), display_name=cleaned.get("display_name", "")
            )
            try:
                password_validation.validate_password(password1, user=probe)
            except forms.ValidationError as e:
                self.add_error("password1", e)
        return cleaned


class DisplayNameForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["display_name"]
        help_texts = {"display_name": "How your friends see you in their appspaces."}
