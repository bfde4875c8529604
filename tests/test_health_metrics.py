"""/healthz, /readyz and /metrics of one in-process hub (docs/architecture.md).

None of them needs a token or shows party data; /metrics is Prometheus text whose request counters and
latency histograms add up exactly to what the test sent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import aiohttp
import fakeredis
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from hub.context import HUB_KEY
from hub.store.sqlite import SqliteStore
from tests.conftest import ADMIN_TOKEN, HubHarness, MakeHub, cpo, emsp, hub_settings, start_hub, stop_hub
from tests.partners import FakePartner, Party, Received, envelope

LOCATION = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "last_updated": "2024-01-01T00:00:00Z"}
NOBODY = Party("DE", "ZZZ", "EMSP")


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as resp:  # never an Authorization header
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one series name, keyed by their sorted labels."""
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


async def put_location(hub: HubHarness, sender: FakePartner, to: Party, loc_id: str) -> tuple[int, Any]:
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", f"NL/CPA/{loc_id}", to=to,
                                        json={**LOCATION, "id": loc_id})
    return status, body


# -- health --------------------------------------------------------------------------------------------------
async def test_healthz_answers_without_a_token(hub: HubHarness) -> None:
    status, content_type, text = await get(hub.session, hub.url + "/healthz")
    assert status == 200
    assert content_type.startswith("application/json")
    assert text == '{"status": "ok"}'


class LoopKiller(BaseException):
    """Not an Exception: what no background loop's own error handling takes, as a bug in it would not be."""


async def test_a_background_loop_that_ends_makes_healthz_503_and_is_logged_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    h = await start_hub(hub_settings())
    try:
        hub = h.app[HUB_KEY]
        assert (await get(h.session, h.url + "/healthz"))[0] == 200

        async def claim(*args: Any, **kwargs: Any) -> Any:
            raise LoopKiller("the dispatcher's claim broke")

        hub.queue.claim = claim  # type: ignore[method-assign]  # the one fault injected: a bug in a loop
        hub.delivery.wake()
        deadline = asyncio.get_running_loop().time() + 5
        while (answer := await get(h.session, h.url + "/healthz"))[0] == 200:
            assert asyncio.get_running_loop().time() < deadline, "a dead dispatcher left /healthz at 200"
            await asyncio.sleep(0.05)
        status, _, text = answer
        assert status == 503
        assert orjson.loads(text) == {"status": "failing",
                                      "ended": {"delivery-dispatch": "LoopKiller"}}
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "hub.tasks"]
        assert len(errors) == 1, errors
        _, _, text = await get(h.session, h.url + "/metrics")
        assert samples(text, "ocpi_hub_background_loops_ended") == {(): 1.0}
        assert "delivery-dispatch" in errors[0].getMessage() and "claim broke" in errors[0].getMessage()
    finally:
        await stop_hub(h)


async def test_a_hub_that_stops_normally_reports_no_ended_loop(caplog: pytest.LogCaptureFixture) -> None:
    h = await start_hub(hub_settings())
    hub = h.app[HUB_KEY]
    assert (await get(h.session, h.url + "/healthz"))[0] == 200
    _, _, text = await get(h.session, h.url + "/metrics")
    assert samples(text, "ocpi_hub_background_loops_ended") == {(): 0.0}
    await stop_hub(h)
    assert hub.loops.ended == {}
    assert not [r for r in caplog.records if r.name == "hub.tasks" and r.levelno >= logging.WARNING]


async def test_readyz_reports_redis_and_store(hub: HubHarness) -> None:
    async with hub.session.get(hub.url + "/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ready", "redis": "ok", "store": "ok"}


async def test_readyz_is_503_when_the_store_is_gone_and_healthz_stays_200() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    h = await start_hub(hub_settings(), store=store)
    try:
        async with h.session.get(h.url + "/readyz") as resp:
            assert resp.status == 200
        await store.close()  # the store the app was given stops answering
        async with h.session.get(h.url + "/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "not ready"
        assert body["redis"] == "ok"
        assert body["store"].startswith("unreachable")
        status, _, _ = await get(h.session, h.url + "/healthz")
        assert status == 200  # alive, just not ready
    finally:
        await stop_hub(h)
        await store.close()


async def test_readyz_is_503_when_redis_is_unreachable() -> None:
    server = fakeredis.FakeServer()
    h = await start_hub(hub_settings(), redis=fakeredis.FakeAsyncRedis(server=server))
    try:
        server.connected = False
        async with h.session.get(h.url + "/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "not ready"
        assert body["redis"].startswith("unreachable")
        assert body["store"] == "ok"
        server.connected = True
        async with h.session.get(h.url + "/readyz") as resp:
            assert resp.status == 200
    finally:
        server.connected = True
        await stop_hub(h)


# -- metrics -------------------------------------------------------------------------------------------------
async def test_metrics_count_exactly_what_was_sent(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)  # 3 requests each: versions, version details, credentials POST
    beta_platform = await hub.connect(beta)
    for i in range(3):
        status, body = await put_location(hub, alpha, beta.party, f"LOC{i}")
        assert status == 200, body
    for i in range(2):
        status, body = await put_location(hub, alpha, NOBODY, f"LOC{i}")
        assert (status, body["status_code"]) == (404, 4001), body

    status, content_type, text = await get(hub.session, hub.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"ocpi_hub_requests", "ocpi_hub_request_duration_seconds", "ocpi_hub_receiver_duration_seconds",
            "ocpi_hub_queue_depth", "ocpi_hub_queue_inflight", "ocpi_hub_dead_letters", "ocpi_hub_retries",
            "ocpi_hub_platforms", "ocpi_hub_registrations"} <= set(families)

    assert samples(text, "ocpi_hub_requests_total") == {
        key(module="versions", interface_role="", method="GET", outcome="ok"): 4.0,
        key(module="credentials", interface_role="", method="POST", outcome="ok"): 2.0,
        key(module="locations", interface_role="RECEIVER", method="PUT", outcome="forwarded"): 3.0,
        key(module="locations", interface_role="RECEIVER", method="PUT", outcome="unknown_receiver"): 2.0,
    }
    assert samples(text, "ocpi_hub_request_duration_seconds_count") == {
        key(module="versions"): 4.0, key(module="credentials"): 2.0, key(module="locations"): 5.0,
    }
    durations = samples(text, "ocpi_hub_request_duration_seconds_bucket")
    assert durations[key(module="locations", le="+Inf")] == 5.0
    # Only answered forwards have a receiver latency; the receiver is named by its platform id.
    assert samples(text, "ocpi_hub_receiver_duration_seconds_count") == {
        key(module="locations", receiver=beta_platform["id"]): 3.0,
    }
    assert samples(text, "ocpi_hub_receiver_duration_seconds_sum")[
        key(module="locations", receiver=beta_platform["id"])] > 0
    assert samples(text, "ocpi_hub_registrations_total") == {key(action="register", result="ok"): 2.0}


def test_request_metrics_are_what_prometheus_client_would_count() -> None:
    """count_request keeps plain arrays and flush_requests adds them in bulk: the exposition is the one a
    prometheus-client counter and histogram observing each request would give, bucket bounds included."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from hub.metrics import LATENCY_BUCKETS, Metrics

    requests = [("locations", "SENDER", "GET", "forwarded", s) for s in (0.0, 0.0004, 0.001, 0.0010001, 0.3, 31.0)]
    requests += [("tariffs", "RECEIVER", "PUT", "timeout", 30.0), ("versions", "", "GET", "ok", 0.002)]
    metrics = Metrics()
    reference = CollectorRegistry()
    counter = Counter("ocpi_hub_requests", "", ["module", "interface_role", "method", "outcome"], registry=reference)
    histogram = Histogram("ocpi_hub_request_duration_seconds", "", ["module"], buckets=LATENCY_BUCKETS,
                          registry=reference)

    def counted(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        return {name: samples(text, name) for name in (
            "ocpi_hub_requests_total", "ocpi_hub_request_duration_seconds_bucket",
            "ocpi_hub_request_duration_seconds_count", "ocpi_hub_request_duration_seconds_sum")}

    for module, role, method, outcome, seconds in requests:
        metrics.count_request(module, role, method, outcome, seconds)
    assert counted(metrics.exposition().decode())["ocpi_hub_requests_total"] == {}  # not flushed yet
    metrics.flush_requests()
    for module, role, method, outcome, seconds in requests:  # twice: a second flush adds to the first
        metrics.count_request(module, role, method, outcome, seconds)
    metrics.flush_requests()
    for module, role, method, outcome, seconds in requests * 2:
        counter.labels(module=module, interface_role=role, method=method, outcome=outcome).inc()
        histogram.labels(module=module).observe(seconds)
    got, want = counted(metrics.exposition().decode()), counted(generate_latest(reference).decode())
    assert got == want
    assert got["ocpi_hub_request_duration_seconds_bucket"][key(module="locations", le="0.001")] == 6.0


async def test_forward_results_are_counted_per_receiver(make_hub: MakeHub) -> None:
    """What each receiver did with what the hub forwarded: the per-receiver error rate of the dashboard."""
    hub = await make_hub(forward_timeout=0.5)

    async def receiver(request: web.Request, rec: Received) -> web.StreamResponse:
        object_id = rec.path.rsplit("/", 1)[-1]
        if object_id.startswith("BAD"):
            return web.json_response(envelope(status_code=2001, message="invalid"), status=400)
        if object_id.startswith("HTML"):
            return web.Response(status=502, text="<html>bad gateway</html>")
        if object_id.startswith("SLOW"):
            await asyncio.sleep(1.0)
        return web.json_response(envelope())

    alpha, beta, gamma = cpo(), emsp(), emsp(name="Gone eMSP", pid="GON")
    beta.responder = receiver
    await hub.connect(alpha)
    beta_id, gamma_id = (await hub.connect(beta))["id"], (await hub.connect(gamma))["id"]
    for loc_id in ("OK1", "OK2", "BAD1", "HTML1", "SLOW1"):
        await put_location(hub, alpha, beta.party, loc_id)
    await gamma.stop()  # registered, but nothing listens any more
    status, body = await put_location(hub, alpha, gamma.party, "OK3")
    assert (status, body["status_code"]) == (503, 4003), body
    await put_location(hub, alpha, NOBODY, "OK4")  # no receiver at all: not a receiver's result

    _, _, text = await get(hub.session, hub.url + "/metrics")
    assert samples(text, "ocpi_hub_receiver_results_total") == {
        key(receiver=beta_id, result="ok"): 2.0,
        key(receiver=beta_id, result="ocpi_error"): 1.0,
        key(receiver=beta_id, result="not_ocpi"): 1.0,
        key(receiver=beta_id, result="timeout"): 1.0,
        key(receiver=gamma_id, result="unreachable"): 1.0,
    }


async def test_a_scan_of_made_up_modules_cannot_grow_the_metric_labels(hub: HubHarness) -> None:
    made_up = [f"m{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for name in made_up:
        async with hub.session.get(f"{hub.url}/ocpi/2.2.1/sender/{name}") as resp:
            assert resp.status in (401, 404)
    async with hub.session.get(f"{hub.url}/ocpi/2.2.1/{made_up[0]}") as resp:
        assert resp.status == 404
    _, _, text = await get(hub.session, hub.url + "/metrics")
    assert not any(name in text for name in made_up)
    counted = samples(text, "ocpi_hub_requests_total")
    assert sum(v for labels, v in counted.items() if ("module", "other") in labels) == 4.0


async def test_each_app_in_a_process_has_its_own_metrics(hub: HubHarness) -> None:
    other = await start_hub(hub_settings())
    try:
        for _ in range(3):
            async with hub.session.get(hub.url + "/ocpi/versions") as resp:
                assert resp.status == 401
        assert hub.app[HUB_KEY].metrics is not other.app[HUB_KEY].metrics
        _, _, mine = await get(hub.session, hub.url + "/metrics")
        _, _, theirs = await get(other.session, other.url + "/metrics")
        assert sum(samples(mine, "ocpi_hub_requests_total").values()) == 3.0
        assert sum(samples(theirs, "ocpi_hub_requests_total").values()) == 0.0
    finally:
        await stop_hub(other)


# -- nothing leaks -------------------------------------------------------------------------------------------
async def test_health_and_metrics_show_no_party_data_or_tokens(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    alpha_platform = await hub.connect(alpha)
    beta_platform = await hub.connect(beta)
    status, body = await put_location(hub, alpha, beta.party, "LOC-SECRET-1")
    assert status == 200, body
    status, body = await put_location(hub, alpha, NOBODY, "LOC-SECRET-2")
    assert status == 404, body

    secrets_ = [ADMIN_TOKEN, alpha_platform["token_a"], beta_platform["token_a"], alpha.token_b, beta.token_b,
                alpha.token_c, beta.token_c, alpha.name, beta.name, alpha.base_url, beta.base_url,
                "LOC-SECRET", "CPA", "EMA", "ZZZ"]
    assert all(secrets_)
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, text = await get(hub.session, hub.url + path)
        assert status == 200, (path, text)
        leaked = [s for s in secrets_ if s and s in text]
        assert not leaked, (path, leaked)


async def test_the_request_metrics_flush_loop_goes_on_after_a_failed_flush(caplog: pytest.LogCaptureFixture) -> None:
    """A flush that fails (a full disk under the multiprocess directory, say) is logged; the loop flushes again at
    the next interval instead of ending, so the counts of later requests still reach the exposition."""
    from hub.metrics import Metrics

    metrics = Metrics()
    flush, calls = metrics.flush_requests, []

    def failing_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on device")  # the one fault injected
        flush()

    metrics.flush_requests = failing_once  # type: ignore[method-assign]
    loop = asyncio.create_task(metrics.run_request_flush(every=0.01))
    try:
        metrics.count_request("locations", "SENDER", "GET", "forwarded", 0.01)
        deadline = asyncio.get_running_loop().time() + 2
        while not samples(metrics.exposition().decode(), "ocpi_hub_requests_total"):
            assert not loop.done(), "the flush loop ended"
            assert asyncio.get_running_loop().time() < deadline, "nothing flushed after the failure"
            await asyncio.sleep(0.01)
        assert len(calls) >= 2
        assert any("flushing the request metrics failed" in r.getMessage() for r in caplog.records)
    finally:
        loop.cancel()
