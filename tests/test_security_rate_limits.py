"""Per-platform rate limits (docs/security.md, "Rate limits per platform"): a platform over its rate gets 429 in
an OCPI envelope with ``Retry-After`` while the others keep flowing; the limit is settable per platform through
the admin API and the CLI, counted in metrics, and enforced as one total over every ``--workers`` process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import fakeredis
import pytest
from aiohttp import web
from redis.asyncio import Redis

from hub.ratelimit import RateLimits
from routing.platform import Platform, RateLimit
from tests.conftest import ADMIN_TOKEN, REDIS_URL, HubHarness, cleanup_prefix, cpo, emsp, real_redis_available
from tests.partners import FakePartner, Received, ocpi_token
from tests.test_cli import cli
from tests.test_processes import HubProcess, admin, metric_samples, needs_redis, onboard_and_register
from tests.test_routing_errors import as_, assert_hub_error, routing, send


async def get_tokens(hub: HubHarness, sender: FakePartner, to: FakePartner) -> tuple[dict[str, str], Any]:
    """A CPO's GET of an eMSP's token list: forwarded, answered by the receiver."""
    headers = as_(sender, **routing(to=to.party))
    return headers, await send(hub, "GET", sender.hub_url("tokens", "SENDER"), headers)


async def scrape(url: str, session: aiohttp.ClientSession) -> str:
    async with session.get(url + "/metrics") as resp:
        return await resp.text()


async def test_a_platform_over_its_rate_is_answered_429_in_an_ocpi_envelope_and_others_still_flow(
    hub: HubHarness,
) -> None:
    alpha, gamma, beta = cpo(), cpo(name="Gamma CPO", pid="CPG"), emsp()
    alpha_id = (await hub.connect(alpha))["id"]
    await hub.connect(gamma)
    await hub.connect(beta)
    status, view = await hub.admin("PUT", f"/admin/platforms/{alpha_id}/rate-limit", {"rps": 0.5, "burst": 3})
    assert status == 200, view
    assert view["rate_limit"] == {"rps": 0.5, "burst": 3, "source": "platform"}

    for _ in range(3):
        _, (status, _, raw) = await get_tokens(hub, alpha, beta)
        assert status == 200, raw
    started = time.monotonic()
    headers, reply = await get_tokens(hub, alpha, beta)
    held = time.monotonic() - started
    doc = assert_hub_error(reply, headers, http=429, code=2000, requester=alpha.party)
    assert held >= 0.45  # held back for half to all of HUB_RATE_LIMIT_HOLD (1 s), its Retry-After being longer
    assert "requests per second" in doc["status_message"]
    assert reply[1]["Retry-After"] == "2"  # one request at 0.5 per second
    assert len(beta.received) == 3  # the refused request was not forwarded

    # Another platform (default limit) is not affected, nor are the admin API and health endpoints.
    for _ in range(5):
        _, (status, _, raw) = await get_tokens(hub, gamma, beta)
        assert status == 200, raw
    for _ in range(10):
        status, _ = await hub.admin("GET", f"/admin/platforms/{alpha_id}")
        assert status == 200
        async with hub.session.get(hub.url + "/healthz") as resp:
            assert resp.status == 200
    limited = metric_samples(await scrape(hub.url, hub.session), "ocpi_hub_rate_limited_total")
    assert limited == [({"platform": alpha_id}, 1.0)]

    # The 429 carries Retry-After: after it, the platform gets through again.
    await asyncio.sleep(2.1)
    _, (status, _, raw) = await get_tokens(hub, alpha, beta)
    assert status == 200, raw


async def test_the_rate_limit_is_set_shown_and_cleared_through_the_admin_api_and_cli(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    pid = (await hub.connect(alpha))["id"]
    await hub.connect(beta)
    status, view = await hub.admin("GET", f"/admin/platforms/{pid}")
    assert view["rate_limit"] == {"rps": 500.0, "burst": 1000, "source": "default"}

    def run(*args: str) -> Any:
        return cli(*args, url=hub.url, token=ADMIN_TOKEN)

    done = await asyncio.to_thread(run, "platforms", "rate-limit", pid, "--rps", "5", "--burst", "7")
    assert done.json()["rate_limit"] == {"rps": 5.0, "burst": 7, "source": "platform"}
    shown = await asyncio.to_thread(run, "platforms", "show", pid)
    assert shown.json()["rate_limit"] == {"rps": 5.0, "burst": 7, "source": "platform"}
    done = await asyncio.to_thread(run, "platforms", "rate-limit", pid, "--rps", "2.5")
    assert done.json()["rate_limit"] == {"rps": 2.5, "burst": 5, "source": "platform"}  # burst: 2 s worth

    # The limit applies at once: burst 5, then 429.
    statuses = [(await get_tokens(hub, alpha, beta))[1][0] for _ in range(6)]
    assert statuses == [200] * 5 + [429], statuses

    done = await asyncio.to_thread(run, "platforms", "rate-limit", pid, "--default")
    assert done.json()["rate_limit"] == {"rps": 500.0, "burst": 1000, "source": "default"}
    status, _ = await hub.admin("GET", f"/admin/platforms/{pid}")
    assert status == 200

    for bad in ({"rps": 0}, {"rps": -1}, {"rps": 5, "burst": 0}, {"rps": "fast"}, {}):
        status, body = await hub.admin("PUT", f"/admin/platforms/{pid}/rate-limit", bad)
        assert status == 400, (bad, body)
    status, _ = await hub.admin("PUT", "/admin/platforms/nope/rate-limit", {"rps": 5})
    assert status == 404
    wrong = await asyncio.to_thread(run, "platforms", "rate-limit", pid, "--rps", "-3")
    assert wrong.code != 0 and "Traceback" not in wrong.stderr and "must be above 0" in wrong.stderr


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# Runs in a process of its own, so that the flood's client work competes with neither the hub nor the quiet
# platform's event loop: only the hub's handling of the flood is measured, as with an outside flooder.
FLOODER = """
import asyncio, json, sys, time
import aiohttp
url, headers, seconds, connections = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
counts = {}
async def loop(session):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            counts[resp.status] = counts.get(resp.status, 0) + 1
async def main():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(loop(session) for _ in range(connections)))
asyncio.run(main())
print(json.dumps(counts))
"""
FLOOD_SECONDS = 8.0


async def test_one_flooding_platform_gets_429s_while_a_quiet_one_keeps_its_latency(tmp_path: Path) -> None:
    """A real ``ocpi-hub serve``. Both CPOs read the same eMSP, which takes 20 ms per answer and may have 4
    requests in flight. Unlimited, 16 flooding connections fill those slots and queue the quiet platform behind
    them (its median went from ~30 to ~340 ms). Limited but answered at once, the 429s alone kept the hub's event
    loop busy enough to take the quiet median to ~150 ms; held back for their Retry-After (HUB_RATE_LIMIT_HOLD),
    they cost no CPU. Released all at once, though, the held connections came back together and the flooder's
    bucket admitted a whole burst onto the receiver the quiet platform shares (quiet p99 32 -> 80 ms); holds are
    jittered, and the quiet platform's p50, p90 and p99 over 200 requests stay within 2x their unloaded values
    (with 10-15 ms of slack for a shared 2-core machine's scheduler)."""
    prefix = "test-rl-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_KEY_PREFIX=prefix, HUB_MAX_INFLIGHT_PER_RECEIVER="4")
    flooder, quiet, receiver = cpo(), cpo(name="Quiet CPO", pid="CPQ"), emsp()

    async def slow(request: web.Request, rec: Received) -> web.StreamResponse:
        await asyncio.sleep(0.02)
        return web.json_response({"data": [], "status_code": 1000, "timestamp": "2024-01-01T00:00:00Z"})

    receiver.responder = slow
    for p in (flooder, quiet, receiver):
        await p.start()
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            ids = [(await onboard_and_register(session, hub.url, p))["id"] for p in (flooder, quiet, receiver)]
            status, _ = await admin(session, hub.url, "PUT", f"/admin/platforms/{ids[0]}/rate-limit",
                                    {"rps": 20, "burst": 10})
            assert status == 200

            async def quiet_run(n: int) -> list[float]:
                took = []
                for _ in range(n):
                    started = time.perf_counter()
                    status, _, body = await quiet.call(session, "GET", "tokens", "SENDER", to=receiver.party)
                    took.append(time.perf_counter() - started)
                    assert status == 200, body
                return took

            async def flood_round() -> tuple[list[float], list[float], dict[int, int]]:
                unloaded = await quiet_run(200)
                flood = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", FLOODER, flooder.hub_url("tokens", "SENDER"),
                    json.dumps(as_(flooder, **routing(to=receiver.party))), str(FLOOD_SECONDS), "16",
                    stdout=asyncio.subprocess.PIPE)
                try:
                    await asyncio.sleep(0.5)
                    loaded = await quiet_run(200)
                    out, _ = await asyncio.wait_for(flood.communicate(), timeout=FLOOD_SECONDS + 20)
                finally:
                    if flood.returncode is None:
                        flood.kill()
                        await flood.wait()
                await asyncio.sleep(1.5)  # the flooder's bucket refills before the next round
                return unloaded, loaded, {int(k): v for k, v in json.loads(out).items()}

            # A p99 over 200 requests is the second-slowest of them: one scheduler hiccup of a busy CI host moves
            # it. A round is repeated (at most three) when a bound is missed; a hub that lets the flood through
            # misses it in every round (its median alone went from ~30 to ~340 ms).
            misses = []
            for _ in range(3):
                unloaded, loaded, answers = await flood_round()
                assert set(answers) <= {200, 429}, answers
                assert answers.get(429, 0) > 0, answers
                assert answers.get(200, 0) <= 10 + 20 * FLOOD_SECONDS + 2, answers  # burst + rate, nothing more
                missed = [
                    f"quiet p{share * 100:.0f} {percentile(loaded, share) * 1000:.1f} ms under the flood, "
                    f"{percentile(unloaded, share) * 1000:.1f} ms before"
                    for share, slack in ((0.5, 0.010), (0.9, 0.015), (0.99, 0.015))
                    if percentile(loaded, share) > 2 * percentile(unloaded, share) + slack]
                if not missed:
                    break
                misses.append(missed)
            else:
                raise AssertionError(f"the quiet platform's latency doubled in every round: {misses}")
    finally:
        hub.stop()
        for p in (flooder, quiet, receiver):
            await p.stop()


async def test_two_processes_exchanging_counts_admit_the_platforms_total_rate_not_twice_it() -> None:
    """Two limiters sharing one Redis (as two workers do), on a simulated clock: the platform floods both for
    10 s at rate 20, burst 10, exchange every 0.25 s. One bucket would admit 10 + 200 = 210; two independent
    ones 420; the exchange keeps the total within (N-1) x (burst + rate x interval) = 15 of one bucket."""
    redis = fakeredis.FakeAsyncRedis()
    now = [1000.0]
    prefix = "test-" + uuid.uuid4().hex[:8]
    limit = RateLimit(rps=20, burst=10)
    workers = [RateLimits(limit, redis=redis, prefix=prefix, interval=0.25, clock=lambda: now[0]) for _ in range(2)]
    platform = Platform(id="flooder", name="Flooder")
    admitted = 0
    for worker in workers:  # each sees the shared counter once before the flood (as after the first interval)
        await worker.exchange()
    for tick in range(1000):  # 10 s in steps of 10 ms, 3 attempts per worker per step
        now[0] += 0.01
        for worker in workers:
            for _ in range(3):
                try:
                    worker.check(platform)
                    admitted += 1
                except Exception:
                    pass
        if tick % 25 == 24:
            for worker in workers:
                await worker.exchange()
    assert 210 - 25 <= admitted <= 210 + 15, admitted
    await redis.aclose()


@pytest.mark.parametrize("backend", ["fakeredis", "redis"])
async def test_an_exchange_reads_back_only_the_platforms_whose_count_changed(backend: str) -> None:
    """Each process exchanges every 0.25 s, busy or idle: with many partners, reading back every platform's count
    each time cost more than the limiting itself. After its first exchange a process gets only what changed."""
    if backend == "redis" and not real_redis_available():
        pytest.skip("no Redis at 127.0.0.1:6379")
    redis: Any = fakeredis.FakeAsyncRedis() if backend == "fakeredis" else Redis.from_url(REDIS_URL)
    prefix = "test-" + uuid.uuid4().hex[:8]
    limit = RateLimit(rps=1, burst=10)
    a, b = (RateLimits(limit, redis=redis, prefix=prefix, clock=lambda: 1000.0) for _ in range(2))
    platforms = [Platform(id=f"p{n}", name=f"P{n}") for n in range(500)]
    try:
        for platform in platforms:
            a.check(platform)
        assert await a.exchange() == 500  # a first exchange reads every count
        assert await b.exchange() == 500
        a.check(platforms[7])
        a.check(platforms[7])
        assert await a.exchange() == 1
        assert await b.exchange() == 1
        assert b.tokens(platforms[7]) == 8  # what a admitted since is taken out of b's bucket
        assert await b.exchange() == 0
        assert b.tokens(platforms[8]) == 10
    finally:
        await a.close()
        await b.close()
        if backend == "redis":
            cleanup_prefix(prefix)
        await redis.aclose()


@needs_redis
async def test_the_rate_is_the_platforms_total_over_two_workers(tmp_path: Path) -> None:
    """``serve --workers 2`` on real Redis: a platform limited to 20 requests/s (burst 10) sends for 3 s over
    fresh connections, which the kernel spreads over both workers. One hub-wide bucket admits 10 + 60 = 70;
    two per-process buckets would admit up to 140. Allowed: 70 + one exchange's worth (10 + 20 x 0.25) + 10.
    429s are answered at once here (no hold), so the senders keep asking and every token is taken."""
    prefix = "test-rl-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, workers=2, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_REDIS_URL=REDIS_URL,
                     HUB_KEY_PREFIX=prefix, HUB_RATE_LIMIT_SYNC_INTERVAL="0.25", HUB_RATE_LIMIT_HOLD="0")
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            status, platform = await admin(session, hub.url, "POST", "/admin/platforms", {
                "name": "Flooder", "roles": [{"country_code": "NL", "party_id": "CPA", "role": "CPO"}]})
            assert status == 201, platform
            status, view = await admin(session, hub.url, "PUT", f"/admin/platforms/{platform['id']}/rate-limit",
                                       {"rps": 20, "burst": 10})
            assert status == 200, view
            token = ocpi_token(platform["token_a"])  # versions take Token A: an authenticated, counted request
            counts: dict[int, int] = {}
            deadline = time.monotonic() + 3.0

            async def sender() -> None:
                connector = aiohttp.TCPConnector(force_close=True)  # a new connection (and worker) each time
                async with aiohttp.ClientSession(connector=connector) as fresh:
                    while time.monotonic() < deadline:
                        async with fresh.get(hub.url + "/ocpi/versions", headers={"Authorization": token}) as resp:
                            await resp.read()
                            counts[resp.status] = counts.get(resp.status, 0) + 1

            await asyncio.gather(*(sender() for _ in range(8)))
            assert set(counts) <= {200, 429}, counts
            assert 40 <= counts.get(200, 0) <= 70 + 15 + 10, counts
            limited = metric_samples(await scrape(hub.url, session), "ocpi_hub_rate_limited_total")
            assert sum(v for _, v in limited) == counts.get(429, 0)
    finally:
        hub.stop()
        cleanup_prefix(prefix)


@pytest.mark.parametrize("value", ["0", "-1", "2000000"])
def test_bad_rate_limit_settings_are_refused_at_start(value: str) -> None:
    from pydantic import ValidationError

    from hub.settings import Settings

    with pytest.raises(ValidationError):
        Settings(rate_limit_rps=float(value))
