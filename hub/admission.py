"""Admission control: how many requests, and how many body bytes, one process holds for receivers.

A caller waiting behind a hung receiver keeps its request (and its body, and the encoded copy queued in Redis)
alive until the receiver answers or the forward timeout ends. Without a bound, a flood of large requests to a
receiver that never answers grows the process (and Redis) until the container is killed. So every request a
functional-module or callback handler takes on holds a *ticket* from the time it is authenticated until its
answer is built:

- the process room: at most ``max_waiting_requests`` tickets and ``max_waiting_bytes`` body bytes;
- the receiver's room, once the receiver is known (before the body is read when TO names it): at most
  ``max_waiting_requests_per_receiver`` tickets and ``max_waiting_bytes_per_receiver`` bytes. A hung receiver
  fills only its own room; requests to the other receivers still get through.

A ``Content-Length`` that would not fit is refused before a byte is read; body bytes are reserved as they arrive
(chunked and compressed bodies included), so the body read never holds more than the rooms allow and a body sent
slowly holds only what it has sent. A room that holds nothing admits one
request whatever its size (the body limit bounds it), so no request is refused for ever. Overflow is answered at
once with ``HubUnavailable`` (HTTP 503, OCPI 4000, ``Retry-After``), never queued.

Everything here is in-memory counters of one process (no Redis, no store): the check costs a few dictionary
operations per request. A library would not fit better: what is bounded is this process's own memory, and the
rooms must be released exactly when a handler returns, cancelled or not. See docs/security.md.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from hub.exchange import EXCHANGE
from routing.ocpi.errors import HubUnavailable

# What a refusal counts as in ``ocpi_hub_admission_refused`` (a fixed label set).
PROCESS_REQUESTS: Final = "process_requests"
PROCESS_BYTES: Final = "process_bytes"
RECEIVER_REQUESTS: Final = "receiver_requests"
RECEIVER_BYTES: Final = "receiver_bytes"
REFUSAL_KINDS: Final = (PROCESS_REQUESTS, PROCESS_BYTES, RECEIVER_REQUESTS, RECEIVER_BYTES)


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    process_requests: int
    process_bytes: int
    receiver_requests: int
    receiver_bytes: int
    retry_after: float = 1.0


@dataclass(frozen=True, slots=True)
class RoomStats:
    requests: int
    bytes: int


class _Room:
    __slots__ = ("bytes", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0


class Admission:
    """The rooms of one process. Not thread-safe: used from the event loop only."""

    def __init__(self, limits: AdmissionLimits, on_refused: Callable[[str], None] | None = None) -> None:
        self.limits = limits
        self.on_refused = on_refused  # metrics: one of REFUSAL_KINDS
        self._process = _Room()
        self._receivers: dict[str, _Room] = {}

    def ticket(self) -> Ticket:
        """A place in the process room (no bytes yet), or HubUnavailable at once."""
        if self._process.requests >= self.limits.process_requests:
            raise self._refuse(PROCESS_REQUESTS, "the hub is holding as many requests as it may")
        self._process.requests += 1
        return Ticket(self)

    def stats(self) -> RoomStats:
        return RoomStats(self._process.requests, self._process.bytes)

    def receiver_stats(self) -> dict[str, RoomStats]:
        """Receivers with requests waiting in this process (empty rooms are forgotten)."""
        return {rid: RoomStats(r.requests, r.bytes) for rid, r in self._receivers.items()}

    def _refuse(self, kind: str, why: str) -> HubUnavailable:
        if self.on_refused is not None:
            self.on_refused(kind)
        return HubUnavailable(f"{why}; try again later", retry_after=self.limits.retry_after)


class Ticket:
    """One request's share of the rooms; ``release`` gives it back (idempotent)."""

    __slots__ = ("_admission", "_released", "_room", "bytes", "receiver")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._room: _Room | None = None
        self._released = False
        self.receiver: str | None = None
        self.bytes = 0

    def bind(self, receiver: str) -> None:
        """Take a place in the receiver's room, with the bytes reserved so far; HubUnavailable when it is full."""
        if receiver == self.receiver or self._released:
            return
        adm = self._admission
        room = adm._receivers.get(receiver)
        if room is None:
            room = adm._receivers[receiver] = _Room()
        if room.requests >= adm.limits.receiver_requests:
            raise adm._refuse(RECEIVER_REQUESTS, "too many requests are waiting on this receiver")
        if room.requests and room.bytes + self.bytes > adm.limits.receiver_bytes:
            raise adm._refuse(RECEIVER_BYTES, "too much data is waiting on this receiver")
        self._leave_room()
        room.requests += 1
        room.bytes += self.bytes
        self._room, self.receiver = room, receiver

    def check_fits(self, more: int) -> None:
        """HubUnavailable unless ``more`` body bytes would fit in this ticket's rooms now; reserves nothing."""
        adm = self._admission
        process, room = adm._process, self._room
        # A room holding nothing but this request admits it whatever its size: the body limit bounds it.
        if process.bytes + more > adm.limits.process_bytes and process.bytes > self.bytes:
            raise adm._refuse(PROCESS_BYTES, "the hub is holding as much request data as it may")
        if room is not None and room.bytes + more > adm.limits.receiver_bytes and room.bytes > self.bytes:
            raise adm._refuse(RECEIVER_BYTES, "too much data is waiting on this receiver")

    def reserve(self, more: int) -> None:
        """``more`` body bytes in the process room (and the receiver's, once bound); HubUnavailable when full."""
        if more <= 0 or self._released:
            return
        self.check_fits(more)
        process, room = self._admission._process, self._room
        process.bytes += more
        if room is not None:
            room.bytes += more
        self.bytes += more

    async def read_body(self, request: web.Request) -> bytes:
        """The request body, read only as far as the rooms allow.

        Replaces ``request.read()``: the same body limit (``client_max_size``, 413). A declared ``Content-Length``
        that would not fit is refused before a byte is read; the bytes themselves are reserved as they arrive,
        so a body sent slowly holds only what it has sent, and a chunked or compressed one cannot slip past.
        """
        if not request.body_exists:  # most routed requests are GETs: nothing to read or reserve
            return b""
        limit = request.client_max_size
        declared = request.content_length
        if declared:
            if limit and declared > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
            self.check_fits(declared)
        body = bytearray()
        while chunk := await request.content.readany():
            size = len(body) + len(chunk)
            if limit and size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            self.reserve(size - self.bytes)
            body += chunk
        return bytes(body)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._leave_room()
        process = self._admission._process
        process.requests -= 1
        process.bytes -= self.bytes
        self.bytes = 0

    def _leave_room(self) -> None:
        room, receiver = self._room, self.receiver
        if room is None or receiver is None:
            return
        room.requests -= 1
        room.bytes -= self.bytes
        self._room = self.receiver = None
        if room.requests <= 0:  # forgotten when empty
            self._admission._receivers.pop(receiver, None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admit(request: web.Request, admission: Admission) -> Ticket:
    """This request's ticket (taken on the first call); released when the ``admitted`` handler returns.

    Kept on the request's ``Exchange`` (every OCPI request has one, hub/observe.py): one attribute, where a request
    key cost a failed lookup and an exception on every request."""
    ex = request[EXCHANGE]
    ticket = ex.ticket
    if ticket is None:
        ticket = ex.ticket = admission.ticket()
    return ticket


def admitted(handler: Handler) -> Handler:
    """Wraps an OCPI handler that may ``admit`` its request: the ticket goes back however the handler ends."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        ex = request[EXCHANGE]
        try:
            return await handler(request)
        finally:
            if ex.ticket is not None:
                ex.ticket.release()

    return wrapper
