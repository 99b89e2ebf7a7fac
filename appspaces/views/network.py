"""Panel views of an appspace's network access: add and remove allowlist entries, approve or
dismiss connections its sandbox refused, and requests its pages' blocked origins and the app's
requestNetwork() made (network/requests.py). Risky entries (DNS, wildcards) need a confirmation."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from appspaces.access import get_appspace_for_owner
from appspaces.models import AllowlistEntry, Appspace, BlockedConnection, NetworkRequest
from appspaces.network.approvals import (
    RiskyEntry,
    allowlist_entry_add,
    allowlist_entry_remove,
    server_entry_warnings,
)
from appspaces.network.blocked import (
    blocked_connection_approve,
    blocked_connection_check,
    blocked_connection_dismiss,
)
from appspaces.network.requests import network_request_allow, network_request_dismiss
from appspaces.views.appspace_forms import AllowlistAddForm
from appspaces.views.appspaces import render_appspace
from packages.allowlist import AllowlistError


def _back(appspace: Appspace, anchor: str = "network") -> HttpResponse:
    response = redirect("appspace_detail", appspace_id=appspace.public_id)
    response["Location"] += f"#{anchor}"
    return response


def _restart_note(kind: str) -> str:
    if kind == AllowlistEntry.Kind.SERVER:
        return " The appspace restarts with it if it is running."
    return ""


@require_POST
@login_required
def allowlist_add_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    kind = request.POST.get("kind")
    if kind not in AllowlistEntry.Kind.values:
        kind = request.POST.get("server-kind") or request.POST.get("browser-kind")
    if kind not in AllowlistEntry.Kind.values:
        raise Http404("No such allowlist.")
    form = AllowlistAddForm(request.POST, kind=kind, prefix=kind)
    if form.is_valid():
        try:
            entry = allowlist_entry_add(
                appspace=appspace,
                kind=kind,
                value=form.cleaned_data["value"],
                confirm_risky=form.cleaned_data["confirm_risky"],
            )
        except RiskyEntry as exc:
            form.add_error("confirm_risky", [*exc.warnings, "Tick the box to allow it anyway."])
        except AllowlistError as exc:
            form.add_error("value", str(exc))
        else:
            messages.success(request, f"{entry.value} is allowed.{_restart_note(kind)}")
            return _back(appspace)
    return render_appspace(request, appspace, allowlist_forms={kind: form}, status=400)


@require_POST
@login_required
def allowlist_remove_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    entry = appspace.allowlist.filter(
        kind=request.POST.get("kind", ""), value=request.POST.get("value", "")
    ).first()
    if entry is None:
        raise Http404("No such allowlist entry.")
    allowlist_entry_remove(entry=entry)
    messages.success(request, f"{entry.value} is no longer allowed.{_restart_note(entry.kind)}")
    return _back(appspace)


def _blocked(request: HttpRequest, appspace: Appspace) -> BlockedConnection:
    port = request.POST.get("port", "")
    blocked = appspace.blocked.filter(
        host=request.POST.get("host", ""), port=int(port) if port.isdigit() else None
    ).first()
    if blocked is None:
        raise Http404("No such blocked connection.")
    return blocked


@require_POST
@login_required
def blocked_approve_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    blocked = _blocked(request, appspace)
    try:
        entry = blocked_connection_approve(
            blocked=blocked, confirm_risky=request.POST.get("confirm") == "yes"
        )
    except RiskyEntry as exc:
        allowed, _ = blocked_connection_check(blocked)
        return render(
            request,
            "appspaces/appspace_approve_confirm.html",
            {
                "appspace": appspace,
                "blocked": blocked,
                "entry": allowed,
                "warnings": exc.warnings or server_entry_warnings(allowed),
            },
        )
    except AllowlistError as exc:
        messages.error(request, f"{blocked} cannot be allowed: {exc}")
        return _back(appspace)
    messages.success(request, f"{entry.value} is allowed.{_restart_note(entry.kind)}")
    return _back(appspace)


@require_POST
@login_required
def blocked_dismiss_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    blocked = _blocked(request, appspace)
    blocked_connection_dismiss(blocked=blocked)
    messages.info(request, f"Dismissed {blocked}: it stays refused.")
    return _back(appspace)


def _request(request: HttpRequest, appspace: Appspace) -> NetworkRequest:
    found = appspace.network_requests.filter(
        kind=request.POST.get("kind", ""), value=request.POST.get("value", "")
    ).first()
    if found is None:
        raise Http404("No such request.")
    return found


@require_POST
@login_required
def request_allow_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    pending = _request(request, appspace)
    try:
        entry = network_request_allow(
            request=pending, confirm_risky=request.POST.get("confirm") == "yes"
        )
    except RiskyEntry as exc:
        messages.error(
            request,
            f"{pending.value}: {' '.join(exc.warnings)} Add it below, ticking the box, to allow "
            "it anyway.",
        )
        return _back(appspace)
    except AllowlistError as exc:
        messages.error(request, f"{pending.value} cannot be allowed: {exc}")
        return _back(appspace)
    messages.success(request, f"{entry.value} is allowed.{_restart_note(entry.kind)}")
    return _back(appspace)


@require_POST
@login_required
def request_dismiss_view(request: HttpRequest, appspace_id) -> HttpResponse:
    appspace = get_appspace_for_owner(request.user, appspace_id)
    pending = _request(request, appspace)
    network_request_dismiss(request=pending)
    messages.info(request, f"Dismissed {pending.value}: it stays refused.")
    return _back(appspace)
