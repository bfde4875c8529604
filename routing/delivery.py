"""Delivery: take messages from the receivers' queues and forward them with one shared ClientSession.

A direct request is enqueued with claim-on-enqueue: when its ordering group is free the handler delivers it
itself (one Redis round trip saved); otherwise any process's dispatcher delivers it when its turn comes and the
reply reaches the waiting handler through an in-process future or, across processes, the origin's reply channel.
Direct requests are never retried (OCPI); past their deadline, or with less than ``MIN_BUDGET_SHARE`` of the
forward timeout left, they are dropped with 4002, not delivered late.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis
from yarl import URL

from routing import keys
from routing.bridge import WrittenAgain, from_211_copy, into_211, reads_alike, whole_when_behind, write_for
from routing.ocpi.auth import authorization_header
from routing.ocpi.errors import HubUnavailable
from routing.ocpi.headers import REQUEST_ID, ROUTING_HEADERS, new_id
from routing.ocpi.versions import V211, V221, token_encoding
from routing.outbound import OutboundPolicy, host_of, refused_address
from routing.platform import PER_ENDPOINT_CACHE, PER_PLATFORM_CACHE, ConnectionStatus, Platform
from routing.queue import DeliveryQueue, Message
from routing.redis_health import RedisHealth
from routing.retry import backoff, describe, push_verdict
from routing.store_forward import (
    DEAD_LETTERED,
    DELIVERED,
    KIND,
    RETRYING,
    SUPERSEDED,
    Delivered,
    DeliveryLedger,
    DeliveryState,
    Newer,
)
from routing.tasks import stop_task
from routing.upstream import Upstream
from routing.wire import ForwardRequest, Reply

log = logging.getLogger("routing.delivery")

# Headers of the receiver's answer that the caller gets back (ids are set by the hub itself).
RELAYED_HEADERS = (*ROUTING_HEADERS, "X-Total-Count", "X-Limit", "Link", "Location")
# Of those, the ones whose value is a list (RFC 8288 §3: link-values separated by commas) and may come in several
# lines: read whole, joined with ", " (RFC 9110 §5.3). Of any other, the first line.
LIST_HEADERS = ("Link",)
_RELAYED_LOWER = tuple((h, h.lower()) for h in RELAYED_HEADERS)

Resolver = Callable[[str], Platform | None]
# Reads one platform from the store into the process's view: (platform id, revision needed) -> current state.
Refresher = Callable[[str, int], Awaitable[Platform | None]]
HostsOf = Callable[[str], frozenset[str]]  # platform id -> hosts it registered (PlatformRegistry.url_hosts)


def join_url(base: str, tail: str, query: str = "") -> str:
    """The advertised endpoint URL exactly as given when nothing is appended (a partner that advertised
    ``…/cdrs/`` is called on ``…/cdrs/``, not ``…/cdrs``, which FastAPI-style servers answer with a redirect);
    exactly one slash between it and a path below it (OCPI 2.2.1 transport_and_format). The result is encoded.

    ``tail`` and ``query`` are percent-encoded as the caller sent them and must go out unchanged (an id with
    an encoded '/' or a query value with an encoded '&' keeps its meaning): request ``URL(.., encoded=True)``.
    """
    url = _endpoint_base(base)
    if tail:
        url += ("" if url.endswith("/") else "/") + tail.lstrip("/")
    if query:
        url += "?" + query
    return url


@functools.lru_cache(maxsize=PER_ENDPOINT_CACHE)
def _endpoint_base(base: str) -> str:
    """A partner's endpoint URL, encoded, its path as advertised (a handful per platform, parsed once)."""
    return str(URL(base))


@functools.lru_cache(maxsize=PER_PLATFORM_CACHE)
def _authorization(token: str, version: str | None) -> str:
    """OCPI 2.1.1 receivers read the raw token; 2.2 and later Base64 (OCPI 2.2.1 Authorization header)."""
    return authorization_header(token, token_encoding(version or V221))


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """The request's time budget, rounded down to 10 ms: one shared ``ClientTimeout`` per step instead of one
    built per request (never longer than the budget; never 0, which aiohttp reads as no limit)."""
    return _timeout_of(max(1, int(seconds * 100)))


@functools.lru_cache(maxsize=4096)
def _timeout_of(centiseconds: int) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=centiseconds / 100)


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The answer's body, or None as soon as it passes ``limit`` bytes.

    An answer that declares a length within the limit (almost all) is read in one go; one without a length is
    read chunk by chunk and given up on as soon as it passes the limit.
    """
    size = resp.content_length
    if size is not None:
        return await resp.read() if size <= limit else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def ocpi_status_of(body: bytes) -> int | None:
    """The OCPI status_code of a response body, or None when it is not an OCPI envelope."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    code = doc.get("status_code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


# Share of the forward timeout a queued direct request must still have to be forwarded at all: one that waited
# almost its whole budget behind a slow receiver would reach it with milliseconds left, be acted on there
# (a START_SESSION, a PUT) while its caller gets 4002 and may retry: that is a late delivery in all but name.
MIN_BUDGET_SHARE = 0.2


def _live(platform: Platform) -> bool:
    return platform.status == ConnectionStatus.CONNECTED and not platform.removed


def _as_written(fwd: ForwardRequest, again: WrittenAgain, now: str) -> ForwardRequest:
    """The queued push ``fwd`` as ``again`` writes it for a receiver now speaking ``now``."""
    headers = fwd.headers
    if again.body and "Content-Type" not in headers:
        headers = {**headers, "Content-Type": "application/json"}
    return dataclasses.replace(fwd, method=again.method, body=again.body, query=again.query,
                               headers=headers, receiver_version=now, sent=None)


@dataclass(slots=True)
class _Receiver:
    """Who a message goes to, and how sure this process is of it."""

    platform: Platform | None
    refreshed: bool = False  # just read from the store
    unconfirmed: bool = False  # the view looked behind and the store could not be read


def hub_error_reply(code: int, message: str, cause: str = "") -> Reply:
    http = {3000: 500, 4000: 502, 4001: 404, 4002: 504, 4003: 503}.get(code, 502)
    return Reply(status=http, hub_error=code, message=message, cause=cause)


# How often a process's reaper also expires and caps dead letters (every process does, idempotently).
TRIM_DEAD_LETTERS_EVERY = 60.0
# Heartbeats of the delivery engines: how often, and how long one counts as live without one. The in-flight limit
# per receiver is the per-process setting times the live engines, so a busy receiver gets more from more workers
# while what it sees stays bounded (docs/architecture.md, "In-flight limit").
HEARTBEAT_EVERY = 2.0
HEARTBEAT_TTL = 10.0


class Delivery:
    """The delivery engine of one hub process."""

    def __init__(
        self,
        *,
        queue: DeliveryQueue,
        redis: Redis,
        resolve: Resolver,
        session: aiohttp.ClientSession,
        prefix: str,
        forward_timeout: float,
        concurrency: int = 512,
        max_reply_bytes: int = 32 * 1024 * 1024,
        min_budget: float | None = None,
        retry_window: float = 600.0,
        refresh: Refresher | None = None,
        outbound: OutboundPolicy | None = None,
        url_hosts: HostsOf | None = None,
        health: RedisHealth | None = None,
        ledger: DeliveryLedger | None = None,
        store_forward_window: float = 7 * 86400.0,
        store_forward_max_backoff: float = 60.0,
        upstream: Upstream | None = None,
    ) -> None:
        self.queue = queue
        self.redis = redis
        self.resolve = resolve
        self.refresh = refresh
        self.session = session
        # The forward client (routing/upstream.py); None: forwards go through ``session`` (HUB_FORWARD_CLIENT).
        self.upstream = upstream
        self.prefix = prefix
        self.forward_timeout = forward_timeout
        self.concurrency = concurrency
        self.max_reply_bytes = max_reply_bytes  # a hostile receiver cannot make the hub buffer without bound
        self.min_budget = forward_timeout * MIN_BUDGET_SHARE if min_budget is None else min_budget
        self.retry_window = retry_window
        # Store-and-forward (routing/store_forward.py): delivery states, and how long and how patiently a message
        # accepted for later delivery is retried.
        self.ledger = ledger
        self.store_forward_window = store_forward_window
        self.store_forward_max_backoff = store_forward_max_backoff
        # Checked again at call time (docs/security.md, "Outbound URLs"): the policy or the platform's hosts may
        # have changed since a URL was accepted.
        self.outbound = outbound or OutboundPolicy()
        self.url_hosts: HostsOf = url_hosts or (lambda platform_id: frozenset())
        # Redis outages: recorded and logged once there, not once per message or loop turn.
        self.health = health or RedisHealth(redis, keys.probe(prefix))
        self.on_retry: Callable[[Message], None] | None = None
        # Every forward attempt's outcome (direct, callback and hub-originated pushes alike): metrics.
        self.on_result: Callable[[str, str], None] | None = None  # (receiver platform id, Reply.result)
        # Roaming agreements (routing/roaming.py): why a queued push may no longer go to its receiver, or None;
        # such a push is dropped and counted, never delivered nor dead-lettered (docs/agreements.md).
        self.admit_push: Callable[[ForwardRequest, Platform | None], str | None] | None = None
        self.on_refused: Callable[[Message, str], None] | None = None
        # Store-and-forward and replayed pushes: (message, event) for accepted, delivered, retried, dead_lettered,
        # superseded (metrics).
        self.on_stored: Callable[[Message, ForwardRequest, str], None] | None = None
        # A queued push written again at delivery (its receiver changed version: translated, or as its sender sent
        # it; or sent whole by ``write_superseded``) that the receiver accepted: (message, request as sent, how it
        # was written and its losses, reply, X-Request-ID sent): audit and metrics.
        self.on_written_again: Callable[[Message, ForwardRequest, WrittenAgain, Reply, str], None] | None = None
        # A queued push that only the hub can write in its receiver's new version, with what it holds: one written
        # in OCPI 2.1.1 for a receiver now on 2.2.1 or 2.3.0, with no other body (``routing.bridge.from_211_copy``),
        # or one written in 2.2.1 or 2.3.0 for a receiver now on 2.1.1 (``routing.bridge.into_211``). Awaited
        # before it is sent, with the request, the receiver as it is now and when the hub accepted the push
        # (``Message.accepted_at``: the last_updated a 2.1.1 PATCH without one gets), it writes the push in the
        # receiver's version as the live path does (the parties behind a 2.1.1 body, the Location a 2.1.1 Session
        # embeds; a PATCH the live path writes from the hub's copy of the object as a PUT of that copy as it is
        # then: hub/bridging.py), or says why it cannot (a dead letter). None: refused.
        self.write_with_hub: Callable[[ForwardRequest, Platform, float], Awaitable[WrittenAgain | str]] | None = None
        # A queued push older than what its receiver got of the object, whose change the newer pushes may not carry
        # (a replayed dead letter; ``routing.bridge.whole_when_behind``: Location, Session, Tariff and Token
        # pushes): awaited with the request and the receiver as it is now, it writes the hub's copy of the object as
        # a PUT in the receiver's version (hub/bridging.py), or says why not (the push is then dropped as
        # superseded). None: dropped as superseded.
        self.write_superseded: Callable[[ForwardRequest, Platform], Awaitable[WrittenAgain | str]] | None = None
        self.process_id = uuid.uuid4().hex
        self.inflight_per_process = queue.max_inflight
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        # Receivers this process saw fail (unreachable, timeout, 5xx): on their next success, their pushes waiting
        # for a retry are made due at once (``DeliveryQueue.hasten``) instead of at the end of their backoff.
        self._failing: set[str] = set()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._beat()
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(keys.wake_channel(self.prefix), keys.reply_channel(self.prefix, self.process_id))
        self._loops = [
            asyncio.create_task(self._listen(), name="delivery-listen"),
            asyncio.create_task(self._dispatch(), name="delivery-dispatch"),
            asyncio.create_task(self._reap(), name="delivery-reap"),
        ]

    @property
    def loops(self) -> list[asyncio.Task[None]]:
        """The listener, dispatcher and reaper: running from ``start`` until ``stop``."""
        return list(self._loops)

    def wake(self) -> None:
        """Tell this process's dispatcher there is queued work (other processes hear the wake channel)."""
        self._wake.set()

    async def stop(self) -> None:
        for task in self._loops:
            await stop_task(task)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.forward_timeout + 1)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        with contextlib.suppress(Exception):  # the others' limits shrink at their next heartbeat
            await self.redis.zrem(keys.processes(self.prefix), self.process_id)

    async def _beat(self) -> None:
        """Count this engine live, and take the receivers' in-flight limit as its share times the live engines."""
        now, key = time.time(), keys.processes(self.prefix)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(key, {self.process_id: now})
        pipe.zremrangebyscore(key, "-inf", now - HEARTBEAT_TTL)
        pipe.zcard(key)
        live = int((await pipe.execute())[2])
        await self.queue.set_max_inflight(self.inflight_per_process * max(1, live))

    # -- direct requests ---------------------------------------------------------------------------------
    async def send_direct(self, msg: Message, fwd: ForwardRequest | None = None) -> Reply:
        """Route one direct request through the receiver's queue and wait for its answer.

        ``fwd`` is the request ``msg.payload`` encodes, when the caller has it: delivered at once, it need not be
        decoded again.
        """
        msg.origin = self.process_id
        if self._loop is None:  # looked up once: get_running_loop() costs a getpid() system call on 3.11
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._pending[msg.id] = future  # before enqueue: a fast dispatcher must find it
        try:
            if await self.queue.enqueue(msg, claim=True):
                try:
                    return await self._deliver(msg, fwd)
                finally:
                    # Whatever happened, free the group: a lease left behind would stall it. The caller need
                    # not wait for that round trip; the ack goes out with this tick's other script calls.
                    self.queue.ack_soon(msg).add_done_callback(self._log_failed_ack)
            self._wake.set()
            wait = max(msg.deadline - time.time(), 0.0) + 0.5
            waited_out = False
            try:
                reply = await asyncio.wait_for(future, timeout=wait)
            except TimeoutError:
                reply, waited_out = hub_error_reply(4002, "receiver did not answer in time", "timeout"), True
            if (waited_out or reply.cause == "expired") and self.health.recently_out(wait + self.forward_timeout + 3):
                # It never left the queue, while Redis was out or behind a lease the outage left without a holder
                # (held until its message's deadline + 1 s, rounded up to the whole second, and reaped within
                # another second: routing/lua/lib.lua, lease): the hub failed, not
                # the receiver. A receiver that was asked and did not answer in time is still 4002.
                raise HubUnavailable("The hub is temporarily unavailable: it could not reach its queue store",
                                     retry_after=self.health.retry_after)
            return reply
        finally:
            self._pending.pop(msg.id, None)

    def _log_failed_ack(self, done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and (exc := done.exception()) is not None:  # the lease expires, the reaper frees it
            if not self.health.failed(exc):
                log.warning("ack failed: %s", exc)

    # -- store-and-forward ------------------------------------------------------------------------------
    async def defer(self, msg: Message, fwd: ForwardRequest, module: str) -> DeliveryState:
        """Accept a message for later delivery: once this returns, it is in the receiver's queue (as durable as
        Redis is configured to be, docs/store-and-forward.md) and will be delivered or dead-lettered.

        A sender that sends the same request id to the same receiver again (it did not get the answer) gets the
        first message's state back, and nothing is queued twice.
        """
        assert self.ledger is not None and msg.kind == KIND
        now = time.time()
        state = DeliveryState(request_id=fwd.sender_request_id, message_id=msg.id, sender=fwd.sender,
                              receiver=msg.receiver, module=module, state="queued", attempts=0, accepted_at=now,
                              updated_at=now, forwarded_request_id=fwd.headers.get(REQUEST_ID, ""))
        existing = await self.ledger.claim(state)
        if existing is not None:
            return existing
        msg.enqueued_at = now  # the window counts from the acceptance the sender was told of
        try:
            await self.queue.enqueue(msg)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.ledger.forget(state)
            raise
        self._wake.set()
        if self.on_stored is not None:
            self.on_stored(msg, fwd, "accepted")
        return state

    # -- forwarding --------------------------------------------------------------------------------------
    async def _deliver(self, msg: Message, fwd: ForwardRequest | None = None, receiver: _Receiver | None = None,
                       again: WrittenAgain | None = None) -> Reply:
        reply = await self._forward(msg, fwd, receiver, again)
        if self._failing and reply.accepted:
            self.answered_again(msg.receiver)
        if self.on_result is not None and (result := reply.result) is not None:
            self.on_result(msg.receiver, result)
        return reply

    def answered_again(self, receiver: str) -> None:
        """The receiver answered someone (a still-alive check): when this process saw it fail, its pushes
        waiting for a retry go now."""
        if receiver in self._failing:
            self._failing.discard(receiver)
            self._spawn_hasten(receiver)

    def _spawn_hasten(self, receiver: str) -> None:
        task = asyncio.create_task(self._hasten(receiver))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hasten(self, receiver: str) -> None:
        try:
            if await self.queue.hasten(receiver):
                self._wake.set()
        except Exception as exc:  # the retries still come, at the end of their backoff
            self.health.report(exc, log, "hastening retries to %s failed", receiver)

    async def _receiver(self, receiver_id: str, revision: int) -> _Receiver:
        """The receiver as this process sees it; read from the store first when that view may be behind.

        Behind means older than the revision the message was made for, or not CONNECTED: the view is only
        kept in step by notices (bounded wait), and a receiver must never be refused as not connected on a
        stale view alone. Routing refuses receivers that are not CONNECTED before anything is queued, so the
        store read happens on rare paths only, never per routed request.
        """
        platform = self.resolve(receiver_id)
        if platform is not None and platform.revision >= revision and _live(platform):
            return _Receiver(platform)
        if self.refresh is None:
            return _Receiver(platform)
        try:
            return _Receiver(await self.refresh(receiver_id, revision), refreshed=True)
        except Exception:  # the store is unreachable: not a verdict on the receiver, retry the push later
            log.warning("could not read receiver %s from the store", receiver_id, exc_info=True)
            return _Receiver(platform, unconfirmed=True)

    async def _in_version(self, fwd: ForwardRequest, platform: Platform, msg: Message,
                          ) -> tuple[ForwardRequest, WrittenAgain] | str:
        """A queued push as its receiver reads it now. Written for a version the receiver left (it registered
        again, credentials PUT): as its sender sent it, or translated into the receiver's current version where
        that needs nothing but the message (``write_for``), or, for a push whose only body is a 2.1.1 one
        (``from_211_copy``) or one going down into 2.1.1 (``into_211``), by the hub with what it knows of the
        parties and objects (or its copy of the object, sent whole for a PATCH the live path writes from it) and
        when it accepted the push (``msg.accepted_at``; ``write_with_hub``); else why not, a permanent verdict (a
        dead letter). Never a delivery in a shape the receiver no longer speaks (docs/store-and-forward.md, "When
        the receiver changes version or endpoint"). Called only when the receiver's version reads the push
        otherwise (``reads_alike``)."""
        now = platform.version or V221
        again = write_for(fwd, now)
        if isinstance(again, str) and self.write_with_hub is not None and (from_211_copy(fwd, now)
                                                                           or into_211(fwd, now)):
            again = await self.write_with_hub(fwd, platform, msg.accepted_at)
        if isinstance(again, str):
            return again
        return _as_written(fwd, again, now), again

    async def _forward(self, msg: Message, fwd: ForwardRequest | None, receiver: _Receiver | None = None,
                       again: WrittenAgain | None = None) -> Reply:
        """One forward of ``msg`` (``fwd``, decoded) to its receiver. ``again``: how the hub already wrote it
        again (``write_superseded``), reported with the answer as a write at delivery is."""
        if fwd is None:
            fwd = ForwardRequest.decode(msg.payload)
        if receiver is None:
            platform = self.resolve(msg.receiver)
            if (platform is None or platform.removed or platform.status != ConnectionStatus.CONNECTED
                    or platform.revision < fwd.receiver_revision):
                receiver = await self._receiver(msg.receiver, fwd.receiver_revision)  # rare path
        if receiver is not None:
            if receiver.unconfirmed:
                return hub_error_reply(4003, "receiver's state could not be read", "internal")
            platform = receiver.platform
        if platform is None or platform.removed or platform.status != ConnectionStatus.CONNECTED:
            return hub_error_reply(4003, "receiver is not connected", "not_connected")
        # A push is written for the receiver's version of the moment (never direct requests): rarely another now.
        if fwd.receiver_version and not reads_alike(fwd.module, fwd.receiver_version, platform.version or V221):
            sent = await self._in_version(fwd, platform, msg)
            if isinstance(sent, str):
                return hub_error_reply(4001, sent, "version_changed")
            fwd, again = sent
        base = fwd.url or platform.endpoint_url(fwd.module, fwd.interface_role)
        if base is None or not platform.outbound_token:
            return hub_error_reply(4003, f"receiver has no {fwd.module} {fwd.interface_role} endpoint", "no_endpoint")
        why = self._refusal(msg.receiver, fwd.url or base, callback=bool(fwd.url))
        if why is not None:
            return hub_error_reply(4003, f"the hub does not call this receiver URL: {why}", "refused_url")
        remaining = msg.deadline - time.time() if msg.deadline else self.forward_timeout
        if remaining < min(self.min_budget, self.forward_timeout):
            return hub_error_reply(4002, "request waited too long in the queue to be forwarded in time", "expired")
        headers = dict(fwd.headers)
        if platform.version == V211:  # OCPI 2.1.1 has no routing headers: the receiver is the connection's party
            for name in ROUTING_HEADERS:
                headers.pop(name, None)
        headers["Authorization"] = _authorization(platform.outbound_token, platform.version)
        if REQUEST_ID not in headers:  # a stored message keeps the one chosen when it was accepted: every attempt
            headers[REQUEST_ID] = new_id()  # OCPI: a hub sets a new request id, keeps the correlation id
        started = time.perf_counter()
        target = fwd.url if fwd.url else join_url(base, fwd.tail, fwd.query)
        budget = min(remaining, self.forward_timeout)
        try:
            if self.upstream is not None:
                answer = await self.upstream.request(fwd.method, target, headers, fwd.body or None, budget=budget,
                                                     max_body=self.max_reply_bytes)
                status, body, got = answer.status, answer.body, answer.headers.get
                relayed = {h: v for h, lower in _RELAYED_LOWER if (v := got(lower)) is not None}
            else:
                status, body, relayed = await self._forward_by_session(fwd.method, URL(target, encoded=True),
                                                                       fwd.body, headers, budget)
        except TimeoutError:
            return hub_error_reply(4002, "receiver did not answer in time", "timeout")
        except ValueError:  # e.g. a port out of range: the partner advertised an endpoint no one can call
            return hub_error_reply(4003, f"receiver's {fwd.module} {fwd.interface_role} endpoint URL is unusable "
                                   "(or the request cannot be sent to it as written)", "bad_url")
        except (aiohttp.ClientError, OSError) as exc:
            if (refused := refused_address(exc)) is not None:  # from the PolicyResolver
                return hub_error_reply(4003, f"the hub does not call this receiver URL: {refused}", "refused_url")
            return hub_error_reply(4003, f"receiver unreachable: {type(exc).__name__}", "unreachable")
        if body is None:
            return hub_error_reply(
                4000, f"receiver's answer is larger than the hub accepts ({self.max_reply_bytes} bytes)", "not_ocpi")
        receiver_ms = (time.perf_counter() - started) * 1000
        if not 200 <= status <= 599:  # RFC 9110 §15: 100-599 (a 1xx is interim): never relayed as an answer
            reply = hub_error_reply(4000, f"receiver answered HTTP status {status}, not a final HTTP status "
                                    "(200-599)", "not_ocpi")
            reply.receiver_ms, reply.receiver_status = receiver_ms, status
            return reply
        ocpi_status = ocpi_status_of(body)
        if ocpi_status is None:
            reply = hub_error_reply(4000, f"receiver answered HTTP {status} without an OCPI envelope", "not_ocpi")
            reply.receiver_ms, reply.receiver_status = receiver_ms, status
            return reply
        reply = Reply(status=status, headers=relayed, body=body, receiver_ms=receiver_ms, ocpi_status=ocpi_status)
        if again is not None and self.on_written_again is not None and reply.accepted:
            self.on_written_again(msg, fwd, again, reply, headers[REQUEST_ID])
        return reply

    async def _forward_by_session(self, method: str, url: URL, data: bytes, headers: dict[str, str], budget: float,
                                  ) -> tuple[int, bytes | None, dict[str, str]]:
        """The forward through aiohttp's ClientSession (``HUB_FORWARD_CLIENT=aiohttp``)."""
        async with self.session.request(method, url, data=data or None, headers=headers, timeout=_timeout(budget),
                                        allow_redirects=False) as resp:
            body = await read_at_most(resp, self.max_reply_bytes)
            got = resp.headers.get
            relayed = {h: v for h in RELAYED_HEADERS if (v := got(h)) is not None}
            for name in LIST_HEADERS:
                if name in relayed:
                    relayed[name] = ", ".join(resp.headers.getall(name))
            return resp.status, body, relayed

    def _refusal(self, receiver: str, url: str, *, callback: bool) -> str | None:
        """Why the outbound policy forbids calling ``url`` now; a callback URL must still be on a host its platform
        registered. Endpoint URLs cost one cached lookup: they were checked in full at registration."""
        why = self.outbound.refusal(url)
        if why is None and callback and host_of(url) not in self.url_hosts(receiver):
            why = f"host {host_of(url)} is no longer one the receiver registered"
        return why

    async def _process(self, msg: Message) -> None:
        """Dispatcher path: deliver unless expired, free the group, hand the reply to its waiter.

        The group is freed and the waiter answered even when forwarding fails unexpectedly: a lease left
        behind would hold up every later message of the object until it expires.
        """
        if msg.kind != "direct":
            await self._process_push(msg)
            return
        reply = hub_error_reply(4002, "request expired in the queue", "expired")  # never delivered late
        try:
            if not msg.expired and not (msg.deadline and msg.deadline <= time.time()):
                reply = await self._deliver(msg)
        except Exception:
            log.exception("delivery of message %s to %s failed", msg.id, msg.receiver)
            reply = hub_error_reply(3000, "internal hub error while forwarding", "internal")
        try:
            if not msg.expired:  # claim already removed an expired message: nothing to ack
                await self.queue.ack(msg)
            await self._send_reply(msg, reply)
        except Exception as exc:
            self.health.report(exc, log, "finishing message %s to %s failed", msg.id, msg.receiver)

    async def _process_push(self, msg: Message) -> None:
        """Pushes delivered in the background: the hub's own (broadcast fan-out, ClientInfo) and messages
        accepted for later delivery (``stored``). Transient failures are retried: within the retry window for the
        hub's pushes, never for receivers that are not CONNECTED; within the store-and-forward window for stored
        messages, which also wait out a receiver that is OFFLINE or SUSPENDED. What still fails is dead-lettered.

        Before giving up on a refusal (not connected, or the receiver said no: e.g. 401 to a Token B it has
        just replaced), the receiver is read from the store once; when it changed since the view this push
        was judged on, the push is tried again at once with the new state instead.

        A push of an object older than the version the receiver already got from the hub (a replayed dead
        letter, a retry overtaken), or than a PUT of the Location or EVSE holding it, is dropped as superseded,
        never delivered; but for a push whose change the newer ones may not carry (``whole_when_behind``), which
        goes as a PUT of the hub's copy of the object (``write_superseded``)."""
        stored = msg.kind == KIND
        fwd: ForwardRequest | None = None
        receiver: _Receiver | None = None
        got: Delivered | None = None
        rewritten: WrittenAgain | None = None
        try:
            fwd = ForwardRequest.decode(msg.payload)
            if self.admit_push is not None and (why := self.admit_push(fwd, self.resolve(msg.receiver))) is not None:
                await self._refuse_push(msg, why)
                return
            if fwd.object_path and self.ledger is not None:
                got = await self.ledger.delivered_versions(msg.receiver, fwd.object_path)
                if got.whole is not None and got.whole > fwd.object_version:
                    # A newer PUT of it, or of the Location (or EVSE) holding it, carried all of it.
                    await self._finish(msg, fwd, SUPERSEDED, "a newer version of the object was delivered whole")
                    return
            receiver = await self._receiver(msg.receiver, fwd.receiver_revision)
            if got is not None and got.version is not None and got.version > fwd.object_version:
                sent = await self._superseded(msg, fwd, receiver.platform)
                if isinstance(sent, str):
                    await self._finish(msg, fwd, SUPERSEDED, sent)
                    return
                fwd, rewritten = sent
            reply = await self._deliver(msg, fwd, receiver, rewritten)
            if (push_verdict(reply) in ("permanent", "not_connected") and not receiver.refreshed
                    and self.refresh is not None):
                fresh = await self.refresh(msg.receiver, 0)
                if fresh is not None and (receiver.platform is None or fresh.revision != receiver.platform.revision):
                    receiver = _Receiver(fresh, refreshed=True)
                    reply = await self._deliver(msg, fwd, receiver, rewritten)
        except Exception:
            log.exception("push %s to %s failed", msg.id, msg.receiver)
            reply = hub_error_reply(3000, "internal hub error while forwarding", "internal")
        verdict = push_verdict(reply)
        if stored and verdict == "not_connected" and receiver is not None and receiver.platform is not None \
                and not receiver.platform.removed:
            verdict = "transient"  # accepted for later delivery: it waits for the receiver to come back
        window = self.store_forward_window if stored else self.retry_window
        try:
            if verdict == "ok":
                newer = None if fwd is None or got is None or rewritten is not None else got.newer(
                    msg.receiver, fwd.object_version, fwd.method == "PUT")
                await self._finish(msg, fwd, DELIVERED, version=newer)
            elif verdict == "transient" and time.time() - msg.enqueued_at < window:
                self._failing.add(msg.receiver)
                if stored and fwd is not None:
                    await self._note(msg, fwd, RETRYING, describe(reply))
                cap = self.store_forward_max_backoff if stored else 60.0
                await self.queue.retry_later(msg, backoff(msg.attempts, cap=cap))
                if self.on_retry is not None:
                    self.on_retry(msg)
            else:
                if fwd is not None:
                    await self._note(msg, fwd, DEAD_LETTERED, describe(reply))
                await self.queue.dead_letter(msg, describe(reply))
        except Exception as exc:  # the lease expires and the push is delivered again: at least once
            self.health.report(exc, log, "finishing push %s to %s failed", msg.id, msg.receiver)

    async def _superseded(self, msg: Message, fwd: ForwardRequest, platform: Platform | None,
                          ) -> tuple[ForwardRequest, WrittenAgain] | str:
        """A push older than what its receiver already got: why it is dropped, or, for one whose change the newer
        pushes may not carry (``whole_when_behind``: a Location, Session, Tariff or Token push), the PUT of the hub's
        copy it goes as."""
        superseded = "a newer version of the object was delivered"
        if self.write_superseded is None or platform is None or not whole_when_behind(fwd):
            return superseded
        whole = await self.write_superseded(fwd, platform)
        if isinstance(whole, str):
            log.warning("push %s to %s dropped as superseded: %s", msg.id, msg.receiver, whole)
            return whole
        return _as_written(fwd, whole, platform.version or V221), whole

    async def _finish(self, msg: Message, fwd: ForwardRequest | None, event: str, why: str = "",
                      version: Newer | None = None) -> None:
        """Delivered or superseded: the state (and the object version the receiver now has) first, then the ack
        (a crash in between delivers it again, with the same request id, rather than lose it)."""
        if fwd is not None:
            await self._note(msg, fwd, event, why, version)
        await self.queue.ack(msg)

    async def _note(self, msg: Message, fwd: ForwardRequest, event: str, why: str = "",
                    version: Newer | None = None) -> None:
        if self.ledger is not None:
            if fwd.sender_request_id:  # a stored message: its state, in one round trip with the version
                await self.ledger.moved(msg.id, msg.receiver, fwd.module, event, attempts=msg.attempts,
                                        error=why, version=version)
            elif version is not None:  # a hub push (broadcast): only the version
                await self.ledger.delivered_version(version)
        if self.on_stored is not None and (fwd.sender_request_id or event == SUPERSEDED):
            self.on_stored(msg, fwd, event)

    async def _refuse_push(self, msg: Message, why: str) -> None:
        """A push no roaming agreement allows any more (queued, retried or replayed before it ended): dropped.
        A dead letter would only be refused again on replay, and the data is no longer the receiver's to get."""
        log.info("push %s to %s dropped: %s", msg.id, msg.receiver, why)
        if self.on_refused is not None:
            self.on_refused(msg, why)
        try:
            await self.queue.ack(msg)
        except Exception as exc:  # the lease expires and the push is judged again: still refused
            self.health.report(exc, log, "dropping push %s to %s failed", msg.id, msg.receiver)

    async def _send_reply(self, msg: Message, reply: Reply) -> None:
        if not msg.origin:
            return
        if msg.origin == self.process_id:
            self._resolve(msg.id, reply)
            return
        await self.redis.publish(keys.reply_channel(self.prefix, msg.origin), msg.id.encode() + b"\n" + reply.encode())

    def _resolve(self, msg_id: str, reply: Reply) -> None:
        future = self._pending.get(msg_id)
        if future is not None and not future.done():
            future.set_result(reply)

    # -- background loops --------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            try:
                await self._room.wait()
                self._wake.clear()
                free = self.concurrency - self._active
                msgs = await self.queue.claim(max_items=min(free, 32))
                if not msgs:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=0.5)
                    continue
                for msg in msgs:
                    self._spawn(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.health.report(exc, log, "dispatcher error; retrying")
                await asyncio.sleep(0.5)

    def _spawn(self, msg: Message) -> None:
        self._active += 1
        if self._active >= self.concurrency:
            self._room.clear()
        task = asyncio.create_task(self._process(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._active -= 1
        self._room.set()

    async def _listen(self) -> None:
        wake = keys.wake_channel(self.prefix).encode()
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.health.report(exc, log, "pubsub read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            channel = message["channel"]
            if isinstance(channel, str):
                channel = channel.encode()
            if channel == wake:
                self._wake.set()
                continue
            raw = bytes(message["data"])
            msg_id, _, data = raw.partition(b"\n")
            try:
                msg_id_text, reply = msg_id.decode(), Reply.decode(data)
            except (ValueError, TypeError) as exc:  # orjson's and UTF-8's errors are ValueErrors
                # Skipped, never fatal: a loop that ended here would leave every later reply unheard, and each
                # request another process delivered for this one a 504.
                log.warning("skipped a message on this process's reply channel that is no reply it can read "
                            "(%s): %.120r", exc, raw)
                continue
            self._resolve(msg_id_text, reply)

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        next_trim = loop.time() + random.uniform(0, TRIM_DEAD_LETTERS_EVERY)  # workers spread out
        next_beat = loop.time() + HEARTBEAT_EVERY
        while True:
            await asyncio.sleep(1.0)
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + HEARTBEAT_EVERY
                    await self._beat()
                if await self.queue.reap():
                    self._wake.set()
                if loop.time() >= next_trim:
                    next_trim = loop.time() + TRIM_DEAD_LETTERS_EVERY
                    await self.queue.trim_dead_letters()
                    if self.ledger is not None:
                        await self.ledger.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.health.report(exc, log, "reaping expired leases failed")
