"""GET All via the hub (TO = the hub, GET on a SENDER interface): answered from what was broadcast to the hub,
merged over its owners, filtered by date and by what the caller may see, paginated by the hub (OCPI 2.2.1 GET All via
Hub; Pagination).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import FakePartner, Party, Received, envelope, ocpi_token

HUB = Party("NL", "HUB", "HUB")
LINK = re.compile(r'^<([^>]+)>; rel="next"$')


def location(pid: str, lid: str, last_updated: str, **extra: Any) -> dict[str, Any]:
    connector = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
                 "max_voltage": 230, "max_amperage": 32, "last_updated": last_updated}
    return {"country_code": "NL", "party_id": pid, "id": lid, "publish": True, "address": "Stationsplein 1",
            "city": "Amsterdam", "country": "NLD", "coordinates": {"latitude": "52.379189", "longitude": "4.899431"},
            "time_zone": "Europe/Amsterdam",
            "evses": [{"uid": "EVSE1", "status": "AVAILABLE", "connectors": [connector],
                       "last_updated": last_updated}],
            "last_updated": last_updated, "x-vendor": {"kept": [1, None, "é"]}, **extra}


def tariff(pid: str, tid: str, last_updated: str) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": pid, "id": tid, "currency": "EUR",
            "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "step_size": 1}]}],
            "last_updated": last_updated}


def token(pid: str, uid: str, last_updated: str, token_type: str = "RFID") -> dict[str, Any]:
    return {"country_code": "DE", "party_id": pid, "uid": uid, "type": token_type, "contract_id": f"DE-{pid}-{uid}",
            "issuer": "Beta", "valid": True, "whitelist": "ALLOWED", "last_updated": last_updated}


async def connect(hub: HubHarness) -> tuple[FakePartner, FakePartner, FakePartner, FakePartner]:
    parties = (cpo("Alpha CPO", "CPA"), cpo("Bravo CPO", "CPB"), emsp("Alpha eMSP", "EMA"), emsp("Bravo eMSP", "EMB"))
    for partner in parties:
        await hub.connect(partner)
    return parties


async def push(hub: HubHarness, sender: FakePartner, method: str, module: str, tail: str, doc: Any,
               query: str = "", to: Party = HUB) -> None:
    status, _, body = await sender.call(hub.session, method, module, "RECEIVER", tail, to=to, json=doc, query=query)
    assert (status, body["status_code"]) == (200, 1000), body


def ocpi_headers(partner: FakePartner) -> dict[str, str]:
    return {"Authorization": ocpi_token(partner.token_c or ""), "X-Request-ID": uuid.uuid4().hex,
            "X-Correlation-ID": uuid.uuid4().hex, "OCPI-from-country-code": partner.party.country_code,
            "OCPI-from-party-id": partner.party.party_id, "OCPI-to-country-code": HUB.country_code,
            "OCPI-to-party-id": HUB.party_id}


async def get_all(hub: HubHarness, partner: FakePartner, module: str, query: str = "",
                  url: str | None = None) -> tuple[int, CIMultiDict[str], Any]:
    headers = ocpi_headers(partner)
    target = url or partner.hub_url(module, "SENDER") + (f"?{query}" if query else "")
    async with hub.session.get(target, headers=headers) as resp:
        body = await resp.json()
        resp_headers = CIMultiDict(resp.headers)
    assert resp.status != 200 or resp_headers.get("X-Request-ID") == headers["X-Request-ID"]
    return resp.status, resp_headers, body


async def crawl(hub: HubHarness, partner: FakePartner, module: str, query: str) -> list[list[dict[str, Any]]]:
    """Every page, following the hub's Link header with the same headers until there is none."""
    pages: list[list[dict[str, Any]]] = []
    url: str | None = partner.hub_url(module, "SENDER") + f"?{query}"
    while url is not None:
        status, headers, body = await get_all(hub, partner, module, url=url)
        assert (status, body["status_code"]) == (200, 1000), body
        pages.append(body["data"])
        link = headers.get("Link")
        url = None
        if link is not None:
            match = LINK.match(link)
            assert match, link
            url = match.group(1)
        assert len(pages) < 20, "the Link chain does not end"
    return pages


async def test_an_emsp_gets_the_locations_of_every_cpo_merged_with_last_updated_untouched(hub: HubHarness) -> None:
    cpo_a, cpo_b, emsp_a, _ = await connect(hub)
    docs = [location("CPA", "LOC1", "2015-06-29T20:39:09.123456+01:00"),
            location("CPB", "LOC1", "2024-03-01T12:00:00Z"),
            location("CPA", "LOC2", "2024-03-01T12:00:01Z")]
    for doc in docs:
        await push(hub, cpo_a if doc["party_id"] == "CPA" else cpo_b, "PUT", "locations",
                   f"NL/{doc['party_id']}/{doc['id']}", doc)

    status, headers, body = await get_all(hub, emsp_a, "locations")

    assert (status, body["status_code"]) == (200, 1000), body
    assert set(body) <= {"data", "status_code", "status_message", "timestamp"}
    assert body["data"] == docs  # oldest created first; each owner's object as pushed (last_updated verbatim)
    assert (headers["X-Total-Count"], headers.get("Link")) == ("3", None)
    assert int(headers["X-Limit"]) >= 3
    assert (headers["OCPI-to-country-code"], headers["OCPI-to-party-id"]) == ("DE", "EMA")
    assert (headers["OCPI-from-country-code"], headers["OCPI-from-party-id"]) == ("NL", "HUB")


async def test_patches_and_evse_and_connector_pushes_are_reflected(hub: HubHarness) -> None:
    cpo_a, _, emsp_a, _ = await connect(hub)
    doc = location("CPA", "LOC1", "2024-01-01T00:00:00Z")
    await push(hub, cpo_a, "PUT", "locations", "NL/CPA/LOC1", doc)
    await push(hub, cpo_a, "PUT", "locations", "NL/CPA/LOC2", location("CPA", "LOC2", "2024-01-01T00:00:00Z"))
    evse2 = {"uid": "EVSE2", "status": "PLANNED", "connectors": [], "last_updated": "2024-01-02T00:00:00Z"}
    connector2 = {"id": "2", "standard": "CHADEMO", "format": "CABLE", "power_type": "DC", "max_voltage": 500,
                  "max_amperage": 125, "last_updated": "2024-01-05T00:00:00Z"}
    await push(hub, cpo_a, "PATCH", "locations", "NL/CPA/LOC1",
               {"name": "Gare", "publish": False, "last_updated": "2024-01-01T00:00:01Z"})
    await push(hub, cpo_a, "PUT", "locations", "NL/CPA/LOC1/EVSE2", evse2)
    await push(hub, cpo_a, "PATCH", "locations", "NL/CPA/LOC1/EVSE1",
               {"status": "CHARGING", "last_updated": "2024-01-03T00:00:00Z"})
    await push(hub, cpo_a, "PATCH", "locations", "NL/CPA/LOC1/EVSE1/1",
               {"max_amperage": 16, "last_updated": "2024-01-04T00:00:00Z"})
    await push(hub, cpo_a, "PUT", "locations", "NL/CPA/LOC1/EVSE2/2", connector2)
    # an older child change must not move the Location's last_updated back
    await push(hub, cpo_a, "PATCH", "locations", "NL/CPA/LOC1/EVSE2", {"status": "AVAILABLE",
                                                                      "last_updated": "2024-01-02T00:00:01Z"})

    expected = copy.deepcopy(doc)
    expected.update(name="Gare", publish=False)
    evse1 = expected["evses"][0]
    evse1.update(status="CHARGING", last_updated="2024-01-03T00:00:00Z")
    evse1["connectors"][0].update(max_amperage=16, last_updated="2024-01-04T00:00:00Z")
    expected["evses"].append({**evse2, "status": "AVAILABLE", "connectors": [connector2],
                              "last_updated": "2024-01-02T00:00:01Z"})
    # OCPI: a child's change bumps the parent's last_updated, to the child's own value, never the hub's clock
    expected["last_updated"] = "2024-01-05T00:00:00Z"

    status, _, body = await get_all(hub, emsp_a, "locations")
    assert status == 200, body
    assert [d["id"] for d in body["data"]] == ["LOC1", "LOC2"]  # updates keep the place in the list
    assert body["data"][0] == expected


async def test_concurrent_evse_pushes_to_one_location_are_all_kept(hub: HubHarness) -> None:
    """Each EVSE push rewrites the stored Location: done concurrently, none may overwrite another's change."""
    cpo_a, _, emsp_a, _ = await connect(hub)
    doc = location("CPA", "LOC1", "2024-01-01T00:00:00Z")
    doc["evses"] = [{"uid": f"E{n}", "status": "AVAILABLE", "connectors": [], "last_updated": "2024-01-01T00:00:00Z"}
                    for n in range(16)]
    await push(hub, cpo_a, "PUT", "locations", "NL/CPA/LOC1", doc)
    await asyncio.gather(*(
        push(hub, cpo_a, "PATCH", "locations", f"NL/CPA/LOC1/E{n}",
             {"status": "CHARGING", "last_updated": f"2024-01-02T00:00:{n:02}Z"})
        for n in range(16)
    ))
    status, _, body = await get_all(hub, emsp_a, "locations")
    assert status == 200, body
    assert [e["status"] for e in body["data"][0]["evses"]] == ["CHARGING"] * 16
    assert body["data"][0]["last_updated"] == "2024-01-02T00:00:15Z"


async def test_date_from_is_inclusive_and_date_to_exclusive(hub: HubHarness) -> None:
    cpo_a, _, emsp_a, _ = await connect(hub)
    for n in range(1, 5):
        await push(hub, cpo_a, "PUT", "locations", f"NL/CPA/L{n}", location("CPA", f"L{n}", f"2024-01-0{n}T00:00:00Z"))

    async def ids(query: str) -> list[str]:
        status, headers, body = await get_all(hub, emsp_a, "locations", query)
        assert status == 200, body
        assert headers["X-Total-Count"] == str(len(body["data"]))
        return [d["id"] for d in body["data"]]

    assert await ids("date_from=2024-01-02T00:00:00Z&date_to=2024-01-04T00:00:00Z") == ["L2", "L3"]
    assert await ids("date_from=2024-01-02T00:00:00Z") == ["L2", "L3", "L4"]
    assert await ids("date_to=2024-01-02T00:00:00Z") == ["L1"]
    # the same instants with an offset: compared as instants, not as text
    assert await ids("date_from=2024-01-02T01:00:00%2B01:00&date_to=2024-01-04T01:00:00%2B01:00") == ["L2", "L3"]
    status, _, body = await get_all(hub, emsp_a, "locations", "date_from=yesterday")
    assert (status, body["status_code"]) == (400, 2001), body


async def test_pages_follow_the_link_header_which_repeats_the_filters(hub: HubHarness) -> None:
    cpo_a, cpo_b, emsp_a, _ = await connect(hub)
    pushed = []
    for n in range(9):
        sender, pid = (cpo_a, "CPA") if n % 2 else (cpo_b, "CPB")
        doc = location(pid, f"L{n}", f"2024-01-0{n + 1}T00:00:00Z")
        await push(hub, sender, "PUT", "locations", f"NL/{pid}/L{n}", doc)
        pushed.append(doc)
    # L0 is before date_from and L8 at date_to: 7 objects match, pages of 3
    query = "date_from=2024-01-02T00:00:00Z&date_to=2024-01-09T00:00:00Z&limit=3"

    status, headers, body = await get_all(hub, emsp_a, "locations", query)
    assert status == 200, body
    assert (headers["X-Total-Count"], len(body["data"])) == ("7", 3)
    assert int(headers["X-Limit"]) >= 3
    next_url = LINK.match(headers["Link"])
    assert next_url, headers["Link"]
    parts = urlsplit(next_url.group(1))
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == emsp_a.hub_url("locations", "SENDER")
    assert {k: v for k, v in parse_qs(parts.query).items()} == {
        "date_from": ["2024-01-02T00:00:00Z"], "date_to": ["2024-01-09T00:00:00Z"], "offset": ["3"], "limit": ["3"],
    }

    pages = await crawl(hub, emsp_a, "locations", query)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [d for page in pages for d in page] == pushed[1:8]

    # the last page says so itself too
    status, headers, body = await get_all(hub, emsp_a, "locations", query + "&offset=6")
    assert (headers["X-Total-Count"], len(body["data"]), headers.get("Link")) == ("7", 1, None)
    # a limit above the hub's own cap: X-Limit says the cap, the page holds no more than it
    status, headers, body = await get_all(hub, emsp_a, "locations", "limit=100000")
    assert status == 200, body
    assert len(body["data"]) == 9 <= int(headers["X-Limit"]) < 100000


async def test_tokens_are_listed_to_cpos_only(hub: HubHarness) -> None:
    cpo_a, cpo_b, emsp_a, emsp_b = await connect(hub)
    docs = [token("EMA", "T1", "2024-01-01T00:00:00Z"), token("EMA", "T1", "2024-01-01T00:00:01Z", "APP_USER"),
            token("EMB", "T2", "2024-01-02T00:00:00Z")]
    await push(hub, emsp_a, "PUT", "tokens", "DE/EMA/T1", docs[0], query="type=RFID")
    await push(hub, emsp_a, "PUT", "tokens", "DE/EMA/T1", docs[1], query="type=APP_USER")
    await push(hub, emsp_b, "PUT", "tokens", "DE/EMB/T2", docs[2])
    await push(hub, emsp_a, "PATCH", "tokens", "DE/EMA/T1", {"valid": False, "last_updated": "2024-01-03T00:00:00Z"},
               query="type=APP_USER")
    docs[1].update(valid=False, last_updated="2024-01-03T00:00:00Z")

    for viewer in (cpo_a, cpo_b):
        status, headers, body = await get_all(hub, viewer, "tokens")
        assert status == 200, body
        assert body["data"] == docs  # uid + type identify a token: the RFID and the APP_USER T1 are two
        assert headers["X-Total-Count"] == "3"
    for viewer in (emsp_a, emsp_b):  # eMSPs do not see each other's tokens
        status, headers, body = await get_all(hub, viewer, "tokens")
        assert (status, body["status_code"], body["data"], headers["X-Total-Count"]) == (200, 1000, [], "0")
        assert headers["OCPI-to-party-id"] == viewer.party.party_id


async def test_tariffs_of_every_cpo_are_listed(hub: HubHarness) -> None:
    cpo_a, cpo_b, emsp_a, _ = await connect(hub)
    docs = [tariff("CPA", "T1", "2024-01-01T00:00:00Z"), tariff("CPB", "T1", "2024-01-02T00:00:00Z")]
    await push(hub, cpo_a, "PUT", "tariffs", "NL/CPA/T1", docs[0])
    await push(hub, cpo_b, "PUT", "tariffs", "NL/CPB/T1", docs[1])
    status, headers, body = await get_all(hub, emsp_a, "tariffs")
    assert status == 200, body
    assert body["data"] == docs
    assert (headers["OCPI-to-party-id"], headers["OCPI-from-party-id"]) == ("EMA", "HUB")


async def test_a_tariff_its_owner_deletes_at_a_receiver_leaves_get_all(hub: HubHarness) -> None:
    """DELETE is not broadcast: the CPO deletes at each eMSP. The first accepted one drops the hub's copy."""
    cpo_a, cpo_b, emsp_a, emsp_b = await connect(hub)
    await push(hub, cpo_a, "PUT", "tariffs", "NL/CPA/T1", tariff("CPA", "T1", "2024-01-01T00:00:00Z"))
    await push(hub, cpo_b, "PUT", "tariffs", "NL/CPB/T1", tariff("CPB", "T1", "2024-01-01T00:00:00Z"))

    async def refuse(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope(status_code=2003, message="unknown tariff"), status=404)

    emsp_b.responder = refuse
    status, _, body = await cpo_a.call(hub.session, "DELETE", "tariffs", "RECEIVER", "NL/CPA/T1", to=emsp_b.party)
    assert (status, body["status_code"]) == (404, 2003), body
    _, _, body = await get_all(hub, emsp_a, "tariffs")
    assert [t["party_id"] for t in body["data"]] == ["CPA", "CPB"], "a refused DELETE changes nothing"

    status, _, body = await cpo_a.call(hub.session, "DELETE", "tariffs", "RECEIVER", "NL/CPA/T1", to=emsp_a.party)
    assert (status, body["status_code"]) == (200, 1000), body
    for viewer in (emsp_a, emsp_b):
        _, headers, body = await get_all(hub, viewer, "tariffs")
        assert [t["party_id"] for t in body["data"]] == ["CPB"], body
        assert headers["X-Total-Count"] == "1"


async def test_sessions_and_cdrs_are_refused_when_the_hub_keeps_none_for_catch_up(make_hub: MakeHub) -> None:
    """With catch-up on (the default) they are served from what was routed to the caller: tests/test_catchup.py."""
    hub = await make_hub(catchup_days=0)
    _, _, emsp_a, _ = await connect(hub)
    for module in ("sessions", "cdrs"):
        status, headers, body = await get_all(hub, emsp_a, module, "date_from=2024-01-01T00:00:00Z")
        assert (status, body["status_code"]) == (400, 2001), body
        assert (headers["OCPI-to-party-id"], headers["OCPI-from-party-id"]) == ("EMA", "HUB")
        assert "data" not in body or body["data"] is None


async def test_direct_pushes_are_not_in_get_all(hub: HubHarness) -> None:
    """A push addressed to one party is that party's business: the hub keeps no copy (OCPI 2.2.1 Message Routing)."""
    cpo_a, _, emsp_a, emsp_b = await connect(hub)
    await push(hub, cpo_a, "PUT", "locations", "NL/CPA/LOC1", location("CPA", "LOC1", "2024-01-01T00:00:00Z"),
               to=emsp_a.party)
    await push(hub, cpo_a, "PUT", "tariffs", "NL/CPA/T1", tariff("CPA", "T1", "2024-01-01T00:00:00Z"),
               to=emsp_a.party)
    await push(hub, emsp_a, "PUT", "tokens", "DE/EMA/T1", token("EMA", "T1", "2024-01-01T00:00:00Z"),
               to=cpo_a.party)
    assert len(emsp_a.received) == 2 and len(cpo_a.received) == 1
    for viewer, module in ((emsp_b, "locations"), (emsp_a, "locations"), (emsp_b, "tariffs"), (cpo_a, "tokens")):
        status, headers, body = await get_all(hub, viewer, module)
        assert (status, body["data"], headers["X-Total-Count"]) == (200, [], "0"), (module, body)


async def test_the_get_all_answer_is_an_ocpi_envelope_even_when_empty(hub: HubHarness) -> None:
    _, _, emsp_a, _ = await connect(hub)
    status, headers, raw = await emsp_a.call_raw(hub.session, "GET", "locations", "SENDER", to=HUB)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(raw)
    assert doc["data"] == [] and doc["status_code"] == 1000 and isinstance(doc["timestamp"], str)
    assert (headers["X-Total-Count"], headers.get("Link")) == ("0", None)


async def test_objects_the_callers_version_cannot_hold_neither_end_the_crawl_nor_repeat_others(
        hub: HubHarness) -> None:
    """A page's Link continues after the objects the hub read for it, also those it left out because the caller's
    OCPI version cannot hold them (OCPI 2.2.1 Pagination: the same URL returns the same objects; following Link
    reaches every object once)."""
    cpo_a, cpo_b, emsp_a, _ = await connect(hub)
    modules = {m: ("SENDER", "RECEIVER") for m in ("locations", "tariffs", "tokens")}
    cpo_e = FakePartner(name="CPO 2.3.0", parties=[Party("NL", "CPE", "CPO")], version="2.3.0", modules=modules)
    await hub.connect(cpo_e)
    # prices that include VAT without a rate: no 2.2.1 Tariff can state them, so a 2.2.1 viewer never gets it
    taxed = {**tariff("CPE", "T0", "2024-01-01T00:00:00Z"), "tax_included": "YES"}
    await push(hub, cpo_e, "PUT", "tariffs", "NL/CPE/T0", taxed)
    docs = [tariff("CPA", "T1", "2024-01-02T00:00:00Z"), tariff("CPB", "T2", "2024-01-03T00:00:00Z"),
            tariff("CPA", "T3", "2024-01-04T00:00:00Z")]
    for doc, sender in zip(docs, (cpo_a, cpo_b, cpo_a), strict=True):
        await push(hub, sender, "PUT", "tariffs", f"NL/{doc['party_id']}/{doc['id']}", doc)

    for limit in (1, 2, 3):
        pages = await crawl(hub, emsp_a, "tariffs", f"limit={limit}")
        assert [t["id"] for page in pages for t in page] == ["T1", "T2", "T3"], (limit, pages)
