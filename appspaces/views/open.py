"""Opening an appspace from the panel: a one-time login token, then a redirect to its host.

`appspace_open` (POST, from the appspace's page) and `appspace_open_by_subdomain` (GET, where
the gateway sends visitors who need to log in) both end at
`<appspace>/.dropserver/login?token=...&next=...`, which the gateway redeems at once only if
the browser says the navigation came from a panel page (`Referer: <panel origin>/`; see
appspaces/gateway/login.py). The POST is a form on a panel page, so its redirect does. The GET
is mostly reached through redirects that started elsewhere (a typed address, a link in an
appspace), whose Referer is not the panel's: it answers with a small panel page that moves on
by itself (meta refresh) under `Referrer-Policy: origin`, so that last hop is the panel's.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from appspaces.models import Appspace
from appspaces.sharing.sessions import (
    appspace_login_url,
    appspaces_user_may_enter,
    login_token_issue,
    safe_next_path,
    user_may_enter,
)


def _redirect_in(
    request: HttpRequest, appspace: Appspace, next_path: str, *, by_page: bool = False
) -> HttpResponse:
    token = login_token_issue(user=request.user, appspace=appspace)
    url = appspace_login_url(appspace=appspace, token=token, next_path=next_path)
    if by_page:
        response = render(
            request,
            "gateway/open_continue.html",
            {"appspace_domain": appspace.domain, "login_url": url},
        )
    else:
        response = HttpResponseRedirect(url)
    response["Cache-Control"] = "no-store"
    # The next request (to the appspace) then carries `Referer: <panel origin>/`, which tells
    # the gateway the login link came from the panel and not from a page that planted it.
    # Only the origin: the token is in this response's Location (or page), never in a Referer.
    response["Referrer-Policy"] = "origin"
    return response


@require_POST
@login_required
def appspace_open(request: HttpRequest, appspace_id) -> HttpResponse:
    try:
        appspace = appspaces_user_may_enter(request.user).get(public_id=appspace_id)
    except Appspace.DoesNotExist:
        raise Http404("No such appspace.") from None
    return _redirect_in(request, appspace, safe_next_path(request.POST.get("next")))


@require_GET
@never_cache
@login_required
def appspace_open_by_subdomain(request: HttpRequest, subdomain: str) -> HttpResponse:
    appspace = Appspace.objects.filter(subdomain=subdomain.lower()).first()
    if appspace is None:
        raise Http404("No such appspace.")
    if not user_may_enter(request.user, appspace):
        # The address is public (it is a host name), so saying it exists reveals nothing.
        return render(
            request,
            "gateway/open_forbidden.html",
            {"appspace_domain": appspace.domain},
            status=403,
        )
    return _redirect_in(request, appspace, safe_next_path(request.GET.get("next")), by_page=True)
