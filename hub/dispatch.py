"""The handler aiohttp's server calls for every request: ``Application._handle`` without what the hub never uses.

Per request, aiohttp's ``Application._handle`` resolves the route, then asks for the event loop (on CPython 3.11
a ``getpid()`` system call) and its debug flag, looks the middleware chain up in a cache and runs it behind a
wrapper that marks the request's current application. The hub is one application with one middleware
(``hub.observe``): for a route of that application, resolved by aiohttp's own router, this calls the
middleware directly, with the match information set exactly as ``_handle`` sets it. Everything else (a route
of a sub-application, a 404 or 405, a request with ``Expect``, an application with another middleware chain)
goes through ``Application._handle`` unchanged. docs/architecture.md, "Cost of a routed request", has the
measurement.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from hub.envelope import Handler


def request_handler(app: web.Application) -> Handler:
    """``app._handle``, or a shorter equivalent when ``app`` has exactly one (new-style) middleware."""
    full: Handler = app._handle
    if len(app.middlewares) != 1 or getattr(app.middlewares[0], "__middleware_version__", None) != 1:
        return full
    middleware = app.middlewares[0]
    resolve = app.router.resolve

    async def handle(request: web.Request) -> web.StreamResponse:
        match_info = await resolve(request)
        if type(match_info) is not UrlMappingMatchInfo or match_info.apps or request.headers.get(hdrs.EXPECT):
            return await full(request)  # a 404 or 405, a sub-application, Expect: aiohttp's own path
        match_info.add_app(app)
        match_info.freeze()
        request._match_info = match_info
        return await middleware(request, match_info.handler)

    return handle
