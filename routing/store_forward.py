"""Store-and-forward: which messages the hub accepts for later delivery, and what it remembers about them.

A receiving platform opts in per module (``Platform.store_forward``). A message it opted in for is answered
1000 to its sender once it is in the receiver's Redis queue, then delivered with backoff for
``HUB_STORE_FORWARD_WINDOW``, in order per object, always with the same ``X-Request-ID``
(docs/store-and-forward.md; this departs from OCPI 2.2.1 Offline behaviour, which asks a hub not to queue).

What can be deferred: pushes to a RECEIVER interface whose answer carries nothing the sender needs (PUT,
PATCH, POST, DELETE of CDRs, Sessions, Locations, Tariffs and Tokens), and the results a CPO POSTs to a
``response_url`` (commands, charging profiles). Never: GETs, real-time authorization, and command or
charging-profile *requests*, whose answers the sender is waiting for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from routing import keys
from routing.platform import Platform

# What a platform may opt in for; the first five as pushes to its RECEIVER interface, the last two as results.
PUSH_MODULES = frozenset({"cdrs", "sessions", "locations", "tariffs", "tokens"})
RESULT_MODULES = frozenset({"commands", "chargingprofiles"})
MODULES = PUSH_MODULES | RESULT_MODULES
_PUSH_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})
# Versions are compared for these only: a POSTed CDR is immutable, a DELETE has no body.
_VERSIONED_METHODS = frozenset({"PUT", "PATCH"})

KIND = "stored"  # Message.kind of a message accepted for later delivery
ACCEPTED_MESSAGE = "accepted for delivery by the hub"

# Delivery states a sender can ask for (``DeliveryLedger.states``).
QUEUED, RETRYING, DELIVERED, DEAD_LETTERED, SUPERSEDED = "queued", "retrying", "delivered", "dead_lettered", \
    "superseded"
DROPPED = "dropped"  # reported only: not final and no longer (or never) in the queue
_DROPPED_WHY = ("not in the queue: its enqueue failed (the sender was not answered 1000) or it was dropped with "
                "its receiver")
_ENQUEUE_GRACE = 2.0  # seconds; an enqueue takes one Redis round trip (HUB_REDIS_TIMEOUT bounds it)
_FINAL = frozenset({DELIVERED, DEAD_LETTERED, SUPERSEDED})
_COUNTED = ("accepted", "delivered", "retried", "dead_lettered", "superseded")


def defers_push(receiver: Platform, module: str, interface_role: str, method: str) -> bool:
    """Whether a direct request to ``receiver`` is accepted for later delivery instead of forwarded now."""
    return (module in receiver.store_forward and module in PUSH_MODULES and interface_role == "RECEIVER"
            and method in _PUSH_METHODS)


def defers_result(receiver: Platform, module: str) -> bool:
    """Whether a result POSTed to a hub callback URL (``response_url``) is accepted for later delivery."""
    return module in receiver.store_forward and module in RESULT_MODULES


def check_modules(modules: Iterable[str]) -> frozenset[str]:
    """The modules a platform opts in for, or ValueError naming the unknown ones."""
    wanted = frozenset(m.strip().lower() for m in modules)
    unknown = sorted(wanted - MODULES)
    if unknown:
        raise ValueError(f"unknown module(s) {', '.join(unknown)}; store-and-forward is for "
                         f"{', '.join(sorted(MODULES))}")
    return wanted


def version_of(method: str, body: Any) -> float | None:
    """The object version a push carries (its ``last_updated``, as a timestamp), for PUT and PATCH only."""
    if method not in _VERSIONED_METHODS or not isinstance(body, dict):
        return None
    stamp = body.get("last_updated")
    if not isinstance(stamp, str):
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # OCPI DateTime is UTC when no offset is given
        parsed = parsed.replace(tzinfo=UTC)
    value = parsed.timestamp()
    return value if math.isfinite(value) else None


def object_path(module: str, segments: list[str], query: str) -> str:
    """Which object a push is about, for version comparison: module and path ids (a token's type is in its
    query)."""
    path = f"{module}/{'/'.join(segments)}"
    return f"{path}?{query}" if query and module == "tokens" else path


@dataclass(frozen=True, slots=True)
class Newer:
    """A version a receiver now has of one object, for the ledger (``DeliveryLedger.delivered_version``)."""

    receiver: str
    path: str
    version: float
    whole: bool  # sent whole: a PUT
    holders: tuple[str, ...] = ()  # objects holding it whose newest version it now is


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a receiver already got of one object (``DeliveryLedger.delivered_versions``)."""

    path: str
    version: float | None  # the newest last_updated of any push of it or of a part of it
    whole: float | None  # the newest last_updated of a PUT of it or of an object holding it
    holders: tuple[tuple[str, float | None], ...] = ()  # (path, version as above) of the objects holding it

    def newer(self, receiver: str, version: float, whole: bool) -> Newer | None:
        """What to remember once ``version`` of the object reached ``receiver``, or None: nothing newer."""
        if self.version is not None and version <= self.version:
            return None
        raised = tuple(at for at, seen in self.holders if seen is None or version > seen)
        return Newer(receiver, self.path, version, whole, raised)


def holders(path: str) -> tuple[str, ...]:
    """The objects that hold the object at ``path`` (module and path ids) whole: a PUT of one of them carries it. A
    Location holds its EVSEs, an EVSE its Connectors (OCPI 2.2.1 mod_locations); nothing else nests."""
    parts = path.split("/")
    if parts[0] != "locations" or len(parts) <= 4:
        return ()
    return tuple("/".join(parts[:n]) for n in range(4, len(parts)))


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """Where one message accepted for later delivery stands (admin API ``/admin/deliveries/{request_id}``)."""

    request_id: str  # the sender's X-Request-ID
    message_id: str
    sender: str  # "CC:PID"
    receiver: str  # platform id
    module: str
    state: str
    attempts: int
    accepted_at: float
    updated_at: float
    last_error: str = ""
    forwarded_request_id: str = ""  # the X-Request-ID every attempt carries


class DeliveryLedger:
    """Delivery states, counts and waiting messages per receiver and module, in Redis next to the queue.

    Kept beside the queue's own keys, not inside its scripts: a state is written before the queue step it
    describes (a process killed in between leaves the message to be delivered again, never a state that claims
    more than happened). Waiting messages whose queue message is gone (a crash between the two) are pruned
    when read. Each step is one round trip (a MULTI pipeline) on the common path.
    """

    def __init__(self, redis: Redis, prefix: str, *, keep_for: float,
                 clock: Any = time.time) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keep_for = int(keep_for)  # the window, plus a day to look the last states up
        self._clock = clock

    def _record(self, pipe: Any, state: DeliveryState, sign: int = 1) -> None:
        """Queue the writes that make ``state`` a waiting, counted message (``sign`` -1 undoes them)."""
        p, msg_key = self.prefix, keys.sf_message(self.prefix, state.message_id)
        if sign > 0:
            pipe.hset(msg_key, mapping={k: _text(v) for k, v in asdict(state).items()})
            pipe.expire(msg_key, self.keep_for)
            pipe.zadd(keys.sf_waiting(p, state.receiver, state.module), {state.message_id: state.accepted_at})
            pipe.sadd(keys.sf_index(p), _index_member(state.receiver, state.module))
        else:
            pipe.delete(msg_key)
            pipe.zrem(keys.sf_waiting(p, state.receiver, state.module), state.message_id)
        pipe.hincrby(keys.sf_counts(p), _count_field(state.receiver, state.module, "accepted"), sign)

    async def claim(self, state: DeliveryState) -> DeliveryState | None:
        """Record a new message as waiting, unless the sender already had this request id accepted for this
        receiver: then that state is returned and nothing is to be queued (a sender retrying what was accepted
        gets 1000 again, the receiver gets it once).

        A state that is not final and whose queue message does not exist is a process killed between this and
        the enqueue: it is taken over, so the retry is queued instead of answered from a state that never left
        the hub.
        """
        index, field = keys.sf_state(self.prefix, state.request_id), _field(state.sender, state.receiver)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(index, field, state.message_id)
        pipe.expire(index, self.keep_for)
        self._record(pipe, state)
        if (await pipe.execute())[0]:
            return None
        existing = await self._existing(index, field)  # rare: a sender repeating a request id
        undo = self.redis.pipeline(transaction=True)
        self._record(undo, state, sign=-1)
        if existing is not None:
            await undo.execute()
            return existing
        undo.hset(index, field, state.message_id)  # taken over: this message is the one that counts
        self._record(undo, state)
        await undo.execute()
        return None

    async def _existing(self, index: str, field: str) -> DeliveryState | None:
        """The state a request id already has for a receiver, if it still stands (final, or queued)."""
        msg_id = await self.redis.hget(index, field)
        if msg_id is None:
            return None
        existing = await self._state(_member_str(msg_id))
        if existing is None:
            return None
        if existing.state in _FINAL or await self.redis.exists(keys.message(self.prefix, existing.message_id)):
            return existing
        return None

    async def forget(self, state: DeliveryState) -> None:
        """The enqueue failed: the sender is refused, and may send it again under the same id."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(keys.sf_state(self.prefix, state.request_id), _field(state.sender, state.receiver))
        self._record(pipe, state, sign=-1)
        await pipe.execute()

    async def moved(self, message_id: str, receiver: str, module: str, state: str, *, attempts: int,
                    error: str = "", version: Newer | None = None) -> None:
        """A message's new state, written before the queue step it announces; final states leave the waiting
        set, others (a replayed dead letter retried) join it again. ``version``: what the receiver now has of the
        object (see ``delivered_version``), in the same round trip."""
        p, msg_key, now = self.prefix, keys.sf_message(self.prefix, message_id), self._clock()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(msg_key, mapping={"state": state, "attempts": str(attempts), "updated_at": repr(now),
                                    "last_error": error})
        pipe.expire(msg_key, self.keep_for)
        counted = {RETRYING: "retried"}.get(state, state)
        if counted in _COUNTED:
            pipe.hincrby(keys.sf_counts(p), _count_field(receiver, module, counted), 1)
        waiting = keys.sf_waiting(p, receiver, module)
        if state in _FINAL:
            pipe.zrem(waiting, message_id)
        else:
            pipe.zadd(waiting, {message_id: now}, nx=True)
            pipe.sadd(keys.sf_index(p), _index_member(receiver, module))
        if version is not None:
            self._set_version(pipe, version)
        await pipe.execute()

    async def _state(self, message_id: str) -> DeliveryState | None:
        raw: dict[Any, Any] = await self.redis.hgetall(keys.sf_message(self.prefix, message_id))
        return _state_of(raw)

    async def states(self, request_id: str) -> list[DeliveryState]:
        """Every message accepted under one sender request id (senders may reuse ids: one per sender and
        receiver). A state that is not final while its queue message is gone is reported ``dropped``: the enqueue
        after it failed (Redis went away, the process died: the sender was not answered 1000), or the message
        was purged with its receiver."""
        ids = [_member_str(i) for i in await self.redis.hvals(keys.sf_state(self.prefix, request_id))]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hgetall(keys.sf_message(self.prefix, msg_id))
            pipe.exists(keys.message(self.prefix, msg_id))
        raw = await pipe.execute()
        now, found = self._clock(), []
        for doc, queued in zip(raw[::2], raw[1::2], strict=True):
            state = _state_of(doc)
            if state is None:
                continue
            # a few seconds of grace: between its state and its enqueue a message is not in the queue yet
            if state.state not in _FINAL and not queued and now - state.updated_at > _ENQUEUE_GRACE:
                state = replace(state, state=DROPPED, last_error=_DROPPED_WHY)
            found.append(state)
        return sorted(found, key=lambda s: (s.accepted_at, s.message_id))

    async def stats(self) -> list[dict[str, Any]]:
        """Per receiver and module: waiting, oldest age, accepted, delivered, retried, dead-lettered, superseded."""
        p = self.prefix
        members = sorted(_member_str(m) for m in await self.redis.smembers(keys.sf_index(p)))
        counts = {_member_str(k): int(v) for k, v in (await self.redis.hgetall(keys.sf_counts(p))).items()}
        now = self._clock()
        out = []
        for member in members:
            receiver, _, module = member.partition("\x1f")
            waiting, oldest = await self._waiting(receiver, module)
            row: dict[str, Any] = {"receiver": receiver, "module": module, "waiting": waiting,
                                   "oldest_age_seconds": round(max(0.0, now - oldest), 3) if oldest else 0.0}
            for what in _COUNTED:
                row[what] = counts.get(_count_field(receiver, module, what), 0)
            out.append(row)
        return out

    async def _waiting(self, receiver: str, module: str) -> tuple[int, float | None]:
        """How many wait and since when; heads whose queue message is gone are pruned first."""
        p = self.prefix
        key = keys.sf_waiting(p, receiver, module)
        while True:
            head = await self.redis.zrange(key, 0, 0, withscores=True)
            if not head:
                return 0, None
            msg_id, score = _member_str(head[0][0]), float(head[0][1])
            if await self.redis.exists(keys.message(p, msg_id)):
                return int(await self.redis.zcard(key)), score
            await self.redis.zrem(key, msg_id)

    async def prune(self, batch: int = 500) -> int:
        """Drop waiting entries whose queue message is gone (a process killed between the queue step and the
        state it wrote first). Run now and then by the reaper; returns how many it dropped."""
        p = self.prefix
        dropped = 0
        for member in [_member_str(m) for m in await self.redis.smembers(keys.sf_index(p))]:
            receiver, _, module = member.partition("\x1f")
            key = keys.sf_waiting(p, receiver, module)
            ids = [_member_str(i) for i in await self.redis.zrange(key, 0, batch - 1)]
            if not ids:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for msg_id in ids:
                pipe.exists(keys.message(p, msg_id))
            gone = [i for i, there in zip(ids, await pipe.execute(), strict=True) if not there]
            if gone:
                dropped += int(await self.redis.zrem(key, *gone))
        return dropped

    # -- object versions: an older retry or replay never overwrites a newer delivered version -----------------
    async def delivered_versions(self, receiver: str, path: str) -> Delivered:
        """What of the object at ``path`` reached ``receiver`` from the hub, in one round trip: the newest version
        (last_updated) of any push of it or of a part of it, the same for each object holding it (``holders``: the
        Location of an EVSE, the Location and EVSE of a Connector), and the newest version sent whole (a PUT) of
        it or of an object holding it."""
        p, held = self.prefix, holders(path)
        names = [keys.sf_version(p, receiver, at) for at in (path, *held)]
        names += [keys.sf_whole(p, receiver, at) for at in (path, *held)]
        raw = [None if x is None else float(x) for x in await self.redis.mget(names)]
        wholes = [x for x in raw[1 + len(held):] if x is not None]
        return Delivered(path, raw[0], max(wholes) if wholes else None, tuple(zip(held, raw[1:1 + len(held)],
                                                                                   strict=True)))

    async def delivered_version(self, newer: Newer) -> None:
        """Remember what the receiver got (``Delivered.newer``). The caller read the versions before delivering:
        messages of one object (a Location with its EVSEs and Connectors) go out one at a time (one ordering
        group), so nothing moved them in between."""
        pipe = self.redis.pipeline(transaction=False)
        self._set_version(pipe, newer)
        await pipe.execute()

    def _set_version(self, pipe: Any, newer: Newer) -> None:
        p, version = self.prefix, repr(newer.version)
        for at in (newer.path, *newer.holders):
            pipe.set(keys.sf_version(p, newer.receiver, at), version, ex=self.keep_for)
        if newer.whole:
            pipe.set(keys.sf_whole(p, newer.receiver, newer.path), version, ex=self.keep_for)


def _field(sender: str, receiver: str) -> str:
    return f"{sender}>{receiver}"


def _index_member(receiver: str, module: str) -> str:
    return f"{receiver}\x1f{module}"


def _count_field(receiver: str, module: str, what: str) -> str:
    return f"{receiver}\x1f{module}\x1f{what}"


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _state_of(raw: dict[Any, Any]) -> DeliveryState | None:
    """A state read back from its hash; None for a hash that is missing or only partly written."""
    doc = {_member_str(k): _member_str(v) for k, v in raw.items()}
    try:
        return DeliveryState(
            request_id=doc["request_id"], message_id=doc["message_id"], sender=doc["sender"],
            receiver=doc["receiver"], module=doc["module"], state=doc["state"], attempts=int(doc["attempts"]),
            accepted_at=float(doc["accepted_at"]), updated_at=float(doc["updated_at"]),
            last_error=doc.get("last_error", ""), forwarded_request_id=doc.get("forwarded_request_id", ""))
    except (KeyError, ValueError):
        return None


def _member_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
