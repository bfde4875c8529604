"""Audit: every OCPI request the hub handles leaves exactly one record with the facts of docs/architecture.md, and the
embedded store forgets records past the retention period.

Records are read back through the store after ``audit.flush()``, which returns once everything added before it
is stored.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import hub.app as hub_app
from hub.audit import AuditQuery, AuditRecord
from hub.context import HUB_KEY
from hub.store.sqlite import SqliteStore
from routing.platform import utcnow
from tests.conftest import HubHarness, cpo, emsp, hub_settings, start_hub, stop_hub
from tests.partners import FakePartner, Party, Received, envelope, ocpi_token

LOCATION = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "last_updated": "2024-01-01T00:00:00Z"}


async def records(h: HubHarness, *, with_admin: bool = False, **filters: Any) -> list[AuditRecord]:
    """Audit records of OCPI traffic; ``with_admin`` adds the operator's admin actions (module "admin")."""
    hub = h.app[HUB_KEY]
    await hub.audit.flush()
    found = await hub.store.query_audit(AuditQuery(limit=10_000, **filters))
    return found if with_admin else [r for r in found if r.module != "admin"]


async def one(h: HubHarness, request_id: str) -> AuditRecord:
    found = await records(h, request_id=request_id)
    assert len(found) == 1, found
    return found[0]


async def send(
    h: HubHarness,
    method: str,
    url: str,
    *,
    token: str | None,
    sender: Party | None = None,
    to: Party | None = None,
    body: Any = None,
) -> tuple[str, str, int, bytes]:
    """One request with fresh ids the test knows; returns them with the status and the raw answer."""
    request_id, correlation_id = "req-" + uuid.uuid4().hex, "corr-" + uuid.uuid4().hex
    headers = {"X-Request-ID": request_id, "X-Correlation-ID": correlation_id}
    if token is not None:
        headers["Authorization"] = ocpi_token(token)
    if sender is not None:
        headers["OCPI-from-country-code"], headers["OCPI-from-party-id"] = sender.country_code, sender.party_id
    if to is not None:
        headers["OCPI-to-country-code"], headers["OCPI-to-party-id"] = to.country_code, to.party_id
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with h.session.request(method, url, data=data, headers=headers) as resp:
        return request_id, correlation_id, resp.status, await resp.read()


def put_url(partner: FakePartner, loc_id: str = "LOC1") -> str:
    return partner.hub_url("locations", "RECEIVER", f"NL/CPA/{loc_id}")


async def connected_pair(h: HubHarness) -> tuple[FakePartner, FakePartner, dict[str, Any], dict[str, Any]]:
    alpha, beta = cpo(), emsp()
    alpha_platform = await h.connect(alpha)
    beta_platform = await h.connect(beta)
    return alpha, beta, alpha_platform, beta_platform


# -- one record per request ------------------------------------------------------------------------------------
async def test_every_request_leaves_exactly_one_record(hub: HubHarness) -> None:
    alpha, beta, _, _ = await connected_pair(hub)  # 6 requests: versions, details, credentials POST each
    base = hub.url + "/ocpi/2.2.1"
    assert alpha.token_c is not None
    sent = [
        await send(hub, "GET", hub.url + "/ocpi/versions", token=alpha.token_c),
        await send(hub, "GET", base, token=alpha.token_c),
        await send(hub, "GET", base + "/credentials", token=alpha.token_c),
        await send(hub, "POST", base + "/credentials", token=alpha.token_c, body=alpha.credentials()),  # 405
        await send(hub, "PUT", put_url(alpha), token=alpha.token_c, sender=alpha.party, to=beta.party,
                   body=LOCATION),  # forwarded
        await send(hub, "PUT", put_url(alpha), token=alpha.token_c, sender=alpha.party, to=Party("DE", "ZZZ", "EMSP"),
                   body=LOCATION),  # unknown receiver
        await send(hub, "PUT", put_url(alpha), token=alpha.token_c, sender=Party("NL", "XXX", "CPO"),
                   to=beta.party, body=LOCATION),  # spoofed FROM
        await send(hub, "PUT", put_url(alpha), token="not-a-token", sender=alpha.party, to=beta.party,
                   body=LOCATION),  # unknown token
        await send(hub, "GET", base + "/sender/nonsense", token=alpha.token_c),  # no such module
        await send(hub, "GET", hub.url + "/ocpi/9.9", token=alpha.token_c),  # no such route
    ]
    assert [s[2] for s in sent] == [200, 200, 200, 405, 200, 404, 403, 401, 404, 404]
    # Not OCPI requests: no audit records.
    for path in ("/healthz", "/readyz", "/metrics"):
        async with hub.session.get(hub.url + path) as resp:
            assert resp.status == 200
    status, _ = await hub.admin("GET", "/admin/platforms")
    assert status == 200

    everything = await records(hub, with_admin=True)
    # The operator's two onboardings are admin actions, audited apart (module "admin"); reads are not.
    admin = [r for r in everything if r.module == "admin"]
    assert [(r.method, r.path) for r in admin] == [("POST", "/admin/platforms")] * 2
    found = [r for r in everything if r.module != "admin"]
    # Refusals of a caller the hub did not identify (unknown token, a route no handler owns) leave no record:
    # counted in metrics only, so anonymous traffic cannot grow the store (docs/security.md).
    anonymous = {sent[7][0], sent[9][0]}
    assert len(found) == 6 + len(sent) - len(anonymous)
    counts = Counter(r.request_id for r in found)
    assert all(counts[request_id] == (request_id not in anonymous) for request_id, *_ in sent), counts
    assert all(n == 1 for n in counts.values()), counts  # ids the hub generated are unique too
    assert len({r.id for r in found}) == len(found)
    assert all(r.path.startswith("/ocpi") for r in found)


async def test_a_forwarded_request_is_recorded_with_all_its_facts(hub: HubHarness) -> None:
    alpha, beta, alpha_platform, beta_platform = await connected_pair(hub)
    assert alpha.token_c is not None
    body = {**LOCATION, "x-unknown": {"kept": True}}
    request_id, correlation_id, status, answer = await send(
        hub, "PUT", put_url(alpha), token=alpha.token_c, sender=alpha.party, to=beta.party, body=body)
    assert status == 200, answer
    forwarded = beta.received[-1]
    assert forwarded.headers["X-Correlation-ID"] == correlation_id
    assert forwarded.headers["X-Request-ID"] != request_id  # a new id towards the receiver...

    record = await one(hub, request_id)  # ...but the audit keeps the caller's
    assert record.correlation_id == correlation_id
    assert record.platform_id == alpha_platform["id"]
    assert record.from_party == "NL:CPA"
    assert record.to_party == "DE:EMA"
    assert record.module == "locations"
    assert record.interface_role == "RECEIVER"
    assert record.method == "PUT"
    assert record.path == "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1"
    assert record.outcome == "forwarded"
    assert (record.http_status, record.ocpi_status) == (200, 1000)
    assert record.receiver_platform_id == beta_platform["id"]
    assert (record.receiver_http_status, record.receiver_ocpi_status) == (200, 1000)
    assert record.latency_receiver_ms is not None and record.latency_receiver_ms > 0
    assert record.latency_total_ms >= record.latency_receiver_ms
    assert record.request_size == len(json.dumps(body).encode())
    assert record.response_size == len(answer)
    assert record.body is None  # bodies are not stored unless configured
    assert utcnow() - timedelta(minutes=1) < record.time <= utcnow()


async def test_a_receiver_error_is_recorded_as_the_receiver_answered_it(hub: HubHarness) -> None:
    alpha, beta, _, beta_platform = await connected_pair(hub)

    async def not_found(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope(status_code=2003, message="unknown location"), status=404)

    beta.responder = not_found
    assert alpha.token_c is not None
    request_id, _, status, answer = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC9"),
                                               token=alpha.token_c, sender=alpha.party, to=beta.party)
    assert status == 404, answer
    record = await one(hub, request_id)
    assert record.outcome == "forwarded"
    assert (record.http_status, record.ocpi_status) == (404, 2003)
    assert (record.receiver_http_status, record.receiver_ocpi_status) == (404, 2003)
    assert record.receiver_platform_id == beta_platform["id"]
    assert record.request_size == 0
    assert record.response_size == len(answer)


async def test_hub_errors_and_rejections_are_recorded_with_their_codes(hub: HubHarness) -> None:
    alpha, beta, alpha_platform, _ = await connected_pair(hub)
    assert alpha.token_c is not None
    nobody = Party("DE", "ZZZ", "EMSP")

    request_id, *_ = await send(hub, "PUT", put_url(alpha), token=alpha.token_c, sender=alpha.party, to=nobody,
                                body=LOCATION)
    record = await one(hub, request_id)
    assert (record.outcome, record.http_status, record.ocpi_status) == ("unknown_receiver", 404, 4001)
    assert (record.from_party, record.to_party) == ("NL:CPA", "DE:ZZZ")
    assert record.platform_id == alpha_platform["id"]
    assert record.receiver_platform_id is None and record.receiver_http_status is None
    assert record.latency_receiver_ms is None

    request_id, *_ = await send(hub, "PUT", put_url(alpha), token=alpha.token_c, sender=Party("NL", "XXX", "CPO"),
                                to=beta.party, body=LOCATION)
    record = await one(hub, request_id)
    assert (record.outcome, record.http_status, record.ocpi_status) == ("rejected", 403, 2001)
    assert record.platform_id == alpha_platform["id"]
    assert record.from_party == "NL:XXX"  # what was claimed, for the investigation
    assert record.receiver_platform_id is None

    request_id, correlation_id, *_ = await send(hub, "PUT", put_url(alpha), token="forged", sender=alpha.party,
                                                to=beta.party, body=LOCATION)
    assert await records(hub, request_id=request_id) == []  # nobody we know: a metric, no record
    assert await records(hub, correlation_id=correlation_id) == []


async def test_a_timed_out_forward_is_recorded_as_timeout(hub: HubHarness) -> None:
    alpha, beta, _, beta_platform = await connected_pair(hub)

    async def too_slow(request: web.Request, rec: Received) -> web.StreamResponse:
        await asyncio.sleep(hub.settings.forward_timeout + 1)
        return web.json_response(envelope())

    beta.responder = too_slow
    assert alpha.token_c is not None
    request_id, *_ = await send(hub, "PUT", put_url(alpha), token=alpha.token_c, sender=alpha.party, to=beta.party,
                                body=LOCATION)
    record = await one(hub, request_id)
    assert (record.outcome, record.http_status, record.ocpi_status) == ("timeout", 504, 4002)
    assert record.receiver_platform_id == beta_platform["id"]
    assert record.receiver_http_status is None
    assert record.latency_total_ms >= hub.settings.forward_timeout * 1000 * 0.9


async def test_versions_and_credentials_requests_are_recorded(hub: HubHarness) -> None:
    alpha = cpo()
    await alpha.start()
    hub.partners.append(alpha)
    platform = await hub.onboard(alpha)
    await alpha.register(hub.session, platform["versions_url"], platform["token_a"])
    found = sorted(await records(hub), key=lambda r: r.time)
    assert [(r.module, r.method, r.path, r.outcome, r.http_status, r.ocpi_status) for r in found] == [
        ("versions", "GET", "/ocpi/versions", "ok", 200, 1000),
        ("versions", "GET", "/ocpi/2.2.1", "ok", 200, 1000),
        ("credentials", "POST", "/ocpi/2.2.1/credentials", "ok", 200, 1000),
    ]
    assert all(r.interface_role is None and r.to_party is None for r in found)
    registration = found[-1]
    assert registration.request_size == len(json.dumps(alpha.credentials()).encode())
    assert registration.response_size > 0


async def test_versions_and_credentials_records_name_the_callers_platform(hub: HubHarness) -> None:
    alpha = cpo()
    await alpha.start()
    hub.partners.append(alpha)
    platform = await hub.onboard(alpha)
    await alpha.register(hub.session, platform["versions_url"], platform["token_a"])
    assert {r.platform_id for r in await records(hub)} == {platform["id"]}


# -- retention -------------------------------------------------------------------------------------------------
def old_and_new_records(retention_days: int) -> list[AuditRecord]:
    now = utcnow()
    return [
        AuditRecord(id=f"rec-{name}", time=now - age, request_id=f"req-{name}", correlation_id=f"corr-{name}",
                    platform_id=None, from_party=None, to_party=None, module="versions", interface_role=None,
                    method="GET", path="/ocpi/versions", outcome="ok", http_status=200, ocpi_status=1000)
        for name, age in (("expired", timedelta(days=retention_days, hours=1)),
                          ("ancient", timedelta(days=retention_days * 10)),
                          ("kept", timedelta(days=retention_days, hours=-1)))
    ]


async def remaining(store: SqliteStore) -> set[str]:
    return {r.id for r in await store.query_audit(AuditQuery(limit=1000))}


async def wait_for_ids(store: SqliteStore, expected: set[str]) -> set[str]:
    for _ in range(100):
        ids = await remaining(store)
        if ids == expected:
            break
        await asyncio.sleep(0.05)
    return ids


async def test_the_embedded_store_purges_expired_records_at_start() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    await store.insert_audit(old_and_new_records(retention_days=7))
    assert await remaining(store) == {"rec-expired", "rec-ancient", "rec-kept"}
    h = await start_hub(hub_settings(audit_retention_days=7), store=store)
    try:
        assert await wait_for_ids(store, {"rec-kept"}) == {"rec-kept"}
    finally:
        await stop_hub(h)
        await store.close()


async def test_the_embedded_store_purges_expired_records_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_app, "AUDIT_PURGE_INTERVAL", 0.05)
    store = SqliteStore(":memory:")
    await store.open()
    h = await start_hub(hub_settings(audit_retention_days=30), store=store)
    try:
        await asyncio.sleep(0.1)  # the start-up purge has run on an empty store
        await store.insert_audit(old_and_new_records(retention_days=30))
        assert await wait_for_ids(store, {"rec-kept"}) == {"rec-kept"}
        # Requests keep being recorded alongside the purge.
        status, platform = await h.admin("POST", "/admin/platforms", {
            "name": "Alpha CPO", "roles": [{"country_code": "NL", "party_id": "CPA", "role": "CPO"}]})
        assert status == 201, platform
        async with aiohttp.ClientSession() as session, session.get(
                h.url + "/ocpi/versions", headers={"Authorization": ocpi_token(platform["token_a"])}) as resp:
            assert resp.status == 200
        await h.app[HUB_KEY].audit.flush()
        # The kept record, the operator's add (an audited admin action) and the versions GET.
        assert len(await remaining(store)) == 3
    finally:
        await stop_hub(h)
        await store.close()
