"""One bad header cannot stop the audit trail: the one id validator, and an audit writer that isolates a record
its store refuses.

A non-UTF-8 byte in ``X-Request-ID`` reaches the hub as a lone surrogate (aiohttp decodes headers with
``surrogateescape``): no store can write it, no JSON log can hold it, no receiver may be sent it. The hub replaces
such ids (and ids that are not 1 to 255 printable ASCII characters) with one of its own, refuses them on the
functional modules with 400/2001, and answers and records the request with the clean id.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient

from hub.audit import AuditQuery, AuditRecord, AuditRecordRejected, AuditWriter
from hub.context import HUB_KEY
from hub.logs import JsonFormatter
from hub.store.mongo import MongoStore
from hub.store.sqlite import SqliteStore
from routing.platform import utcnow
from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import FakePartner
from tests.rawhttp import raw_request

CLEAN = re.compile(r"[\x20-\x7e]{1,255}")
LOCATION = b'{"country_code": "NL", "party_id": "CPA", "id": "LOC1", "last_updated": "2024-01-01T00:00:00Z"}'


def token_header(token: str) -> str:
    return "Token " + base64.b64encode(token.encode()).decode()


def routed_headers(sender: FakePartner, to: FakePartner, **ids: bytes | str) -> dict[str, str | bytes]:
    return {"Authorization": token_header(sender.token_c or ""),
            "OCPI-from-country-code": sender.party.country_code, "OCPI-from-party-id": sender.party.party_id,
            "OCPI-to-country-code": to.party.country_code, "OCPI-to-party-id": to.party.party_id,
            "Content-Type": "application/json", **{k.replace("_", "-"): v for k, v in ids.items()}}


async def audit_records(h: HubHarness, **filters: Any) -> list[AuditRecord]:
    hub = h.app[HUB_KEY]
    await hub.audit.flush()
    return await hub.store.query_audit(AuditQuery(limit=10_000, **filters))


def assert_clean(record: AuditRecord) -> None:
    for value in (record.request_id, record.correlation_id, record.path):
        assert CLEAN.fullmatch(value), record


BAD_IDS: list[bytes] = [b"\xff\xfe", "caf\u00e9".encode(), b"x" * 256]


@pytest.mark.parametrize("bad", BAD_IDS, ids=["not-utf8", "not-ascii", "too-long"])
@pytest.mark.parametrize("header", ["X-Request-ID", "X-Correlation-ID"])
async def test_a_bad_message_id_on_a_routed_request_is_refused_never_forwarded_and_recorded_clean(
        hub: HubHarness, header: str, bad: bytes) -> None:
    alpha, beta = cpo(), emsp()
    alpha_platform = await hub.connect(alpha)
    await hub.connect(beta)
    ids: dict[str, bytes | str] = {"X-Request-ID": "req-ok", "X-Correlation-ID": "corr-ok", header: bad}
    status, headers, doc = await raw_request(
        hub.settings.host, hub.settings.port, "PUT", "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1",
        {**routed_headers(alpha, beta), **ids}, LOCATION)
    assert (status, doc["status_code"]) == (400, 2001), doc
    assert header in doc["status_message"]
    assert not beta.received
    # The answer and the audit carry the hub's stand-in, never the raw bytes.
    assert CLEAN.fullmatch(headers["X-Request-ID"]) and CLEAN.fullmatch(headers["X-Correlation-ID"])
    (record,) = await audit_records(hub, platform_id=alpha_platform["id"], module="locations")
    assert_clean(record)
    assert (record.http_status, record.ocpi_status, record.outcome) == (400, 2001, "rejected")
    assert record.request_id == headers["X-Request-ID"]
    # The trail goes on: the next request is recorded too.
    status, _, doc = await raw_request(
        hub.settings.host, hub.settings.port, "PUT", "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1",
        routed_headers(alpha, beta, X_Request_ID="req-next"), LOCATION)
    assert status == 200, doc
    assert [r.request_id for r in await audit_records(hub, request_id="req-next")] == ["req-next"]
    assert beta.received[-1].headers["X-Correlation-ID"] == "req-next"


async def test_a_non_utf8_request_id_on_versions_is_replaced_and_the_audit_trail_keeps_going(hub: HubHarness) -> None:
    """The issue's example: the configuration modules answer, with a clean id in place of the caller's."""
    # Without a token (the exact request): a 401, and nothing poisons the writer.
    status, headers, _ = await raw_request(hub.settings.host, hub.settings.port, "GET", "/ocpi/versions",
                                           {"X-Request-ID": b"\xff\xfe"})
    assert status == 401
    assert CLEAN.fullmatch(headers["X-Request-ID"])
    created, platform = await hub.admin("POST", "/admin/platforms", {
        "name": "Alpha CPO", "roles": [{"country_code": "NL", "party_id": "CPA", "role": "CPO"}]})
    assert created == 201, platform
    for _ in range(3):
        status, headers, doc = await raw_request(
            hub.settings.host, hub.settings.port, "GET", "/ocpi/versions",
            {"Authorization": token_header(platform["token_a"]), "X-Request-ID": b"\xff\xfe",
             "X-Correlation-ID": b"\xc3("})
        assert status == 200, doc
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
        assert headers["X-Correlation-ID"] == headers["X-Request-ID"]
    found = [r for r in await audit_records(hub, platform_id=platform["id"]) if r.module != "admin"]
    assert len(found) == 3 and len({r.request_id for r in found}) == 3
    for record in found:
        assert_clean(record)
    assert hub.app[HUB_KEY].audit.pending == 0


async def test_a_255_character_printable_id_is_used_as_sent(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    request_id, correlation_id = "r" * 255, "c ~!#$%&'()*+,-./:;<=>?@[]^_`{|}" + "c" * 100
    status, headers, doc = await raw_request(
        hub.settings.host, hub.settings.port, "PUT", "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1",
        routed_headers(alpha, beta, X_Request_ID=request_id, X_Correlation_ID=correlation_id), LOCATION)
    assert status == 200, doc
    assert (headers["X-Request-ID"], headers["X-Correlation-ID"]) == (request_id, correlation_id)
    assert beta.received[-1].headers["X-Correlation-ID"] == correlation_id


async def test_a_non_ascii_token_is_a_401_not_a_server_error(hub: HubHarness) -> None:
    status, _, doc = await raw_request(hub.settings.host, hub.settings.port, "GET", "/ocpi/versions",
                                       {"Authorization": b"Token \xff\xfe"})
    assert (status, doc["status_code"]) == (401, 2000), doc


async def test_a_non_utf8_admin_or_metrics_bearer_token_is_a_401_not_a_server_error(make_hub: MakeHub) -> None:
    """/admin and /metrics compare the bearer token as bytes; a lone surrogate (a non-UTF-8 header byte) could not
    be encoded and failed the request with 500 and a traceback instead of the failed login it is."""
    hub = await make_hub(metrics_token="test-metrics-token-4Kx8Qw2Zp7Lm")
    for path in ("/admin/platforms", "/metrics"):
        status, _, _ = await raw_request(hub.settings.host, hub.settings.port, "GET", path,
                                         {"Authorization": b"Bearer \xff\xfe"})
        assert status == 401, path
    status, _ = await hub.admin("GET", "/admin/platforms")
    assert status == 200


# -- the audit writer isolates a record its store refuses, on every store -----------------------------------------
def record(n: int, **changes: Any) -> AuditRecord:
    base = AuditRecord(id=f"rec-{n:04d}", time=utcnow() - timedelta(seconds=1), request_id=f"req-{n}",
                       correlation_id=f"corr-{n}", platform_id="p1", from_party="NL:CPA", to_party="DE:EMA",
                       module="locations", interface_role="RECEIVER", method="PUT", path=f"/ocpi/2.2.1/x/{n}",
                       outcome="forwarded", http_status=200, ocpi_status=1000)
    return replace(base, **changes)


@pytest.fixture(params=["sqlite", "mongomock"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    backend: SqliteStore | MongoStore
    if request.param == "sqlite":
        backend = SqliteStore(str(tmp_path / "hub.sqlite3"))
    else:
        backend = MongoStore(AsyncMongoMockClient(), "audit_isolation")
    await backend.open()
    yield backend
    await backend.close()


async def stored(store: Any) -> dict[str, AuditRecord]:
    return {r.id: r for r in await store.query_audit(AuditQuery(limit=10_000))}


async def test_a_record_the_store_refuses_is_isolated_rewritten_and_later_records_land(store: Any) -> None:
    results: list[str] = []
    writer = AuditWriter(store, max_batch=64, on_rejected=results.append)
    poisoned = {7: record(7, request_id="\udcff\udcfe"), 40: record(40, path="/ocpi/\udcc3"),
                41: record(41, body={"request": {"n": 2**70}})}  # too big for BSON and for JSON
    for n in range(100):
        writer.add(poisoned.get(n) or record(n))
    await writer.flush()
    assert writer.pending == 0
    found = await stored(store)
    assert set(found) == {f"rec-{n:04d}" for n in range(100)}  # every good record, and the bad ones rewritten
    assert results == ["rewritten"] * 3
    assert found["rec-0007"].request_id == "\\udcff\\udcfe"  # escaped: visible, writable, never the raw bytes
    assert found["rec-0040"].path == "/ocpi/\\udcc3"
    assert found["rec-0041"].body is None
    assert found["rec-0041"].request_id == "req-41"
    # And the writer keeps going.
    writer.add(record(100))
    await writer.flush()
    assert "rec-0100" in await stored(store)


class RefusingStore:
    """A real store that refuses one record id whatever its content: the only way to reach the drop branch
    (every real refusal is cured by the escaped rewrite)."""

    def __init__(self, inner: Any, refused: str) -> None:
        self.inner, self.refused = inner, refused

    async def insert_audit(self, records: list[AuditRecord]) -> None:
        if any(r.id == self.refused for r in records):
            raise AuditRecordRejected("refused")
        await self.inner.insert_audit(records)


async def test_a_record_that_cannot_be_written_at_all_is_dropped_and_counted(store: Any) -> None:
    results: list[str] = []
    writer = AuditWriter(RefusingStore(store, "rec-0003"), on_rejected=results.append)
    for n in range(10):
        writer.add(record(n))
    await writer.flush()
    assert writer.pending == 0 and results == ["dropped"]
    assert set(await stored(store)) == {f"rec-{n:04d}" for n in range(10)} - {"rec-0003"}


async def test_a_store_outage_keeps_the_buffer_and_is_not_mistaken_for_a_bad_record(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "hub.sqlite3"))
    await store.open()
    await store.close()  # the store is down
    results: list[str] = []
    writer = AuditWriter(store, on_rejected=results.append)
    for n in range(5):
        writer.add(record(n))
    writer.add(record(5, request_id="\udcff"))
    await writer.flush()
    assert writer.pending == 6 and results == []  # nothing dropped or rewritten while the store is away
    await store.open()
    try:
        await writer.flush()
        assert writer.pending == 0 and results == ["rewritten"]
        assert set(await stored(store)) == {f"rec-{n:04d}" for n in range(6)}
    finally:
        await store.close()


async def test_audit_rejections_are_exposed_as_a_metric(hub: HubHarness) -> None:
    hub_ = hub.app[HUB_KEY]
    hub_.audit.add(record(1, request_id="\udcff"))
    await hub_.audit.flush()
    async with hub.session.get(hub.url + "/metrics") as resp:
        text = await resp.text()
    assert 'ocpi_hub_audit_rejected_total{result="rewritten"} 1.0' in text


def test_a_log_line_with_undecodable_text_is_escaped_not_lost() -> None:
    line = logging.LogRecord("hub.requests", logging.INFO, __file__, 1, "request %s", ("\udcff",), None)
    line.ocpi = {"request_id": "\udcfe"}
    assert json.loads(JsonFormatter().format(line))["request_id"] == "\\udcfe"


def test_the_hubs_own_ids_are_32_hex_digits_and_audit_ids_sort_by_time() -> None:
    import time

    from routing.ocpi.headers import new_id, time_ordered_id

    ids = [new_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 1000
    before = time.time_ns() // 1_000_000
    ordered = [time_ordered_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ordered) and len(set(ordered)) == 1000
    # 48 bits of milliseconds first: the ids of later milliseconds sort after those of earlier ones
    assert all(before <= int(i[:12], 16) <= after for i in ordered)
    millis = [int(i[:12], 16) for i in ordered]
    assert millis == sorted(millis)
