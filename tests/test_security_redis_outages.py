"""Hub-side outages are the hub's errors (docs/security.md, "Redis outages").

Redis killed, frozen (SIGSTOP) or full (``maxmemory`` + ``noeviction``) under load: every request is answered
503 with OCPI 4000 and ``Retry-After`` - never 500/3000 with a traceback, never 504/4002 blamed on the receiver -,
the outage is logged once when it starts and once when it ends, ``ocpi_hub_redis_up`` / ``_outages_total`` show
it, a broadcast answered 1000 is still delivered afterwards, and the hub recovers by itself.

Each test runs a redis-server of its own (``scratch_redis``), never the shared one on 6379.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from routing.queue import DeliveryQueue, Message
from routing.redis_health import REFUSING_WRITES, UNREACHABLE, outage_kind
from tests.conftest import HubHarness, cpo, emsp, hub_settings, scratch_redis, start_hub, stop_hub
from tests.partners import FakePartner, Party, default_responder, envelope

HUB = Party("NL", "HUB", "HUB")
TS = "2024-01-01T00:00:00Z"


def location(lid: str) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPA", "id": lid, "publish": True, "address": "Stationsplein 1",
            "city": "Amsterdam", "country": "NLD", "coordinates": {"latitude": "52.379189", "longitude": "4.899431"},
            "time_zone": "Europe/Amsterdam", "evses": [], "last_updated": TS}


def redis_pid(url: str) -> int:
    return int(sync_redis.Redis.from_url(url).info("server")["process_id"])


@contextmanager
def frozen(url: str) -> Iterator[None]:
    """SIGSTOP the scratch redis-server: connections stay open, nothing is answered."""
    pid = redis_pid(url)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def restarted_redis(tmp_path: Path, url: str) -> Iterator[None]:
    """A new redis-server on the killed one's port and data directory (its append-only file: nothing lost)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    proc = subprocess.Popen(
        ["redis-server", "--port", port, "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always",
         "--dir", str(tmp_path), "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def metric(hub: HubHarness, name: str, **labels: str) -> float | None:
    async with hub.session.get(hub.url + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def eventually(check: Any, within: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not ((await result) if inspect.isawaitable(result := check()) else result):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


class Load:
    """Concurrent routed PUTs and GETs from a CPO to an eMSP, each outcome tallied, until stopped."""

    def __init__(self, hub: HubHarness, sender: FakePartner, to: Party, workers: int = 8) -> None:
        self.hub, self.sender, self.to, self.workers = hub, sender, to, workers
        self.outcomes: Counter[tuple[int, int | None, bool]] = Counter()  # (HTTP, OCPI status, Retry-After?)
        self.slowest_503, self.fastest_503 = 0.0, float("inf")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def reset(self) -> None:
        self.outcomes.clear()
        self.slowest_503, self.fastest_503 = 0.0, float("inf")

    async def _run(self, worker: int) -> None:
        for n in range(100_000):  # bounded; stop() ends it long before
            if self._stop.is_set():
                return
            # Half the workers share one object (one ordering group: requests wait in the queue), half do not.
            lid = "SHARED" if worker % 2 else f"L{worker}-{n}"
            method = "GET" if n % 3 == 0 else "PUT"
            started = time.monotonic()
            try:
                status, headers, body = await self.sender.call(
                    self.hub.session, method, "locations", "RECEIVER", f"NL/CPA/{lid}", to=self.to,
                    json=location(lid) if method == "PUT" else None)
            except (aiohttp.ClientError, TimeoutError):
                self.outcomes[(0, None, False)] += 1
                continue
            code = body.get("status_code") if isinstance(body, dict) else None
            self.outcomes[(status, code, "Retry-After" in headers)] += 1
            if status == 503:
                took = time.monotonic() - started
                self.slowest_503, self.fastest_503 = max(self.slowest_503, took), min(self.fastest_503, took)
            await asyncio.sleep(0.01)

    def only(self, *allowed: tuple[int, int | None, bool]) -> None:
        unexpected = {k: v for k, v in self.outcomes.items() if k not in allowed}
        assert not unexpected, f"unexpected answers {unexpected}; all: {dict(self.outcomes)}"


OK, UNAVAILABLE = (200, 1000, False), (503, 4000, True)


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "routing.redis"]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info]


async def start(redis_url: str, **overrides: Any) -> tuple[HubHarness, FakePartner, FakePartner]:
    hub = await start_hub(hub_settings(redis_url=redis_url, **overrides))
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    return hub, alpha, beta


async def test_redis_killed_under_load_gives_503_with_retry_after_one_log_line_and_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with scratch_redis(tmp_path) as url:
        hub, alpha, beta = await start(url, redis_timeout=0.5, forward_timeout=3.0)
        load = Load(hub, alpha, beta.party)
        stopped = False
        try:
            load.start()
            await eventually(lambda: (load.outcomes[OK] >= 20), what="traffic before the kill")
            caplog.clear()
            os.kill(redis_pid(url), signal.SIGKILL)
            await eventually(lambda: (load.outcomes[UNAVAILABLE] >= 50), what="503s during the outage")
            async with hub.session.get(hub.url + "/readyz") as resp:
                assert resp.status == 503
            assert await metric(hub, "ocpi_hub_redis_up") == 0
            assert await metric(hub, "ocpi_hub_redis_outages_total", kind="unreachable") == 1
            status, body = await hub.admin("GET", "/admin/queues")  # the admin API: the same 503, as JSON
            assert status == 503 and "unavailable" in body["error"], body
            load.only(OK, UNAVAILABLE)  # requests under way when it died may still end 200: they were delivered
            load.reset()
            with restarted_redis(tmp_path, url):
                await eventually(lambda: (load.outcomes[OK] >= 20), what="recovery")
                await load.stop()
                assert await metric(hub, "ocpi_hub_redis_up") == 1
                async with hub.session.get(hub.url + "/readyz") as resp:
                    assert resp.status == 200
                await stop_hub(hub)  # before this Redis goes away too
                stopped = True
        finally:
            await load.stop()
            if not stopped:
                await stop_hub(hub)
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0].startswith("Redis outage (unreachable)") and lines[1].startswith("Redis is back")
    assert tracebacks(caplog) == []


async def test_frozen_redis_is_the_hubs_503_not_a_receiver_timeout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with scratch_redis(tmp_path) as url:
        hub, alpha, beta = await start(url, redis_timeout=0.5, forward_timeout=3.0)
        load = Load(hub, alpha, beta.party)
        try:
            load.start()
            await eventually(lambda: (load.outcomes[OK] >= 20), what="traffic before the freeze")
            caplog.clear()
            with frozen(url):
                await asyncio.sleep(0.5)
                load.reset()  # requests that met the freeze mid-way may still end 200
                await eventually(lambda: (load.outcomes[UNAVAILABLE] >= 30), what="503s while frozen")
                load.only(UNAVAILABLE)
                # New requests hear of it within the Redis timeout; requests already queued when Redis froze wait
                # out their own deadline (Redis may come back in time to deliver them), then get 503 as well.
                assert load.fastest_503 < 3.0 and load.slowest_503 < 3.0 + 1.0, (load.fastest_503, load.slowest_503)
                assert await metric(hub, "ocpi_hub_redis_up") == 0
            # After the thaw Redis runs the script calls it had buffered: a claim whose caller gave up holds its
            # group until its message's deadline; what waited behind it is still the hub's 503, not a 4002.
            await eventually(lambda: (load.outcomes[OK] >= 20), what="recovery after the freeze")
            await load.stop()
            load.only(OK, UNAVAILABLE)
        finally:
            await load.stop()
            await stop_hub(hub)
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines
    assert tracebacks(caplog) == []


def fill(url: str) -> int:
    """Write junk until the scratch Redis (maxmemory, noeviction) refuses; returns how many keys it took.

    Then maxmemory drops to 1 byte: used memory moves by a few KB with client and AOF buffers, and the test must
    not see Redis slip back under the line by itself.
    """
    client = sync_redis.Redis.from_url(url)
    for i in range(10_000):  # bounded: a 4 MB Redis is full long before
        try:
            client.set(f"junk:{i}", b"x" * 4096)
        except sync_redis.exceptions.OutOfMemoryError:
            client.config_set("maxmemory", "1")
            return i
    raise AssertionError("Redis never filled up: is maxmemory set?")


def drain(url: str, n: int) -> None:
    client = sync_redis.Redis.from_url(url)
    client.config_set("maxmemory", "4mb")
    client.delete(*[f"junk:{i}" for i in range(n)])


async def test_full_redis_refuses_routed_requests_and_broadcasts_with_503_and_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with scratch_redis(tmp_path, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as url:
        hub, alpha, beta = await start(url)
        try:
            n = fill(url)
            status, headers, body = await alpha.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/L1",
                                                     to=beta.party, json=location("L1"))
            assert (status, body["status_code"]) == (503, 4000), body
            assert int(headers["Retry-After"]) >= 1
            assert "unavailable" in body["status_message"]
            # A broadcast that could not be stored is not confirmed: 503, never 1000.
            status, _, body = await alpha.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/B1", to=HUB,
                                               json=location("B1"))
            assert (status, body["status_code"]) == (503, 4000), body
            assert await metric(hub, "ocpi_hub_redis_outages_total", kind="refusing_writes") == 1
            async with hub.session.get(hub.url + "/readyz") as resp:  # Redis answers PING, but takes no writes
                assert resp.status == 503
            assert not [r for r in beta.received if "B1" in r.path]
            drain(url, n)

            async def routed_again() -> bool:
                status, _, _ = await alpha.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/L2",
                                                to=beta.party, json=location("L2"))
                return status == 200

            await eventually(routed_again, what="writes taken again")
            status, _, body = await alpha.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/B2", to=HUB,
                                               json=location("B2"))
            assert (status, body["status_code"]) == (200, 1000)
            await eventually(lambda: (any("B2" in r.path for r in beta.received)),
                             what="the broadcast answered 1000 delivered")
            await eventually(lambda: metric(hub, "ocpi_hub_redis_up"), what="the outage's end noticed")
        finally:
            await stop_hub(hub)
    assert len(outage_lines(caplog)) == 2, outage_lines(caplog)
    assert tracebacks(caplog) == []


async def test_broadcast_answered_1000_is_delivered_after_redis_was_killed_and_restarted(tmp_path: Path) -> None:
    with scratch_redis(tmp_path) as url:
        hub, alpha, beta = await start(url, broadcast_retry_window=120.0)
        up = [False]

        async def down_until_told(request: Any, rec: Any) -> Any:
            if not up[0]:
                return web.json_response(envelope(status_code=3000, message="restarting"), status=503)
            return await default_responder(request, rec)

        beta.responder = down_until_told
        try:
            status, _, body = await alpha.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/K1", to=HUB,
                                               json=location("K1"))
            assert (status, body["status_code"]) == (200, 1000)
            await eventually(lambda: (any("K1" in r.path for r in beta.received)), what="first attempt")
            os.kill(redis_pid(url), signal.SIGKILL)
            await asyncio.sleep(1.5)  # the retry falls into the outage
            up[0] = True
            with restarted_redis(tmp_path, url):
                await eventually(lambda: (
                    sum("K1" in r.path for r in beta.received) >= 2), within=30, what="delivery after the restart")
        finally:
            await stop_hub(hub)


async def test_a_full_redis_still_lets_queued_work_finish(tmp_path: Path) -> None:
    """Acks, claims and dead letters carry Redis 7's allow-oom flag: a full queue can drain, which frees memory."""
    with scratch_redis(tmp_path, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as url:
        client = sync_redis.asyncio.Redis.from_url(url)
        queue = DeliveryQueue(client, prefix="oom")
        try:
            first, second, third = (Message(receiver="R", group="", payload=b"p" * 100) for _ in range(3))
            for msg in (first, second, third):
                await queue.enqueue(msg)
            claimed = await queue.claim(max_items=2)
            fill(url)
            with pytest.raises(sync_redis.exceptions.ResponseError, match="OOM"):  # as the lean connection has it
                await queue.enqueue(Message(receiver="R", group="", payload=b"new"))
            assert await queue.ack(claimed[0])
            assert await queue.dead_letter(claimed[1], "refused")
            assert [m.id for m in await queue.claim(max_items=1)] == [third.id]
        finally:
            await queue.close()
            await client.aclose()


def test_only_redis_outages_become_503_a_bug_stays_a_bug() -> None:
    """What RedisHealth (and so the error middleware) counts as an outage; anything else keeps its 500."""
    e = sync_redis.exceptions
    assert outage_kind(e.ConnectionError("refused")) == UNREACHABLE
    assert outage_kind(e.TimeoutError("no answer")) == UNREACHABLE
    assert outage_kind(e.BusyLoadingError("loading")) == UNREACHABLE
    assert outage_kind(e.OutOfMemoryError("command not allowed")) == REFUSING_WRITES  # redis-py's spelling
    assert outage_kind(e.ResponseError("OOM command not allowed when used memory > 'maxmemory'")) == REFUSING_WRITES
    assert outage_kind(e.ReadOnlyError("You can't write against a read only replica.")) == REFUSING_WRITES
    assert outage_kind(e.ResponseError("MISCONF Redis is configured to save RDB snapshots")) == REFUSING_WRITES
    assert outage_kind(e.ResponseError("WRONGTYPE Operation against a key")) is None
    assert outage_kind(e.ResponseError("ERR Error running script: attempt to compare nil")) is None
    assert outage_kind(ValueError("a bug")) is None
    assert outage_kind(TimeoutError("not redis-py's")) is None
