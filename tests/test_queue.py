"""Behaviour of the Redis delivery queue, run against a real Redis and against fakeredis.

Each test gets its own random key prefix; on the real Redis every key of that prefix is deleted afterwards.
Time-dependent behaviour (lease expiry, retry delays, deadlines, ages) uses an injected clock, so nothing
sleeps except the concurrency test.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from routing import keys
from routing.keys import group_token
from routing.queue import DeliveryQueue, Message

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """One Redis (real or fake) plus a prefix private to the test; ``client()`` = one more process."""

    name: str
    prefix: str
    new_client: Callable[[], Redis]
    clock: Clock = field(default_factory=Clock)
    clients: list[Redis] = field(default_factory=list)
    queues: list[DeliveryQueue] = field(default_factory=list)

    def client(self) -> Redis:
        client = self.new_client()
        self.clients.append(client)
        return client

    def queue(self, client: Redis | None = None, **options: Any) -> DeliveryQueue:
        options.setdefault("clock", self.clock)
        queue = DeliveryQueue(client or self.client(), prefix=self.prefix, **options)
        self.queues.append(queue)
        return queue


def _real_client() -> Redis:
    return Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1.0)


_unreachable: list[str] = []  # set once the real Redis failed to answer: skip at once from then on


@pytest.fixture(params=["redis", "fakeredis"])
async def rb(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The Redis under test ("rb"; conftest's ``backend`` is the hub-level one)."""
    prefix = f"test-queue-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        if _unreachable:
            pytest.skip(_unreachable[0])
        probe = _real_client()
        try:
            await probe.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await probe.aclose()
            _unreachable.append(f"no Redis answering PING at {REDIS_HOST}:{REDIS_PORT}: {exc}")
            pytest.skip(_unreachable[0])
        b = Backend("redis", prefix, _real_client)
    else:
        server = fakeredis.FakeServer()
        b = Backend("fakeredis", prefix, lambda: fakeredis.FakeAsyncRedis(server=server))
    try:
        yield b
    finally:
        if request.param == "redis":
            found = [k async for k in probe.scan_iter(match=keys.pattern(prefix), count=1000)]
            for i in range(0, len(found), 500):
                await probe.delete(*found[i : i + 500])
            await probe.aclose()
        for queue in b.queues:
            await queue.close()
        for client in b.clients:
            await client.aclose()


def msg(receiver: str, group: str, payload: bytes = b"", **fields: Any) -> Message:
    return Message(receiver=receiver, group=group, payload=payload, **fields)


def payloads(messages: list[Message]) -> list[bytes]:
    return [m.payload for m in messages]


async def stats_of(queue: DeliveryQueue, receiver: str) -> tuple[int, int, int]:
    """(depth, inflight, dead letters) of one receiver; zeros when it is not listed."""
    for s in await queue.stats():
        if s.receiver == receiver:
            return s.depth, s.inflight, s.dead_letters
    return 0, 0, 0


# -- ordering and parallelism --------------------------------------------------------------------------------


async def test_messages_of_one_group_are_claimed_in_enqueue_order_one_at_a_time(rb: Backend) -> None:
    q = rb.queue()
    for i in range(3):
        await q.enqueue(msg("R", "sessions:NL:CPA:S1", b"%d" % i))

    seen = []
    for _ in range(3):
        claimed = await q.claim(10)
        assert len(claimed) == 1, "a group never has two messages out at once"
        assert await q.claim(10) == [], "nothing of the group is claimable while its head is leased"
        seen.append(claimed[0].payload)
        assert await q.ack(claimed[0])
    assert seen == [b"0", b"1", b"2"]
    assert await q.claim(10) == []


async def test_different_groups_are_claimed_in_parallel(rb: Backend) -> None:
    q = rb.queue(max_inflight=10)
    for g in ("a", "b", "c"):
        await q.enqueue(msg("R", g, g.encode()))
        await q.enqueue(msg("R", g, g.encode() + b"2"))
    claimed = await q.claim(10)
    assert sorted(payloads(claimed)) == [b"a", b"b", b"c"]


async def test_claim_returns_at_most_max_items(rb: Backend) -> None:
    q = rb.queue()
    for g in range(5):
        await q.enqueue(msg("R", f"g{g}"))
    assert len(await q.claim(2)) == 2
    assert len(await q.claim(10)) == 3


async def test_receiver_inflight_limit_parks_extra_groups_until_ack(rb: Backend) -> None:
    q = rb.queue(max_inflight=2)
    for g in ("a", "b", "c", "d"):
        await q.enqueue(msg("R", g, g.encode()))
    first = await q.claim(10)
    assert payloads(first) == [b"a", b"b"]
    assert await q.claim(10) == [], "c and d are parked while R has 2 groups out"
    assert (await stats_of(q, "R"))[1] == 2

    assert await q.ack(first[0])
    assert payloads(await q.claim(10)) == [b"c"], "an ending lease unparks exactly one group"
    assert await q.claim(10) == []
    assert await q.ack(first[1])
    assert payloads(await q.claim(10)) == [b"d"]
    assert (await stats_of(q, "R"))[1] == 2


async def test_a_raised_inflight_limit_hands_parked_groups_the_new_slots_in_order(rb: Backend) -> None:
    """Another hub process came up: the limit per receiver rises, and what was parked goes out at once (in its
    order), not only at the next ack; a lowered limit takes nothing back that is out, and parks again."""
    q = rb.queue(max_inflight=1)
    for g in ("a", "b", "c", "d"):
        await q.enqueue(msg("R", g, g.encode()))
    first = await q.claim(10)
    assert payloads(first) == [b"a"]

    assert await q.set_max_inflight(3) == 2
    second = await q.claim(10)
    assert payloads(second) == [b"b", b"c"]
    assert (await stats_of(q, "R"))[1] == 3

    assert await q.set_max_inflight(1) == 0
    for m in (*first, *second):
        assert await q.ack(m)
    assert payloads(await q.claim(10)) == [b"d"]
    assert (await stats_of(q, "R"))[1] == 1


async def test_parked_group_gets_the_freed_slot_before_newer_groups(rb: Backend) -> None:
    q = rb.queue(max_inflight=1)
    await q.enqueue(msg("R", "a", b"a"))
    [a] = await q.claim()
    await q.enqueue(msg("R", "b", b"b"))  # parked: R is at its limit
    assert await q.ack(a)
    # the slot was handed to b: a group becoming ready now cannot take it, not even claim-on-enqueue
    assert not await q.enqueue(msg("R", "c", b"c"), claim=True)
    assert payloads(await q.claim()) == [b"b"]
    assert await q.claim() == []


async def test_group_with_more_messages_goes_behind_parked_groups(rb: Backend) -> None:
    q = rb.queue(max_inflight=1)
    await q.enqueue(msg("R", "a", b"a1"))
    await q.enqueue(msg("R", "a", b"a2"))
    await q.enqueue(msg("R", "b", b"b1"))
    order = []
    while claimed := await q.claim():
        order += payloads(claimed)
        for m in claimed:
            assert await q.ack(m)
    assert order == [b"a1", b"b1", b"a2"], "a deep group does not keep the only slot to itself"


async def test_slow_receiver_does_not_block_other_receivers(rb: Backend) -> None:
    q = rb.queue(max_inflight=2)
    for g in range(20):
        await q.enqueue(msg("SLOW", f"g{g}"))
    slow = await q.claim(10)
    assert len(slow) == 2  # never acked: SLOW is stuck at its limit with 18 groups parked

    await q.enqueue(msg("FAST", "x", b"fast-1"))
    await q.enqueue(msg("FAST", "y", b"fast-2"))
    fast = await q.claim(10)
    assert sorted(payloads(fast)) == [b"fast-1", b"fast-2"]
    assert await q.ack(fast[0])
    assert await q.enqueue(msg("FAST", "z"), claim=True)


# -- claim on enqueue ----------------------------------------------------------------------------------------


async def test_claim_on_enqueue_leases_when_group_empty_and_under_limit(rb: Backend) -> None:
    q = rb.queue()
    m = msg("R", "g", b"direct")
    assert await q.enqueue(m, claim=True)
    assert m.attempts == 1
    assert await q.claim() == [], "the message is leased to the enqueuer, not claimable by others"
    assert await stats_of(q, "R") == (1, 1, 0)
    assert await q.ack(m)
    assert await stats_of(q, "R") == (0, 0, 0)


async def test_claim_on_enqueue_queues_when_group_busy(rb: Backend) -> None:
    q = rb.queue()
    first, second = msg("R", "g", b"1"), msg("R", "g", b"2")
    assert await q.enqueue(first, claim=True)
    assert not await q.enqueue(second, claim=True)
    assert second.attempts == 0
    assert await q.claim() == []
    assert await q.ack(first)
    assert payloads(await q.claim()) == [b"2"]


async def test_claim_on_enqueue_queues_when_receiver_at_limit(rb: Backend) -> None:
    q = rb.queue(max_inflight=1)
    first = msg("R", "a")
    assert await q.enqueue(first, claim=True)
    assert not await q.enqueue(msg("R", "b", b"b"), claim=True)
    assert await q.ack(first)
    assert payloads(await q.claim()) == [b"b"]


async def test_enqueue_of_a_known_id_changes_nothing(rb: Backend) -> None:
    q = rb.queue()
    m = msg("R", "g", b"once")
    await q.enqueue(m)
    assert not await q.enqueue(m, claim=True)
    assert payloads(await q.claim()) == [b"once"]
    assert await stats_of(q, "R") == (1, 1, 0)


# -- deadlines -----------------------------------------------------------------------------------------------


async def test_expired_message_is_not_handed_out_as_deliverable(rb: Backend) -> None:
    q = rb.queue()
    now = rb.clock.now
    await q.enqueue(msg("R", "g", b"late", deadline=now + 5))
    await q.enqueue(msg("R", "g", b"in-time", deadline=now + 60))
    await q.enqueue(msg("R", "h", b"no-deadline"))
    rb.clock.advance(10)

    claimed = await q.claim(10)
    expired = [m for m in claimed if m.expired]
    live = [m for m in claimed if not m.expired]
    assert payloads(expired) == [b"late"]
    assert sorted(payloads(live)) == [b"in-time", b"no-deadline"], "the group moves on in the same claim"
    assert not await q.ack(expired[0]), "an expired message is already gone"
    assert await stats_of(q, "R") == (2, 2, 0)


async def test_claim_on_enqueue_never_leases_an_expired_message(rb: Backend) -> None:
    q = rb.queue()
    m = msg("R", "g", deadline=rb.clock.now - 1)
    assert not await q.enqueue(m, claim=True)
    [dropped] = await q.claim()
    assert dropped.expired and dropped.id == m.id
    assert await stats_of(q, "R") == (0, 0, 0)


async def test_expired_head_of_a_group_with_a_reserved_slot_passes_the_slot_on(rb: Backend) -> None:
    q = rb.queue(max_inflight=1)
    await q.enqueue(msg("R", "a"))
    [a] = await q.claim()
    await q.enqueue(msg("R", "b", deadline=rb.clock.now + 1))  # parked, will expire
    await q.enqueue(msg("R", "c", b"c"))  # parked behind b
    assert await q.ack(a)  # slot handed to b
    rb.clock.advance(5)
    claimed = await q.claim()
    assert [(m.expired, m.payload) for m in claimed] == [(True, b""), (False, b"c")]
    assert await stats_of(q, "R") == (1, 1, 0)


# -- leases, reaping, retries --------------------------------------------------------------------------------


async def test_reap_requeues_group_of_dead_consumer(rb: Backend) -> None:
    dead, alive = rb.queue(lease_seconds=30), rb.queue(lease_seconds=30)
    await dead.enqueue(msg("R", "g", b"1"))
    await dead.enqueue(msg("R", "g", b"2"))
    [lost] = await dead.claim()  # ...and the process dies

    assert await alive.reap() == 0, "the lease has not expired yet"
    assert await alive.claim() == []
    rb.clock.advance(31)
    assert await alive.reap() == 1
    assert await alive.reap() == 0, "reap is idempotent"
    [again] = await alive.claim()
    assert again.id == lost.id and again.payload == b"1", "the same head comes back first"
    assert again.attempts == 2
    assert await alive.ack(again)
    assert payloads(await alive.claim()) == [b"2"]


async def test_claim_also_picks_up_expired_leases(rb: Backend) -> None:
    q = rb.queue(lease_seconds=10)
    await q.enqueue(msg("R", "g", b"1"))
    await q.claim()
    rb.clock.advance(11)
    assert payloads(await q.claim()) == [b"1"]


async def test_ack_after_reap_returns_false_and_keeps_counters_right(rb: Backend) -> None:
    q = rb.queue(lease_seconds=10, max_inflight=1)
    await q.enqueue(msg("R", "g", b"1"))
    await q.enqueue(msg("R", "h", b"2"))
    [slow] = await q.claim()
    rb.clock.advance(11)
    assert await q.reap() == 1
    assert not await q.ack(slow), "the lease was reaped"
    assert not await q.retry_later(slow, 1)
    assert not await q.dead_letter(slow, "too late")
    assert await stats_of(q, "R") == (2, 1, 0), "the slot stays reserved for the reaped group"

    [again] = await q.claim()  # the reaped group is first in line again, before parked h
    assert again.id == slow.id
    assert not await q.ack(slow), "a stale lease cannot end the new one"
    assert await stats_of(q, "R") == (2, 1, 0)
    assert await q.ack(again)
    assert not await q.ack(again), "acking twice changes nothing"
    [other] = await q.claim()
    assert other.payload == b"2"
    assert await q.ack(other)
    assert await stats_of(q, "R") == (0, 0, 0)


async def test_retry_later_keeps_order_and_redelivers_after_delay(rb: Backend) -> None:
    q = rb.queue(max_inflight=1)
    await q.enqueue(msg("R", "g", b"1"))
    await q.enqueue(msg("R", "g", b"2"))
    await q.enqueue(msg("R", "other", b"x"))
    [first] = await q.claim()
    assert await q.retry_later(first, 5)
    assert not await q.ack(first), "after retry_later the caller no longer holds the message"

    assert await q.claim(10) == [], "nothing overtakes the retried message; the group keeps its slot"
    assert await stats_of(q, "R") == (3, 1, 0)
    rb.clock.advance(4)
    assert await q.claim(10) == []
    rb.clock.advance(2)
    [again] = await q.claim(10)
    assert again.payload == b"1" and again.attempts == 2
    assert await q.ack(again)


async def test_retry_later_is_picked_up_by_reap(rb: Backend) -> None:
    q = rb.queue()
    await q.enqueue(msg("R", "g", b"1"))
    [m] = await q.claim()
    assert await q.retry_later(m, 2)
    rb.clock.advance(3)
    assert await q.reap() == 1
    assert payloads(await q.claim()) == [b"1"]


async def test_hasten_makes_a_receivers_waiting_retries_due_now_and_nothing_else(rb: Backend) -> None:
    """The receiver answers again: retries waiting out a long backoff go at the next claim, in order; a live lease
    and another receiver's retry are left alone."""
    q = rb.queue(max_inflight=3)
    await q.enqueue(msg("R", "g", b"1"))
    await q.enqueue(msg("R", "g", b"2"))
    await q.enqueue(msg("R", "h", b"h"))
    await q.enqueue(msg("S", "s", b"s"))
    first, held, other = await q.claim(10)
    assert payloads([first, held, other]) == [b"1", b"h", b"s"]
    assert await q.retry_later(first, 3600)
    assert await q.retry_later(other, 3600)

    assert await q.hasten("R") == 1
    [again] = await q.claim(10)
    assert again.payload == b"1" and again.attempts == 2
    assert await q.ack(held), "the live lease was not touched"
    assert await q.hasten("R") == 0
    assert await q.ack(again)
    assert payloads(await q.claim(10)) == [b"2"], "the group goes on in order; S still waits out its backoff"


async def test_attempts_increment_per_claim(rb: Backend) -> None:
    q = rb.queue()
    await q.enqueue(msg("R", "g"))
    attempts = []
    for _ in range(3):
        [m] = await q.claim()
        attempts.append(m.attempts)
        assert await q.retry_later(m, 0)
    assert attempts == [1, 2, 3]


# -- dead letters --------------------------------------------------------------------------------------------


async def test_a_replayed_message_keeps_the_time_it_was_accepted_where_its_window_restarts(rb: Backend) -> None:
    """``accepted_at`` is the time the message's id carries: a replay an hour later restarts ``enqueued_at`` (the
    retry window) but not that. An id that cannot carry the message's time (a random UUID's hex, as ids were made
    before they were time-ordered) gives ``enqueued_at``."""
    q = rb.queue()
    made = time.time()
    m = msg("R", "g", b"status")
    await q.enqueue(m)
    [claimed] = await q.claim(1)
    assert claimed.accepted_at == pytest.approx(made, abs=0.01)
    assert await q.dead_letter(claimed, "receiver gone")
    rb.clock.advance(3600)
    assert await q.replay_dead_letter(m.id) is not None
    [again] = await q.claim(1)
    assert again.enqueued_at == pytest.approx(rb.clock.now), "the window counts from the replay"
    assert again.accepted_at == pytest.approx(made, abs=0.01), "the time the hub accepted it does not"

    legacy = msg("R", "h", b"old", id=uuid.uuid4().hex, enqueued_at=made)
    assert legacy.accepted_at == made
    assert msg("R", "i", b"odd", id="not-an-id", enqueued_at=made).accepted_at == made


async def test_dead_letter_list_get_replay_delete(rb: Backend) -> None:
    q = rb.queue()
    a = msg("R", "g", b"\x00binary\xff", kind="callback", origin="proc-1")
    b = msg("R", "g", b"second")
    c = msg("S", "h", b"other receiver")
    for m in (a, b, c):
        await q.enqueue(m)

    [ca, cc] = sorted(await q.claim(10), key=lambda m: m.receiver)
    assert await q.dead_letter(ca, "receiver answered 500 five times")
    assert not await q.dead_letter(ca, "twice"), "the lease ended with the first dead_letter"
    rb.clock.advance(1)
    assert await q.dead_letter(cc, "unknown party")
    [second] = await q.claim(10)
    assert second.payload == b"second", "dead-lettering acks: the group moves on"

    listed = await q.list_dead_letters()
    assert [d.id for d in listed] == [c.id, a.id], "newest first"
    assert [d.id for d in await q.list_dead_letters(limit=1, offset=1)] == [a.id]
    assert [d.id for d in await q.list_dead_letters(receiver="R")] == [a.id]
    dead = await q.get_dead_letter(a.id)
    assert dead is not None
    assert (dead.receiver, dead.group, dead.kind, dead.payload, dead.attempts, dead.origin) == (
        "R",
        "g",
        "callback",
        b"\x00binary\xff",
        1,
        "proc-1",
    )
    assert dead.reason == "receiver answered 500 five times"
    assert dead.time == pytest.approx(rb.clock.now - 1)
    assert (await stats_of(q, "R"))[2] == 1

    deadline = rb.clock.now + 60
    replayed = await q.replay_dead_letter(a.id, deadline=deadline)
    assert replayed is not None and replayed.id == a.id and replayed.deadline == deadline
    assert await q.replay_dead_letter(a.id) is None, "replayed once only"
    assert await q.get_dead_letter(a.id) is None
    assert (await stats_of(q, "R"))[2] == 0

    assert await q.claim(10) == [], "second still holds the group: the replay waits behind it"
    assert await q.ack(second)
    [again] = await q.claim(10)
    assert (again.id, again.payload, again.attempts, again.deadline) == (a.id, b"\x00binary\xff", 1, deadline)
    assert again.origin == "", "nobody waits for a replayed message"

    assert await q.delete_dead_letter(c.id)
    assert not await q.delete_dead_letter(c.id)
    assert await q.list_dead_letters() == []
    assert await q.get_dead_letter("no-such-id") is None


# -- stats, sharing, wake-ups, purge -------------------------------------------------------------------------


async def test_stats_depth_inflight_oldest_age(rb: Backend) -> None:
    q = rb.queue()
    assert await q.stats() == []
    now = rb.clock.now
    await q.enqueue(msg("R", "g", enqueued_at=now - 30))
    await q.enqueue(msg("R", "g", enqueued_at=now - 10))
    await q.enqueue(msg("R", "h", enqueued_at=now - 20))
    await q.enqueue(msg("S", "g", enqueued_at=now - 5))
    claimed = await q.claim(1)

    by_receiver = {s.receiver: s for s in await q.stats()}
    assert set(by_receiver) == {"R", "S"}
    r = by_receiver["R"]
    assert (r.depth, r.inflight, r.dead_letters) == (3, 1, 0)
    assert r.oldest_age_seconds == pytest.approx(30)
    assert by_receiver["S"].oldest_age_seconds == pytest.approx(5)

    assert await q.ack(claimed[0])
    r = {s.receiver: s for s in await q.stats()}["R"]
    assert (r.depth, r.inflight) == (2, 0)
    assert r.oldest_age_seconds == pytest.approx(20)


async def test_busy_stats_leave_out_idle_receivers_whatever_the_slice(rb: Backend) -> None:
    """The gauges' view of the queue: only receivers with something unacked, in flight or dead-lettered, with the
    figures ``stats`` gives them, however many idle receivers the queue remembers and however it slices them."""
    q = rb.queue()
    now = rb.clock.now
    for i in range(25):  # routed to once and answered: remembered by the queue, idle now
        idle = msg(f"IDLE{i:02d}", "g")
        assert await q.enqueue(idle, claim=True)
        assert await q.ack(idle)
    await q.enqueue(msg("R", "g", enqueued_at=now - 30))
    await q.enqueue(msg("R", "h", enqueued_at=now - 10))
    dead = msg("D", "g")
    assert await q.enqueue(dead, claim=True)
    assert await q.dead_letter(dead, "refused")
    held = await q.claim(1)

    everything = {s.receiver: s for s in await q.stats()}
    assert len(everything) == 27
    for slice_size in (1, 7, 1000):
        busy = await q.busy_stats(slice_size)
        assert [s.receiver for s in busy] == ["D", "R"]
        assert busy == [everything["D"], everything["R"]]
    r = everything["R"]
    assert (r.depth, r.inflight, r.dead_letters) == (2, 1, 0)
    assert r.oldest_age_seconds == pytest.approx(30)
    d = everything["D"]
    assert (d.depth, d.inflight, d.dead_letters) == (0, 0, 1) and d.dead_letter_bytes > 0

    for m in [*held, *await q.claim(10)]:
        assert await q.ack(m)
    assert [s.receiver for s in await q.busy_stats()] == ["D"]


async def test_two_queue_instances_on_one_redis_share_messages(rb: Backend) -> None:
    one, two = rb.queue(max_inflight=1), rb.queue(max_inflight=1)
    await one.enqueue(msg("R", "g", b"1"))
    await one.enqueue(msg("R", "g", b"2"))
    [m] = await two.claim()
    assert m.payload == b"1"
    assert await one.claim() == []
    assert await one.ack(m), "any process can finish what another claimed"
    assert payloads(await one.claim()) == [b"2"]
    assert not await two.enqueue(msg("R", "h"), claim=True), "the in-flight limit is shared"


async def test_wake_is_published_on_enqueue(rb: Backend) -> None:
    q = rb.queue()
    pubsub = rb.client().pubsub()
    await pubsub.subscribe(keys.wake_channel(rb.prefix))
    try:

        async def next_wake(within: float) -> Any:
            end = time.monotonic() + within
            while time.monotonic() < end:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
                if message is not None:
                    return message
            return None

        assert await q.enqueue(msg("R", "g"), claim=True)
        assert await next_wake(0.2) is None, "a message leased on enqueue wakes nobody"
        await q.enqueue(msg("R", "h"))
        message = await next_wake(2.0)
        assert message is not None and message["channel"] == keys.wake_channel(rb.prefix).encode()
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_purge_receiver(rb: Backend) -> None:
    q = rb.queue(max_inflight=2)
    for g in ("a", "a", "b", "c", "d"):
        await q.enqueue(msg("GONE", g))
    await q.enqueue(msg("STAY", "a", b"stay"))
    held_all = await q.claim(10)
    held = [m for m in held_all if m.receiver == "GONE"]
    assert len(held) == 2
    await q.retry_later(held[1], 60)
    dead_one = msg("GONE", "e")
    assert await q.enqueue(dead_one, claim=True) is False  # at the limit
    assert await q.purge_receiver("GONE") == 6
    assert not await q.ack(held[0]), "leases on purged messages are void"
    assert await stats_of(q, "GONE") == (0, 0, 0)
    assert [s.receiver for s in await q.stats()] == ["STAY"]
    assert await q.claim(10) == []
    assert await q.ack(next(m for m in held_all if m.receiver == "STAY"))
    rb.clock.advance(120)
    assert await q.reap() == 0

    # stale tokens of the purged groups must not let a new message of such a group out twice
    await q.enqueue(msg("GONE", "a", b"new-a"))
    await q.enqueue(msg("GONE", "a", b"new-a2"))
    assert payloads(await q.claim(10)) == [b"new-a"]
    assert await q.claim(10) == []
    assert await stats_of(q, "GONE") == (2, 1, 0)


async def test_purge_keeps_dead_letters(rb: Backend) -> None:
    q = rb.queue()
    await q.enqueue(msg("GONE", "a"))
    [m] = await q.claim()
    await q.dead_letter(m, "nope")
    await q.enqueue(msg("GONE", "b"))
    assert await q.purge_receiver("GONE") == 1
    assert len(await q.list_dead_letters(receiver="GONE")) == 1
    assert await stats_of(q, "GONE") == (0, 0, 1)


# -- keys, configuration -------------------------------------------------------------------------------------


async def test_all_keys_carry_the_prefix_hash_tag(rb: Backend) -> None:
    q = rb.queue(max_inflight=1)
    await q.enqueue(msg("R:1", "g"))
    await q.enqueue(msg("R:1", "h"))
    [m] = await q.claim()
    await q.dead_letter(m, "x")
    client = rb.client()
    found = [k async for k in client.scan_iter(match="*", count=1000)]
    ours = [k for k in found if rb.prefix.encode() in k]  # this test's keys only: the Redis is shared
    assert ours and all(k.startswith(b"{" + rb.prefix.encode() + b"}:") for k in ours)


def test_group_tokens_are_unambiguous() -> None:
    assert group_token("a:b", "c") != group_token("a", "b:c")
    assert group_token("a%3Ab", "c") != group_token("a:b", "c")
    assert group_token("CPO", "sessions:NL:CPA:S1") == "CPO:sessions:NL:CPA:S1"


def test_prefix_with_braces_is_rejected() -> None:
    with pytest.raises(ValueError):
        DeliveryQueue(fakeredis.FakeAsyncRedis(), prefix="a}b")


def test_client_decoding_responses_is_rejected() -> None:
    with pytest.raises(ValueError):
        DeliveryQueue(fakeredis.FakeAsyncRedis(decode_responses=True))


# -- concurrency ---------------------------------------------------------------------------------------------


async def test_concurrent_consumers_deliver_each_message_once_in_group_order_within_limit(
    rb: Backend,
) -> None:
    """3 processes (queue instances, own connections) consume 500 messages in 20 groups of 2 receivers
    while a producer enqueues with claim-on-enqueue; checks order, exactly-once and the in-flight limit."""
    limit, n_messages, n_groups = 3, 500, 20
    queues = [rb.queue(max_inflight=limit, clock=time.time) for _ in range(3)]
    producer = rb.queue(max_inflight=limit, clock=time.time)
    rng = random.Random(7)

    delivered: dict[str, list[int]] = defaultdict(list)
    seen_ids: list[str] = []
    inflight: dict[str, int] = defaultdict(int)
    group_active: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    done = asyncio.Event()
    overlapped = asyncio.Event()  # two of R0's groups out at once
    held_one = False

    async def deliver(queue: DeliveryQueue, m: Message) -> None:
        nonlocal held_one
        assert not m.expired
        inflight[m.receiver] += 1
        group_active[m.group] += 1
        peak[m.receiver] = max(peak[m.receiver], inflight[m.receiver])
        assert inflight[m.receiver] <= limit, f"{m.receiver} has more than {limit} messages out"
        assert group_active[m.group] == 1, f"two messages of {m.group} out at once"
        if inflight["R0"] > 1:
            overlapped.set()
        if m.receiver == "R0" and not held_one:
            # Hold the first R0 delivery until the queue hands out another of R0's groups beside it: the
            # parallelism check below then does not depend on how the host schedules the consumers.
            held_one = True
            await asyncio.wait_for(overlapped.wait(), timeout=20)
        await asyncio.sleep(0.002 + rng.random() * 0.003)
        delivered[m.group].append(int(m.payload))
        seen_ids.append(m.id)
        group_active[m.group] -= 1
        inflight[m.receiver] -= 1
        assert await queue.ack(m)
        if len(seen_ids) == n_messages:
            done.set()

    async def consume(queue: DeliveryQueue) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while not done.is_set():
            claimed = await queue.claim(4)
            for m in claimed:
                task = asyncio.create_task(deliver(queue, m))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if not claimed:
                await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)

    async def produce() -> None:
        tasks = []
        for i in range(n_messages):
            g = i % n_groups
            m = msg(f"R{g % 2}", f"group-{g}", str(i).encode())
            if await producer.enqueue(m, claim=i % 3 == 0):
                tasks.append(asyncio.create_task(deliver(producer, m)))
            if i % 25 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    await asyncio.wait_for(asyncio.gather(produce(), *(consume(q) for q in queues)), timeout=60)

    assert len(seen_ids) == n_messages and len(set(seen_ids)) == n_messages, "each message exactly once"
    for g in range(n_groups):
        assert delivered[f"group-{g}"] == list(range(g, n_messages, n_groups)), f"group-{g} out of order"
    assert max(peak.values()) <= limit
    assert peak["R0"] > 1, "the test should actually exercise parallel groups"
    for s in await producer.stats():
        assert (s.depth, s.inflight) == (0, 0)
