"""Catch-up (docs/catchup.md): the Sessions and CDRs the hub routed are kept, sealed, for HUB_CATCHUP_DAYS, and their
receiver fetches them again with GET on the SENDER interface and TO = the hub, paginated as GET All (OCPI 2.2.1
Pagination). Through HTTP, on both stores and both queue backends.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from hub.app import retention_pass
from hub.context import HUB_KEY
from hub.store.mongo import MongoStore
from hub.store.names import ROUTED
from hub.store.protocol import RoutedObject
from routing.platform import utcnow
from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import FakePartner, Party
from tests.test_get_all import crawl, get_all
from tests.test_versions_routing import HUB, cdr_211, partner, session_211, token_221

UID = "TOKEN-UID-0042"


def session(emsp_party: Party, sid: str, last_updated: str, kwh: float = 0.0) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPA", "id": sid, "start_date_time": "2025-01-01T10:00:00Z",
            "kwh": kwh, "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": "EVSE1", "connector_id": "1",
            "currency": "EUR", "status": "ACTIVE", "last_updated": last_updated,
            "cdr_token": {"country_code": emsp_party.country_code, "party_id": emsp_party.party_id, "uid": UID,
                          "type": "RFID", "contract_id": "DE-EMA-C1"}}


def cdr(emsp_party: Party, cid: str, last_updated: str) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPA", "id": cid, "start_date_time": "2025-01-01T10:00:00Z",
            "end_date_time": "2025-01-01T11:00:00Z", "cdr_token": session(emsp_party, cid, "")["cdr_token"],
            "auth_method": "WHITELIST",
            "cdr_location": {"id": "LOC1", "address": "Street 1", "city": "Town", "country": "NLD",
                             "coordinates": {"latitude": "52.123456", "longitude": "4.123450"}, "evse_uid": "E1",
                             "evse_id": "NL*CPA*E1", "connector_id": "1", "connector_standard": "IEC_62196_T2",
                             "connector_format": "CABLE", "connector_power_type": "AC_3_PHASE"},
            "currency": "EUR", "charging_periods": [{"start_date_time": "2025-01-01T10:00:00Z",
                                                     "dimensions": [{"type": "ENERGY", "volume": 10}]}],
            "total_cost": {"excl_vat": 5.0}, "total_energy": 10, "total_time": 1, "last_updated": last_updated}


async def send(hub: HubHarness, sender: FakePartner, method: str, module: str, tail: str, doc: Any,
               to: Party) -> None:
    status, _, body = await sender.call(hub.session, method, module, "RECEIVER", tail, to=to, json=doc)
    assert (status, body["status_code"]) == (200, 1000), body


async def network(make_store_hub: MakeHub, tmp_path: Path,
                  **settings: Any) -> tuple[HubHarness, FakePartner, FakePartner, FakePartner]:
    hub = await make_store_hub(sqlite_path=str(tmp_path / "hub.sqlite3"), **settings)
    parties = (cpo("Alpha CPO", "CPA"), emsp("Alpha eMSP", "EMA"), emsp("Bravo eMSP", "EMB"))
    for p in parties:
        await hub.connect(p)
    return (hub, *parties)


async def raw_rows(hub: HubHarness) -> list[str]:
    """What the store holds for catch-up, read around the hub: the SQLite file, or the Mongo collection."""
    store = hub.app[HUB_KEY].store
    if isinstance(store, MongoStore):
        return [repr(d) for d in await store.client[store.db_name][ROUTED].find({}).to_list(length=None)]
    async with aiosqlite.connect(hub.settings.sqlite_path) as db:
        return [repr(tuple(r)) for r in await db.execute_fetchall(f"SELECT * FROM {ROUTED}")]


async def test_an_emsp_catches_up_on_its_sessions_and_cdrs_page_by_page(make_store_hub: MakeHub,
                                                                        tmp_path: Path) -> None:
    hub, cpa, ema, emb = await network(make_store_hub, tmp_path)
    await send(hub, cpa, "PUT", "sessions", "NL/CPA/S1", session(ema.party, "S1", "2025-01-01T10:00:00Z"), ema.party)
    await send(hub, cpa, "PATCH", "sessions", "NL/CPA/S1", {"kwh": 7.5, "status": "COMPLETED",
                                                             "last_updated": "2025-01-01T11:00:00Z"}, ema.party)
    await send(hub, cpa, "PUT", "sessions", "NL/CPA/S2", session(emb.party, "S2", "2025-01-01T10:00:00Z"), emb.party)
    for n in range(1, 8):  # CDR1..CDR7, one a day in January
        await send(hub, cpa, "POST", "cdrs", "", cdr(ema.party, f"CDR{n}", f"2025-01-0{n}T12:00:00Z"), ema.party)
    await send(hub, cpa, "POST", "cdrs", "", cdr(emb.party, "CDR9", "2025-01-03T12:00:00Z"), emb.party)

    # the session as the eMSP holds it now: the PUT with the PATCH merged in
    status, headers, body = await get_all(hub, ema, "sessions")
    assert (status, body["status_code"]) == (200, 1000), body
    assert body["data"] == [{**session(ema.party, "S1", "2025-01-01T11:00:00Z", 7.5), "status": "COMPLETED"}]
    assert (headers["X-Total-Count"], headers.get("Link")) == ("1", None)
    assert (headers["OCPI-to-party-id"], headers["OCPI-from-party-id"]) == ("EMA", "HUB")

    # CDRs of 2 to 6 January (date_to exclusive), two a page, following the Link to the end
    pages = await crawl(hub, ema, "cdrs", "date_from=2025-01-02T00:00:00Z&date_to=2025-01-06T12:00:00Z&limit=2")
    assert [[c["id"] for c in page] for page in pages] == [["CDR2", "CDR3"], ["CDR4", "CDR5"]]
    assert pages[0][0] == cdr(ema.party, "CDR2", "2025-01-02T12:00:00Z"), "as the CPO sent it"
    _, headers, body = await get_all(hub, ema, "cdrs", "offset=5&limit=2")
    assert [c["id"] for c in body["data"]] == ["CDR6", "CDR7"] and headers["X-Total-Count"] == "7"
    assert headers.get("Link") is None

    # the other eMSP sees its own only; the CPO, to which nothing was routed, nothing
    _, _, body = await get_all(hub, emb, "cdrs")
    assert [c["id"] for c in body["data"]] == ["CDR9"]
    _, _, body = await get_all(hub, emb, "sessions")
    assert [s["id"] for s in body["data"]] == ["S2"]
    _, headers, body = await get_all(hub, cpa, "cdrs")
    assert (body["data"], headers["X-Total-Count"]) == ([], "0")

    # sealed at rest: the routing keys in clear, the token uid nowhere
    rows = await raw_rows(hub)
    assert len(rows) == 10 and all("DE:EMA" in r or "DE:EMB" in r for r in rows)
    assert not any(UID in r or "Street 1" in r for r in rows), rows[0]


async def test_expired_records_are_not_served_and_are_purged(make_store_hub: MakeHub, tmp_path: Path) -> None:
    hub, cpa, ema, _ = await network(make_store_hub, tmp_path)
    await send(hub, cpa, "POST", "cdrs", "", cdr(ema.party, "OLD", "2025-01-01T12:00:00Z"), ema.party)
    await send(hub, cpa, "POST", "cdrs", "", cdr(ema.party, "NEW", "2025-01-02T12:00:00Z"), ema.party)
    store = hub.app[HUB_KEY].store
    past = utcnow() - timedelta(seconds=1)

    def expire(kept: RoutedObject) -> RoutedObject:  # as if HUB_CATCHUP_DAYS had gone by
        return dataclasses.replace(kept, expires_at=past)

    assert await store.change_routed("cdrs", "DE:EMA", "NL", "CPA", "OLD", expire)

    _, headers, body = await get_all(hub, ema, "cdrs")
    assert ([c["id"] for c in body["data"]], headers["X-Total-Count"]) == (["NEW"], "1")
    await retention_pass(hub.app[HUB_KEY])
    rows = await raw_rows(hub)
    assert len(rows) == 1 and "NEW" in rows[0]


async def test_nothing_is_kept_or_served_with_catch_up_off(make_store_hub: MakeHub, tmp_path: Path) -> None:
    hub, cpa, ema, _ = await network(make_store_hub, tmp_path, catchup_days=0)
    await send(hub, cpa, "POST", "cdrs", "", cdr(ema.party, "CDR1", "2025-01-01T12:00:00Z"), ema.party)

    status, _, body = await get_all(hub, ema, "cdrs")

    assert (status, body["status_code"]) == (400, 2001), body
    assert await raw_rows(hub) == []


async def test_a_record_is_kept_in_its_senders_version_and_served_in_the_callers(make_store_hub: MakeHub,
                                                                                 tmp_path: Path) -> None:
    hub = await make_store_hub(sqlite_path=str(tmp_path / "hub.sqlite3"))
    cpo211 = partner("CPO 2.1.1", Party("NL", "CPA", "CPO"), "2.1.1")
    cpo221 = partner("CPO 2.2.1", Party("NL", "CPB", "CPO"), "2.2.1")
    emsp211 = partner("eMSP 2.1.1", Party("DE", "EMD", "EMSP"), "2.1.1")
    emsp230 = partner("eMSP 2.3.0", Party("DE", "EMB", "EMSP"), "2.3.0")
    for p in (cpo211, cpo221, emsp211, emsp230):
        await hub.connect(p)
    # A 2.1.1 CPO's session and CDR reach the 2.3.0 eMSP of the token (open routing by contract id) ...
    status, _, doc = await emsp230.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678", to=HUB,
                                        json=token_221())
    assert status == 200, doc
    for method, module, tail, body in (("PUT", "sessions", "NL/CPA/S1", session_211()),
                                       ("PATCH", "sessions", "NL/CPA/S1", {"kwh": 5.5}),
                                       ("POST", "cdrs", "", cdr_211())):
        status, _, doc = await cpo211.call(hub.session, method, module, "RECEIVER", tail, json=body)
        assert (status, doc["status_code"]) == (200, 1000), doc
    # ... and a 2.2.1 CPO's CDR reaches the 2.1.1 eMSP
    await send(hub, cpo221, "POST", "cdrs", "", {**cdr(emsp211.party, "CDR7", "2025-01-01T12:00:00Z"),
                                                 "party_id": "CPB"}, emsp211.party)

    _, _, body = await get_all(hub, emsp230, "sessions")
    [s] = body["data"]
    assert (s["id"], s["kwh"], s["cdr_token"]["party_id"]) == ("S1", 5.5, "EMB"), s  # 2.3.0: cdr_token, not auth_id
    _, _, body = await get_all(hub, emsp230, "cdrs")
    [c] = body["data"]
    assert c["total_cost"] == {"before_taxes": 4.0} and c["cdr_location"]["id"] == "LOC1", c  # a 2.3.0 Price

    # the 2.1.1 eMSP asks the 2.1.1 way: GET of its CDR list, no routing headers; it gets 2.1.1 CDRs
    status, headers, body = await emsp211.call(hub.session, "GET", "cdrs", "SENDER", query="limit=10")
    assert (status, body["status_code"]) == (200, 1000), body
    [c] = body["data"]
    assert (c["id"], c["total_cost"], c["auth_id"]) == ("CDR7", 5.0, "DE-EMA-C1"), c
    assert "cdr_token" not in c and c["location"]["id"] == "LOC1", c
    assert headers["X-Total-Count"] == "1"


async def test_only_senders_the_caller_may_still_see_under_roaming_agreements(make_store_hub: MakeHub,
                                                                             tmp_path: Path) -> None:
    hub, cpa, ema, _ = await network(make_store_hub, tmp_path, roaming_policy="agreements")
    status, agreement = await hub.admin("POST", "/admin/agreements", {
        "party_a": cpa.party.role_spec, "party_b": ema.party.role_spec, "modules": ["sessions", "cdrs"]})
    assert status == 201, agreement
    await send(hub, cpa, "POST", "cdrs", "", cdr(ema.party, "CDR1", "2025-01-01T12:00:00Z"), ema.party)
    _, _, body = await get_all(hub, ema, "cdrs")
    assert [c["id"] for c in body["data"]] == ["CDR1"]

    status, _ = await hub.admin("DELETE", f"/admin/agreements/{agreement['id']}")
    assert status in (200, 204)

    _, headers, body = await get_all(hub, ema, "cdrs")
    assert (body["data"], headers["X-Total-Count"]) == ([], "0")
