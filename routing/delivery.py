"""Delivery: take messages from the receivers' queues and forward them with one shared ClientSession.

A direct request is enqueued with claim-on-enqueue: when its ordering group is free the handler delivers it
itself (one Redis round trip saved); otherwise any process's dispatcher delivers it when its turn comes and the
reply reaches the waiting handler through an in-process future or, across processes, the origin's reply channel.
Direct requests are never retried (OCPI); past their deadline they are dropped, not delivered late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from hub.ocpi.auth import authorization_header
from hub.ocpi.headers import REQUEST_ID, ROUTING_HEADERS, new_id
from hub.platform import ConnectionStatus, Platform
from routing import keys
from routing.queue import DeliveryQueue, Message
from routing.wire import ForwardRequest, Reply

log = logging.getLogger("routing.delivery")

# Headers of the receiver's answer that the caller gets back (ids are set by the hub itself).
RELAYED_HEADERS = (*ROUTING_HEADERS, "X-Total-Count", "X-Limit", "Link", "Location")

Resolver = Callable[[str], Platform | None]


def join_url(base: str, tail: str, query: str = "") -> str:
    """Exactly one slash between an endpoint URL and the path below it (digest §2.9)."""
    url = base.rstrip("/")
    if tail:
        url += "/" + tail.lstrip("/")
    if query:
        url += "?" + query
    return url


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


def hub_error_reply(code: int, message: str) -> Reply:
    http = {4000: 502, 4001: 404, 4002: 504, 4003: 503}.get(code, 502)
    return Reply(status=http, hub_error=code, message=message)


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
    ) -> None:
        self.queue = queue
        self.redis = redis
        self.resolve = resolve
        self.session = session
        self.prefix = prefix
        self.forward_timeout = forward_timeout
        self.concurrency = concurrency
        self.process_id = uuid.uuid4().hex
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._pubsub: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(keys.wake_channel(self.prefix), keys.reply_channel(self.prefix, self.process_id))
        self._loops = [
            asyncio.create_task(self._listen(), name="delivery-listen"),
            asyncio.create_task(self._dispatch(), name="delivery-dispatch"),
            asyncio.create_task(self._reap(), name="delivery-reap"),
        ]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.forward_timeout + 1)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    # -- direct requests ---------------------------------------------------------------------------------
    async def send_direct(self, msg: Message) -> Reply:
        """Route one direct request through the receiver's queue and wait for its answer."""
        msg.origin = self.process_id
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[msg.id] = future  # before enqueue: a fast dispatcher must find it
        try:
            if await self.queue.enqueue(msg, claim=True):
                reply = await self._deliver(msg)
                await self.queue.ack(msg)
                return reply
            self._wake.set()
            wait = max(msg.deadline - time.time(), 0.0) + 0.5
            try:
                return await asyncio.wait_for(future, timeout=wait)
            except TimeoutError:
                return hub_error_reply(4002, "receiver did not answer in time")
        finally:
            self._pending.pop(msg.id, None)

    # -- forwarding --------------------------------------------------------------------------------------
    async def _deliver(self, msg: Message) -> Reply:
        fwd = ForwardRequest.decode(msg.payload)
        platform = self.resolve(msg.receiver)
        if platform is None or platform.removed or platform.status != ConnectionStatus.CONNECTED:
            return hub_error_reply(4003, "receiver is not connected")
        base = platform.endpoint_url(fwd.module, fwd.interface_role)
        if base is None or not platform.outbound_token:
            return hub_error_reply(4003, f"receiver has no {fwd.module} {fwd.interface_role} endpoint")
        remaining = msg.deadline - time.time() if msg.deadline else self.forward_timeout
        if remaining <= 0:
            return hub_error_reply(4002, "request expired before it could be forwarded")
        headers = dict(fwd.headers)
        headers["Authorization"] = authorization_header(platform.outbound_token)
        headers[REQUEST_ID] = new_id()  # OCPI: a hub sets a new request id, keeps the correlation id
        started = time.perf_counter()
        try:
            async with self.session.request(
                fwd.method,
                join_url(base, fwd.tail, fwd.query),
                data=fwd.body or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=min(remaining, self.forward_timeout)),
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                relayed = {h: resp.headers[h] for h in RELAYED_HEADERS if h in resp.headers}
                status = resp.status
        except TimeoutError:
            return hub_error_reply(4002, "receiver did not answer in time")
        except (aiohttp.ClientError, OSError) as exc:
            return hub_error_reply(4003, f"receiver unreachable: {type(exc).__name__}")
        receiver_ms = (time.perf_counter() - started) * 1000
        ocpi_status = ocpi_status_of(body)
        if ocpi_status is None:
            reply = hub_error_reply(4000, f"receiver answered HTTP {status} without an OCPI envelope")
            reply.receiver_ms = receiver_ms
            return reply
        return Reply(status=status, headers=relayed, body=body, receiver_ms=receiver_ms, ocpi_status=ocpi_status)

    async def _process(self, msg: Message) -> None:
        """Dispatcher path: deliver unless expired, free the group, hand the reply to its waiter."""
        try:
            if msg.deadline and msg.deadline <= time.time():
                reply = hub_error_reply(4002, "request expired in the queue")  # never delivered late
            else:
                reply = await self._deliver(msg)
            await self.queue.ack(msg)
            await self._send_reply(msg, reply)
        except Exception:
            log.exception("delivery of message %s to %s failed", msg.id, msg.receiver)

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
            except Exception:
                log.exception("dispatcher error; retrying")
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
            except Exception:
                log.warning("pubsub read failed; retrying", exc_info=True)
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
            msg_id, _, data = bytes(message["data"]).partition(b"\n")
            self._resolve(msg_id.decode(), Reply.decode(data))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if await self.queue.reap():
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reaping expired leases failed", exc_info=True)
