"""Panel views of an appspace's users: add by email (now, or by invitation), change their
name and permissions, remove them (their sessions end at once), withdraw an invitation."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from appspaces.access import get_appspace_for_owner, get_appspace_user_for_owner
from appspaces.models import AppspaceUser
from appspaces.sharing.users import (
    AppspaceUserError,
    appspace_invitation_revoke,
    appspace_user_add,
    appspace_user_remove,
    appspace_user_update,
)
from appspaces.views.appspace_forms import AppspaceUserAddForm, AppspaceUserEditForm
from appspaces.views.appspaces import render_appspace


def _back(appspace) -> HttpResponse:
    return redirect("appspace_detail", appspace_id=appspace.public_id)


@require_POST
@login_required
def appspace_user_add_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    form = AppspaceUserAddForm(request.POST, appspace=appspace)
    if form.is_valid():
        try:
            added = appspace_user_add(appspace=appspace, **form.cleaned_data)
        except AppspaceUserError as exc:
            form.add_error("email", str(exc))
        else:
            if isinstance(added, AppspaceUser):
                messages.success(request, f"{added.display_name} can now use {appspace.subdomain}.")
            else:
                invitation, _url = added
                messages.success(
                    request,
                    f"{invitation.email} has no account here yet: an invitation to sign up was "
                    f"sent. They join {appspace.subdomain} when they accept it.",
                )
            return _back(appspace)
    return render_appspace(request, appspace, user_form=form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def appspace_user_edit_view(request: HttpRequest, appspace_id, member_id) -> HttpResponse:
    member = get_appspace_user_for_owner(request.user, appspace_id, member_id)
    appspace = member.appspace
    initial = {"display_name": member.display_name, "permissions": member.permissions}
    form = AppspaceUserEditForm(request.POST or None, appspace=appspace, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            appspace_user_update(member=member, **form.cleaned_data)
        except AppspaceUserError as exc:
            form.add_error("permissions", str(exc))
        else:
            messages.success(request, f"{member.display_name} was updated.")
            return _back(appspace)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "appspaces/appspace_user_edit.html",
        {"appspace": appspace, "member": member, "form": form},
        status=status,
    )


@require_POST
@login_required
def appspace_user_remove_view(request: HttpRequest, appspace_id, member_id) -> HttpResponse:
    member = get_appspace_user_for_owner(request.user, appspace_id, member_id)
    appspace = member.appspace
    appspace_user_remove(member=member)
    messages.success(
        request, f"{member.display_name} was removed: they can no longer open {appspace.subdomain}."
    )
    return _back(appspace)


@require_POST
@login_required
def appspace_invitation_revoke_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    email = request.POST.get("email", "")
    if appspace_invitation_revoke(appspace=appspace, email=email):
        messages.success(request, f"The invitation of {email} was withdrawn.")
    else:
        messages.info(request, "That invitation is no longer pending.")
    return _back(appspace)
