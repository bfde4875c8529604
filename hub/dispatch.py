"""The handler aiohttp's server calls for every request: ``Application._handle`` without what the hub never uses.

Per request, aiohttp's ``Application._handle`` resolves the route, then asks for the event loop (on CPython 3.11
a ``getpid()`` system call) and its debug flag, looks the middleware chain up in a cache and runs it behind a
wrapper that marks the request's current application. The hub is one application with one middleware
(``hub.observe``): for a route of that application, resolved by aiohttp's own router, this calls the
middleware directly, with the match information set exactly as ``_handle`` sets it. Everything else (a route
of a sub-application, a 404 or 405, a request with ``Expect``, an application with another middleware chain)
goes through ``Application._handle`` unchanged.

On CPython 3.11 aiohttp's connection loop also starts a task per request and waits for it at once;
``inline_request_tasks`` lets that loop run the request's coroutine itself. docs/architecture.md, "Cost of a
routed request", has the measurements.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Generator
from contextvars import Context
from typing import Any, cast

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from hub.envelope import Handler

_HANDLE_REQUEST = RequestHandler._handle_request.__code__


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


def _request_task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
                          context: Context | None = None) -> asyncio.Future[Any]:
    if getattr(coro, "cr_code", None) is _HANDLE_REQUEST:
        # RequestHandler.start awaits this "task" at once, and only that: run in the connection's own task, the
        # request skips a Task object and two trips through the event loop (one to start, one to resume start).
        return cast("asyncio.Future[Any]", coro)
    return asyncio.Task(coro, loop=loop, context=context)


def inline_request_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Run aiohttp's per-request coroutine in its connection's task instead of a new task.

    aiohttp's connection loop (``RequestHandler.start``) wraps each request in a task only to give it a copy of
    the context variables (aiohttp#3406), then waits for it before it reads the next request; on CPython 3.12
    and later it starts that task eagerly, so there is nothing to save and nothing is installed. The hub keeps
    no per-request context variables. Cancellation is unchanged: cancelling the connection's task cancelled the
    request task it waited on, and now cancels the request where it runs. Every other task the loop creates is
    an ordinary ``asyncio.Task``; a task factory someone else installed is left alone.
    """
    if sys.version_info < (3, 12) and loop.get_task_factory() in (None, _request_task_factory):
        loop.set_task_factory(_request_task_factory)
