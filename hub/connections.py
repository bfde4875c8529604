"""Inbound connections: the one place that starts the HTTP site, with timeouts and a connection cap.

aiohttp closes a connection that has been idle for ``keepalive_timeout`` (also one that never sends a
complete request head: its idle timer starts at connect and is not reset by partial data), and limits line
and header sizes. It has no request-head deadline shorter than the keep-alive one, no body-read deadline
(a client that sends one byte every few seconds holds its request open for ever) and no cap on
connections (each costs a file descriptor; at the process limit ``accept`` fails and legitimate partners
are refused). This module adds those three, around aiohttp's own request handler (docs/security.md,
"Connections: slow clients and floods" says why no library fits):

- **request head**: from the first byte of a request to its complete head, at most ``request_head_timeout``;
- **request body**: from the complete head to the end of the body, at most ``request_body_timeout``;
- **connection cap**: at most ``max_connections`` per process. A new connection over the cap closes the
  longest-waiting *idle* connection (no request in progress: keep-alive, or a slow or absent head), so a
  flood of idle or slow connections cannot lock legitimate partners out; when every connection is busy with
  a request, the newcomer gets a canned ``503`` with ``Retry-After`` and is closed.

Deadlines are checked by one sweep per process every fraction of a second, not by a timer per request: the
routed path pays one attribute check per ``data_received`` and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from hub.context import HUB_KEY
from hub.dispatch import inline_request_tasks, request_handler
from hub.settings import Settings

log = logging.getLogger("hub.connections")

# Descriptors kept free for what the process itself opens: Redis, the store, connections to receivers.
READY_TIMEOUT = 5.0  # seconds Redis and the store have to answer before the hub binds its port
FD_RESERVE_FRACTION = 0.5
OVER_CAP_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 48\r\nConnection: close\r\n\r\n"
                   b'{"error": "too many connections; retry shortly"}')


class NotReady(Exception):
    """Redis or the store did not answer at start: the hub was not bound."""


class CannotListen(Exception):
    """The port is taken or not ours to bind: nothing of the hub was left running."""


def connection_cap(configured: int) -> int:
    """The configured cap, lowered so that inbound connections use at most half the descriptor limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    budget = max(16, int(soft * FD_RESERVE_FRACTION))
    if configured > budget:
        log.warning("HUB_MAX_CONNECTIONS=%d is more than half the open-file limit (%d): using %d",
                    configured, soft, budget)
        return budget
    return configured


class GuardedRequestHandler(RequestHandler):
    """aiohttp's handler plus the two timestamps the sweep needs."""

    __slots__ = ("body_request", "body_since", "head_count", "head_since")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_since: float | None = None  # first byte of a request head that is not complete yet
        self.head_count = 0  # requests parsed on this connection when head_since was set
        self.body_request: object | None = None  # the request whose body the sweep is timing
        self.body_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if isinstance(manager, GuardedServer):
            manager.admit(self)

    def data_received(self, data: bytes) -> None:
        # A waiter means the handler is idle between requests: these bytes start a request head.
        if self._waiter is not None and (self.head_since is None or self._request_count != self.head_count):
            self.head_since = self._loop.time()
            self.head_count = self._request_count
        super().data_received(data)

    @property
    def served(self) -> bool:
        """Completed a request and sent no part of the next one yet: a keep-alive connection at rest."""
        return self._request_count > 0 and (self.head_since is None or self._request_count != self.head_count)

    @property
    def idle(self) -> bool:
        """No request in progress: waiting for the next one (keep-alive, or a head still coming)."""
        waiter = self._waiter
        return self._current_request is None and waiter is not None and not waiter.done()


class GuardedServer(web.Server):
    """aiohttp's server with the connection cap and the deadline sweep."""

    def __init__(self, *args: Any, cap: int, head_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap = cap
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.closed_slow = 0  # connections closed for a late head or body, since start
        self.closed_over_cap = 0
        self._sweep_every = min(1.0, max(0.05, min(head_timeout, body_timeout) / 4))
        self._sweeper: asyncio.TimerHandle | None = self._loop.call_later(self._sweep_every, self._sweep)

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def admit(self, newcomer: RequestHandler) -> None:
        """Over the cap: make room by closing an idle connection, else turn the newcomer away.

        Idle connections that never completed a request (or are part-way through a head) go first, oldest
        first; a partner's idle keep-alive connection only when there is no such connection.
        """
        if len(self._connections) <= self.cap:
            return
        spare: GuardedRequestHandler | None = None
        for handler in self._connections:  # insertion order: oldest first
            if handler is newcomer or not isinstance(handler, GuardedRequestHandler) or not handler.idle:
                continue
            if not handler.served:
                spare = handler
                break
            spare = spare or handler
        self.closed_over_cap += 1
        if spare is not None:
            spare.force_close()
            return
        transport = newcomer.transport
        if transport is not None:
            transport.write(OVER_CAP_ANSWER)
        newcomer.force_close()

    def _sweep(self) -> None:
        now = self._loop.time()
        slow = 0
        for handler in list(self._connections):
            if not isinstance(handler, GuardedRequestHandler) or handler.transport is None:
                continue
            if handler.head_since is not None:
                if handler._request_count != handler.head_count:
                    handler.head_since = None  # that head arrived
                elif handler.idle and now - handler.head_since > self.head_timeout:
                    handler.force_close()
                    slow += 1
                    continue
            request = handler._current_request
            if request is None or request.content.is_eof():
                handler.body_request = None
            elif handler.body_request is not request:
                handler.body_request, handler.body_since = request, now
            elif now - handler.body_since > self.body_timeout:
                handler.force_close()
                slow += 1
        if slow:
            self.closed_slow += slow
            log.warning("closed %d connections that were too slow to send a request", slow)
        self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's signature)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)


class HubRunner(web.AppRunner):
    """An ``AppRunner`` whose server is a :class:`GuardedServer` with the limits from the settings."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, access_log=None, handle_signals=False, keepalive_timeout=settings.keepalive_timeout,
                         **kwargs)
        self._settings = settings

    async def setup(self) -> None:
        inline_request_tasks(asyncio.get_running_loop())  # hub/dispatch.py
        await super().setup()

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        s = self._settings
        return GuardedServer(
            request_handler(self._app), request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation, loop=plain._loop,
            cap=connection_cap(s.max_connections), head_timeout=s.request_head_timeout,
            body_timeout=s.request_body_timeout, **plain._kwargs,
        )

    @property
    def guard(self) -> GuardedServer | None:
        server = self.server
        return server if isinstance(server, GuardedServer) else None


async def start_site(app: web.Application, settings: Settings, *, reuse_port: bool = False) -> HubRunner:
    """Start the app (store, Redis, ...), check that Redis and the store answer, then bind its site.

    On any failure everything started is closed again. Nothing awaits between the bind and the return, so a
    caller that announces the hub right away does so before the first request is handled.
    """
    runner = HubRunner(app, settings)
    try:
        await runner.setup()
        hub = app[HUB_KEY]
        try:
            await asyncio.wait_for(hub.redis.ping(), READY_TIMEOUT)
            await asyncio.wait_for(hub.store.ping(), READY_TIMEOUT)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise NotReady(f"Redis or the store did not answer: {reason}") from exc
    except BaseException:
        await runner.cleanup()
        raise
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None, backlog=1024)
    try:
        await site.start()
    except BaseException as exc:
        await runner.cleanup()
        if isinstance(exc, OSError):
            raise CannotListen(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
        raise
    return runner
