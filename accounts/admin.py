"""Django admin for instance admins: users, invitations and the sign-up mode."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.forms import UserChangeForm as DjangoUserChangeForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from accounts.models import Allowance, InstanceSettings, Invitation, InvitationState, User
from accounts.notices import admin as notices_admin  # noqa: F401 (registers NoticeAdmin)
from accounts.services import (
    LastAdminError,
    invitation_email_check,
    invitation_issue,
    invitation_send,
    invitations_revoke,
    user_change_allowed,
    users_deactivate,
    users_make_admin,
    users_remove_admin,
)

# The link of a just-created invitation, shown once on its page (only a hash is stored).
NEW_INVITATION_SESSION_KEY = "ds_admin_new_invitation"


# --- Users ----------------------------------------------------------------------------------


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()


class UserChangeForm(DjangoUserChangeForm):
    class Meta:
        model = User
        fields = "__all__"

    def clean(self) -> dict:
        cleaned = super().clean()
        try:
            user_change_allowed(
                user=self.instance,
                is_active=cleaned.get("is_active", self.instance.is_active),
                is_superuser=cleaned.get("is_superuser", self.instance.is_superuser),
            )
        except LastAdminError as e:
            raise ValidationError(e.messages) from e
        return cleaned


class AllowanceInline(admin.StackedInline):
    """The person's allowance (appspaces/allowances.py): empty fields keep the DS_ALLOWANCE_*
    defaults."""

    model = Allowance
    can_delete = True
    extra = 1
    max_num = 1
    verbose_name_plural = "Allowance (empty: the instance's default; 0: no limit)"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    inlines = [AllowanceInline]

    def get_inlines(self, request: HttpRequest, obj):
        return self.inlines if obj is not None else []  # the add form stays email + password

    fieldsets = (
        (None, {"fields": ("email", "password", "display_name", "public_id")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )
    readonly_fields = ("public_id", "last_login", "date_joined")
    list_display = ("email", "display_name", "is_staff", "is_superuser", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "display_name")
    ordering = ("email",)
    actions = ["deactivate", "make_admin", "remove_admin"]

    def get_actions(self, request: HttpRequest) -> dict:
        # Deleting in bulk could remove the last admin; deactivate instead.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        if obj is not None and (obj.pk == request.user.pk or _is_last_admin(obj)):
            return False
        return super().has_delete_permission(request, obj)

    @admin.action(description="Deactivate selected users", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset) -> None:
        self._apply(request, users_deactivate, queryset, "Deactivated {n} user(s).")

    @admin.action(description="Make selected users admins", permissions=["change"])
    def make_admin(self, request: HttpRequest, queryset) -> None:
        self._apply(request, users_make_admin, queryset, "{n} user(s) are now admins.")

    @admin.action(description="Remove admin rights from selected users", permissions=["change"])
    def remove_admin(self, request: HttpRequest, queryset) -> None:
        self._apply(request, users_remove_admin, queryset, "Removed admin rights from {n} user(s).")

    def _apply(self, request: HttpRequest, service, queryset, done: str) -> None:
        try:
            n = service(users=list(queryset))
        except LastAdminError as e:
            self.message_user(request, e.messages[0], messages.ERROR)
            return
        self.message_user(request, done.format(n=n), messages.SUCCESS)


def _is_last_admin(user: User) -> bool:
    if not (user.is_superuser and user.is_active):
        return False
    return not User.objects.filter(is_superuser=True, is_active=True).exclude(pk=user.pk).exists()


# --- Invitations ----------------------------------------------------------------------------


class InvitationStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return InvitationState.choices

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case InvitationState.PENDING:
                return queryset.pending(now)
            case InvitationState.ACCEPTED:
                return queryset.filter(accepted_at__isnull=False)
            case InvitationState.REVOKED:
                return queryset.filter(accepted_at__isnull=True, revoked_at__isnull=False)
            case InvitationState.EXPIRED:
                return queryset.filter(
                    expires_at__lte=now, accepted_at__isnull=True, revoked_at__isnull=True
                )
        return queryset


class InvitationForm(forms.ModelForm):
    class Meta:
        model = Invitation
        fields = ("email",)

    def clean_email(self) -> str:
        return invitation_email_check(self.cleaned_data["email"])


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    form = InvitationForm
    change_form_template = "accounts/admin/invitation_change_form.html"
    list_display = ("email", "state_label", "inviter", "created", "expires_at", "accepted_by")
    list_filter = (InvitationStateFilter,)
    search_fields = ("email",)
    list_select_related = ("inviter", "accepted_by")
    actions = ["revoke"]
    view_fields = (
        "email",
        "state_label",
        "inviter",
        "created",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
        "purpose",
    )
    readonly_fields = ("state_label",)

    def get_fields(self, request: HttpRequest, obj: Invitation | None = None):
        return self.view_fields if obj else ("email",)

    @admin.display(description="state")
    def state_label(self, obj: Invitation) -> str:
        return obj.state.label

    def save_model(self, request: HttpRequest, obj: Invitation, form, change: bool) -> None:
        if change:
            return  # nothing on an issued invitation is editable
        url = invitation_issue(invitation=obj, inviter=request.user)
        request.session[NEW_INVITATION_SESSION_KEY] = {"pk": obj.pk, "url": url}
        if invitation_send(invitation=obj, url=url):
            self.message_user(request, f"The invitation was emailed to {obj.email}.")
        else:
            self.message_user(
                request,
                "The invitation could not be emailed; send the link below yourself.",
                messages.WARNING,
            )

    def response_add(self, request: HttpRequest, obj: Invitation, post_url_continue=None):
        # Always land on the invitation's page: it shows the link, once.
        return HttpResponseRedirect(reverse("admin:accounts_invitation_change", args=[obj.pk]))

    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        new = request.session.get(NEW_INVITATION_SESSION_KEY)
        if new and str(new.get("pk")) == str(object_id):
            del request.session[NEW_INVITATION_SESSION_KEY]
            extra_context["invitation_link"] = new["url"]
        return super().change_view(request, object_id, form_url, extra_context)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # An issued invitation is viewed (its page shows the new link), never edited;
        # the model-level permission still allows the revoke action.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Revoke selected invitations", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset) -> None:
        n = invitations_revoke(invitations=queryset)
        self.message_user(request, f"Revoked {n} pending invitation(s).", messages.SUCCESS)


# --- Sign-up mode ---------------------------------------------------------------------------


@admin.register(InstanceSettings)
class InstanceSettingsAdmin(admin.ModelAdmin):
    fields = ("signup_mode", "updated")
    readonly_fields = ("updated",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        # A single row: go straight to it.
        obj = InstanceSettings.load()
        url = reverse("admin:accounts_instancesettings_change", args=[obj.pk])
        return HttpResponseRedirect(url)
