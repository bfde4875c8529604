"""Dead letters are capped and expire (docs/security.md, "Dead letters: caps and expiry").

A partner that refuses everything must not fill Redis with dead letters: per receiver, a count cap, a byte cap
and a TTL, enforced in the script that stores a dead letter (the oldest go first) and by the reaper's sweep;
evictions are counted (Redis, ``/admin/queues``, ``ocpi_hub_dead_letters_evicted_total``). Queue tests run on the
real Redis and on fakeredis (``rb`` from tests/test_queue.py), with a clock the test moves.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from hub.context import HUB_KEY
from routing import keys
from routing.queue import DeliveryQueue, Message, ReceiverStats
from tests import test_queue
from tests.conftest import MakeHub, cpo, emsp
from tests.partners import Party, Received, envelope
from tests.test_queue import Backend, msg

HUB = Party("NL", "HUB", "HUB")
rb = test_queue.rb  # the queue tests' fixture: each test runs on the real Redis and on fakeredis


async def dead_letter_one(rb: Backend, q: DeliveryQueue, receiver: str, payload: bytes, reason: str = "no") -> Message:
    m = msg(receiver, "", payload)
    assert await q.enqueue(m, claim=True)
    assert await q.dead_letter(m, reason)
    rb.clock.advance(1)  # dead letters get distinct times: "oldest" is well defined
    return m


async def stats(q: DeliveryQueue, receiver: str) -> ReceiverStats:
    return next(s for s in await q.stats() if s.receiver == receiver)


async def test_dead_letters_over_the_count_cap_evict_the_oldest_first_and_are_counted(rb: Backend) -> None:
    q = rb.queue(dead_letter_max_count=3)
    evicted: list[tuple[str, str, int]] = []
    q.on_evicted = lambda receiver, reason, n: evicted.append((receiver, reason, n))
    sent = [await dead_letter_one(rb, q, "R", f"p{i}".encode()) for i in range(5)]
    other = await dead_letter_one(rb, q, "OTHER", b"x")

    assert [d.id for d in await q.list_dead_letters(receiver="R")] == [m.id for m in reversed(sent[2:])]
    assert await q.get_dead_letter(sent[0].id) is None and await q.get_dead_letter(sent[1].id) is None
    assert [d.id for d in await q.list_dead_letters()] == [other.id, *(m.id for m in reversed(sent[2:]))]
    assert evicted == [("R", "cap", 1), ("R", "cap", 1)]
    r = await stats(q, "R")
    assert (r.dead_letters, r.dead_letters_evicted, r.dead_letter_bytes) == (3, 2, 3 * (2 + len("no")))
    assert (await stats(q, "OTHER")).dead_letters_evicted == 0


async def test_dead_letters_over_the_byte_cap_evict_the_oldest_and_bytes_are_tracked(rb: Backend) -> None:
    q = rb.queue(dead_letter_max_bytes=1000)
    first, second, third = [await dead_letter_one(rb, q, "R", bytes(398)) for _ in range(3)]  # 400 bytes each
    r = await stats(q, "R")
    assert (r.dead_letters, r.dead_letter_bytes, r.dead_letters_evicted) == (2, 800, 1)
    assert await q.get_dead_letter(first.id) is None
    # Operators' deletes and replays give their bytes back.
    assert await q.delete_dead_letter(second.id)
    assert (await stats(q, "R")).dead_letter_bytes == 400
    assert await q.replay_dead_letter(third.id) is not None
    r = await stats(q, "R")
    assert (r.dead_letters, r.dead_letter_bytes) == (0, 0)
    # One dead letter bigger than the whole cap is not kept either.
    huge = await dead_letter_one(rb, q, "R", bytes(2000))
    assert await q.get_dead_letter(huge.id) is None
    assert (await stats(q, "R")).dead_letters_evicted == 2


async def test_expired_dead_letters_leave_the_record_and_every_index(rb: Backend) -> None:
    q = rb.queue(dead_letter_ttl=600)
    evicted: list[tuple[str, str, int]] = []
    q.on_evicted = lambda receiver, reason, n: evicted.append((receiver, reason, n))
    old = [await dead_letter_one(rb, q, "QUIET", b"old") for _ in range(2)]
    rb.clock.advance(300)
    young = await dead_letter_one(rb, q, "QUIET", b"young")
    rb.clock.advance(301)  # the first two are past their TTL; nothing new arrives for QUIET

    assert await q.trim_dead_letters() == {"QUIET": (0, 2)}
    assert evicted == [("QUIET", "expired", 2)]
    assert [d.id for d in await q.list_dead_letters()] == [young.id]
    assert [d.id for d in await q.list_dead_letters(receiver="QUIET")] == [young.id]
    client = rb.client()
    for m in old:
        assert not await client.exists(keys.dead_letter(rb.prefix, m.id))
        assert await client.zscore(keys.dead_letters(rb.prefix), m.id) is None
        assert await client.zscore(keys.dead_letters_of(rb.prefix, "QUIET"), m.id) is None
    r = await stats(q, "QUIET")
    assert (r.dead_letters, r.dead_letter_bytes, r.dead_letters_evicted) == (1, len("young") + len("no"), 2)
    assert await q.trim_dead_letters() == {}, "nothing left to expire: idempotent"


async def test_a_lowered_cap_takes_effect_at_the_next_sweep(rb: Backend) -> None:
    q = rb.queue()
    for _ in range(5):
        await dead_letter_one(rb, q, "R", b"p")
    smaller = rb.queue(dead_letter_max_count=2)  # a restart with HUB_DEAD_LETTER_MAX_COUNT=2
    assert await smaller.trim_dead_letters() == {"R": (3, 0)}
    assert (await stats(smaller, "R")).dead_letters == 2


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_a_partner_refusing_every_push_cannot_grow_its_dead_letters_past_the_cap(make_hub: MakeHub) -> None:
    hub = await make_hub(dead_letter_max_count=2)

    async def refuse(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope(status_code=2001, message="never"), status=400)

    alpha, beta = cpo(), emsp()
    beta.responder = refuse
    await hub.connect(alpha)
    beta_platform = await hub.connect(beta)
    for i in range(5):
        status, _, body = await alpha.call(
            hub.session, "PUT", "locations", "RECEIVER", f"NL/CPA/D{i}", to=HUB,
            json={"country_code": "NL", "party_id": "CPA", "id": f"D{i}", "last_updated": "2024-01-01T00:00:00Z"})
        assert (status, body["status_code"]) == (200, 1000), body
    queue = hub.app[HUB_KEY].queue
    for _ in range(200):  # bounded wait for the five refusals
        rows = {r["receiver"]: r for r in (await hub.admin("GET", "/admin/queues"))[1]}
        row = rows.get(beta_platform["id"])
        if row and row["dead_letters"] + row["dead_letters_evicted"] == 5:
            break
        await asyncio.sleep(0.05)
    assert row is not None
    assert (row["dead_letters"], row["dead_letters_evicted"]) == (2, 3), row
    assert len(await queue.list_dead_letters(receiver=beta_platform["id"])) == 2
    async with hub.session.get(hub.url + "/metrics") as resp:
        text = await resp.text()
    assert metric(text, "ocpi_hub_dead_letters_evicted_total", receiver=beta_platform["id"],
                        reason="cap") == 3
