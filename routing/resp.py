"""One lean Redis connection for the delivery queue's Lua scripts: the hot path of every routed message.

Why not redis-py here
---------------------
Each routed request runs two scripts (enqueue, ack). Through redis-py each call builds a pipeline, checks a
connection out of the pool, packs the command through several layers and parses the answer through response
callbacks: in the benchmark that was about a quarter of the hub's CPU per request, more than routing,
authentication and audit together. Scripts need none of that machinery. This connection writes every command
submitted in one event-loop tick in one ``write`` (implicit pipelining across all concurrent requests) and
matches the answers in order with hiredis, the parser redis-py itself uses.

What it keeps from a real client: connect and command timeouts (a stuck Redis fails the waiting calls instead
of hanging them), AUTH and SELECT from the URL, reconnecting on the next call after a lost connection (calls in
flight then fail with ``ConnectionError``, as with redis-py: the script may or may not have run), and
``NOSCRIPT`` recovery (the script is sent once more with EVAL, which also caches it again).

It serves plain TCP (``redis://``), Unix sockets (``unix://``) and a primary found through Sentinel
(``redis+sentinel://``): then ``locate`` is asked for the primary's address before each connect, the server
must say ``ROLE`` master before anything else is sent, and a ``READONLY`` answer (a primary demoted under us)
drops the connection so the next call asks again (docs/high-availability.md). Other set-ups (TLS, credential
providers) keep the redis-py path, see :func:`routing.batching.script_runner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, cast

import hiredis
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, ConnectionError, NoScriptError, ResponseError, TimeoutError

from routing.replication import Sync, link, settle, wait_command

log = logging.getLogger("routing.resp")

_Arg = str | bytes | int | float


def encode_command(parts: Sequence[_Arg]) -> bytes:
    """A command as a RESP array of bulk strings, packed by hiredis in C (a third of a Python loop's cost)."""
    # hiredis' stub types the argument as a 1-tuple; it takes any number of parts
    return hiredis.pack_command(tuple(parts))  # type: ignore[arg-type,no-any-return]


_BULK_HEADS: Final = tuple(b"$%d\r\n" % n for n in range(512))  # "$<length>\r\n" of the usual short values


def bulk(value: str | bytes) -> bytes:
    """One RESP bulk string: for callers that pack the parts of a command that never change once
    (``ScriptConnection.submit_packed``). The head of a short value is looked up, not formatted: ``bytes %``
    parses its format on every call, about a thousand instructions, and a routed request packs 16 of these."""
    data = value.encode() if isinstance(value, str) else value
    n = len(data)
    return (_BULK_HEADS[n] if n < 512 else b"$%d\r\n" % n) + data + b"\r\n"


class _Call:
    """A submitted command: its future, and what is needed to send it again as EVAL after NOSCRIPT (the keys
    and arguments, or the packed rest of the command after the script's hash)."""

    __slots__ = ("args", "future", "keys", "packed", "script", "sent_at", "sync")

    def __init__(self, future: asyncio.Future[Any], script: AsyncScript | None, keys: Sequence[_Arg],
                 args: Sequence[_Arg], packed: tuple[int, bytes] | None = None) -> None:
        self.future = future
        self.script = script
        self.keys = keys
        self.args = args
        self.packed = packed
        self.sent_at = 0.0
        self.sync: Sync | None = None  # answered only once replicas have it (routing/replication.py)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: ScriptConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[_Call] = deque()  # written, answer not read yet: answers come in this order
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting, owner = self.waiting, self.owner
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:  # the stream is unreadable from here on
                self.fail(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # an answer nobody asked for: the stream is out of step
                self.fail(ConnectionError("Redis sent an unexpected reply"))
                return
            owner.answer(waiting.popleft(), reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail_waiting(ConnectionError(f"Redis connection lost: {exc}" if exc else "Redis connection closed"))

    def fail(self, exc: Exception) -> None:
        self.fail_waiting(exc)
        if self.transport is not None:
            self.transport.abort()

    def fail_waiting(self, exc: Exception) -> None:
        while self.waiting:
            call = self.waiting.popleft()
            if not call.future.done():
                call.future.set_exception(exc)


def _quiet(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: a failed health PING is handled by the watchdog, not logged as unhandled


class ScriptConnection:
    """Pipelined script calls over one connection of this process (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        idle_ping: float = 15.0,
        locate: Callable[[], Awaitable[tuple[str, int]]] | None = None,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.locate = locate  # Sentinel: where the primary is now, asked before each connect
        self.db, self.username, self.password = db, username, password
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.idle_ping = idle_ping
        self._last_sent = 0.0
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._unsent: list[tuple[bytes, _Call]] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced = False  # a call in _unsent waits for replicas (routing/replication.py)
        self._heads: dict[tuple[str | bytes, int], bytes] = {}  # "EVALSHA <sha>" of each packed script call

    # -- calls -----------------------------------------------------------------------------------------
    def submit(self, script: AsyncScript, keys: Sequence[_Arg], args: Sequence[_Arg]) -> asyncio.Future[Any]:
        """Run ``script`` (EVALSHA); the answer arrives on the returned future. Sent with this tick's others."""
        return self._submit(encode_command(("EVALSHA", script.sha, len(keys), *keys, *args)), script, keys, args)

    def submit_replicated(self, script: AsyncScript, keys: Sequence[_Arg], args: Sequence[_Arg], replicas: int,
                          timeout_ms: int) -> asyncio.Future[Any]:
        """Like :meth:`submit`, answered once ``replicas`` replicas have the write (a WAIT ends its batch)."""
        inner = self.submit(script, keys, args)
        outer: asyncio.Future[Any] = self._running_loop().create_future()
        link(inner, outer)
        if not inner.done():  # not refused at once (closed connection)
            self._unsent[-1][1].sync = (outer, replicas, timeout_ms)
            self._synced = True
        return outer

    def submit_packed(self, script: AsyncScript, count: int, packed: bytes) -> asyncio.Future[Any]:
        """``submit`` for a caller that packed numkeys, the keys and the arguments itself (``count`` bulk strings,
        see ``bulk``): the parts that never change are packed once instead of on every call."""
        head = self._heads.get((script.sha, count))
        if head is None:
            sha = script.sha if isinstance(script.sha, bytes) else script.sha.encode()
            head = self._heads[(script.sha, count)] = b"*%d\r\n$7\r\nEVALSHA\r\n%b" % (count + 2, bulk(sha))
        return self._submit(head + packed, script, (), (), (count, packed))

    async def execute(self, *parts: _Arg) -> Any:
        """Any other command, answered in order with the scripts (tests; the idle PING goes the same way)."""
        return await self._submit(encode_command(parts), None, (), ())

    def _submit(self, data: bytes, script: AsyncScript | None, keys: Sequence[_Arg],
                args: Sequence[_Arg], packed: tuple[int, bytes] | None = None) -> asyncio.Future[Any]:
        loop = self._running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(ConnectionError("the script connection is closed"))
            return future
        self._unsent.append((data, _Call(future, script, keys, args, packed)))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this connection lives on, looked up once: ``asyncio.get_running_loop()`` makes a getpid()
        system call each time (CPython 3.11 checks for a fork), and this runs twice per routed request."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def answer(self, call: _Call, reply: Any) -> None:
        if isinstance(reply, ResponseError) and call.script is not None and str(reply).startswith("NOSCRIPT"):
            # Redis restarted or its script cache was flushed: send the text once; EVAL caches it again.
            script, call.script = call.script, None
            text = script.script if isinstance(script.script, str | bytes) else bytes(script.script)
            if call.packed is not None:
                count, packed = call.packed
                data = b"*%d\r\n$4\r\nEVAL\r\n%b%b" % (count + 2, bulk(text), packed)
            else:
                data = encode_command(("EVAL", text, len(call.keys), *call.keys, *call.args))
            self._unsent.append((data, call))
            self._synced = self._synced or call.sync is not None
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._running_loop().call_soon(self._flush)
            return
        if (self.locate is not None and isinstance(reply, ResponseError) and str(reply).startswith("READONLY")
                and self._protocol is not None and not self._protocol.lost):
            # Connected to a primary that was demoted: later calls must go to the new one. This call and those
            # written behind it fail (an outage, 503); the next call asks the Sentinels again.
            self._protocol.fail(ConnectionError("Redis primary was demoted to a replica (READONLY)"))
        if call.future.done():
            return
        if isinstance(reply, ResponseError):
            call.future.set_exception(NoScriptError(str(reply)) if str(reply).startswith("NOSCRIPT") else reply)
        else:
            call.future.set_result(reply)

    # -- the connection --------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._unsent:
            return
        protocol = self._protocol
        if protocol is None or protocol.lost or protocol.transport is None or protocol.transport.is_closing():
            if self._connecting is None or self._connecting.done():
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return
        batch, self._unsent = self._unsent, []
        if self._synced:  # WAIT counts this connection's writes: it goes in the same write, after them
            self._synced = False
            synced = [(call.future, call.sync) for _, call in batch if call.sync is not None]
            if synced:
                wait = _Call(self._running_loop().create_future(), None, (), ())
                settle(synced, wait.future)
                batch.append((encode_command(wait_command(synced)), wait))
        now = self._last_sent = self._running_loop().time()
        for _, call in batch:
            call.sent_at = now
        protocol.waiting.extend(call for _, call in batch)
        protocol.transport.write(b"".join(data for data, _ in batch))

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.locate is not None:
                self.host, self.port = await asyncio.wait_for(self.locate(), timeout=self.connect_timeout)
            protocol = await asyncio.wait_for(self._open(loop), timeout=self.connect_timeout)
            await asyncio.wait_for(self._handshake(protocol), timeout=self.command_timeout)
        except Exception as exc:
            error: Exception
            if isinstance(exc, ConnectionError | AuthenticationError):
                error = exc
            elif isinstance(exc, asyncio.TimeoutError):
                error = TimeoutError("timed out connecting to Redis for queue scripts")
            else:
                error = ConnectionError(f"cannot connect to Redis for queue scripts: {type(exc).__name__}: {exc}")
            unsent, self._unsent = self._unsent, []
            for _, call in unsent:
                if not call.future.done():
                    call.future.set_exception(error)
            return
        self._protocol = protocol
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._watch_every, self._watch)
        self._flush()

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        if self.path:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), self.path)
        else:
            transport, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # a peer that vanished without a FIN is noticed even on an idle connection
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        """AUTH and SELECT go first, ahead of anything queued meanwhile; under Sentinel, ROLE must say master."""
        steps: list[tuple[_Arg, ...]] = []
        if self.password is not None:
            steps.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            steps.append(("SELECT", self.db))
        if self.locate is not None:
            steps.append(("ROLE",))
        if not steps:
            return
        loop = asyncio.get_running_loop()
        calls = [_Call(loop.create_future(), None, (), ()) for _ in steps]
        protocol.waiting.extend(calls)
        assert protocol.transport is not None
        protocol.transport.write(b"".join(encode_command(step) for step in steps))
        for call in calls:
            try:
                reply = await call.future
            except ResponseError as exc:
                protocol.transport.abort()
                if "AUTH" in str(exc) or "WRONGPASS" in str(exc):
                    raise AuthenticationError(str(exc)) from exc
                raise
        if self.locate is not None and not (isinstance(reply, list) and reply and reply[0] == b"master"):
            # Sentinel still names a primary that is gone or demoted (its view lags a failover by a moment).
            protocol.transport.abort()
            role = reply[0].decode(errors="replace") if isinstance(reply, list) and reply else "unknown"
            raise ConnectionError(f"Redis at {self.host}:{self.port} is not the primary (role {role})")

    @property
    def _watch_every(self) -> float:
        return max(min(self.command_timeout / 4, self.idle_ping / 2), 0.05)

    def _watch(self) -> None:
        """Bounded command time without a timer per call: a connection whose oldest answer is overdue is cut,
        which fails everything waiting on it; the next call reconnects. An idle connection is PINGed, so a
        dead one is found (and replaced) before a routed request needs it, like redis-py's health checks."""
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            if protocol.waiting:
                if loop.time() - protocol.waiting[0].sent_at > self.command_timeout:
                    # debug only: the outage itself is logged once by routing/redis_health.py
                    log.debug("Redis did not answer queue scripts within %.1f s; reconnecting", self.command_timeout)
                    protocol.fail(TimeoutError(f"Redis did not answer within {self.command_timeout} s"))
            elif not self._unsent and loop.time() - self._last_sent > self.idle_ping:
                self._submit(encode_command(("PING",)), None, (), ()).add_done_callback(_quiet)
        self._watchdog = None if self._closed else loop.call_later(self._watch_every, self._watch)

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        unsent, self._unsent = self._unsent, []
        for _, call in unsent:
            if not call.future.done():
                call.future.set_exception(ConnectionError("the script connection is closed"))
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
            self._protocol.fail_waiting(ConnectionError("the script connection is closed"))
        self._protocol = None
