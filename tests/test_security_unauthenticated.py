"""Unauthenticated traffic is cheap: a 401 writes no audit record, refusals are counted and logged a bounded
number of times, malformed HTTP logs no traceback, and a made-up token is looked up in the store once, not on
every request."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets

import pytest

from hub.audit import AuditQuery
from hub.context import HUB_KEY
from routing.platform import Platform, hash_token
from tests.conftest import HubHarness, MakeHub
from tests.rawhttp import raw_request


def token_header(token: str) -> str:
    return "Token " + base64.b64encode(token.encode()).decode()


async def metric(h: HubHarness, name: str, labels: str = "") -> float:
    async with h.session.get(h.url + "/metrics") as resp:
        text = await resp.text()
    pattern = re.escape(name) + (r"\{" + labels + r"\}" if labels else "") + r" ([0-9.e+]+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


async def test_a_flood_of_unknown_tokens_writes_no_audit_and_a_bounded_number_of_log_lines(
        make_hub: MakeHub, caplog: pytest.LogCaptureFixture) -> None:
    h = await make_hub(log_throttle_lines=5, log_throttle_interval=600)
    caplog.set_level(logging.INFO)
    flood = 200
    for _ in range(flood):
        async with h.session.get(h.url + "/ocpi/2.2.1/sender/locations",
                                 headers={"Authorization": token_header(secrets.token_hex(16))}) as resp:
            assert resp.status == 401
    hub = h.app[HUB_KEY]
    await hub.audit.flush()
    assert await hub.store.query_audit(AuditQuery(limit=10)) == []
    assert await metric(h, "ocpi_hub_requests_total", 'interface_role="SENDER",method="GET",module="locations",'
                                                       'outcome="unauthorized"') == flood
    lines = [r for r in caplog.records if r.name == "hub.requests"]
    assert len(lines) == 5
    assert all(r.exc_info is None for r in lines)
    assert await metric(h, "ocpi_hub_log_lines_suppressed_total", 'kind="unauthorized"') == flood - 5


async def test_the_suppressed_count_is_logged_once_the_interval_ends(
        make_hub: MakeHub, caplog: pytest.LogCaptureFixture) -> None:
    h = await make_hub(log_throttle_lines=2, log_throttle_interval=0.2)
    caplog.set_level(logging.INFO)
    for _ in range(7):
        async with h.session.get(h.url + "/ocpi/versions") as resp:
            assert resp.status == 401
    for _ in range(50):  # the hub's throttle flush runs every interval
        if any("suppressed" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    summaries = [r.getMessage() for r in caplog.records if "suppressed" in r.getMessage()]
    assert summaries == ["5 more 'unauthorized' lines suppressed in 0.2 s"]


async def test_malformed_http_is_counted_and_logged_without_a_traceback(
        hub: HubHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for target in (b"/ocpi/versions/\xff", b"/ocpi/\x01"):
        status, _, _ = await raw_request(hub.settings.host, hub.settings.port, "GET", target)
        assert status == 400
    status, _, _ = await raw_request(hub.settings.host, hub.settings.port, "GET", "/ocpi/versions",
                                     {"Bad Header Name": "x"})
    assert status == 400
    assert await metric(hub, "ocpi_hub_malformed_http_requests_total") == 3
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client's malformed request"
    lines = [r.getMessage() for r in caplog.records if "malformed HTTP request refused" in r.getMessage()]
    assert len(lines) == 3 and all(line.isascii() and "\n" not in line for line in lines)


async def test_an_unknown_token_is_looked_up_in_the_store_once_per_ttl(make_hub: MakeHub) -> None:
    h = await make_hub(unknown_token_cache_seconds=300)
    token = secrets.token_hex(16)
    for _ in range(20):
        async with h.session.get(h.url + "/ocpi/versions", headers={"Authorization": token_header(token)}) as resp:
            assert resp.status == 401
    # Two candidates per header (Base64-decoded and as sent): two store reads, then none.
    assert await metric(h, "ocpi_hub_unknown_token_lookups_total", 'source="store"') == 2
    assert await metric(h, "ocpi_hub_unknown_token_lookups_total", 'source="cache"') == 38


async def test_the_unknown_token_cache_is_bounded(make_hub: MakeHub) -> None:
    h = await make_hub(unknown_token_cache_seconds=300, unknown_token_cache_size=4)
    tokens = [secrets.token_hex(16) for _ in range(3)]  # 2 entries each: the first one's are forgotten
    for token in [*tokens, tokens[0]]:
        async with h.session.get(h.url + "/ocpi/versions", headers={"Authorization": token_header(token)}) as resp:
            assert resp.status == 401
    assert await metric(h, "ocpi_hub_unknown_token_lookups_total", 'source="store"') == 8


async def test_a_token_issued_behind_this_process_s_back_is_accepted_once_the_ttl_ends(make_hub: MakeHub) -> None:
    """Another process issued it and its notice was lost: the cache delays it by at most its TTL."""
    h = await make_hub(unknown_token_cache_seconds=0.5)
    token = secrets.token_hex(16)
    headers = {"Authorization": token_header(token)}
    async with h.session.get(h.url + "/ocpi/versions", headers=headers) as resp:
        assert resp.status == 401
    await h.app[HUB_KEY].store.save_platform(Platform(id="p-elsewhere", name="Elsewhere",
                                                      token_a_hash=hash_token(token)))
    for _ in range(100):  # bounded: 5 s
        async with h.session.get(h.url + "/ocpi/versions", headers=headers) as resp:
            if resp.status == 200:
                break
        await asyncio.sleep(0.05)
    assert resp.status == 200


async def test_a_token_issued_by_this_hub_is_never_delayed_by_the_cache(make_hub: MakeHub) -> None:
    h = await make_hub(unknown_token_cache_seconds=300)
    # Fill the cache with refusals, then issue a token: it works at once.
    for _ in range(5):
        async with h.session.get(h.url + "/ocpi/versions",
                                 headers={"Authorization": token_header(secrets.token_hex(16))}) as resp:
            assert resp.status == 401
    status, platform = await h.admin("POST", "/admin/platforms", {
        "name": "Alpha CPO", "roles": [{"country_code": "NL", "party_id": "CPA", "role": "CPO"}]})
    assert status == 201, platform
    async with h.session.get(h.url + "/ocpi/versions",
                             headers={"Authorization": token_header(platform["token_a"])}) as resp:
        assert resp.status == 200
