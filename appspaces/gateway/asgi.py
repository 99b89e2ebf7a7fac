"""ASGI entry points of the appspace gateway: every request to an appspace host passes here.

The order, decided before any app code runs: the appspace (unknown -> bare 404; not active ->
503 page), header caps (431), the path (one the app would read differently from the route
table, e.g. with `\\` or `%2e%2e` -> 400: routes.request_path), the platform's own paths
(`/.dropserver/`), same-origin rules (CSRF and CORS preflights -> 403), the route (404), its
auth (anonymous -> the panel's login; not a user or lacking the permission -> 403), the body
cap (413); then the host serves a static file, or the sandbox gets the request. WebSockets
follow the same rules (websocket.py). Under a name another appspace held before, responses
also clear the old app's leftovers in the browser, once per browser (reused_names.py).
"""

from __future__ import annotations

from appspaces.gateway import login, observe, pages, reused_names
from appspaces.gateway.auth import (
    Refusal,
    RequestFacts,
    admit,
    cross_origin_refused,
    own_origin,
    public_scheme,
    unavailable,
)
from appspaces.gateway.forward import proxy, static, websocket
from appspaces.gateway.state import broadcast, connections
from appspaces.gateway.state.cache import MISSING
from appspaces.gateway.state.config import configs
from appspaces.gateway.state.limits import limits
from appspaces.gateway.state.runtime import runtime
from packages.routes import BadPath, request_path

BAD_PATH = (
    "Bad request",
    "This address has characters or segments (such as \\, %2F or ..) that browsers and apps "
    "read differently, so the appspace does not serve it.",
)


async def gateway_http(scope: dict, receive, send) -> None:
    broadcast.listen()
    subdomain = scope["appspace_subdomain"]
    config = configs.peek(subdomain)
    if config is MISSING:
        config = await configs.get(subdomain)
    if config is None:
        observe.note_appspace(None)
        return await pages.send_bare_not_found(
            send, await reused_names.not_found_headers(subdomain)
        )
    observe.note_appspace(subdomain, config.pk)
    lim = limits()
    config = reused_names.for_request(config, scope, lim.platform_cookie_names)
    facts = RequestFacts(scope["headers"], lim.cookie_prefix)
    method = scope["method"]
    host = facts.host

    async def refuse(refusal: Refusal) -> None:
        if refusal.status == 302:
            location = refusal.headers[0][1].decode("latin-1")
            return await pages.send_redirect(send, location, platform=config.platform_headers)
        await pages.send_page(
            send,
            refusal.status,
            title=refusal.text[0],
            message=refusal.text[1],
            host=host,
            platform=config.platform_headers,
            headers=refusal.headers,
            head_only=method == "HEAD",
            **refusal.context,
        )

    if facts.header_count > lim.max_headers or facts.header_bytes > lim.max_header_bytes:
        return await refuse(Refusal(431, pages.HEADERS_TOO_LARGE, [], {}))
    if facts.hosts != 1:
        return await refuse(Refusal(400, ("Bad request", "The request is malformed."), [], {}))
    if not config.active:
        return await refuse(unavailable(config))
    try:
        path = request_path(scope["raw_path"])
    except BadPath:
        return await refuse(Refusal(400, BAD_PATH, [], {}))
    scheme = public_scheme(scope, lim.https)
    if path.startswith(login.PREFIX):
        origin = own_origin(host, scheme)
        return await login.handle(
            scope, receive, send, config=config, facts=facts, origin=origin, host=host
        )
    if (facts.origin is not None or facts.fetch_site is not None) and cross_origin_refused(
        method, facts, own_origin(host, scheme)
    ):
        return await refuse(Refusal(403, pages.CROSS_ORIGIN, [], {}))
    outcome = await admit(config, facts, method, path, scope)
    if isinstance(outcome, Refusal):
        return await refuse(outcome)
    match = outcome.match
    member = outcome.member
    observe.note(route=match.route.path, user_id=member.user_pk if member else None)
    if match.route.is_static:
        return await static.serve(
            scope,
            send,
            match=match,
            files_dir=config.files_dir,
            version_tag=config.version_tag,
            platform=config.platform_headers,
            host=host,
            private=match.route.auth != "public",
        )
    length = facts.content_length
    if length is not None and length < 0:
        return await refuse(Refusal(400, ("Bad request", "The request is malformed."), [], {}))
    if length is not None and length > lim.max_body:
        return await refuse(Refusal(413, pages.TOO_LARGE, [], {}))
    await proxy.proxy(
        scope,
        receive,
        send,
        rt=runtime(),
        config=config,
        match=match,
        member=outcome.member,
        host=host,
        scheme=scheme,
        content_length=length,
        chunked=facts.chunked and length is None,
        guard=connections.Guard(config, facts, method, path, scope, outcome.member),
    )


async def gateway_websocket(scope: dict, receive, send) -> None:
    broadcast.listen()
    await websocket.relay(scope, receive, send)
