"""The forward path's HTTP/1.1 client: keep-alive connections per receiver origin, answers parsed by httptools.

Why not aiohttp's ``ClientSession`` here
----------------------------------------
Every routed request is one call to a receiver. Through ``ClientSession.request`` that call builds a
``ClientRequest`` and a ``ClientResponse``, walks cookie jars, proxy and redirect logic, trace hooks, a
``StreamReader`` and several layers of header containers: measured in the benchmark, the same aiohttp server
relaying through this client used less than half the CPU per request of one relaying through ``ClientSession``
(docs/architecture.md, "The forward client"). The hub needs none of that machinery for a forward: one request,
one answer, no redirects (OCPI answers them as errors), no cookies.

What it keeps of a real client, because a receiver may be broken or hostile:
- the outbound address policy: host names are resolved by the same resolver as the shared session's
  (``routing.outbound.PolicyResolver``), so a refused address is never connected to;
- TLS with certificate and host name verification (the default context, as aiohttp's);
- a total time budget per request (connect, write, answer), a cap on the answer's body (given up on as soon as it
  passes, with or without a declared length) and on its header section;
- a bound on open connections per origin, and idle connections closed after ``idle_timeout``;
- one retry on a fresh connection, for idempotent methods only, when a reused keep-alive connection turns out to
  have been closed by the receiver before it answered a single byte (the classic keep-alive race).

Anything the parser cannot read, a protocol switch, or an answer cut short is an ``UpstreamError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import httptools
from aiohttp.abc import AbstractResolver, ResolveResult

DNS_TTL = 300.0  # seconds the addresses a host name resolved to are used for new connections (as aiohttp's default)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
SMALL_BODY = 16 * 1024  # bodies up to this are sent in one buffer with the head
MAX_HEAD_BYTES = 64 * 1024  # a receiver's header section beyond this is refused (aiohttp: 8 KiB per line)


class UpstreamError(OSError):
    """The receiver could not be reached, or its answer could not be read (it is not an OCPI verdict)."""


@dataclass(slots=True)
class Answer:
    status: int
    # lower-case names; only those the client keeps; of a repeated header the first line, as aiohttp's
    # ``headers.get``, or for a list-valued one all its lines joined with ", " (``Upstream(lists=...)``)
    headers: dict[str, str]
    body: bytes | None  # None: larger than the caller's limit (the connection is then closed)


@dataclass(slots=True)
class _Origin:
    """Where connections go: scheme, host and port of a receiver URL, and what is already open to it."""

    key: str  # "https://host:port" as written in the URL
    host: str  # without brackets: what is resolved and, for TLS, the server name checked
    port: int
    tls: bool
    host_header: bytes
    idle: list[_Connection] = field(default_factory=list)
    open: int = 0
    addresses: list[ResolveResult] = field(default_factory=list)  # what the resolver allowed, until resolved_at + TTL
    resolved_at: float = 0.0
    resolving: asyncio.Future[list[ResolveResult]] | None = None  # concurrent connects share one lookup
    waiters: deque[asyncio.Future[_Connection | None]] = field(default_factory=deque)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self, origin: _Origin, client: Upstream) -> None:
        self.origin = origin
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.kept = client.kept
        self.lists = client.lists
        self.future: asyncio.Future[Answer] | None = None
        self.lost = False
        self.reused = False
        self.received = False  # a byte of the current answer arrived
        self.idle_since = 0.0
        self.limit = 0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_bytes = 0
        self.head_done = False
        self.framed = False  # Content-Length or chunked: the answer's end is known without the connection's
        self.body: list[bytes] = []
        self.size = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.future is None and not data.strip():
            return  # whitespace between answers (tolerated by HTTP/1.1 parsers)
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamError("the receiver switched protocols"))
        except httptools.HttpParserError as exc:
            inner = exc.__context__  # a limit this client's callbacks enforce
            self.fail(inner if isinstance(inner, UpstreamError) else UpstreamError(f"unreadable HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.client.closed_one(self.origin, self)
        future = self.future
        if future is not None and not future.done():
            if self.head_done and not self.framed:  # an answer delimited by the end of the connection
                self.future = None
                future.set_result(Answer(self.status, self.headers, b"".join(self.body)))
            else:
                future.set_exception(UpstreamError(
                    "the receiver closed the connection before its answer was complete" if self.received else
                    "the receiver closed the connection without answering"))

    def fail(self, exc: Exception) -> None:
        """Ends the current request with ``exc`` and drops the connection: its stream is out of step."""
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_exception(exc)
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    # -- httptools callbacks -------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.future is None:  # an answer nobody asked for would be taken for the next request's: drop it all
            raise UpstreamError("the receiver sent an answer nobody asked for")
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD_BYTES:
            raise UpstreamError(f"the receiver's header section is larger than {MAX_HEAD_BYTES} bytes")
        kept = self.kept
        if kept is not None:
            key = kept.get(name.lower())
            if key is None:
                # the header section is read as it arrives, one Python call per line: a header the caller does not
                # read is not decoded (a tenth of a forward's instructions went to reading headers nobody read)
                return
        else:
            key = name.decode("latin-1").lower()
        if key not in self.headers:
            self.headers[key] = value.decode("utf-8", "surrogateescape")
        elif key in self.lists:  # one list in several lines: the same list in one (RFC 9110 §5.3)
            self.headers[key] += ", " + value.decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        length = self.headers.get("content-length")
        self.framed = length is not None or "transfer-encoding" in self.headers
        if length is not None and length.isdigit() and int(length) > self.limit and self.status >= 200:
            self._too_large()

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self._too_large()
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.status < 200:  # 1xx: an interim answer, the final one follows on the same stream
            return
        future, self.future = self.future, None
        if future is None or future.done():
            return
        future.set_result(Answer(self.status, self.headers, b"".join(self.body)))
        if not self.lost and self.parser.should_keep_alive():
            self.client.release(self)
        elif self.transport is not None:
            self.transport.close()

    def _too_large(self) -> None:
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_result(Answer(self.status, self.headers, None))
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class Upstream:
    """Keep-alive HTTP/1.1 connections of one hub process to the receivers it forwards to."""

    def __init__(self, resolver: AbstractResolver, *, limit_per_origin: int = 100, idle_timeout: float = 15.0,
                 ssl_context: ssl.SSLContext | None = None, headers: Collection[str] | None = None,
                 lists: Collection[str] = ()) -> None:
        """``headers``: the answer headers the caller reads (any case), or None for all; the framing headers
        (Content-Length, Transfer-Encoding) are always read. ``lists``: headers whose value is a comma-separated
        list (such as ``Link``): all their lines are read, joined with ", " (RFC 9110 §5.3); of any other header
        repeated, the first line."""
        self.resolver = resolver
        self.kept: dict[bytes, str] | None = None if headers is None else {
            name.lower().encode("latin-1"): name.lower() for name in (*headers, "Content-Length", "Transfer-Encoding")}
        self.lists = frozenset(name.lower() for name in lists)
        self.limit_per_origin = max(1, limit_per_origin)
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        self._origins: dict[str, _Origin] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, *,
                      budget: float, max_body: int) -> Answer:
        """Sends one request and reads its answer within ``budget`` seconds (``TimeoutError`` past it).

        ``url`` is absolute and already encoded. ``ValueError``: the URL or a header cannot be sent as written;
        ``OSError`` (``UpstreamError``, ``ssl.SSLError``, the policy's refusal): the receiver was not reached
        or did not answer readably.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep)
        origin, target = self._origin_and_target(url)
        head = _encode(method, target, origin.host_header, headers, body)
        # One write of one buffer for the usual small body; a large one is not copied (the hub's memory bound
        # counts each waiting body a fixed number of times, docs/security.md)
        data: bytes | list[bytes] = (head + body if len(body) <= SMALL_BODY else [head, body]) if body else head
        deadline = loop.time() + budget
        for attempt in (0, 1):
            connection = await self._acquire(origin, deadline, fresh=attempt > 0)
            try:
                return await self._exchange(connection, data, max_body, deadline)
            except UpstreamError:
                if (attempt or not connection.reused or connection.received or method not in IDEMPOTENT
                        or loop.time() >= deadline):
                    raise
                # the receiver closed a kept-alive connection as it was reused: once more on a new one
        raise AssertionError("unreachable")

    async def _exchange(self, connection: _Connection, data: bytes | list[bytes], max_body: int, deadline: float,
                        ) -> Answer:
        assert self._loop is not None and connection.transport is not None
        future: asyncio.Future[Answer] = self._loop.create_future()
        connection.future, connection.limit, connection.received = future, max_body, False
        timer = self._loop.call_at(deadline, _expire, connection, future)
        try:
            if isinstance(data, bytes):
                connection.transport.write(data)
            else:
                connection.transport.writelines(data)
            return await future
        except asyncio.CancelledError:
            if connection.future is future:  # still this request's: the stream's state is unknown
                connection.fail(UpstreamError("the request was cancelled"))
            raise
        finally:
            timer.cancel()

    # -- connections -------------------------------------------------------------------------------------
    def _origin_and_target(self, url: str) -> tuple[_Origin, str]:
        key, target = _split(url)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _parse_origin(key)
        return origin, target

    async def _acquire(self, origin: _Origin, deadline: float, *, fresh: bool) -> _Connection:
        """A kept-alive connection to ``origin``, or a new one within the bound; ``fresh``: a new one only (the
        retry after a stale one: the origin's other idle connections are closed too, they are likely as stale)."""
        if self._closed:
            raise UpstreamError("the hub's forward client is closed")
        if fresh:
            for idle in origin.idle:
                if idle.transport is not None:
                    idle.transport.close()  # connection_lost counts it out and wakes a waiter
            origin.idle.clear()
        while origin.idle:
            connection = origin.idle.pop()
            if not connection.lost and connection.transport is not None and not connection.transport.is_closing():
                connection.reused = True
                return connection
        while origin.open >= self.limit_per_origin:  # at the bound: wait for a connection to come back or close
            assert self._loop is not None
            waiter: asyncio.Future[_Connection | None] = self._loop.create_future()
            origin.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed over as this one gave up: pass it on
                    self._pass_on(origin, waiter.result())
                raise
            finally:
                with contextlib.suppress(ValueError):
                    origin.waiters.remove(waiter)
            if handed is not None:
                if not fresh:
                    handed.reused = True
                    return handed
                if handed.transport is not None:
                    handed.transport.close()  # a retry wants a new connection; closing it makes room for one
        origin.open += 1
        try:
            async with asyncio.timeout_at(deadline):
                return await self._connect(origin)
        except BaseException:
            self.closed_one(origin)
            raise

    def _pass_on(self, origin: _Origin, handed: _Connection | None) -> None:
        """What a waiter that gave up was handed goes to the next one: the connection, or the room for one."""
        if handed is not None:
            self.release(handed)
            return
        while origin.waiters:
            waiter = origin.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: _Origin) -> _Connection:
        assert self._loop is not None
        addresses = await self._resolve(origin)
        last: OSError | None = None
        for address in addresses:
            try:
                _, connection = await self._loop.create_connection(
                    lambda: _Connection(origin, self), address["host"], address["port"], family=address["family"],
                    proto=address["proto"], flags=address["flags"],
                    ssl=(self.ssl_context or _default_tls()) if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None)
            except OSError as exc:
                last = exc
                continue
            sock = connection.transport.get_extra_info("socket") if connection.transport else None
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return connection
        if last is not None:  # as it is: a refused connection, an unverifiable certificate
            raise last
        raise UpstreamError(f"{origin.host} has no address to connect to")

    async def _resolve(self, origin: _Origin) -> list[ResolveResult]:
        """The origin's allowed addresses: looked up at most once per ``DNS_TTL``, one lookup for concurrent connects.
        A refusal or a failed lookup is not kept: the next connect asks again."""
        assert self._loop is not None
        while True:
            if origin.addresses and self._loop.time() - origin.resolved_at < DNS_TTL:
                return origin.addresses
            shared = origin.resolving
            if shared is not None:  # another connect is looking it up: its answer, unless that connect was cancelled
                await asyncio.wait([shared])
                if shared.cancelled():
                    continue
                return shared.result()
            lookup = origin.resolving = self._loop.create_future()
            try:
                found = await self.resolver.resolve(origin.host, origin.port, family=socket.AF_UNSPEC)
            except asyncio.CancelledError:
                lookup.cancel()
                raise
            except Exception as exc:
                lookup.set_exception(exc)
                lookup.exception()  # retrieved here: every waiter raises it from result()
                raise
            finally:
                origin.resolving = None
            origin.addresses, origin.resolved_at = found, self._loop.time()
            lookup.set_result(found)
            return found

    def release(self, connection: _Connection) -> None:
        """A connection whose answer was read in full: to the first waiter, else idle."""
        origin = connection.origin
        while origin.waiters:
            waiter = origin.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        assert self._loop is not None
        connection.idle_since = self._loop.time()
        origin.idle.append(connection)

    def closed_one(self, origin: _Origin, connection: _Connection | None = None) -> None:
        if connection is not None and connection in origin.idle:
            origin.idle.remove(connection)
        origin.open = max(origin.open - 1, 0)
        self._pass_on(origin, None)  # room for one more: the first waiter opens its own

    def _sweep(self) -> None:
        """Closes connections idle longer than ``idle_timeout``; forgets origins with nothing open."""
        assert self._loop is not None
        now = self._loop.time()
        for key, origin in list(self._origins.items()):
            for connection in [c for c in origin.idle if now - c.idle_since > self.idle_timeout]:
                origin.idle.remove(connection)
                if connection.transport is not None:
                    connection.transport.close()
            if not origin.open and not origin.idle and not origin.waiters:
                del self._origins[key]
        if not self._closed:
            self._sweeper = self._loop.call_later(self.idle_timeout / 2, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for origin in self._origins.values():
            for connection in origin.idle:
                if connection.transport is not None:
                    connection.transport.close()
            origin.idle.clear()

    def open_connections(self, url: str) -> int:
        """Connections open to ``url``'s origin (tests, diagnostics)."""
        origin = self._origins.get(_split(url)[0])
        return origin.open if origin is not None else 0


def _expire(connection: _Connection, future: asyncio.Future[Answer]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
        connection.future = None
        connection.lost = True
        if connection.transport is not None:
            connection.transport.abort()


def _split(url: str) -> tuple[str, str]:
    """An absolute URL as its origin ("scheme://authority") and request target (path and query, no fragment)."""
    start = url.find("://") + 3
    end = len(url)
    for mark in ("/", "?", "#"):
        at = url.find(mark, start)
        if 0 <= at < end:
            end = at
    target = url[end:].split("#", 1)[0]
    return url[:end], target if target.startswith("/") else "/" + target


def _parse_origin(key: str) -> _Origin:
    scheme, _, authority = key.partition("://")
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {key!r}")
    if "@" in authority:
        raise ValueError("a URL with user information is not sent")
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise ValueError(f"no host in {key!r}")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {key!r}")
    return _Origin(key=key, host=host.lower(), port=port, tls=scheme == "https",
                   host_header=authority.encode("ascii"))


def _encode(method: str, target: str, host: bytes, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request's head. A header name or value that would end its line early (CR, LF) is refused: it could
    smuggle a second header or request to the receiver."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    lines = len(headers)
    if body is not None or method in _WITH_BODY:
        fields += f"Content-Length: {len(body) if body else 0}\r\n"
        lines += 1
    if fields.count("\n") != lines or fields.count("\r") != lines or (
            " " in target or "\r" in target or "\n" in target or " " in method):
        raise ValueError("a header or the request target holds a line break or a space")
    head = b"%s %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\n%s\r\n" % (
        method.encode("ascii"), target.encode("ascii"), host, fields.encode("utf-8", "surrogateescape"))
    return head


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_default_context: ssl.SSLContext | None = None


def _default_tls() -> ssl.SSLContext:
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
    return _default_context

