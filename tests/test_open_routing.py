"""Open routing (OCPI 2.2.1 Open Routing Request): requests without OCPI-to-* headers reach the party the hub learned
from
earlier traffic — token owners for real-time authorization, location/session/reservation owners for commands and
charging profiles, ``cdr_token`` for sessions and CDRs — and the receiver sees the TO headers the hub filled in.
When the hub cannot decide it says why (4001), and a GET list without TO headers is refused (2001).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.conftest import HubHarness, cpo, emsp
from tests.partners import FakePartner, Party, Received, default_responder, envelope

TS = "2024-05-01T10:00:00Z"
HUB = Party("NL", "HUB", "HUB")
RESPONSE_URL = "http://127.0.0.1/ocpi/emsp/2.2.1/commands/77"


def token(owner: Party, uid: str = "TOK1", token_type: str = "RFID") -> dict[str, Any]:
    return {"country_code": owner.country_code, "party_id": owner.party_id, "uid": uid, "type": token_type,
            "contract_id": f"{owner.country_code}-{owner.party_id}-C1", "issuer": "Beta", "valid": True,
            "whitelist": "ALLOWED", "last_updated": TS}


def location(owner: Party, loc_id: str = "LOC1") -> dict[str, Any]:
    return {"country_code": owner.country_code, "party_id": owner.party_id, "id": loc_id, "publish": True,
            "address": "Stationsplein 1", "city": "Amsterdam", "country": "NLD",
            "coordinates": {"latitude": "52.379189", "longitude": "4.899431"}, "time_zone": "Europe/Amsterdam",
            "last_updated": TS}


def session(owner: Party, emsp_party: Party, session_id: str = "S1") -> dict[str, Any]:
    return {"country_code": owner.country_code, "party_id": owner.party_id, "id": session_id,
            "start_date_time": TS, "kwh": 0.0,
            "cdr_token": {"country_code": emsp_party.country_code, "party_id": emsp_party.party_id, "uid": "TOK1",
                          "type": "RFID", "contract_id": "DE-EMA-C1"},
            "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": "EVSE1", "connector_id": "1",
            "currency": "EUR", "status": "ACTIVE", "last_updated": TS}


def cdr(owner: Party, emsp_party: Party, cdr_id: str = "CDR1") -> dict[str, Any]:
    doc = session(owner, emsp_party, cdr_id)
    return {"country_code": owner.country_code, "party_id": owner.party_id, "id": cdr_id, "start_date_time": TS,
            "end_date_time": TS, "cdr_token": doc["cdr_token"], "auth_method": "WHITELIST", "currency": "EUR",
            "charging_periods": [], "total_cost": {"excl_vat": 1.5}, "total_energy": 3.25, "total_time": 0.5,
            "last_updated": TS}


def received(partner: FakePartner, method: str, path_part: str) -> list[Received]:
    return [r for r in partner.received if r.method == method and path_part in r.path]


def assert_routed(rec: Received, to: Party, from_: Party) -> None:
    """The receiver sees TO filled in by the hub and the caller's FROM."""
    assert (rec.headers.get("OCPI-to-country-code"), rec.headers.get("OCPI-to-party-id")) == (
        to.country_code, to.party_id), dict(rec.headers)
    assert (rec.headers.get("OCPI-from-country-code"), rec.headers.get("OCPI-from-party-id")) == (
        from_.country_code, from_.party_id), dict(rec.headers)


def assert_answered_by(headers: Any, party: Party) -> None:
    assert (headers.get("OCPI-from-country-code"), headers.get("OCPI-from-party-id")) == (
        party.country_code, party.party_id), dict(headers)


def swapped(request: web.Request) -> dict[str, str]:
    """Routing headers of an answer: TO = the requester, FROM = this party (as the default responder does)."""
    pairs = (("OCPI-from-country-code", "OCPI-to-country-code"), ("OCPI-from-party-id", "OCPI-to-party-id"),
             ("OCPI-to-country-code", "OCPI-from-country-code"), ("OCPI-to-party-id", "OCPI-from-party-id"))
    return {dst: request.headers[src] for src, dst in pairs if src in request.headers}


async def command_responder(request: web.Request, rec: Received) -> web.StreamResponse:
    """A CPO accepting every command; other requests get the default echo."""
    if "/commands/" in rec.path:
        return web.json_response(envelope({"result": "ACCEPTED", "timeout": 30}), headers=swapped(request))
    return await default_responder(request, rec)


@pytest.fixture
async def parties(hub: HubHarness) -> tuple[FakePartner, FakePartner, FakePartner, FakePartner]:
    """Two CPOs (NL/CPA, NL/CPB) and two eMSPs (DE/EMA, DE/EMB), all CONNECTED."""
    cpa, cpb = cpo(), cpo(name="Other CPO", pid="CPB")
    ema, emb = emsp(), emsp(name="Other eMSP", pid="EMB")
    for partner in (cpa, cpb):
        partner.responder = command_responder
    for partner in (cpa, cpb, ema, emb):
        await hub.connect(partner)
    return cpa, cpb, ema, emb


# -- tokens: real-time authorization ---------------------------------------------------------------------------

@pytest.mark.parametrize("pushed", ["direct", "broadcast"])
async def test_authorize_without_to_reaches_the_emsp_that_pushed_the_token(
        hub: HubHarness, parties: tuple[FakePartner, ...], pushed: str) -> None:
    cpa, _, ema, emb = parties
    to = cpa.party if pushed == "direct" else HUB
    status, _, doc = await emb.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/TOK7", to=to,
                                    json=token(emb.party, "TOK7"))
    assert status == 200, doc
    status, headers, doc = await cpa.call(hub.session, "POST", "tokens", "SENDER", "TOK7/authorize",
                                          json={"location_id": "LOC1"})
    assert status == 200 and doc["status_code"] == 1000, doc
    assert_answered_by(headers, emb.party)
    [rec] = received(emb, "POST", "/authorize")
    assert rec.path == "/ocpi/2.2.1/sender/tokens/TOK7/authorize"
    assert_routed(rec, to=emb.party, from_=cpa.party)
    assert received(ema, "POST", "/authorize") == []


async def test_authorize_distinguishes_token_types(hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, _ = parties
    status, _, doc = await ema.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/APP9", to=cpa.party,
                                    query="type=APP_USER", json=token(ema.party, "APP9", "APP_USER"))
    assert status == 200, doc
    status, _, doc = await cpa.call(hub.session, "POST", "tokens", "SENDER", "APP9/authorize",
                                    query="type=APP_USER")
    assert status == 200, doc
    assert [r.query for r in received(ema, "POST", "/authorize")] == ["type=APP_USER"]
    # The same uid as RFID (the default type) was never pushed: nobody to ask.
    status, _, doc = await cpa.call(hub.session, "POST", "tokens", "SENDER", "APP9/authorize")
    assert status == 404 and doc["status_code"] == 4001, doc
    assert "APP9" in doc["status_message"]


# -- commands ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pushed", ["direct", "broadcast"])
async def test_start_session_reaches_the_cpo_of_the_location(
        hub: HubHarness, parties: tuple[FakePartner, ...], pushed: str) -> None:
    cpa, cpb, ema, _ = parties
    to = ema.party if pushed == "direct" else HUB
    status, _, doc = await cpb.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPB/LOC5", to=to,
                                    json=location(cpb.party, "LOC5"))
    assert status == 200, doc
    body = {"response_url": RESPONSE_URL, "token": token(ema.party), "location_id": "LOC5"}
    status, headers, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "START_SESSION", json=body)
    assert status == 200 and doc["data"]["result"] == "ACCEPTED", doc
    assert_answered_by(headers, cpb.party)
    [rec] = received(cpb, "POST", "/commands/")
    assert rec.path == "/ocpi/2.2.1/receiver/commands/START_SESSION"
    assert_routed(rec, to=cpb.party, from_=ema.party)
    assert rec.json()["location_id"] == "LOC5"
    assert received(cpa, "POST", "/commands/") == []


async def test_ids_are_matched_case_insensitively(hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    """Location ids and token uids are CiString: the hub finds them whatever their case (OCPI 2.2.1 types)."""
    cpa, _, ema, _ = parties
    status, _, doc = await cpa.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/Loc-Mixed", to=HUB,
                                    json=location(cpa.party, "Loc-Mixed"))
    assert status == 200, doc
    status, _, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "START_SESSION",
                                    json={"response_url": RESPONSE_URL, "token": token(ema.party),
                                          "location_id": "LOC-MIXED"})
    assert status == 200, doc
    status, _, doc = await ema.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/abc123", to=HUB,
                                    json=token(ema.party, "abc123"))
    assert status == 200, doc
    status, _, doc = await cpa.call(hub.session, "POST", "tokens", "SENDER", "ABC123/authorize", query="type=rfid")
    assert status == 200, doc
    assert [r.path for r in received(ema, "POST", "/authorize")] == ["/ocpi/2.2.1/sender/tokens/ABC123/authorize"]


async def test_stop_session_reaches_the_cpo_of_the_session(hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, cpb, ema, _ = parties
    status, _, doc = await cpb.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPB/S42", to=ema.party,
                                    json=session(cpb.party, ema.party, "S42"))
    assert status == 200, doc
    status, headers, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "STOP_SESSION",
                                          json={"response_url": RESPONSE_URL, "session_id": "S42"})
    assert status == 200, doc
    assert_answered_by(headers, cpb.party)
    [rec] = received(cpb, "POST", "/commands/STOP_SESSION")
    assert_routed(rec, to=cpb.party, from_=ema.party)
    assert received(cpa, "POST", "/commands/") == []


async def test_cancel_reservation_reaches_the_cpo_that_took_the_reservation(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, cpb, ema, _ = parties
    reserve = {"response_url": RESPONSE_URL, "token": token(ema.party), "expiry_date": TS, "reservation_id": "R1",
               "location_id": "LOC-UNKNOWN-TO-HUB"}
    status, _, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "RESERVE_NOW", to=cpb.party,
                                    json=reserve)
    assert status == 200, doc
    status, headers, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "CANCEL_RESERVATION",
                                          json={"response_url": RESPONSE_URL, "reservation_id": "R1"})
    assert status == 200, doc
    assert_answered_by(headers, cpb.party)
    [rec] = received(cpb, "POST", "/commands/CANCEL_RESERVATION")
    assert_routed(rec, to=cpb.party, from_=ema.party)
    assert received(cpa, "POST", "/commands/") == []


# -- sessions and CDRs: the eMSP named in cdr_token -----------------------------------------------------------------

async def test_session_put_and_cdr_post_reach_the_emsp_of_the_cdr_token(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, emb = parties
    status, headers, doc = await cpa.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1",
                                          json=session(cpa.party, emb.party))
    assert status == 200, doc
    assert_answered_by(headers, emb.party)
    [rec] = received(emb, "PUT", "/sessions/")
    assert rec.path == "/ocpi/2.2.1/receiver/sessions/NL/CPA/S1"
    assert_routed(rec, to=emb.party, from_=cpa.party)
    status, headers, doc = await cpa.call(hub.session, "POST", "cdrs", "RECEIVER", json=cdr(cpa.party, ema.party))
    assert status == 200, doc
    assert_answered_by(headers, ema.party)
    [rec] = received(ema, "POST", "/cdrs")
    assert_routed(rec, to=ema.party, from_=cpa.party)
    assert received(emb, "POST", "/cdrs") == [] and received(ema, "PUT", "/sessions/") == []


async def test_session_patch_without_cdr_token_follows_what_the_hub_learned(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, emb = parties
    status, _, doc = await cpa.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S2",
                                    json=session(cpa.party, emb.party, "S2"))
    assert status == 200, doc
    status, headers, doc = await cpa.call(hub.session, "PATCH", "sessions", "RECEIVER", "NL/CPA/S2",
                                          json={"kwh": 4.5, "last_updated": TS})
    assert status == 200, doc
    assert_answered_by(headers, emb.party)
    [rec] = received(emb, "PATCH", "/sessions/")
    assert rec.path == "/ocpi/2.2.1/receiver/sessions/NL/CPA/S2"
    assert_routed(rec, to=emb.party, from_=cpa.party)
    assert received(ema, "PATCH", "/sessions/") == []
    # A session the hub never saw: it says which one it cannot place.
    status, _, doc = await cpa.call(hub.session, "PATCH", "sessions", "RECEIVER", "NL/CPA/S404",
                                    json={"kwh": 1.0, "last_updated": TS})
    assert status == 404 and doc["status_code"] == 4001, doc
    assert "S404" in doc["status_message"]


# -- charging profiles: the CPO of the session --------------------------------------------------------------------

@pytest.mark.parametrize(("method", "query", "body"), [
    ("PUT", "", {"response_url": RESPONSE_URL,
                 "charging_profile": {"charging_rate_unit": "W",
                                      "charging_profile_period": [{"start_period": 0, "limit": 11000.0}]}}),
    ("GET", "duration=900&response_url=http%3A%2F%2F127.0.0.1%2Fcp%2F1", None),
    ("DELETE", "response_url=http%3A%2F%2F127.0.0.1%2Fcp%2F2", None),
])
async def test_charging_profiles_reach_the_cpo_of_the_session(
        hub: HubHarness, parties: tuple[FakePartner, ...], method: str, query: str, body: Any) -> None:
    cpa, cpb, ema, _ = parties
    status, _, doc = await cpb.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPB/S7", to=ema.party,
                                    json=session(cpb.party, ema.party, "S7"))
    assert status == 200, doc
    status, headers, doc = await ema.call(hub.session, method, "chargingprofiles", "RECEIVER", "S7", query=query,
                                          json=body)
    assert status == 200, doc
    assert_answered_by(headers, cpb.party)
    [rec] = received(cpb, method, "/chargingprofiles/")
    assert rec.path == "/ocpi/2.2.1/receiver/chargingprofiles/S7"
    assert_routed(rec, to=cpb.party, from_=ema.party)
    assert received(cpa, method, "/chargingprofiles/") == []


async def test_active_profile_push_reaches_the_party_that_set_a_profile(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, emb = parties
    profile = {"charging_rate_unit": "W", "charging_profile_period": [{"start_period": 0, "limit": 7000.0}]}
    status, _, doc = await emb.call(hub.session, "PUT", "chargingprofiles", "RECEIVER", "S8", to=cpa.party,
                                    json={"response_url": RESPONSE_URL, "charging_profile": profile})
    assert status == 200, doc
    active = {"start_date_time": TS, "charging_profile": profile}
    status, headers, doc = await cpa.call(hub.session, "PUT", "chargingprofiles", "SENDER", "S8", json=active)
    assert status == 200, doc
    assert_answered_by(headers, emb.party)
    [rec] = received(emb, "PUT", "/sender/chargingprofiles/")
    assert rec.path == "/ocpi/2.2.1/sender/chargingprofiles/S8"
    assert_routed(rec, to=emb.party, from_=cpa.party)
    assert received(ema, "PUT", "/sender/chargingprofiles/") == []


async def test_charging_preferences_reach_the_cpo_of_the_session(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    _, cpb, ema, _ = parties
    status, _, doc = await cpb.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPB/S9", to=ema.party,
                                    json=session(cpb.party, ema.party, "S9"))
    assert status == 200, doc
    status, headers, doc = await ema.call(hub.session, "PUT", "sessions", "SENDER", "S9/charging_preferences",
                                          json={"profile_type": "FAST", "energy_need": 20.0})
    assert status == 200, doc
    assert_answered_by(headers, cpb.party)
    [rec] = received(cpb, "PUT", "/sender/sessions/")
    assert rec.path == "/ocpi/2.2.1/sender/sessions/S9/charging_preferences"
    assert_routed(rec, to=cpb.party, from_=ema.party)


async def test_location_object_get_reaches_the_cpo_of_the_location(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    _, cpb, ema, _ = parties
    status, _, doc = await cpb.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPB/LOC8", to=HUB,
                                    json=location(cpb.party, "LOC8"))
    assert status == 200, doc
    status, headers, doc = await ema.call(hub.session, "GET", "locations", "SENDER", "LOC8/EVSE1")
    assert status == 200, doc
    assert_answered_by(headers, cpb.party)
    [rec] = received(cpb, "GET", "/sender/locations/")
    assert rec.path == "/ocpi/2.2.1/sender/locations/LOC8/EVSE1"
    assert_routed(rec, to=cpb.party, from_=ema.party)


# -- when the hub cannot decide -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("caller", "method", "module", "role", "tail", "body", "named"), [
    ("cpo", "POST", "tokens", "SENDER", "NEVER-SEEN/authorize", None, "NEVER-SEEN"),
    ("emsp", "POST", "commands", "RECEIVER", "START_SESSION",
     {"response_url": RESPONSE_URL, "location_id": "LOC-NOWHERE"}, "LOC-NOWHERE"),
    ("emsp", "POST", "commands", "RECEIVER", "STOP_SESSION", {"response_url": RESPONSE_URL, "session_id": "S-NONE"},
     "S-NONE"),
    ("emsp", "POST", "commands", "RECEIVER", "CANCEL_RESERVATION",
     {"response_url": RESPONSE_URL, "reservation_id": "R-NONE"}, "R-NONE"),
    ("emsp", "PUT", "chargingprofiles", "RECEIVER", "S-GONE",
     {"response_url": RESPONSE_URL, "charging_profile": {"charging_rate_unit": "W"}}, "S-GONE"),
    ("cpo", "POST", "cdrs", "RECEIVER", "", {"id": "CDR9", "total_energy": 1.0}, "cdr_token"),
], ids=["token", "location", "session", "reservation", "profile-session", "cdr-without-cdr_token"])
async def test_unknown_key_is_4001_naming_why(
        hub: HubHarness, parties: tuple[FakePartner, ...], caller: str, method: str, module: str, role: str,
        tail: str, body: Any, named: str) -> None:
    cpa, cpb, ema, emb = parties
    partner = cpa if caller == "cpo" else ema
    status, _, doc = await partner.call(hub.session, method, module, role, tail, json=body)
    assert status == 404, doc
    assert doc["status_code"] == 4001 and named in doc["status_message"], doc
    assert "OCPI-to" in doc["status_message"], "the error says how to get through: send TO headers"
    assert all(p.received == [] for p in (cpa, cpb, ema, emb))


async def test_a_location_id_known_at_two_cpos_is_ambiguous(hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, cpb, ema, _ = parties
    for partner in (cpa, cpb):
        status, _, doc = await partner.call(hub.session, "PUT", "locations", "RECEIVER",
                                            f"NL/{partner.party.party_id}/LOC9", to=HUB,
                                            json=location(partner.party, "LOC9"))
        assert status == 200, doc
    status, _, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "START_SESSION",
                                    json={"response_url": RESPONSE_URL, "token": token(ema.party),
                                          "location_id": "LOC9"})
    assert status == 404 and doc["status_code"] == 4001, doc
    assert "ambiguous" in doc["status_message"]
    # The answer names no party: it would tell any caller who else holds the key (docs/security.md).
    assert "CPA" not in doc["status_message"] and "CPB" not in doc["status_message"], doc
    assert received(cpa, "POST", "/commands/") == [] and received(cpb, "POST", "/commands/") == []
    # With TO headers the eMSP gets through.
    status, _, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "START_SESSION", to=cpb.party,
                                    json={"response_url": RESPONSE_URL, "token": token(ema.party),
                                          "location_id": "LOC9"})
    assert status == 200, doc


@pytest.mark.parametrize(("caller", "module"), [("emsp", "locations"), ("emsp", "cdrs"), ("cpo", "tokens"),
                                                ("emsp", "tariffs"), ("emsp", "sessions")])
async def test_get_list_without_to_headers_is_2001(
        hub: HubHarness, parties: tuple[FakePartner, ...], caller: str, module: str) -> None:
    cpa, cpb, ema, emb = parties
    partner = cpa if caller == "cpo" else ema
    status, _, doc = await partner.call(hub.session, "GET", module, "SENDER", query="limit=10")
    assert status == 400, doc
    assert doc["status_code"] == 2001 and "TO" in doc["status_message"], doc
    assert all(p.received == [] for p in (cpa, cpb, ema, emb))
