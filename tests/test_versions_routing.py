"""Routing across OCPI versions, end to end (docs/versions.md, "Routing across versions"): a 2.1.1 CPO, a 2.3.0
CPO, and eMSPs on 2.1.1, 2.2.1 and 2.3.0 register with one hub and reach each other. Each receiver gets what it
is sent in its own version, every translation leaves a loss report in the audit and the metrics, and a 2.1.1
partner sends no routing headers and gets none."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.audit import AuditRecord
from routing.ocpi.versions import MODULES_211, MODULES_230
from tests.conftest import HubHarness, ocpi_examples
from tests.partners import FakePartner, Party, Received, envelope, token_header
from tests.test_audit import records
from tests.test_clientinfo import eventually

MODULES_ALL = {**{m: ("SENDER", "RECEIVER") for m in MODULES_230}, "hubclientinfo": ("RECEIVER",)}
ROUTING = ("OCPI-to-country-code", "OCPI-to-party-id", "OCPI-from-country-code", "OCPI-from-party-id")
NOW = "2026-12-01T10:00:00Z"
HUB = Party("NL", "HUB", "HUB")


@dataclass
class Net:
    hub: HubHarness
    cpo211: FakePartner
    cpo230: FakePartner
    emsp211: FakePartner
    emsp221: FakePartner
    emsp230: FakePartner


def partner(name: str, party: Party, version: str) -> FakePartner:
    # A 2.1.1 partner advertising hubclientinfo anyway: the hub must still never push ClientInfo to it.
    modules = ({**{m: ("SENDER", "RECEIVER") for m in MODULES_211}, "hubclientinfo": ("RECEIVER",)}
               if version == "2.1.1" else dict(MODULES_ALL))
    return FakePartner(name=name, parties=[party], version=version, modules=modules)


@pytest.fixture
async def net(hub: HubHarness) -> AsyncIterator[Net]:
    n = Net(hub,
            cpo211=partner("CPO 2.1.1", Party("NL", "CPA", "CPO"), "2.1.1"),
            cpo230=partner("CPO 2.3.0", Party("NL", "CPE", "CPO"), "2.3.0"),
            emsp211=partner("eMSP 2.1.1", Party("DE", "EMD", "EMSP"), "2.1.1"),
            emsp221=partner("eMSP 2.2.1", Party("DE", "EMB", "EMSP"), "2.2.1"),
            emsp230=partner("eMSP 2.3.0", Party("DE", "EMC", "EMSP"), "2.3.0"))
    for p in (n.cpo211, n.cpo230, n.emsp211, n.emsp221, n.emsp230):
        await hub.connect(p)
    _, view = await hub.admin("GET", "/admin/platforms")
    versions = {v["name"]: v["version"] for v in view}
    assert versions == {"CPO 2.1.1": "2.1.1", "CPO 2.3.0": "2.3.0", "eMSP 2.1.1": "2.1.1",
                        "eMSP 2.2.1": "2.2.1", "eMSP 2.3.0": "2.3.0"}, versions
    yield n


def got(p: FakePartner, method: str, fragment: str) -> list[Received]:
    return [r for r in p.received if r.method == method and fragment in r.path]


async def one(p: FakePartner, method: str, fragment: str) -> Received:
    found = await eventually(lambda: got(p, method, fragment), f"{p.name} receiving {method} {fragment}")
    assert len(found) == 1, [r.path for r in found]
    return found[0]


def location_211(loc_id: str = "LOC1") -> dict[str, Any]:
    return {"id": loc_id, "type": "ON_STREET", "name": "Gent Zuid", "address": "F.Rooseveltlaan 3A", "city": "Gent",
            "postal_code": "9000", "country": "BEL", "coordinates": {"latitude": "51.047599", "longitude": "3.729944"},
            "evses": [{"uid": "3256", "evse_id": "BE-BEC-E041503001", "status": "AVAILABLE",
                       "connectors": [{"id": "1", "standard": "IEC_62196_T2", "format": "CABLE",
                                       "power_type": "AC_3_PHASE", "voltage": 220, "amperage": 16,
                                       "tariff_id": "11", "last_updated": NOW}],
                       "last_updated": NOW}],
            "last_updated": NOW}


def location_230(loc_id: str) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPE", "id": loc_id, "publish": True, "address": "Main 1",
            "city": "Gent", "postal_code": "9000", "country": "BEL", "parking_type": "ON_STREET",
            "coordinates": {"latitude": "51.047599", "longitude": "3.729944"}, "time_zone": "Europe/Brussels",
            "evses": [{"uid": "3256", "status": "AVAILABLE", "connectors": [
                {"id": "1", "standard": "IEC_62196_T2", "format": "CABLE", "power_type": "AC_3_PHASE",
                 "max_voltage": 220, "max_amperage": 16, "last_updated": NOW}], "last_updated": NOW}],
            "last_updated": NOW}


async def post_as(p: FakePartner, hub: HubHarness, url: str, body: Any, *, to: Party) -> tuple[int, Any]:
    """A partner calling a URL it was handed (a hub ``response_url``), as its version calls."""
    headers = {"Authorization": token_header(p.token_c or "", p.version)}
    if p.version != "2.1.1":
        headers.update({"X-Request-ID": "r1", "X-Correlation-ID": "c1", "OCPI-from-country-code":
                        p.party.country_code, "OCPI-from-party-id": p.party.party_id,
                        "OCPI-to-country-code": to.country_code, "OCPI-to-party-id": to.party_id})
    async with hub.session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def token_221(uid: str = "012345678", contract: str = "DE8EMBC12345678") -> dict[str, Any]:
    return {"country_code": "DE", "party_id": "EMB", "uid": uid, "type": "RFID", "contract_id": contract,
            "issuer": "eMSP B", "valid": True, "whitelist": "ALLOWED", "last_updated": NOW}


def session_211(contract: str = "DE8EMBC12345678") -> dict[str, Any]:
    return {"id": "S1", "start_datetime": NOW, "kwh": 0.0, "auth_id": contract, "auth_method": "WHITELIST",
            "location": location_211(), "currency": "EUR", "status": "ACTIVE", "last_updated": NOW}


def cdr_211(contract: str = "DE8EMBC12345678") -> dict[str, Any]:
    return {"id": "CDR1", "start_date_time": NOW, "stop_date_time": "2026-12-01T11:00:00Z", "auth_id": contract,
            "auth_method": "WHITELIST", "location": location_211(), "currency": "EUR",
            "charging_periods": [{"start_date_time": NOW, "dimensions": [{"type": "ENERGY", "volume": 12.5}]}],
            "total_cost": 4.0, "total_energy": 12.5, "total_time": 1.0, "last_updated": "2026-12-01T11:00:00Z"}


def tariff_230(tariff_id: str = "T1") -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPE", "id": tariff_id, "currency": "EUR", "tax_included": "NO",
            "elements": [{"price_components": [{"type": "ENERGY", "price": 0.30, "vat": 21.0, "step_size": 1}]}],
            "min_price": {"before_taxes": 1.0, "after_taxes": 1.21}, "last_updated": NOW}


def translations(found: list[AuditRecord]) -> list[dict[str, Any]]:
    return [r for rec in found if rec.translation for r in rec.translation["reports"]]


async def metric(hub: HubHarness, name: str, **labels: str) -> float:
    async with hub.session.get(f"{hub.url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# -- a 2.1.1 CPO's Locations: broadcast to every eMSP in its version, GET All in the viewer's version ------------

async def test_a_2_1_1_location_push_reaches_each_emsp_in_its_version_and_get_all_in_the_viewers(net: Net) -> None:
    hub = net.hub
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                           json=location_211())
    assert status == 200 and doc["status_code"] == 1000, doc
    assert "accepted for 3 receivers" in doc["status_message"], doc
    at_221 = await one(net.emsp221, "PUT", "/locations/NL/CPA/LOC1")
    at_230 = await one(net.emsp230, "PUT", "/locations/NL/CPA/LOC1")
    at_211 = await one(net.emsp211, "PUT", "/locations/NL/CPA/LOC1")
    for rec in (at_221, at_230):
        body = rec.json()
        assert (body["country_code"], body["party_id"], body["id"]) == ("NL", "CPA", "LOC1"), body
        assert body["parking_type"] == "ON_STREET" and "type" not in body, body
        assert body["evses"][0]["connectors"][0]["tariff_ids"] == ["11"], body
        # a broadcast: FROM = the hub, as for every version; TO = the receiving eMSP
        assert rec.headers["OCPI-from-party-id"] == "HUB" and rec.headers["OCPI-to-party-id"] in ("EMB", "EMC")
    assert at_211.json() == location_211(), "2.1.1 to 2.1.1 passes as sent"
    assert not any(h in at_211.headers for h in ROUTING), "a 2.1.1 receiver gets no routing headers"
    assert at_211.headers["Authorization"] == f"Token {net.emsp211.token_b}", "2.1.1: the raw token"

    # GET All: the 2.2.1 eMSP with routing headers, the 2.1.1 eMSP without; each in its own version
    status, _, doc = await net.emsp221.call(hub.session, "GET", "locations", "SENDER", to=HUB)
    assert status == 200, doc
    assert [(x["country_code"], x["id"], x["parking_type"]) for x in doc["data"]] == [("NL", "LOC1", "ON_STREET")]
    status, _, doc = await net.emsp211.call(hub.session, "GET", "locations", "SENDER")
    assert status == 200 and doc["data"] == [location_211()], doc

    found = await records(hub, module="locations")
    reports = translations(found)
    assert {(r["of"], r.get("from"), r["to"]) for r in reports} >= {("request", "2.1.1", "2.2.1"),
                                                                ("request", "2.1.1", "2.3.0")}
    owner = [loss for r in reports for loss in r["losses"] if loss["field"] == "country_code"]
    assert owner and all(loss["rule"] == "derived" for loss in owner), reports
    assert all(r.ocpi_version == "2.1.1" for r in found if r.method == "PUT"), found
    assert await metric(hub, "ocpi_hub_translations_total", module="locations", from_version="2.1.1",
                        to_version="2.2.1") == 1
    assert await metric(hub, "ocpi_hub_translation_losses_total", module="locations", from_version="2.1.1",
                        to_version="2.2.1", rule="derived") >= 2


# -- tokens, sessions, CDRs and authorization between a 2.2.1 eMSP and a 2.1.1 CPO ------------------------------

async def test_sessions_and_cdrs_of_a_2_1_1_cpo_go_to_the_emsp_of_the_token(net: Net) -> None:
    hub = net.hub
    status, _, doc = await net.emsp221.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678",
                                            to=HUB, json=token_221())
    assert status == 200, doc
    pushed = (await one(net.cpo211, "PUT", "/tokens/DE/EMB/012345678")).json()
    assert pushed["auth_id"] == "DE8EMBC12345678" and "country_code" not in pushed, pushed

    # the 2.1.1 CPO names the token by auth_id only: the hub finds the eMSP that pushed that contract id
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1",
                                           json=session_211())
    assert status == 200 and doc["status_code"] == 1000, doc
    session = (await one(net.emsp221, "PUT", "/sessions/NL/CPA/S1")).json()
    assert session["cdr_token"]["contract_id"] == "DE8EMBC12345678", session
    assert (session["cdr_token"]["country_code"], session["cdr_token"]["party_id"]) == ("DE", "EMB"), session
    assert (session["country_code"], session["party_id"]) == ("NL", "CPA"), session
    assert not got(net.emsp230, "PUT", "/sessions/"), "a session goes to its token's eMSP only"

    status, _, doc = await net.cpo211.call(hub.session, "PATCH", "sessions", "RECEIVER", "NL/CPA/S1",
                                           json={"kwh": 5.5})
    assert status == 200, doc
    patch = (await one(net.emsp221, "PATCH", "/sessions/NL/CPA/S1")).json()
    assert patch["kwh"] == 5.5 and "last_updated" in patch, "2.2.1 requires last_updated in a PATCH"

    status, _, doc = await net.cpo211.call(hub.session, "POST", "cdrs", "RECEIVER", json=cdr_211())
    assert status == 200 and doc["status_code"] == 1000, doc
    cdr = (await one(net.emsp221, "POST", "/cdrs")).json()
    assert cdr["total_cost"] == {"excl_vat": 4.0} and cdr["cdr_token"]["party_id"] == "EMB", cdr
    assert cdr["cdr_location"]["id"] == "LOC1", cdr

    # an auth_id no eMSP pushed cannot be routed: a clear 4001, nothing forwarded
    status, _, doc = await net.cpo211.call(hub.session, "POST", "cdrs", "RECEIVER",
                                           json={**cdr_211("XX-UNKNOWN"), "id": "CDR2"})
    assert status in (400, 404) and doc["status_code"] in (2001, 4001), doc
    assert len(got(net.emsp221, "POST", "/cdrs")) == 1


async def test_a_cpo_reads_back_its_cdr_from_a_2_1_1_emsp_as_its_own(net: Net) -> None:
    """The CDR behind the Location a receiver answered is the CPO's (OCPI 2.2.1 CDRs, Receiver GET), whichever
    party answers it: after translation it names the CPO as owner and the eMSP as the token's owner."""
    hub = net.hub
    kept: dict[str, Any] = {}

    async def emsp(request: Any, rec: Received) -> Any:
        from aiohttp import web
        if request.method == "POST":
            kept["cdr"] = rec.json()
            return web.json_response(envelope(), headers={"Location": f"{net.emsp211.base_url}/ocpi/2.1.1/cdrs/C9"})
        return web.json_response(envelope(kept["cdr"]))

    net.emsp211.responder = emsp
    emd = Party("DE", "EMD", "EMSP")
    cdr = {"country_code": "NL", "party_id": "CPE", "id": "C9", "start_date_time": NOW,
           "end_date_time": "2026-12-01T11:00:00Z", "auth_method": "WHITELIST", "currency": "EUR",
           "cdr_token": {"country_code": "DE", "party_id": "EMD", "uid": "AA11", "type": "RFID",
                         "contract_id": "DE8EMDC0001"},
           "cdr_location": {"id": "LOC9", "address": "Main 1", "city": "Gent", "postal_code": "9000",
                            "country": "BEL", "coordinates": {"latitude": "51.047599", "longitude": "3.729944"},
                            "evse_uid": "3256", "evse_id": "BE*BEC*E041503001", "connector_id": "1",
                            "connector_standard": "IEC_62196_T2", "connector_format": "CABLE",
                            "connector_power_type": "AC_3_PHASE"},
           "charging_periods": [{"start_date_time": NOW, "dimensions": [{"type": "ENERGY", "volume": 12.5}]}],
           "total_cost": {"before_taxes": 4.0}, "total_energy": 12.5, "total_time": 1.0,
           "last_updated": "2026-12-01T11:00:00Z"}
    status, headers, doc = await net.cpo230.call(hub.session, "POST", "cdrs", "RECEIVER", to=emd, json=cdr)
    assert status == 200 and doc["status_code"] == 1000, doc
    assert kept["cdr"]["auth_id"] == "DE8EMDC0001", kept
    auth = {"Authorization": token_header(net.cpo230.token_c or "", "2.3.0"), "X-Request-ID": "r1",
            "X-Correlation-ID": "c1", "OCPI-from-country-code": "NL", "OCPI-from-party-id": "CPE",
            "OCPI-to-country-code": "DE", "OCPI-to-party-id": "EMD"}
    async with hub.session.get(headers["Location"], headers=auth) as resp:
        status, doc = resp.status, await resp.json()
    assert status == 200 and doc["status_code"] == 1000, doc
    back = doc["data"]
    assert (back["country_code"], back["party_id"], back["id"]) == ("NL", "CPE", "C9"), back
    assert (back["cdr_token"]["country_code"], back["cdr_token"]["party_id"]) == ("DE", "EMD"), back


async def test_a_session_for_a_2_1_1_emsp_embeds_the_location_the_hub_holds(net: Net) -> None:
    """A 2.1.1 Session embeds its Location with only the relevant EVSE and connector (OCPI 2.1.1 mod_sessions); a
    2.2.1 or 2.3.0 Session names only ids. The Location the hub holds for that CPO fills it in (docs/versions.md,
    "Sessions")."""
    hub = net.hub
    status, _, doc = await net.cpo230.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPE/LOC9", to=HUB,
                                           json=location_230("LOC9"))
    assert status == 200, doc
    await one(net.emsp211, "PUT", "/locations/NL/CPE/LOC9")
    session = {"country_code": "NL", "party_id": "CPE", "id": "S9", "start_date_time": NOW, "kwh": 1.0,
               "cdr_token": {"country_code": "DE", "party_id": "EMD", "uid": "AA11", "type": "RFID",
                             "contract_id": "DE8EMDC0001"},
               "auth_method": "WHITELIST", "location_id": "LOC9", "evse_uid": "3256", "connector_id": "1",
               "currency": "EUR", "status": "ACTIVE", "last_updated": NOW}
    status, _, doc = await net.cpo230.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPE/S9",
                                           to=Party("DE", "EMD", "EMSP"), json=session)
    assert status == 200 and doc["status_code"] == 1000, doc
    location = (await one(net.emsp211, "PUT", "/sessions/NL/CPE/S9")).json()["location"]
    assert (location["id"], location["address"], location["city"], location["type"]) == (
        "LOC9", "Main 1", "Gent", "ON_STREET"), location
    [evse] = location["evses"]
    [connector] = evse["connectors"]
    assert (evse["uid"], evse["status"], connector["id"], connector["standard"], connector["voltage"]) == (
        "3256", "AVAILABLE", "1", "IEC_62196_T2", 220), location


async def test_real_time_authorization_between_a_2_1_1_cpo_and_a_2_2_1_emsp(net: Net) -> None:
    hub = net.hub

    async def authorize(request: Any, rec: Received) -> Any:
        from aiohttp import web
        return web.json_response(envelope({"allowed": "ALLOWED", "token": token_221(),
                                           "authorization_reference": "REF-1"}))

    net.emsp221.responder = authorize
    await net.emsp221.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678", to=HUB,
                           json=token_221())
    await one(net.cpo211, "PUT", "/tokens/DE/EMB/012345678")
    status, _, doc = await net.cpo211.call(hub.session, "POST", "tokens", "SENDER", "012345678/authorize",
                                           json={"location_id": "LOC1", "evse_uids": ["3256"]})
    assert status == 200 and doc["status_code"] == 1000, doc
    asked = await one(net.emsp221, "POST", "/tokens/012345678/authorize")
    assert asked.headers["OCPI-from-party-id"] == "CPA" and asked.headers["OCPI-to-party-id"] == "EMB"
    assert asked.json() == {"location_id": "LOC1", "evse_uids": ["3256"]}
    # the 2.2.1 AuthorizationInfo, in 2.1.1: no token, no authorization_reference
    assert doc["data"]["allowed"] == "ALLOWED" and "token" not in doc["data"], doc


async def test_a_2_3_0_cpo_authorizing_a_2_1_1_emsps_token_gets_the_token_the_emsp_pushed(net: Net) -> None:
    """A 2.1.1 AuthorizationInfo names no token, which 2.2.1 and 2.3.0 require; the hub hands over the stored 2.1.1
    Token (docs/versions.md, "Tokens"), so the CPO learns the contract id its Session and CDR must carry."""
    hub = net.hub

    async def authorize(request: Any, rec: Received) -> Any:
        from aiohttp import web
        return web.json_response(envelope({"allowed": "ALLOWED"}))

    net.emsp211.responder = authorize
    token_211 = {"uid": "AA11", "type": "RFID", "auth_id": "DE8EMDC0001", "issuer": "eMSP D", "valid": True,
                 "whitelist": "ALLOWED", "last_updated": NOW}
    status, _, doc = await net.emsp211.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMD/AA11", json=token_211)
    assert status == 200, doc
    await one(net.cpo230, "PUT", "/tokens/DE/EMD/AA11")
    status, _, doc = await net.cpo230.call(hub.session, "POST", "tokens", "SENDER", "AA11/authorize",
                                           to=Party("DE", "EMD", "EMSP"), json={"location_id": "LOC9"})
    assert status == 200 and doc["status_code"] == 1000, doc
    token = doc["data"]["token"]
    assert (token["uid"], token["contract_id"], token["issuer"]) == ("AA11", "DE8EMDC0001", "eMSP D"), token
    assert (token["country_code"], token["party_id"], token["whitelist"]) == ("DE", "EMD", "ALLOWED"), token


async def test_a_2_1_1_cpo_authorizes_an_app_user_token_it_got_as_other(net: Net) -> None:
    """Token types 2.1.1 lacks reach a 2.1.1 CPO as OTHER "so they still flow" (docs/versions.md, "Tokens"); its
    real-time authorization of such a token (OCPI 2.1.1 mod_tokens, ``?type=OTHER``) reaches the eMSP with the
    type the eMSP gave the token."""
    hub = net.hub

    async def authorize(request: Any, rec: Received) -> Any:
        from aiohttp import web
        return web.json_response(envelope({"allowed": "ALLOWED", "token": {**token_221("APP1"), "type": "APP_USER"}}))

    net.emsp221.responder = authorize
    status, _, doc = await net.emsp221.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/APP1", to=HUB,
                                            query="type=APP_USER", json={**token_221("APP1"), "type": "APP_USER"})
    assert status == 200, doc
    assert (await one(net.cpo211, "PUT", "/tokens/DE/EMB/APP1")).json()["type"] == "OTHER"
    status, _, doc = await net.cpo211.call(hub.session, "POST", "tokens", "SENDER", "APP1/authorize",
                                           query="type=OTHER", json={"location_id": "LOC1"})
    assert status == 200 and doc["status_code"] == 1000 and doc["data"]["allowed"] == "ALLOWED", doc
    asked = await one(net.emsp221, "POST", "/tokens/APP1/authorize")
    assert asked.query == "type=APP_USER", asked.query


async def test_start_session_from_a_2_1_1_emsp_and_its_async_result_from_a_2_3_0_cpo(net: Net) -> None:
    hub = net.hub
    status, _, doc = await net.cpo230.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPE/LOC9",
                                           to=HUB, json=location_230("LOC9"))
    assert status == 200, doc
    await eventually(lambda: got(net.emsp211, "PUT", "/locations/NL/CPE/LOC9"), "the location reaching eMSP D")

    async def accept(request: Any, rec: Received) -> Any:
        from aiohttp import web
        return web.json_response(envelope({"result": "ACCEPTED", "timeout": 30}))

    net.cpo230.responder = accept
    command = {"response_url": f"{net.emsp211.base_url}/ocpi/2.1.1/commands/START_SESSION/77",
               "token": {"uid": "TOK1", "type": "RFID", "auth_id": "DE8EMDC0001", "issuer": "eMSP D",
                         "valid": True, "whitelist": "ALLOWED", "last_updated": NOW},
               "location_id": "LOC9", "evse_uid": "3256"}
    status, _, doc = await net.emsp211.call(hub.session, "POST", "commands", "RECEIVER", "START_SESSION",
                                            json=command)
    assert status == 200 and doc["status_code"] == 1000, doc
    assert doc["data"]["result"] == "ACCEPTED" and "timeout" not in doc["data"], "a 2.1.1 CommandResponse"
    sent = (await one(net.cpo230, "POST", "/commands/START_SESSION")).json()
    assert sent["location_id"] == "LOC9" and sent["token"]["country_code"] == "DE", sent
    assert sent["response_url"].startswith(f"{hub.url}/ocpi/2.2.1/callbacks/"), "a hub URL, not the eMSP's"

    # the 2.3.0 CPO posts its CommandResult to the hub URL; the 2.1.1 eMSP gets a 2.1.1 CommandResponse
    status, doc = await post_as(net.cpo230, hub, sent["response_url"], {"result": "ACCEPTED"},
                                to=Party("DE", "EMD", "EMSP"))
    assert status == 200, doc
    result = await one(net.emsp211, "POST", "/commands/START_SESSION/77")
    assert result.json() == {"result": "ACCEPTED"}, result.json()
    assert result.headers["Authorization"] == f"Token {net.emsp211.token_b}"


async def test_a_command_the_2_1_1_cpo_lacks_is_answered_not_supported_by_the_hub(net: Net) -> None:
    """OCPI 2.1.1 has no CANCEL_RESERVATION: the hub answers NOT_SUPPORTED, as docs/versions.md ("Commands") says."""
    hub = net.hub
    command = {"response_url": f"{net.emsp221.base_url}/ocpi/2.2.1/sender/commands/CANCEL_RESERVATION/5",
               "reservation_id": "7"}
    status, _, doc = await net.emsp221.call(hub.session, "POST", "commands", "RECEIVER", "CANCEL_RESERVATION",
                                            to=Party("NL", "CPA", "CPO"), json=command)
    assert status == 200 and doc["status_code"] == 1000, doc
    assert doc["data"]["result"] == "NOT_SUPPORTED" and isinstance(doc["data"]["timeout"], int), doc
    assert not got(net.cpo211, "POST", "/commands/"), "nothing is sent to the 2.1.1 CPO"


async def test_charging_preferences_for_a_2_1_1_cpo_are_404_2001_as_for_an_evse_that_cannot_take_them(
        net: Net) -> None:
    """OCPI 2.2.1 mod_sessions: preferences for an EVSE without CHARGING_PREFERENCES_CAPABLE get HTTP 404 and
    2001; no 2.1.1 EVSE has that capability (docs/versions.md, "Sessions")."""
    hub = net.hub
    status, _, doc = await net.emsp221.call(hub.session, "PUT", "sessions", "SENDER", "S1/charging_preferences",
                                            to=Party("NL", "CPA", "CPO"), json={"profile_type": "FAST"})
    assert status == 404 and doc["status_code"] == 2001, doc
    assert not got(net.cpo211, "PUT", "/sessions/"), "nothing is sent to the 2.1.1 CPO"


async def test_tariffs_with_prices_both_ways_between_2_3_0_and_2_1_1(net: Net) -> None:
    hub = net.hub
    status, _, doc = await net.cpo230.call(hub.session, "PUT", "tariffs", "RECEIVER", "NL/CPE/T1",
                                           to=HUB, json=tariff_230())
    assert status == 200, doc
    at_221 = (await one(net.emsp221, "PUT", "/tariffs/NL/CPE/T1")).json()
    assert at_221["min_price"] == {"excl_vat": 1.0, "incl_vat": 1.21} and "tax_included" not in at_221, at_221
    at_211 = (await one(net.emsp211, "PUT", "/tariffs/NL/CPE/T1")).json()
    assert "min_price" not in at_211 and "country_code" not in at_211, at_211
    assert at_211["elements"][0]["price_components"][0]["price"] == 0.30, at_211
    at_230 = (await one(net.emsp230, "PUT", "/tariffs/NL/CPE/T1")).json()
    assert at_230 == tariff_230(), "same version: byte for byte"

    # and back: a 2.1.1 CPO's tariff reaches the 2.3.0 eMSP with a 2.3.0 Price shape where one applies
    tariff_211 = {"id": "T2", "currency": "EUR", "elements": [{"price_components": [
        {"type": "TIME", "price": 2.0, "step_size": 300}]}], "last_updated": NOW}
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "tariffs", "RECEIVER", "NL/CPA/T2", json=tariff_211)
    assert status == 200, doc
    up = (await one(net.emsp230, "PUT", "/tariffs/NL/CPA/T2")).json()
    assert (up["country_code"], up["party_id"], up["id"]) == ("NL", "CPA", "T2"), up
    assert up["elements"][0]["price_components"][0]["price"] == 2.0, up
    reports = translations(await records(hub, module="tariffs"))
    dropped = {loss["field"] for r in reports if r["to"] == "2.1.1" for loss in r["losses"]}
    assert "min_price" in dropped, reports


async def test_a_2_1_1_tariff_patch_reaches_2_1_1_emsps_as_a_patch_and_the_others_as_a_put(net: Net) -> None:
    """OCPI 2.1.1 mod_tariffs, eMSP interface: PATCH; 2.2.1 and 2.3.0 have none (docs/versions.md, "Tariffs")."""
    hub = net.hub
    [example] = [p for p in ocpi_examples("2.1.1") if p.name == "tariff_patch_example.json"]
    patch = json.loads(example.read_text())  # "Change Tariff to 2,50"
    tariff_211 = {"id": "T2", "currency": "EUR", "elements": [{"price_components": [
        {"type": "TIME", "price": 2.0, "step_size": 300}]}], "last_updated": NOW}
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "tariffs", "RECEIVER", "NL/CPA/T2", json=tariff_211)
    assert status == 200, doc
    for p in (net.emsp211, net.emsp221, net.emsp230):
        await one(p, "PUT", "/tariffs/NL/CPA/T2")
    status, _, doc = await net.cpo211.call(hub.session, "PATCH", "tariffs", "RECEIVER", "NL/CPA/T2", json=patch)
    assert status == 200 and doc["status_code"] == 1000, doc
    assert (await one(net.emsp211, "PATCH", "/tariffs/NL/CPA/T2")).json() == patch, "2.1.1 to 2.1.1 as sent"
    for p in (net.emsp221, net.emsp230):
        second = await eventually(lambda p=p: got(p, "PUT", "/tariffs/NL/CPA/T2")[1:], f"{p.name}: the PUT")
        body = second[0].json()
        assert (body["country_code"], body["party_id"], body["id"], body["currency"]) == ("NL", "CPA", "T2", "EUR")
        assert isinstance(body["last_updated"], str), "a whole 2.2.1/2.3.0 Tariff has last_updated"
        assert body["elements"][0]["price_components"][0]["price"] == 2.5, body
    assert not got(net.emsp221, "PATCH", "/tariffs/") and not got(net.emsp230, "PATCH", "/tariffs/")
    # GET All shows the patched tariff
    status, _, doc = await net.emsp211.call(hub.session, "GET", "tariffs", "SENDER")
    assert status == 200 and [t["elements"] for t in doc["data"] if t["id"] == "T2"] == [patch["elements"]], doc
    # a PATCH of a tariff the hub never got whole: the 2.1.1 eMSP gets it, the others cannot, and the CPO learns so
    status, _, doc = await net.cpo211.call(hub.session, "PATCH", "tariffs", "RECEIVER", "NL/CPA/T9", json=patch)
    assert status == 200 and doc["status_code"] == 1000, doc
    assert "accepted for 1 receivers" in doc["status_message"] and "not sent to OCPI 2.2.1" in doc["status_message"]
    await one(net.emsp211, "PATCH", "/tariffs/NL/CPA/T9")


async def test_a_2_1_1_patch_without_last_updated_does_not_make_the_next_put_look_older(net: Net) -> None:
    """OCPI 2.1.1 PATCHes need no last_updated (the official "invalidate a Token" example has none). The time the
    hub received one is filled in for 2.2.1, but it is not the object's version: an eMSP whose clock is a few
    seconds behind the hub's must still get its next PUT to every CPO (docs/store-and-forward.md, "Never older
    over newer", compares the versions the sender gave)."""
    hub = net.hub
    token_211 = await _token_put_and_patched_211(net, "AA11", "RFID")
    for p in (net.cpo211, net.cpo230):
        await one(p, "PATCH", "/tokens/DE/EMD/AA11")
    behind = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    again = {**token_211, "valid": True, "last_updated": behind}  # the card is valid again, 5 s by its clock
    status, _, doc = await net.emsp211.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMD/AA11", json=again)
    assert status == 200 and "accepted for 2 receivers" in doc["status_message"], doc
    for p in (net.cpo211, net.cpo230):
        puts = await eventually(lambda p=p: got(p, "PUT", "/tokens/DE/EMD/AA11")[1:], f"{p.name}: the second PUT")
        assert puts[0].json()["last_updated"] == behind


async def test_a_2_1_1_session_patch_without_last_updated_does_not_hold_back_the_next_put_kept_for_later(
        net: Net) -> None:
    """The same for a direct push the hub accepts for later delivery (docs/store-and-forward.md)."""
    hub = net.hub
    _, view = await hub.admin("GET", "/admin/platforms")
    [emsp_id] = [v["id"] for v in view if v["name"] == net.emsp221.name]
    status, body = await hub.admin("PUT", f"/admin/platforms/{emsp_id}/store-and-forward", {"modules": ["sessions"]})
    assert status == 200, body
    await net.emsp221.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678", to=HUB, json=token_221())
    await one(net.cpo211, "PUT", "/tokens/DE/EMB/012345678")
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", json=session_211())
    assert status == 200, doc
    status, _, doc = await net.cpo211.call(hub.session, "PATCH", "sessions", "RECEIVER", "NL/CPA/S1",
                                           json={"kwh": 5.5})
    assert status == 200, doc
    await one(net.emsp221, "PATCH", "/sessions/NL/CPA/S1")
    behind = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1",
                                           json={**session_211(), "kwh": 7.0, "last_updated": behind})
    assert status == 200 and doc["status_code"] == 1000, doc
    puts = await eventually(lambda: got(net.emsp221, "PUT", "/sessions/NL/CPA/S1")[1:], "the second PUT")
    assert puts[0].json()["kwh"] == 7.0


async def test_a_2_1_1_emsps_other_token_keeps_its_type_in_patches_and_at_newer_cpos(net: Net) -> None:
    """OCPI 2.1.1 names a token by its uid alone; 2.2.1 and 2.3.0 by uid and ``?type=`` (default RFID). A 2.1.1
    eMSP's OTHER token and its PATCH (the official "invalidate a Token" example, no type) reach newer CPOs with
    ``type=OTHER`` and change the hub's copy that GET All serves."""
    hub = net.hub
    await _token_put_and_patched_211(net, "OT1", "OTHER")
    assert (await one(net.cpo230, "PUT", "/tokens/DE/EMD/OT1")).query == "type=OTHER"
    assert (await one(net.cpo230, "PATCH", "/tokens/DE/EMD/OT1")).query == "type=OTHER"
    assert (await one(net.cpo211, "PATCH", "/tokens/DE/EMD/OT1")).query == "", "2.1.1: as sent"
    status, _, doc = await net.cpo211.call(hub.session, "GET", "tokens", "SENDER")
    assert status == 200 and [(t["uid"], t["valid"]) for t in doc["data"]] == [("OT1", False)], doc


async def test_a_2_1_1_partner_never_gets_hubclientinfo_and_modules_its_version_lacks(net: Net) -> None:
    hub = net.hub
    late = partner("eMSP late", Party("DE", "EML", "EMSP"), "2.2.1")
    await hub.connect(late)
    await eventually(lambda: [r for r in net.emsp221.received if "/hubclientinfo" in r.path], "a ClientInfo push")
    assert not [r for r in net.cpo211.received + net.emsp211.received if "hubclientinfo" in r.path]
    # chargingprofiles does not exist in 2.1.1: a 2.2.1 sender learns why, nothing is sent
    status, _, doc = await net.emsp221.call(hub.session, "GET", "chargingprofiles", "RECEIVER", "S1",
                                            to=Party("NL", "CPA", "CPO"), query="duration=60&response_url=x")
    assert status == 404 and doc["status_code"] == 4001 and "2.1.1" in doc["status_message"], doc
    # a 2.3.0 module reaches a 2.3.0 receiver by its headers, and not a 2.2.1 one
    status, _, doc = await net.cpo230.call(hub.session, "GET", "invoicereconciliation", "RECEIVER",
                                           "DE/EMC/INV1", to=Party("DE", "EMC", "EMSP"))
    assert status == 200, doc
    assert got(net.emsp230, "GET", "/invoicereconciliation/DE/EMC/INV1")
    # the 2.3.0 modules are modules of their own in the audit and the metrics, not "other"
    status, found = await hub.admin("GET", "/admin/audit?module=invoicereconciliation")
    assert status == 200 and found and all(r["module"] == "invoicereconciliation" for r in found), found
    assert await metric(hub, "ocpi_hub_requests_total", module="invoicereconciliation") >= 1
    status, _, doc = await net.cpo230.call(hub.session, "GET", "invoicereconciliation", "RECEIVER",
                                           "DE/EMB/INV1", to=Party("DE", "EMB", "EMSP"))
    assert status == 404 and "2.2.1" in doc["status_message"], doc


async def test_a_2_1_1_emsp_token_push_reaches_cpos_and_a_2_1_1_cpo_pulls_tokens_in_2_1_1(net: Net) -> None:
    hub = net.hub
    token_211 = {"uid": "AA11", "type": "RFID", "auth_id": "DE8EMDC0001", "issuer": "eMSP D", "valid": True,
                 "whitelist": "ALLOWED", "last_updated": NOW}
    status, _, doc = await net.emsp211.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMD/AA11", json=token_211)
    assert status == 200 and "accepted for 2 receivers" in doc["status_message"], doc
    at_230 = (await one(net.cpo230, "PUT", "/tokens/DE/EMD/AA11")).json()
    assert (at_230["country_code"], at_230["party_id"], at_230["contract_id"]) == ("DE", "EMD", "DE8EMDC0001")
    assert (await one(net.cpo211, "PUT", "/tokens/DE/EMD/AA11")).json() == token_211, "2.1.1 to 2.1.1 as sent"
    # GET All of tokens for the 2.1.1 CPO: the 2.2.1 eMSP's token too, in 2.1.1 form
    await net.emsp221.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678", to=HUB, json=token_221())
    status, _, doc = await net.cpo211.call(hub.session, "GET", "tokens", "SENDER")
    assert status == 200, doc
    by_uid = {t["uid"]: t for t in doc["data"]}
    assert by_uid["AA11"] == token_211 and by_uid["012345678"]["auth_id"] == "DE8EMBC12345678", doc
    assert "country_code" not in by_uid["012345678"], doc


async def _token_put_and_patched_211(net: Net, uid: str, token_type: str) -> dict[str, Any]:
    """A 2.1.1 eMSP's Token PUT, then the official 2.1.1 PATCH example (``{"valid": false}``, no last_updated), both
    accepted by the hub; the Token as PUT."""
    [example] = [p for p in ocpi_examples("2.1.1") if p.name == "token_patch_example.json"]
    patch = json.loads(example.read_text())
    assert patch == {"valid": False}
    token_211 = {"uid": uid, "type": token_type, "auth_id": "DE8EMDC0001", "issuer": "eMSP D", "valid": True,
                 "whitelist": "ALLOWED", "last_updated": NOW}
    for method, body in (("PUT", token_211), ("PATCH", patch)):
        status, _, doc = await net.emsp211.call(net.hub.session, method, "tokens", "RECEIVER", f"DE/EMD/{uid}",
                                                json=body)
        assert status == 200, doc
    return token_211


async def test_a_2_1_1_cpos_tariff_delete_reaches_every_emsp_and_leaves_get_all(net: Net) -> None:
    """OCPI 2.1.1 mod_tariffs, eMSP interface: ``DELETE {country_code}/{party_id}/{tariff_id}``. A 2.1.1 CPO cannot
    address one party, so its DELETE goes where its PUT went: every eMSP, each in its version (docs/versions.md,
    "Routing across versions"); and the hub's copy is forgotten, so GET All no longer lists it."""
    hub = net.hub
    tariff_211 = {"id": "T2", "currency": "EUR", "elements": [{"price_components": [
        {"type": "TIME", "price": 2.0, "step_size": 300}]}], "last_updated": NOW}
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "tariffs", "RECEIVER", "NL/CPA/T2", json=tariff_211)
    assert status == 200, doc
    for p in (net.emsp211, net.emsp221, net.emsp230):
        await one(p, "PUT", "/tariffs/NL/CPA/T2")
    status, _, doc = await net.cpo211.call(hub.session, "DELETE", "tariffs", "RECEIVER", "NL/CPA/T2")
    assert status == 200 and doc["status_code"] == 1000, doc
    assert "accepted for 3 receivers" in doc["status_message"], doc
    at_211 = await one(net.emsp211, "DELETE", "/tariffs/NL/CPA/T2")
    assert not any(h in at_211.headers for h in ROUTING), "a 2.1.1 receiver gets no routing headers"
    for p in (net.emsp221, net.emsp230):
        rec = await one(p, "DELETE", "/tariffs/NL/CPA/T2")
        assert rec.headers["OCPI-from-party-id"] == "HUB" and rec.headers["OCPI-to-party-id"] == p.party.party_id
        assert not rec.body, "a DELETE carries no body"
    status, _, doc = await net.emsp211.call(hub.session, "GET", "tariffs", "SENDER")
    assert status == 200 and doc["data"] == [], doc
    status, headers, doc = await net.emsp221.call(hub.session, "GET", "tariffs", "SENDER", to=HUB)
    assert status == 200 and doc["data"] == [] and headers["X-Total-Count"] == "0", doc


async def test_a_2_1_1_cpos_tariff_delete_past_the_tariff_is_refused(net: Net) -> None:
    """``DELETE {country_code}/{party_id}/{tariff_id}`` and nothing below it (OCPI 2.1.1 mod_tariffs): a longer path
    names no tariff; fanned out, every eMSP would get a URL of the sender's making and the hub's copy would stay."""
    status, _, doc = await net.cpo211.call(net.hub.session, "DELETE", "tariffs", "RECEIVER", "NL/CPA/T2/extra")
    assert (status, doc["status_code"]) == (400, 2001), doc
    await asyncio.sleep(0.3)
    assert not any(r.method == "DELETE" for p in (net.emsp211, net.emsp221, net.emsp230) for r in p.received)


async def test_a_2_1_1_patch_without_last_updated_is_found_by_date_from_in_get_all_and_catch_up(net: Net) -> None:
    """A 2.1.1 PATCH need not carry last_updated; the hub sends 2.2.1 and 2.3.0 receivers the time it received it
    (docs/versions.md). Its copies for GET All and catch-up show that time too, so a partner syncing with
    ``date_from`` (OCPI 2.2.1 Pagination) finds the changed object."""
    hub = net.hub
    await _token_put_and_patched_211(net, "AA11", "RFID")
    stamp = (await one(net.cpo230, "PATCH", "/tokens/DE/EMD/AA11")).json()["last_updated"]
    assert stamp > NOW, stamp
    status, _, doc = await net.cpo230.call(hub.session, "GET", "tokens", "SENDER", to=HUB, query=f"date_from={stamp}")
    assert status == 200, doc
    assert [(t["uid"], t["valid"], t["last_updated"]) for t in doc["data"]] == [("AA11", False, stamp)], doc
    status, _, doc = await net.cpo211.call(hub.session, "GET", "tokens", "SENDER", query=f"date_from={stamp}")
    assert status == 200 and [(t["uid"], t["last_updated"]) for t in doc["data"]] == [("AA11", stamp)], doc

    # a 2.1.1 CPO's Session PATCH without last_updated, in the 2.2.1 eMSP's catch-up
    await net.emsp221.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678", to=HUB, json=token_221())
    await one(net.cpo211, "PUT", "/tokens/DE/EMB/012345678")
    status, _, doc = await net.cpo211.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", json=session_211())
    assert status == 200, doc
    status, _, doc = await net.cpo211.call(hub.session, "PATCH", "sessions", "RECEIVER", "NL/CPA/S1",
                                           json={"kwh": 5.5})
    assert status == 200, doc
    stamp = (await one(net.emsp221, "PATCH", "/sessions/NL/CPA/S1")).json()["last_updated"]
    status, _, doc = await net.emsp221.call(hub.session, "GET", "sessions", "SENDER", to=HUB,
                                            query=f"date_from={stamp}")
    assert status == 200, doc
    assert [(s["id"], s["kwh"], s["last_updated"]) for s in doc["data"]] == [("S1", 5.5, stamp)], doc
