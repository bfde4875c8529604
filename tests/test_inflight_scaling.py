"""The in-flight limit per receiver is per hub process: with two processes a busy receiver gets twice the
concurrency, and never more (docs/architecture.md, "In-flight limit"). Needs the real Redis: two hubs share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as sync_redis
from aiohttp import web

from routing import keys
from tests.conftest import (
    REDIS_URL,
    HubHarness,
    cleanup_prefix,
    cpo,
    emsp,
    hub_settings,
    real_redis_available,
    start_hub,
    stop_hub,
)
from tests.partners import Received, default_responder

PER_PROCESS = 2


class Holding:
    """A receiver that holds every request until released, and remembers the most it held at once."""

    def __init__(self, target: int) -> None:
        self.release = asyncio.Event()
        self.reached = asyncio.Event()  # held ``target`` at once
        self.target = target
        self.now = 0
        self.most = 0

    async def __call__(self, request: web.Request, rec: Received) -> web.StreamResponse:
        self.now += 1
        self.most = max(self.most, self.now)
        if self.most >= self.target:
            self.reached.set()
        try:
            await self.release.wait()
        finally:
            self.now -= 1
        return await default_responder(request, rec)


async def held_at_most(hubs: list[HubHarness], requests_per_hub: int, expected: int) -> int:
    """Send GETs to one held receiver through each hub; the most it held at once once ``expected`` is reached
    (or a few seconds passed)."""
    receiver, sender = cpo(), emsp()
    holding = Holding(expected)
    receiver.responder = holding
    await hubs[0].connect(receiver)
    await hubs[0].connect(sender)
    await asyncio.sleep(0.5)  # the other hub's view of the new platforms (platform change notices)

    async def get(h: HubHarness, i: int) -> Any:
        return await sender.call(h.session, "GET", "locations", "SENDER", f"NL/CPA/LOC{i}", to=receiver.party)

    calls = [asyncio.create_task(get(h, i)) for h in hubs for i in range(requests_per_hub)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(holding.reached.wait(), timeout=4)
    await asyncio.sleep(0.3)  # time for one more to slip through, were the limit wrong
    most = holding.most
    holding.release.set()
    answers = await asyncio.gather(*calls)
    assert all(status == 200 for status, _, _ in answers), answers
    return most


@pytest.fixture
def redis_needed() -> None:
    if not real_redis_available():
        pytest.skip("no Redis at 127.0.0.1:6379")


async def test_two_processes_double_a_busy_receivers_concurrency_and_never_more(
        tmp_path: Path, redis_needed: None) -> None:
    prefix = "test-inflight-" + uuid.uuid4().hex[:8]
    common = {"redis_url": REDIS_URL, "key_prefix": prefix, "sqlite_path": str(tmp_path / "hub.sqlite3"),
              "max_inflight_per_receiver": PER_PROCESS, "forward_timeout": 10.0}
    hubs = [await start_hub(hub_settings(**common)) for _ in range(2)]
    try:
        assert await held_at_most(hubs, 4, 2 * PER_PROCESS) == 2 * PER_PROCESS
    finally:
        for h in hubs:
            await stop_hub(h)
        cleanup_prefix(prefix)


async def test_one_process_keeps_its_own_share(tmp_path: Path, redis_needed: None) -> None:
    prefix = "test-inflight-" + uuid.uuid4().hex[:8]
    h = await start_hub(hub_settings(redis_url=REDIS_URL, key_prefix=prefix, max_inflight_per_receiver=PER_PROCESS,
                                     forward_timeout=10.0))
    try:
        assert await held_at_most([h], 6, PER_PROCESS + 1) == PER_PROCESS
    finally:
        await stop_hub(h)
        cleanup_prefix(prefix)


async def test_a_reply_no_process_can_read_leaves_the_next_cross_process_reply_answered(
        tmp_path: Path, redis_needed: None) -> None:
    """A message on a process's reply channel that it cannot read (a newer hub's Reply with a field this one lacks,
    or bytes that are no reply) is skipped with a warning: the listener keeps going, so the next reply another
    process publishes for it still answers its caller instead of a 504 for every request handed across."""
    prefix = "test-inflight-" + uuid.uuid4().hex[:8]
    common = {"redis_url": REDIS_URL, "key_prefix": prefix, "sqlite_path": str(tmp_path / "hub.sqlite3"),
              "max_inflight_per_receiver": 1, "forward_timeout": 5.0}
    hubs = [await start_hub(hub_settings(**common)) for _ in range(2)]
    client = sync_redis.Redis.from_url(REDIS_URL)
    try:
        receiver, sender = cpo(), emsp()
        holding = Holding(2)
        receiver.responder = holding
        await hubs[0].connect(receiver)
        await hubs[0].connect(sender)
        await asyncio.sleep(0.5)  # the other hub's view of the new platforms
        for process_id in client.zrange(keys.processes(prefix), 0, -1):
            channel = keys.reply_channel(prefix, process_id.decode())
            client.publish(channel, b"not-a-reply")
            client.publish(channel, b"id-of-nobody\n" + orjson.dumps({"status": 200, "field_of_a_newer_hub": 1}))
        await asyncio.sleep(0.3)

        async def get(i: int) -> Any:
            return await sender.call(hubs[0].session, "GET", "locations", "SENDER", f"NL/CPA/LOC{i}",
                                     to=receiver.party)

        # hub 0's one slot for the receiver holds the first GET: the second is queued, and hub 1 delivers it,
        # its answer going back to hub 0 over hub 0's reply channel
        calls = [asyncio.create_task(get(i)) for i in range(2)]
        await asyncio.wait_for(holding.reached.wait(), timeout=4)
        holding.release.set()
        answers = await asyncio.gather(*calls)
        assert [status for status, _, _ in answers] == [200, 200], answers
    finally:
        client.close()
        for h in hubs:
            await stop_hub(h)
        cleanup_prefix(prefix)
