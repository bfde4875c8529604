"""Delivery order and isolation through the receivers' queues, end to end over HTTP (docs/architecture.md).

Messages about one object reach the receiver one at a time in the order the hub accepted them; different objects
and different receivers do not wait for each other; a slow receiver only ever holds its own in-flight slots; and
a request whose caller was already answered 4002 is never delivered afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from hub.context import HUB_KEY
from routing.queue import Message
from routing.wire import Reply
from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import FakePartner, Received, default_responder

TS = "2024-01-01T00:00:00Z"


class Tracker:
    """A receiver's view: what arrived in which order, and how many requests it was serving at once."""

    def __init__(self, delay: Callable[[Received], float], gate: asyncio.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate  # when given, the receiver holds every request until it is set
        self.order: list[Any] = []
        self.active = 0
        self.max_active = 0
        self.active_by_path: dict[str, int] = {}
        self.max_active_by_path: dict[str, int] = {}

    async def __call__(self, request: web.Request, rec: Received) -> web.StreamResponse:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        now = self.active_by_path[rec.path] = self.active_by_path.get(rec.path, 0) + 1
        self.max_active_by_path[rec.path] = max(self.max_active_by_path.get(rec.path, 0), now)
        self.order.append((rec.json() or {}).get("seq"))
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay(rec))
            return await default_responder(request, rec)
        finally:
            self.active -= 1
            self.active_by_path[rec.path] -= 1


async def wait_until(check: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def queue_depth(hub: HubHarness, partner: FakePartner) -> int:
    """Unacked messages for ``partner`` as the operator sees them (GET /admin/queues)."""
    status, queues = await hub.admin("GET", "/admin/queues")
    assert status == 200, queues
    return sum(q["depth"] for q in queues if q["platform"] == partner.name)


async def wait_for_depth(hub: HubHarness, partner: FakePartner, n: int, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while (depth := await queue_depth(hub, partner)) != n:
        assert time.monotonic() < deadline, f"queue depth {depth}, expected {n}"
        await asyncio.sleep(0.002)


async def patch_session(hub: HubHarness, alpha: FakePartner, to: FakePartner, session_id: str,
                        seq: int) -> tuple[int, Any]:
    status, _, body = await alpha.call(hub.session, "PATCH", "sessions", "RECEIVER", f"NL/CPA/{session_id}",
                                       to=to.party, json={"seq": seq, "kwh": seq / 10, "last_updated": TS})
    return status, body


async def test_patches_to_one_session_reach_the_receiver_one_at_a_time_in_acceptance_order(
    make_hub: MakeHub,
) -> None:
    """All 50 are in flight together; each is sent once the hub has queued the previous one (its queue depth
    grew), so the hub's acceptance order is known exactly. A send stagger alone does not give it: requests
    overtake each other on the way into Redis (seen with MONITOR: ~1 in 2 runs at 2 ms)."""
    hub = await make_hub(forward_timeout=10.0)  # the first PATCH is held until all 50 are queued
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    gate = asyncio.Event()
    tracker = Tracker(lambda rec: 0.004, gate)
    beta.responder = tracker

    tasks = []
    for seq in range(50):
        tasks.append(asyncio.create_task(patch_session(hub, alpha, beta, "S1", seq)))
        await wait_for_depth(hub, beta, seq + 1)
    assert tracker.order == [0]  # the first one is at the receiver, 49 wait in the hub's queue
    gate.set()
    results = await asyncio.gather(*tasks)

    assert [(status, body["status_code"]) for status, body in results] == [(200, 1000)] * 50
    assert tracker.max_active == 1  # never two PATCHes of S1 in flight at the receiver
    assert tracker.order == list(range(50))


async def test_a_burst_of_patches_to_one_session_is_delivered_once_each_one_at_a_time(hub: HubHarness) -> None:
    """No stagger at all: claim-on-enqueue in the handlers and the dispatcher race for the same group."""
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    tracker = Tracker(lambda rec: 0.002)
    beta.responder = tracker

    tasks = []
    for seq in range(50):
        tasks.append(asyncio.create_task(patch_session(hub, alpha, beta, "S1", seq)))
        await asyncio.sleep(0.002 if seq % 2 else 0)
    results = await asyncio.gather(*tasks)

    assert [(status, body["status_code"]) for status, body in results] == [(200, 1000)] * 50
    assert tracker.max_active == 1
    assert sorted(tracker.order) == list(range(50))  # each exactly once


async def test_different_objects_to_the_same_receiver_proceed_in_parallel(hub: HubHarness) -> None:
    """Seen at the receiver, not timed: while it holds both objects' first PATCHes, their second ones wait in
    the hub's queue behind their own object, and nothing else arrives."""
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    gate = asyncio.Event()
    tracker = Tracker(lambda rec: 0.0, gate=gate)
    beta.responder = tracker

    tasks = [asyncio.create_task(patch_session(hub, alpha, beta, sid, seq))
             for seq, sid in enumerate(["S1", "S2", "S1", "S2"])]
    await wait_until(lambda: tracker.active == 2)  # S1 and S2 are at the receiver at once ...
    await wait_for_depth(hub, beta, 4)
    await asyncio.sleep(0.2)
    assert sorted(rec.path.rsplit("/", 1)[-1] for rec in beta.received) == ["S1", "S2"]  # ... and only they
    gate.set()
    results = await asyncio.gather(*tasks)

    assert [status for status, _ in results] == [200] * 4
    assert tracker.max_active == 2
    assert set(tracker.max_active_by_path.values()) == {1}  # each object still one at a time
    assert len(beta.received) == 4


async def test_a_slow_receiver_does_not_block_a_fast_one(hub: HubHarness) -> None:
    alpha, slow, fast = cpo(), emsp("Slow eMSP", "EMS"), emsp("Fast eMSP", "EMF")
    for partner in (alpha, slow, fast):
        await hub.connect(partner)
    slow.responder = Tracker(lambda rec: 1.5)

    slow_calls = [asyncio.create_task(alpha.call(hub.session, "PUT", "tariffs", "RECEIVER", f"NL/CPA/T{i}",
                                                 to=slow.party, json={"country_code": "NL", "party_id": "CPA",
                                                                      "id": f"T{i}", "last_updated": TS}))
                  for i in range(20)]
    await wait_until(lambda: len(slow.received) == 20)

    for i in range(10):
        started = time.monotonic()
        status, _, body = await alpha.call(hub.session, "PUT", "tariffs", "RECEIVER", f"NL/CPA/F{i}", to=fast.party,
                                           json={"country_code": "NL", "party_id": "CPA", "id": f"F{i}",
                                                 "last_updated": TS})
        assert (status, body["status_code"]) == (200, 1000)
        # not held behind the slow receiver's 1.5 s answers (a few ms here; the bound leaves room for a loaded host)
        assert time.monotonic() - started < 1.0
    assert not any(task.done() for task in slow_calls)  # all 20 slow ones were still in flight meanwhile

    assert [status for status, _, _ in await asyncio.gather(*slow_calls)] == [200] * 20


async def test_a_slow_receiver_gets_no_more_than_its_in_flight_limit(make_hub: MakeHub) -> None:
    hub = await make_hub(max_inflight_per_receiver=4)
    alpha, slow, fast = cpo(), emsp("Slow eMSP", "EMS"), emsp("Fast eMSP", "EMF")
    for partner in (alpha, slow, fast):
        await hub.connect(partner)
    held = asyncio.Event()
    tracker = Tracker(lambda rec: 0.0, gate=held)  # the slow receiver keeps every request until released
    slow.responder = tracker

    slow_calls = [asyncio.create_task(patch_session(hub, alpha, slow, f"S{i}", i)) for i in range(12)]
    await wait_until(lambda: len(slow.received) >= 4)
    # the fast receiver has its own slots: all its requests are answered while the slow one holds all of its own
    fast_results = await asyncio.gather(*(patch_session(hub, alpha, fast, f"S{i}", i) for i in range(8)))
    assert [status for status, _ in fast_results] == [200] * 8
    assert len(slow.received) == 4 and not any(call.done() for call in slow_calls)
    held.set()

    assert [status for status, _ in await asyncio.gather(*slow_calls)] == [200] * 12
    assert tracker.max_active == 4  # the other 8 waited in the hub's queue, not at the receiver


async def test_a_request_whose_caller_got_a_timeout_is_never_delivered_late(make_hub: MakeHub) -> None:
    """The second PATCH waits behind the first for the receiver's only slot. When the slot frees (the first
    timed out after 0.5 s) the second has only milliseconds of its own 0.5 s left: the hub answers it 4002 and
    drops it instead of handing the receiver a request whose caller is about to be told it failed."""
    hub = await make_hub(forward_timeout=0.5, max_inflight_per_receiver=1)
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    beta.responder = Tracker(lambda rec: 1.0 if rec.path.endswith("/SLOW") else 0.0)

    blocker = asyncio.create_task(patch_session(hub, alpha, beta, "SLOW", 0))
    await wait_until(lambda: len(beta.received) == 1)  # it holds the receiver's only slot
    started = time.monotonic()
    status, body = await patch_session(hub, alpha, beta, "S2", 1)  # another object: waits for the slot
    assert (status, body["status_code"]) == (504, 4002)
    assert time.monotonic() - started < 1.2
    assert (await blocker)[0] == 504

    await asyncio.sleep(0.8)  # long enough for any late delivery to show up
    assert [rec.path.rsplit("/", 1)[-1] for rec in beta.received] == ["SLOW"]

    # and the slot is free again: the next request goes straight through
    beta.responder = default_responder
    status, body = await patch_session(hub, alpha, beta, "S2", 2)
    assert (status, body["status_code"]) == (200, 1000)


async def test_an_unexpected_failure_while_forwarding_does_not_stall_the_object(
    hub: HubHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug or crash while forwarding one PATCH must not leave its lease behind: the session's later PATCHes
    would otherwise wait for the lease to expire (seconds) and time out. Both delivery paths are covered: the
    handler's own (claim-on-enqueue) and the dispatcher's (queued behind a slow PATCH)."""
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    beta.responder = Tracker(lambda rec: 0.3 if (rec.json() or {}).get("seq") == 0 else 0.0)
    delivery = hub.app[HUB_KEY].delivery
    deliver = delivery._deliver

    async def broken(msg: Message, fwd: Any = None) -> Reply:
        if b'"seq": 1,' in msg.payload or b'"seq": 3,' in msg.payload:
            raise RuntimeError("bug while forwarding")
        return await deliver(msg, fwd)

    monkeypatch.setattr(delivery, "_deliver", broken)

    slow = asyncio.create_task(patch_session(hub, alpha, beta, "S1", 0))  # holds S1 for 0.3 s
    await wait_until(lambda: len(beta.received) == 1)
    queued = [asyncio.create_task(patch_session(hub, alpha, beta, "S1", seq)) for seq in (1, 2)]
    assert (await slow)[0] == 200
    (status1, body1), (status2, body2) = await asyncio.gather(*queued)  # dispatcher path
    assert (status1, body1["status_code"]) == (500, 3000)
    assert (status2, body2["status_code"]) == (200, 1000)

    status, body = await patch_session(hub, alpha, beta, "S1", 3)  # handler path: the group was free
    assert (status, body["status_code"]) == (500, 3000)
    started = time.monotonic()
    status, body = await patch_session(hub, alpha, beta, "S1", 4)
    assert (status, body["status_code"]) == (200, 1000)
    assert time.monotonic() - started < 0.5
    assert [(rec.json() or {}).get("seq") for rec in beta.received] == [0, 2, 4]
