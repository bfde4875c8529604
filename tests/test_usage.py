"""Usage insights: what routed Session PUTs and CDR POSTs add up to, per day and partner pair (hub/usage.py)."""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web

from hub.context import HUB_KEY
from hub.usage import UsageRecorder, UsageRow, measure
from routing.platform import utcnow
from tests.conftest import HubHarness, cpo, emsp
from tests.partners import Received, envelope

TS = "2026-03-01T10:00:00Z"
TOKEN = {"uid": "TOK1", "type": "RFID", "contract_id": "DE-EMA-C1", "country_code": "DE", "party_id": "EMA"}
SESSION = {"country_code": "NL", "party_id": "CPA", "id": "S1", "start_date_time": TS, "kwh": 0.0,
           "cdr_token": TOKEN, "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": "EVSE1",
           "connector_id": "1", "currency": "EUR", "status": "ACTIVE", "last_updated": TS}
CDR = {"country_code": "NL", "party_id": "CPA", "id": "CDR1", "start_date_time": TS, "end_date_time": TS,
       "cdr_token": TOKEN, "auth_method": "WHITELIST", "currency": "EUR", "charging_periods": [],
       "total_cost": {"excl_vat": 1.5, "incl_vat": 1.8}, "total_energy": 3.25, "total_time": 0.5,
       "last_updated": TS}


def test_measure_reads_each_versions_fields() -> None:
    assert measure(CDR) == (3.25, 1.5, "EUR")  # 2.2.1: Price object, excl. VAT
    taxed = {**CDR, "total_cost": {"before_taxes": 1.5, "taxes": [{"name": "VAT", "amount": 0.3}]}}
    assert measure(taxed) == (3.25, 1.5, "EUR")  # 2.3.0: Price object, before taxes
    assert measure({"total_energy": 7, "total_cost": 2.5, "currency": "chf"}) == (7.0, 2.5, "CHF")  # 2.1.1 number
    assert measure({"kwh": 1.25, "currency": "EUR"}) == (1.25, 0.0, "EUR")  # a session: kwh, no cost yet
    assert measure({"total_energy": "12", "total_cost": {"excl_vat": -3}, "currency": 5}) == (0.0, 0.0, "")
    assert measure({"total_energy": float("nan"), "total_cost": True}) == (0.0, 0.0, "")
    assert measure(["not", "an", "object"]) == (0.0, 0.0, "")


class FlakyStore:
    def __init__(self) -> None:
        self.rows: list[UsageRow] = []
        self.down = False

    async def add_usage(self, rows: list[UsageRow]) -> None:
        if self.down:
            raise ConnectionError("store down")
        self.rows.extend(UsageRow(r.day, r.from_party, r.to_party, r.module, r.currency, r.count, r.kwh, r.cost)
                         for r in rows)


async def test_recorder_aggregates_in_memory_and_keeps_increments_through_an_outage() -> None:
    store = FlakyStore()
    recorder = UsageRecorder(store, interval=60)
    day = date(2026, 3, 1)
    recorder.note("cdrs", CDR, "NL:CPA", "DE:EMA", day)
    recorder.note("cdrs", CDR, "NL:CPA", "DE:EMA", day)
    recorder.note("sessions", SESSION, "NL:CPA", "DE:EMA", day)
    assert recorder.pending == 2  # one key per (day, pair, module, currency)
    store.down = True
    await recorder.flush()
    assert store.rows == [] and recorder.pending == 2
    recorder.note("cdrs", CDR, "NL:CPA", "DE:EMA", day)  # noted during the outage: merged, not lost
    store.down = False
    await recorder.flush()
    cdrs = next(r for r in store.rows if r.module == "cdrs")
    assert (cdrs.count, cdrs.kwh, cdrs.cost, cdrs.currency) == (3, 9.75, 4.5, "EUR")
    assert next(r for r in store.rows if r.module == "sessions").count == 1
    assert recorder.pending == 0


async def test_accepted_session_puts_and_cdr_posts_become_daily_totals(hub: HubHarness) -> None:
    c, e = cpo(), emsp()
    refuse = {"on": False}

    async def answer(request: web.Request, rec: Received) -> web.StreamResponse:
        if refuse["on"]:
            return web.json_response(envelope(status_code=2001, message="no"), status=400)
        return web.json_response(envelope(), status=201 if request.method == "POST" else 200)

    e.responder = answer
    await hub.connect(c)
    await hub.connect(e)
    to = e.party
    status, _, body = await c.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", to=to, json=SESSION)
    assert status == 200, body
    status, _, body = await c.call(hub.session, "POST", "cdrs", "RECEIVER", to=to, json=CDR)
    assert status == 201, body
    second = {**CDR, "id": "CDR2", "total_energy": 1.75, "total_cost": {"excl_vat": 0.5, "incl_vat": 0.6}}
    status, _, body = await c.call(hub.session, "POST", "cdrs", "RECEIVER", to=to, json=second)
    assert status == 201, body
    # Not counted: a PATCH of the session, a GET, and a CDR the receiver refused.
    await c.call(hub.session, "PATCH", "sessions", "RECEIVER", "NL/CPA/S1", to=to, json={"kwh": 5.0})
    await c.call(hub.session, "GET", "cdrs", "RECEIVER", "CDR1", to=to)
    refuse["on"] = True
    status, _, _ = await c.call(hub.session, "POST", "cdrs", "RECEIVER", to=to, json={**CDR, "id": "CDR3"})
    assert status == 400
    h = hub.app[HUB_KEY]
    await h.usage.flush()
    rows = await h.store.query_usage()
    got: dict[str, Any] = {r.module: (r.from_party, r.to_party, r.count, r.kwh, r.cost, r.currency) for r in rows}
    assert got == {"cdrs": ("NL:CPA", "DE:EMA", 2, 5.0, 2.0, "EUR"),
                   "sessions": ("NL:CPA", "DE:EMA", 1, 0.0, 0.0, "EUR")}
    assert {r.day for r in rows} == {utcnow().date().isoformat()}
