"""The Redis-backed delivery queue every routed message passes through.

Why Redis and why this shape
----------------------------
Several hub processes share one Redis; any of them may deliver any message, and a process may die at any
moment. So all queue state lives in Redis and every state change that touches more than one key is a
single Lua script (atomic, one round trip). The hot path — ``enqueue``, ``claim``, ``ack`` — costs one
round trip each; ``enqueue(claim=True)`` even hands the message straight back to the caller when it can
be delivered at once, so the common case is two round trips per message (enqueue, ack).

Model
-----
* A message belongs to an **ordering group** ``(receiver, group)``. A group is a Redis list of message
  ids; its head is the message currently in progress. Only the head can be leased, and it stays the head
  until it is acked, so messages of one group go out strictly one at a time in enqueue order. Messages
  that need no ordering use their own id as group, i.e. a group of one.
* Groups, not messages, are scheduled. A group is in one of four states (``gstate`` hash, keyed by the
  group's *token*): *ready* (token in the global ``ready`` list), *ready with a reserved slot* (likewise,
  but already owning an in-flight slot), *parked* (token in the receiver's ``parked`` list) or *leased*
  (head id in the ``leases`` sorted set, scored by lease expiry). An empty group has no state and no list.
  A token found in a list that does not match its state is a stale duplicate (left by a purge) and is
  skipped, so a group can never be leased twice.
* **In-flight limit**: ``inflight[receiver]`` counts slots in use across all processes — leased groups,
  groups waiting for a retry and reserved hand-overs. ``claim`` pops ready tokens; a group whose receiver
  is at ``max_inflight`` is parked instead of leased, so a slow receiver only ever occupies its own slots
  and never delays other receivers. When a group's head is finished (``ack``, ``dead_letter``) its slot
  goes straight to the receiver's oldest parked group (reserved, front of the ready list) and the counter
  only drops if nothing is parked. Handing over instead of freeing keeps parked groups first in line —
  neither a newly ready group nor claim-on-enqueue can take the slot in between — and a finished group
  with more messages queues up behind them, so a deep group cannot keep a slot to itself.
* **Leases**: claiming the head increments its ``attempts`` and records that number as the lease id in
  the message hash. ``ack``/``retry_later``/``dead_letter`` pass it back and succeed only if it is still
  the live lease, so an ack arriving after the lease was reaped (and maybe re-granted to another process)
  returns False and changes nothing.
* **Crash recovery**: ``reap()`` takes lease entries whose time has passed and puts their groups back at
  the front of the ready list, keeping their slot (reserved), so the counter stays exact without any
  decrement; the same head message is claimed again next, with ``attempts`` + 1. ``claim`` also reaps up
  to ``max_items`` due entries first, so retry delays do not depend on how often ``reap`` runs. Both are
  idempotent.
* **Retry later**: the lease entry is re-scored to ``now + delay`` and the lease id cleared; the group
  stays leased (keeps its slot, nothing overtakes the message) until reaping makes it ready again.
* **Deadlines**: ``claim`` never leases a message past its deadline. It removes it from the queue inside
  the script and returns it with ``expired=True`` (the caller reports the timeout to whoever waits; it
  must not deliver or ack it), then looks at the next message of the same group.
* **Wake-ups**: every script that makes a group ready PUBLISHes on ``keys.wake_channel(prefix)`` (once per
  call; ``claim`` only for work it leaves behind), so idle dispatchers in other processes can wait on the
  channel instead of polling hard. A
  dispatcher loop is: ``claim()``; deliver each message and ``ack``/``retry_later``/``dead_letter`` it;
  when ``claim`` returned fewer than asked, wait for a wake message or a short poll timeout.
* **Stats** are O(receivers): ``pending:<receiver>`` (id -> enqueued_at in whole seconds, of every unacked
  message; the exact time is in the message's hash) gives depth and the oldest age, ``inflight`` the slots,
  ``dead-of:<receiver>`` the dead-letter count, ``dead-bytes`` and ``dead-evicted`` their bytes and how many were
  evicted.
* **Dead letters are bounded** per receiver by count, bytes and age (docs/security.md). ``dead_letter`` enforces
  all three in the same script that stores the new one, evicting the oldest first; ``trim_dead_letters`` (every
  process's reaper, now and then) expires the ones of receivers that get no new dead letters. Evictions are
  counted in Redis (``dead-evicted``) and reported to ``on_evicted`` (a metric).
* **A full Redis** (``maxmemory`` with ``noeviction``) refuses ``enqueue`` and ``replay`` (503 to the sender),
  but the scripts that finish or drop work (``ack``, ``claim``, ``retry``, ``reap``, ``dead_letter``, deletes and
  purges) carry the ``allow-oom`` flag (Redis 7): a full queue can still drain, which is what frees memory.

Time is the callers' clock (``time.time()`` by default), passed into the scripts, so hub hosts need
synchronised clocks (NTP) — deadlines come from the callers' clocks anyway. The key layout is documented
in :mod:`routing.keys`; the scripts are in ``routing/lua`` (``lib.lua`` is the shared prelude).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from routing import keys
from routing.batching import ScriptRunner, script_runner
from routing.keys import group_token
from routing.ocpi.headers import time_of_id, time_ordered_id
from routing.platform import PER_PLATFORM_CACHE
from routing.resp import bulk

_REAP_BATCH = 256
_TRIM_BATCH = 1000  # dead letters evicted per receiver and script call at most: no long script after a lowered cap
# Scripts that only finish, move or drop work: allowed when Redis is at maxmemory, so a full queue can drain.
_ALLOW_OOM = frozenset({"ack", "claim", "retry", "dead_letter", "reap", "delete_dead_letter", "purge",
                        "trim_dead_letters", "unpark", "hasten"})
_SHEBANG = "#!lua flags=allow-oom\n"

_Arg = str | bytes | int
_ID_TIME_SPAN = 366 * 86400.0  # a message replayed later than this after it was made gets its replay time


@dataclass(slots=True)
class Message:
    """One message to deliver to ``receiver``; ``payload`` is opaque to the queue.

    ``group`` "" means no ordering is needed: the message gets a group of its own, ``msg:<id>``.
    """

    receiver: str
    group: str
    payload: bytes
    kind: str = "direct"  # "direct" | "broadcast" | "callback"
    deadline: float = 0.0  # unix time after which delivering is pointless; 0 = none
    origin: str = ""  # id of the process waiting for the reply ("" = nobody)
    id: str = field(default_factory=time_ordered_id)
    attempts: int = 0  # claims so far, this one included; identifies the caller's lease
    enqueued_at: float = field(default_factory=time.time)
    expired: bool = False  # set by claim: dropped for its deadline, report it, do not deliver or ack

    def __post_init__(self) -> None:
        if not self.group:
            self.group = "msg:" + self.id

    @property
    def accepted_at(self) -> float:
        """When the hub made the message (seconds since the epoch): the time its id carries, which a replayed dead
        letter keeps, where ``enqueued_at`` starts its window again. ``enqueued_at`` for an id of another form, or
        one whose time cannot be the message's (before the hub used time-ordered ids, a message's id was a random
        UUID's 32 hex digits: the time read from it would be any date): it must precede ``enqueued_at`` by less
        than a year."""
        made = time_of_id(self.id)
        if made is None or not self.enqueued_at - _ID_TIME_SPAN <= made <= self.enqueued_at + 1.0:
            return self.enqueued_at
        return made


@dataclass(frozen=True)
class DeadLetter:
    """A message given up on, kept for operators to inspect, replay or delete."""

    id: str
    receiver: str
    group: str
    kind: str
    payload: bytes
    attempts: int
    reason: str
    time: float  # when it was dead-lettered
    origin: str
    deadline: float
    enqueued_at: float


@dataclass(frozen=True)
class ReceiverStats:
    """Queue health of one receiver, for the admin API and gauges."""

    receiver: str
    depth: int  # unacked messages, in flight included
    inflight: int  # slots in use: leased groups (also those waiting for a retry) + reserved hand-overs
    oldest_age_seconds: float  # age of the oldest unacked message; 0 if none
    dead_letters: int
    dead_letter_bytes: int = 0  # payload + reason bytes of its dead letters (the byte cap counts these)
    dead_letters_evicted: int = 0  # dropped by the count/byte caps or the TTL, since the key was created


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _load_scripts() -> dict[str, str]:
    folder = Path(__file__).with_name("lua")  # package data, see pyproject
    prelude = (folder / "lib.lua").read_text(encoding="utf-8")
    names = (
        "enqueue",
        "claim",
        "ack",
        "retry",
        "dead_letter",
        "reap",
        "replay",
        "delete_dead_letter",
        "purge",
        "trim_dead_letters",
        "unpark",
        "hasten",
        "busy",
    )
    return {name: _with_prelude(prelude, (folder / f"{name}.lua").read_text(encoding="utf-8")) for name in names}


_LOCAL_FUNCTION = re.compile(r"^local function (\w+)", re.MULTILINE)


def _with_prelude(prelude: str, body: str) -> str:
    """``body`` after the part of ``lib.lua`` it uses: the shared head (keys, arguments) and only the functions
    the script calls, directly or through each other, in their order. Redis runs a script's whole text on every
    call, and each ``local function`` is a closure made anew: all sixteen cost 3 µs of Redis CPU per call, a
    tenth of an ``ack`` (bench/queue_redis_cpu.py)."""
    starts = [m.start() for m in _LOCAL_FUNCTION.finditer(prelude)]
    head = prelude[:starts[0]]
    chunks = {_LOCAL_FUNCTION.match(prelude, a)[1]: prelude[a:b]  # type: ignore[index]
              for a, b in zip(starts, [*starts[1:], len(prelude)], strict=True)}
    used: set[str] = set()
    todo = [body]
    while todo:
        text = todo.pop()
        for name, chunk in chunks.items():
            if name not in used and re.search(rf"\b{name}\(", text):
                used.add(name)
                todo.append(chunk)
    return head + "".join(chunk for name, chunk in chunks.items() if name in used) + "\n" + body


_SCRIPTS = _load_scripts()


_BULK_FLAG = {False: bulk("0"), True: bulk("1")}


class _ReceiverKeys:
    """One receiver's keys and group-token prefix, plain and packed for the lean connection."""

    __slots__ = ("ack_keys", "bulk_receiver", "enqueue_keys", "parked", "pending", "token_prefix")

    def __init__(self, prefix: str, receiver: str) -> None:
        self.pending, self.parked = keys.pending(prefix, receiver), keys.parked(prefix, receiver)
        self.token_prefix = group_token(receiver, "")
        self.enqueue_keys = bulk(self.pending) + bulk(keys.receivers(prefix)) + bulk(self.parked)
        self.ack_keys = bulk(self.pending) + bulk(self.parked)
        self.bulk_receiver = bulk(receiver)


class DeliveryQueue:
    """Per-receiver delivery queue with ordering groups, leases and an in-flight limit, shared via Redis.

    Every hub process creates one over the same Redis and prefix; settings must agree between them. The
    client must be created with ``decode_responses=False`` (payloads are bytes).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "ocpi-hub",
        max_inflight: int = 32,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        dead_letter_max_count: int = 10_000,
        dead_letter_max_bytes: int = 64 * 1024 * 1024,
        dead_letter_ttl: float = 7 * 24 * 3600.0,
        script_flags: bool | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        pool = getattr(redis, "connection_pool", None)
        if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
            raise ValueError("DeliveryQueue needs a Redis client with decode_responses=False")
        self.redis = redis
        self.prefix = keys.check_prefix(prefix)
        self.max_inflight = max_inflight
        self.lease_seconds = lease_seconds
        self._clock = clock
        self.dead_letter_max_count = dead_letter_max_count
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.dead_letter_ttl = dead_letter_ttl
        # (receiver, "cap" | "expired", how many): dead letters this process's scripts evicted; for a metric.
        self.on_evicted: Callable[[str, str, int], None] | None = None
        # Script flags (allow-oom) need Redis 7 (the app checks the server's version); fakeredis (embedded, no
        # maxmemory) does not parse them. None: on unless the client is fakeredis.
        flags = not type(redis).__module__.startswith("fakeredis") if script_flags is None else script_flags
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script((_SHEBANG if flags and name in _ALLOW_OOM else "") + text)
            for name, text in _SCRIPTS.items()
        }
        # Calls made in the same event-loop tick go out together (routing/batching.py, routing/resp.py).
        self._runner: ScriptRunner = script_runner(redis)
        # Messages the hub answers for itself (queued, not claimed: broadcasts, store-and-forward) are answered
        # only once this many replicas have them (routing/replication.py). Their WAIT blocks the connection it
        # goes on, so they have one of their own: routed requests never queue behind it.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = max(int(wait_timeout * 1000), 1)
        self._replicated: ScriptRunner | None = script_runner(redis) if wait_replicas > 0 else None
        p = self.prefix
        self._head_keys = (keys.ready(p), keys.group_state(p), keys.leases(p), keys.inflight(p))
        self._base, self._wake = keys.base(p), keys.wake_channel(p)
        self._receivers = keys.receivers(p)
        self._lease = repr(self.lease_seconds)
        self._per_receiver: dict[str, _ReceiverKeys] = {}
        # The lean connection takes enqueue and ack pre-packed: the head keys, base, wake channel, lease and each
        # receiver's keys are packed once, not on every call (packing was ~4 % of a routed request's instructions).
        heads = b"".join(map(bulk, self._head_keys))
        self._enqueue_head, self._ack_head = bulk("9") + heads, bulk("8") + heads
        self._bulk_base, self._bulk_wake, self._bulk_lease = bulk(self._base), bulk(self._wake), bulk(self._lease)
        self._consts: dict[str, bytes] = {}

    async def close(self) -> None:
        """Close what the queue opened itself (the lean script connection); the Redis client is the caller's."""
        await self._runner.close()
        if self._replicated is not None:
            await self._replicated.close()

    def _submit(
        self, script: str, script_keys: Sequence[str], args: Sequence[_Arg], now: float | None = None
    ) -> asyncio.Future[Any]:
        """Start a script with the KEYS/ARGV head every script shares (see ``lib.lua``)."""
        return self._runner.submit(self._scripts[script], *self._with_head(script_keys, args, now))

    def _with_head(self, script_keys: Sequence[str], args: Sequence[_Arg], now: float | None = None
                   ) -> tuple[tuple[str, ...], tuple[_Arg, ...]]:
        return ((*self._head_keys, *script_keys),
                (self._base, repr(self._clock() if now is None else now), self._wake, *args))

    async def _run(
        self, script: str, script_keys: Sequence[str], args: Sequence[_Arg], now: float | None = None
    ) -> Any:
        return await self._submit(script, script_keys, args, now)

    # -- hot path ---------------------------------------------------------------------------------------

    async def enqueue(self, msg: Message, *, claim: bool = False) -> bool:
        """Queue ``msg``; with ``claim=True`` lease it to the caller at once when that is possible.

        True only when the message was leased to the caller (its group was empty, the receiver had a free
        slot, the deadline has not passed): the caller delivers and acks it; ``msg.attempts`` is now 1.
        Otherwise it is queued (or was queued already under this id) and ``claim`` will hand it out.
        """
        p, r = self.prefix, self._receiver_keys(msg.receiver)
        token = r.token_prefix + msg.group
        replicated = not claim and self._replicated is not None
        submit_packed = None if replicated else getattr(self._runner, "submit_packed", None)
        if submit_packed is not None:  # the lean connection: the fixed parts are packed once
            now = repr(self._clock())
            packed = b"".join((
                self._enqueue_head, bulk(keys.message(p, msg.id)), bulk(keys.group(p, token)), r.enqueue_keys,
                self._bulk_base, bulk(now), self._bulk_wake, bulk(msg.id), r.bulk_receiver, bulk(msg.group),
                bulk(token), self._const(msg.kind), bulk(msg.payload), bulk(repr(msg.deadline)),
                self._const(msg.origin), bulk(repr(msg.enqueued_at)), _BULK_FLAG[claim],
                bulk(str(self.max_inflight)), self._bulk_lease))
            leased = await submit_packed(self._scripts["enqueue"], 25, packed)
        else:
            script_keys = (keys.message(p, msg.id), keys.group(p, token), r.pending, self._receivers, r.parked)
            args: list[_Arg] = [
                msg.id,
                msg.receiver,
                msg.group,
                token,
                msg.kind,
                msg.payload,
                repr(msg.deadline),
                msg.origin,
                repr(msg.enqueued_at),
                int(claim),
                self.max_inflight,
                self._lease,
            ]
            if replicated:
                assert self._replicated is not None
                await self._replicated.submit_replicated(self._scripts["enqueue"], *self._with_head(script_keys, args),
                                                         self.wait_replicas, self.wait_timeout_ms)
                return False
            leased = await self._run("enqueue", script_keys, args)
        if int(leased) == 1:
            msg.attempts = 1
            return True
        return False

    async def claim(self, max_items: int = 16) -> list[Message]:
        """Lease the heads of up to ``max_items`` ready groups in one script call.

        Messages found past their deadline are removed from the queue and returned too, with
        ``expired=True`` (not counted in ``max_items``): report them, never deliver or ack them.
        """
        if max_items < 1:
            return []
        scan_limit, expired_cap = max(64, 8 * max_items), max(64, 4 * max_items)
        args: list[_Arg] = [max_items, self.max_inflight, self._lease, scan_limit, expired_cap]
        return [
            Message(
                receiver=_str(r[2]),
                group=_str(r[3]),
                payload=_bytes(r[5]),
                kind=_str(r[4]),
                deadline=float(r[6]),
                origin=_str(r[7]),
                id=_str(r[1]),
                attempts=int(r[8]),
                enqueued_at=float(r[9]),
                expired=int(r[0]) == 1,
            )
            for r in await self._run("claim", [], args)
        ]

    def _lease_keys(self, msg: Message) -> tuple[str, tuple[str, ...]]:
        p, r = self.prefix, self._receiver_keys(msg.receiver)
        token = r.token_prefix + msg.group
        return token, (keys.message(p, msg.id), keys.group(p, token), r.pending, r.parked)

    def _receiver_keys(self, receiver: str) -> _ReceiverKeys:
        """A receiver's keys, built (and packed) once per receiver: the hot path needs them twice per message."""
        found = self._per_receiver.get(receiver)
        if found is None:
            if len(self._per_receiver) >= PER_PLATFORM_CACHE:
                self._per_receiver.clear()
            found = self._per_receiver[receiver] = _ReceiverKeys(self.prefix, receiver)
        return found

    def _const(self, value: str) -> bytes:
        """A value of a handful (message kinds, process ids), packed once."""
        found = self._consts.get(value)
        if found is None:
            if len(self._consts) >= 64:
                self._consts.clear()
            found = self._consts[value] = bulk(value)
        return found

    async def ack(self, msg: Message) -> bool:
        """Finish ``msg`` (delivered, or given up without a dead letter) so its group moves on.

        False when the caller no longer holds the lease — reaped, purged, handed to ``retry_later`` or acked
        already — and then nothing changes.
        """
        return int(await self.ack_soon(msg)) == 1

    def ack_soon(self, msg: Message) -> asyncio.Future[Any]:
        """``ack`` without waiting: for a caller that answers first and frees the group behind it (the future
        holds the script's answer, 1 or 0, or the error)."""
        submit_packed = getattr(self._runner, "submit_packed", None)
        if submit_packed is not None:  # the lean connection: the fixed parts are packed once
            p, r = self.prefix, self._receiver_keys(msg.receiver)
            token = r.token_prefix + msg.group
            packed = b"".join((
                self._ack_head, bulk(keys.message(p, msg.id)), bulk(keys.group(p, token)), r.ack_keys,
                self._bulk_base, bulk(repr(self._clock())), self._bulk_wake, bulk(msg.id), bulk(str(msg.attempts)),
                bulk(token), r.bulk_receiver))
            return submit_packed(self._scripts["ack"], 16, packed)  # type: ignore[no-any-return]
        token, script_keys = self._lease_keys(msg)
        return self._submit("ack", script_keys, (msg.id, msg.attempts, token, msg.receiver))

    async def retry_later(self, msg: Message, delay: float) -> bool:
        """Make ``msg`` claimable again after ``delay`` seconds without losing its place in its group.

        The group stays leased (and keeps its in-flight slot), so no later message of the group overtakes
        it. False when the caller no longer holds the lease.
        """
        token = group_token(msg.receiver, msg.group)
        until = repr(self._clock() + max(0.0, delay))
        result = await self._run(
            "retry", [keys.message(self.prefix, msg.id)], [msg.id, msg.attempts, token, until]
        )
        return int(result) == 1

    async def dead_letter(self, msg: Message, reason: str) -> bool:
        """Ack ``msg`` and keep a copy for operators. False (nothing stored) when the lease is gone."""
        p = self.prefix
        token, script_keys = self._lease_keys(msg)
        script_keys += (
            keys.dead_letter(p, msg.id),
            keys.dead_letters(p),
            keys.dead_letters_of(p, msg.receiver),
            keys.dead_letter_bytes(p),
            keys.dead_letters_evicted(p),
        )
        args: list[_Arg] = [msg.id, msg.attempts, token, msg.receiver, reason, *self._dead_letter_bounds()]
        stored, capped, expired = (int(x) for x in await self._run("dead_letter", script_keys, args))
        self._evicted(msg.receiver, capped, expired)
        return stored == 1

    def _dead_letter_bounds(self) -> tuple[_Arg, ...]:
        return (self.dead_letter_max_count, self.dead_letter_max_bytes, repr(float(self.dead_letter_ttl)),
                _TRIM_BATCH)

    def _evicted(self, receiver: str, capped: int, expired: int) -> None:
        if self.on_evicted is not None:
            if capped:
                self.on_evicted(receiver, "cap", capped)
            if expired:
                self.on_evicted(receiver, "expired", expired)

    async def trim_dead_letters(self) -> dict[str, tuple[int, int]]:
        """Expire and cap every receiver's dead letters now; receiver -> (capped, expired) of those that lost any.

        ``dead_letter`` does this for the receiver it adds to; every process's reaper calls this now and then so
        that dead letters of a receiver that gets no new ones expire too. Idempotent.
        """
        p = self.prefix
        script_keys = [keys.receivers(p), keys.dead_letters(p), keys.dead_letter_bytes(p),
                       keys.dead_letters_evicted(p)]
        flat = await self._run("trim_dead_letters", script_keys, self._dead_letter_bounds())
        out: dict[str, tuple[int, int]] = {}
        for i in range(0, len(flat), 3):
            receiver, capped, expired = _str(flat[i]), int(flat[i + 1]), int(flat[i + 2])
            out[receiver] = (capped, expired)
            self._evicted(receiver, capped, expired)
        return out

    # -- housekeeping -----------------------------------------------------------------------------------

    async def reap(self) -> int:
        """Put back groups whose lease expired (their process died) or whose retry delay is over.

        Every process calls this periodically; it is idempotent. Returns how many groups were put back.
        """
        total = 0
        while True:
            n = int(await self._run("reap", [], [_REAP_BATCH]))
            total += n
            if n < _REAP_BATCH:
                return total

    async def purge_receiver(self, receiver: str) -> int:
        """Drop every unacked message for ``receiver`` (platform removed); returns how many.

        Leases on them become invalid (``ack`` returns False). Dead letters are kept.
        """
        p = self.prefix
        script_keys = [
            keys.pending(p, receiver),
            keys.parked(p, receiver),
            keys.receivers(p),
            keys.dead_letters_of(p, receiver),
        ]
        return int(await self._run("purge", script_keys, [receiver]))

    async def set_max_inflight(self, max_inflight: int) -> int:
        """Change the in-flight limit per receiver (the hub processes sharing Redis changed in number); when it
        rose, parked groups get the new slots at once instead of at the next hand-over. Returns the groups moved."""
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        rose = max_inflight > self.max_inflight
        self.max_inflight = max_inflight
        if not rose:
            return 0
        return int(await self._run("unpark", [keys.receivers(self.prefix)], [max_inflight]))

    async def hasten(self, receiver: str, limit: int = 1000) -> int:
        """The receiver answers again: its messages waiting for a retry become due now (among its ``limit``
        oldest unacked messages). Returns how many."""
        return int(await self._run("hasten", [keys.pending(self.prefix, receiver)], [limit]))

    async def busy_stats(self, slice_size: int = 1000) -> list[ReceiverStats]:
        """Queue health of the receivers with anything unacked, in flight or dead-lettered, sorted by receiver.

        The receivers set keeps every receiver ever routed to: ``stats`` costs O(those) Redis commands through
        redis-py, which the gauges every process refreshes every few seconds cannot afford with thousands of
        platforms. Here Redis looks at them a slice per script call (``busy.lua``) and only busy ones come back.
        """
        p, cursor = self.prefix, "0"
        now = self._clock()
        out = []
        while True:
            flat = await self._run("busy", [keys.receivers(p), keys.dead_letter_bytes(p)], [cursor, slice_size])
            cursor = _str(flat[0])
            for i in range(1, len(flat), 6):
                receiver, depth, oldest, inflight, dead, dead_bytes = flat[i:i + 6]
                age = max(0.0, now - float(oldest)) if oldest not in (b"", "", None) else 0.0
                out.append(ReceiverStats(_str(receiver), int(depth), int(inflight), age, int(dead), int(dead_bytes)))
            if cursor == "0":
                return sorted(out, key=lambda s: s.receiver)

    async def stats(self) -> list[ReceiverStats]:
        """Queue health of every receiver the queue remembers, sorted by receiver: ``busy_stats`` for those with
        anything unacked, in flight or dead-lettered (Redis reads them, the oldest message's exact enqueued_at
        included), zeros for the idle rest, and how many dead letters each had evicted. O(receivers)."""
        p = self.prefix
        members: set[bytes | str] = await self.redis.smembers(keys.receivers(p))
        evicted = {_str(r): int(n) for r, n in (await self.redis.hgetall(keys.dead_letters_evicted(p))).items()}
        busy = {s.receiver: s for s in await self.busy_stats()}
        idle = ReceiverStats("", 0, 0, 0.0, 0)
        return [dataclasses.replace(busy.get(r) or idle, receiver=r, dead_letters_evicted=evicted.get(r, 0))
                for r in sorted({_str(m) for m in members} | busy.keys())]

    # -- dead letters -----------------------------------------------------------------------------------

    async def list_dead_letters(
        self, limit: int = 100, offset: int = 0, *, receiver: str | None = None
    ) -> list[DeadLetter]:
        """Dead letters, newest first, optionally of one receiver."""
        if limit < 1:
            return []
        p = self.prefix
        index = keys.dead_letters(p) if receiver is None else keys.dead_letters_of(p, receiver)
        ids = await self.redis.zrevrange(index, offset, offset + limit - 1)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(keys.dead_letter(p, _str(i)))
        return [d for d in map(_dead_letter, await pipe.execute()) if d is not None]

    async def get_dead_letter(self, msg_id: str) -> DeadLetter | None:
        raw: dict[Any, Any] = await self.redis.hgetall(keys.dead_letter(self.prefix, msg_id))
        return _dead_letter(raw)

    async def replay_dead_letter(self, msg_id: str, *, deadline: float = 0.0) -> Message | None:
        """Queue a dead letter again (attempts 0, the given ``deadline``, no origin) and drop the record.

        Returns the queued message, or None when there is no such dead letter (e.g. replayed just now).
        """
        dead = await self.get_dead_letter(msg_id)
        if dead is None:
            return None
        p, token = self.prefix, group_token(dead.receiver, dead.group)
        script_keys = [
            keys.dead_letter(p, msg_id),
            keys.dead_letters(p),
            keys.dead_letters_of(p, dead.receiver),
            keys.message(p, msg_id),
            keys.group(p, token),
            keys.pending(p, dead.receiver),
            keys.receivers(p),
            keys.parked(p, dead.receiver),
            keys.dead_letter_bytes(p),
        ]
        args: list[_Arg] = [msg_id, dead.receiver, dead.group, token, repr(deadline), self.max_inflight]
        now = self._clock()
        result = await self._run("replay", script_keys, args, now)
        if not result:
            return None
        return Message(
            receiver=dead.receiver,
            group=dead.group,
            payload=_bytes(result[1]),
            kind=_str(result[0]),
            deadline=deadline,
            id=msg_id,
            enqueued_at=now,
        )

    async def delete_dead_letter(self, msg_id: str) -> bool:
        dead = await self.get_dead_letter(msg_id)
        if dead is None:
            return False
        p = self.prefix
        script_keys = [
            keys.dead_letter(p, msg_id),
            keys.dead_letters(p),
            keys.dead_letters_of(p, dead.receiver),
            keys.dead_letter_bytes(p),
        ]
        return int(await self._run("delete_dead_letter", script_keys, [msg_id, dead.receiver])) == 1


def _dead_letter(raw: dict[Any, Any]) -> DeadLetter | None:
    if not raw:
        return None
    f = {_str(k): v for k, v in raw.items()}
    return DeadLetter(
        id=_str(f["id"]),
        receiver=_str(f["receiver"]),
        group=_str(f["group"]),
        kind=_str(f["kind"]),
        payload=_bytes(f["payload"]),
        attempts=int(f["attempts"]),
        reason=_str(f["reason"]),
        time=float(f["time"]),
        origin=_str(f["origin"]),
        deadline=float(f["deadline"]),
        enqueued_at=float(f["enqueued_at"]),
    )
