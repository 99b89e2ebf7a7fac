"""Which panel requests may carry a large body, decided before the body is read.

Every panel request is capped at PANEL_MAX_BODY (sign-in and settings forms need kilobytes).
Only views marked `@accepts_upload(Handler)` take more (the handler's cap plus FORM_OVERHEAD
for the form around the file), and only from a signed-in user. Twisted, and then Django, read
a body before any view runs, so the decision is made from what comes before the body, twice:

- in Daphne (`panel_max_body`, used by dropserver_site/body_limits.py), without a database:
  the path resolves to an upload view and the request carries an upload ticket, a cookie
  signed with SECRET_KEY (django.core.signing), bound to the user and to the session cookie
  it was issued with, that `UploadTicketMiddleware` gives signed-in users and takes back at
  sign-out. A visitor without a session gets the small cap whatever the path;
- in Django (`BodyCapMiddleware`, before the CSRF check reads a body): the declared
  Content-Length against the view's cap, for the request's actual user.

`@accepts_upload` also puts the view's upload handler in place (it streams to an unnamed
file, appspaces/installs/staging.py) and leaves the CSRF check to the view, after its owner-scoped
lookups, so an outsider's 404 or a refusal comes before the body is read.
"""

from __future__ import annotations

import hashlib
from functools import wraps
from urllib.parse import unquote

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import HttpResponse
from django.http.cookie import parse_cookie
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

PANEL_MAX_BODY = 256 * 1024
FORM_OVERHEAD = 1024 * 1024
TICKET_SALT = "dropserver.upload-ticket"
TICKET_MAX_AGE = 12 * 3600  # re-issued after half of it, on any signed-in page
TOO_LARGE_MESSAGE = "The request is too large.\n"


def accepts_upload(handler_class):
    """Mark a view as taking one large file through `handler_class` (a CappedUploadHandler):
    signed-in users only; no CSRF check here (the view makes it, with `csrf_protect` on an
    inner function, after its lookups)."""

    def decorate(view):
        @wraps(view)
        def with_handler(request, *args, **kwargs):
            if request.method == "POST":
                request.upload_handlers = [handler_class(request)]
            return view(request, *args, **kwargs)

        wrapped = csrf_exempt(login_required(with_handler))
        wrapped.upload_handler = handler_class
        return wrapped

    return decorate


def upload_cap(handler_class) -> int:
    return handler_class.cap_bytes() + FORM_OVERHEAD


def too_large_response() -> HttpResponse:
    response = HttpResponse(TOO_LARGE_MESSAGE, status=413, content_type="text/plain")
    response["Connection"] = "close"
    return response


# --- Tickets ----------------------------------------------------------------------------------


def ticket_cookie_name() -> str:
    return "__Host-ds_upload" if settings.DS_HTTPS else "ds_upload"


def _session_digest(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()[:32]


def make_ticket(user_pk: int, session_key: str) -> str:
    return signing.dumps({"u": user_pk, "s": _session_digest(session_key)}, salt=TICKET_SALT)


def _ticket(value: str | None, *, max_age: int) -> dict | None:
    if not value:
        return None
    try:
        data = signing.loads(value, salt=TICKET_SALT, max_age=max_age)
    except signing.BadSignature:
        return None
    return data if isinstance(data, dict) else None


def ticket_matches(value: str | None, session_key: str | None, *, max_age=TICKET_MAX_AGE) -> bool:
    data = _ticket(value, max_age=max_age)
    return bool(data and session_key and data.get("s") == _session_digest(session_key))


def cookies_allow_upload(cookie_header: str) -> bool:
    cookies = parse_cookie(cookie_header)
    return ticket_matches(
        cookies.get(ticket_cookie_name()), cookies.get(settings.SESSION_COOKIE_NAME)
    )


def upload_handler_for(raw_target: bytes):
    """The upload handler of the view a request target (path and query) resolves to, or None."""
    path = unquote(raw_target.split(b"?", 1)[0].decode("latin-1"))
    try:
        match = resolve(path)
    except Resolver404:
        return None
    except Exception:
        return None
    return getattr(match.func, "upload_handler", None)


def panel_max_body(raw_target: bytes, cookie_header: bytes) -> int:
    """The body cap of a panel request, from its request line and Cookie header only."""
    handler = upload_handler_for(raw_target)
    if handler is None or not cookies_allow_upload(cookie_header.decode("latin-1")):
        return PANEL_MAX_BODY
    return upload_cap(handler)


# --- Middleware -------------------------------------------------------------------------------


class BodyCapMiddleware:
    """413 for a declared body over the view's cap, before anything reads it. Goes before
    CsrfViewMiddleware (which reads form bodies in its process_view)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= PANEL_MAX_BODY:
            return None
        handler = getattr(view_func, "upload_handler", None)
        if handler is not None and request.user.is_authenticated and length <= upload_cap(handler):
            return None
        return too_large_response()


class UploadTicketMiddleware:
    """Gives a signed-in user's browser its upload ticket (and renews it past half its life);
    takes it back when the session is no longer signed in."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        session = getattr(request, "session", None)
        if user is None or session is None:
            return response
        name = ticket_cookie_name()
        # No session key: an anonymous visitor, answered without a look at the database.
        if session.session_key and user.is_authenticated:
            current = request.COOKIES.get(name)
            if not ticket_matches(current, session.session_key, max_age=TICKET_MAX_AGE // 2):
                response.set_cookie(
                    name,
                    make_ticket(user.pk, session.session_key),
                    max_age=TICKET_MAX_AGE,
                    path="/",
                    secure=settings.DS_HTTPS,
                    httponly=True,
                    samesite="Lax",
                )
        elif name in request.COOKIES:
            response.delete_cookie(name, path="/", samesite="Lax")
        return response
