"""OCPI 2.3.0 partners exchanging with 2.2.1 and 2.1.1 ones through the hub (docs/versions.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from hub.context import HUB_KEY
from tests.conftest import HubHarness, MakeHub, cpo, emsp, ocpi_examples
from tests.partners import FakePartner, Party, Received, envelope, ocpi_token
from tests.test_audit import records
from tests.test_clientinfo import eventually
from tests.test_versions_routing import partner, translations


@dataclass
class Net230:
    hub: HubHarness
    cpo211: FakePartner
    cpo221: FakePartner
    cpo230: FakePartner
    emsp211: FakePartner
    emsp221: FakePartner
    emsp230: FakePartner


@pytest.fixture
async def net230(hub: HubHarness) -> AsyncIterator[Net230]:
    n = Net230(hub,
               cpo211=partner("CPO 2.1.1", Party("NL", "CPA", "CPO"), "2.1.1"),
               cpo221=partner("CPO 2.2.1", Party("NL", "CPB", "CPO"), "2.2.1"),
               cpo230=partner("CPO 2.3.0", Party("NL", "CPE", "CPO"), "2.3.0"),
               emsp211=partner("eMSP 2.1.1", Party("DE", "EMD", "EMSP"), "2.1.1"),
               emsp221=partner("eMSP 2.2.1", Party("DE", "EMB", "EMSP"), "2.2.1"),
               emsp230=partner("eMSP 2.3.0", Party("DE", "EMC", "EMSP"), "2.3.0"))
    for p in (n.cpo211, n.cpo221, n.cpo230, n.emsp211, n.emsp221, n.emsp230):
        await hub.connect(p)
    yield n


def example(version: str, name: str) -> Any:
    path: Path = next(p for p in ocpi_examples(version) if p.name == name)
    return orjson.loads(path.read_bytes())


def cdr_230(emsp: Party) -> dict[str, Any]:
    """The official 2.3.0 CDR (total_cost: before_taxes 4.0, taxes 0.4), sent by the 2.3.0 CPO to ``emsp``."""
    cdr = example("2.3.0", "cdr_example.json")
    cdr.update(country_code="NL", party_id="CPE")
    cdr["cdr_token"].update(country_code=emsp.country_code, party_id=emsp.party_id)
    return dict(cdr)


# -- Insights: the cost of a 2.3.0 CDR is its Price's before_taxes (OCPI 2.3.0 types, Price) ------------------

async def test_insights_count_the_cost_of_a_2_3_0_cdr_whatever_the_receivers_version(net230: Net230) -> None:
    hub = net230.hub
    for receiver in (net230.emsp230, net230.emsp221):
        status, _, doc = await net230.cpo230.call(hub.session, "POST", "cdrs", "RECEIVER", to=receiver.party,
                                                  json=cdr_230(receiver.party))
        assert status == 200 and doc["status_code"] == 1000, doc
    h = hub.app[HUB_KEY]
    await h.usage.flush()
    rows = await h.store.query_usage()
    got = {r.to_party: (r.count, r.kwh, r.cost, r.currency) for r in rows if r.module == "cdrs"}
    assert got == {"DE:EMC": (1, 15.342, 4.0, "EUR"), "DE:EMB": (1, 15.342, 4.0, "EUR")}, got


# -- Commands a receiver's version lacks: the hub answers NOT_SUPPORTED (docs/versions.md, "Commands") --------

@pytest.mark.parametrize(("cpo", "command"), [("cpo221", "PAUSE_CHARGING"), ("cpo211", "CANCEL_RESERVATION")])
async def test_a_command_the_cpos_version_lacks_is_answered_not_supported(net230: Net230, cpo: str,
                                                                          command: str) -> None:
    hub = net230.hub
    receiver: FakePartner = getattr(net230, cpo)
    body = {"response_url": f"{net230.emsp230.base_url}/ocpi/2.3.0/sender/commands/{command}/1",
            "reservation_id": "7"}
    status, headers, doc = await net230.emsp230.call(hub.session, "POST", "commands", "RECEIVER", command,
                                                     to=receiver.party, json=body)
    # OCPI 2.3.0 mod_commands: CommandResponseType NOT_SUPPORTED, "the requested command is not supported"
    assert status == 200 and doc["status_code"] == 1000, doc
    assert doc["data"]["result"] == "NOT_SUPPORTED" and isinstance(doc["data"]["timeout"], int), doc
    assert receiver.version in doc["data"]["message"][0]["text"], doc
    assert (headers["OCPI-to-country-code"], headers["OCPI-to-party-id"]) == ("DE", "EMC"), headers
    assert not [r for r in receiver.received if "/commands" in r.path], "nothing reaches the CPO"


# -- The 2.3.0 credentials roles under roaming agreements (docs/agreements.md, "Decisions": ClientInfo) ---------

async def test_2_3_0_credentials_roles_list_only_parties_the_platform_may_see(make_hub: MakeHub) -> None:
    hub = await make_hub(roaming_policy="agreements")
    partners = [cpo("CPO A", "CPA"), cpo("CPO B", "CPB"), emsp("eMSP A", "EMA")]
    partners[2].version = "2.3.0"
    for p in partners:
        await hub.connect(p)

    async def roles() -> list[str]:
        async with hub.session.get(f"{hub.url}/ocpi/2.3.0/credentials",
                                   headers={"Authorization": ocpi_token(partners[2].token_c or "")}) as resp:
            doc = await resp.json()
        assert resp.status == 200, doc
        return sorted(f"{r['country_code']}/{r['party_id']} {r['role']}" for r in doc["data"]["roles"])

    # no agreement: the hub's own party only, as with nobody reachable; ClientInfo shows nothing either
    assert await roles() == ["NL/HUB OTHER"]
    status, body = await hub.admin("POST", "/admin/agreements", {
        "party_a": "NL:CPA:CPO", "party_b": "DE:EMA:EMSP", "modules": ["cdrs"]})
    assert status == 201, body
    assert await roles() == ["NL/CPA CPO"]


# -- The TokenType in a Tokens URL goes down as in the body (OCPI 2.2.1 mod_tokens, Receiver ``type`` parameter) --

async def test_the_token_type_of_the_url_reaches_older_cpos_as_the_bodys(net230: Net230) -> None:
    hub = net230.hub
    emaid = {"country_code": "DE", "party_id": "EMC", "uid": "P1", "type": "EMAID", "contract_id": "DE8EMC0001",
             "issuer": "eMSP C", "valid": True, "whitelist": "ALLOWED", "last_updated": "2026-12-01T10:00:00Z"}
    hub_party = Party("NL", "HUB", "HUB")
    status, _, doc = await net230.emsp230.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMC/P1", to=hub_party,
                                               json=emaid, query="type=EMAID")
    assert status == 200, doc
    # the token is revoked: the CPOs that hold it as OTHER must be told about that token, not an unknown one
    revoke = {"valid": False, "last_updated": "2026-12-02T10:00:00Z"}
    status, _, doc = await net230.emsp230.call(hub.session, "PATCH", "tokens", "RECEIVER", "DE/EMC/P1",
                                               to=hub_party, json=revoke, query="type=EMAID")
    assert status == 200, doc
    status, _, doc = await net230.emsp230.call(hub.session, "GET", "tokens", "RECEIVER", "DE/EMC/P1",
                                               to=net230.cpo221.party, query="type=EMAID")
    assert status == 200, doc
    for older, n in ((net230.cpo221, 3), (net230.cpo211, 2)):
        calls = await eventually(lambda p=older, n=n: len(got := [r for r in p.received if "/tokens/" in r.path])
                                 >= n and got, f"{older.name} receiving the token calls")
        assert sorted((r.method, r.raw_query) for r in calls) == sorted(
            [("PUT", "type=OTHER"), ("PATCH", "type=OTHER"), ("GET", "type=OTHER")][:n]), older.name
        assert next(r for r in calls if r.method == "PUT").json()["type"] == "OTHER"
    assert [r.raw_query for r in net230.cpo230.received if "/tokens/" in r.path] == ["type=EMAID"] * 2
    reports = translations(await records(hub, module="tokens"))
    mapped = sorted(r["to"] for r in reports for loss in r.get("losses", []) if loss["field"] == "?type")
    assert mapped == ["2.1.1", "2.1.1", "2.2.1", "2.2.1", "2.2.1"], reports  # the GET, which has no body, too


# -- A Plug & Charge token older CPOs got as OTHER, authorized in real time (OCPI 2.2.1 mod_tokens, Sender) --------

HUB_PARTY = Party("NL", "HUB", "HUB")


def emaid_token(uid: str, token_type: str = "EMAID") -> dict[str, Any]:
    return {"country_code": "DE", "party_id": "EMC", "uid": uid, "type": token_type, "contract_id": "DE8EMC0001",
            "issuer": "eMSP C", "valid": True, "whitelist": "NEVER", "last_updated": "2026-12-01T10:00:00Z"}


async def push_to_all(net230: Net230, token: dict[str, Any]) -> None:
    status, _, doc = await net230.emsp230.call(net230.hub.session, "PUT", "tokens", "RECEIVER",
                                               f"DE/EMC/{token['uid']}", to=HUB_PARTY, json=token,
                                               query=f"type={token['type']}")
    assert status == 200, doc


@pytest.mark.parametrize(("cpo", "addressed"), [("cpo221", False), ("cpo221", True), ("cpo211", False)])
async def test_a_cpo_authorizing_an_emaid_token_it_got_as_other_reaches_the_emsp_with_emaid(
        net230: Net230, cpo: str, addressed: bool) -> None:
    """EMAID (OCPI 2.3.0) reaches 2.2.1 and 2.1.1 CPOs as OTHER (docs/versions.md, "Tokens"); their real-time
    authorization with ``?type=OTHER``, by open routing or addressed to the eMSP, reaches the eMSP as EMAID, and
    the Token of the answer reaches a 2.2.1 CPO as OTHER, the type it holds."""
    hub = net230.hub
    caller: FakePartner = getattr(net230, cpo)

    async def authorize(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope({"allowed": "ALLOWED", "token": emaid_token("PC1")}))

    net230.emsp230.responder = authorize
    await push_to_all(net230, emaid_token("PC1"))
    pushed = await eventually(lambda: [r for r in caller.received if r.method == "PUT" and "/tokens/" in r.path],
                              f"{caller.name} receiving the token")
    assert pushed[0].json()["type"] == "OTHER"
    status, _, doc = await caller.call(hub.session, "POST", "tokens", "SENDER", "PC1/authorize", query="type=OTHER",
                                       to=net230.emsp230.party if addressed else None, json={"location_id": "LOC1"})
    assert status == 200 and doc["status_code"] == 1000 and doc["data"]["allowed"] == "ALLOWED", doc
    [asked] = [r for r in net230.emsp230.received if r.path.endswith("/tokens/PC1/authorize")]
    assert asked.raw_query == "type=EMAID", asked.raw_query
    if caller.version == "2.2.1":
        assert doc["data"]["token"]["type"] == "OTHER", doc
    reports = translations([r for r in await records(hub, module="tokens") if r.method == "POST"])
    [request] = [r for r in reports if r["of"] == "request"]
    assert (request["from"], request["to"]) == (caller.version, "2.3.0"), request
    assert [(loss["field"], loss["rule"]) for loss in request["losses"]] == [("?type", "derived")], request
    assert "EMAID" in request["losses"][0]["detail"], request


@pytest.mark.parametrize(("addressed", "answer"), [(False, (404, 4001)), (True, (400, 2002))])
async def test_an_other_authorization_of_a_uid_the_emsp_gave_two_types_is_refused_not_guessed(
        net230: Net230, addressed: bool, answer: tuple[int, int]) -> None:
    """A uid the eMSP holds as EMAID and as OTHER is one token at a 2.2.1 CPO: which one ``?type=OTHER`` means is
    not known, and the hub does not guess (an authorization of the wrong token could charge the wrong contract).
    Open routing cannot tell the receiver (404/4001); addressed to the eMSP, the request lacks what tells its
    tokens apart (OCPI 2.2.1 mod_tokens: 2002, not enough information)."""
    hub = net230.hub
    await push_to_all(net230, emaid_token("PC2"))
    await push_to_all(net230, emaid_token("PC2", "OTHER"))
    status, _, doc = await net230.cpo221.call(hub.session, "POST", "tokens", "SENDER", "PC2/authorize",
                                              query="type=OTHER", to=net230.emsp230.party if addressed else None,
                                              json={"location_id": "LOC1"})
    assert (status, doc["status_code"]) == answer, doc
    assert "ambiguous" in doc["status_message"], doc
    assert not [r for r in net230.emsp230.received if "/authorize" in r.path]


# -- A 2.1.1 eMSP's 404 to a real-time authorization (OCPI 2.2.1 mod_tokens, Sender POST authorize) ------------

_NOT_FOUND_211 = {  # how a 2.1.1 eMSP may answer an unknown token: 2.1.1 names only the HTTP 404
    "ocpi": lambda: web.json_response(envelope(status_code=2000, message="unknown token"), status=404),
    "ocpi-with-data": lambda: web.json_response({**envelope(status_code=2001), "data": None}, status=404),
    "text": lambda: web.Response(status=404, text="404: Not Found"),
    "empty": lambda: web.Response(status=404),
}


@pytest.mark.parametrize(("cpo", "answer"), [("cpo221", "ocpi"), ("cpo221", "text"), ("cpo221", "empty"),
                                             ("cpo230", "ocpi-with-data")])
async def test_a_2_1_1_emsps_404_to_an_authorization_reaches_newer_cpos_as_unknown_token(
        net230: Net230, cpo: str, answer: str) -> None:
    """OCPI 2.1.1 mod_tokens: an eMSP answers the authorization of a token it does not know with HTTP 404 (any
    body); OCPI 2.2.1 and 2.3.0 mod_tokens: HTTP 404 with status 2004 (Unknown Token) and no ``data``. A newer CPO
    gets the latter, whatever the 2.1.1 eMSP put in its 404 (docs/versions.md, "Tokens")."""
    hub = net230.hub
    caller: FakePartner = getattr(net230, cpo)

    async def unknown(request: web.Request, rec: Received) -> web.StreamResponse:
        return _NOT_FOUND_211[answer]()

    net230.emsp211.responder = unknown
    status, headers, doc = await caller.call(hub.session, "POST", "tokens", "SENDER", "NOPE1/authorize",
                                             to=net230.emsp211.party, json={"location_id": "LOC1"})
    assert status == 404 and doc["status_code"] == 2004 and "data" not in doc, doc
    assert (headers["OCPI-from-country-code"], headers["OCPI-from-party-id"]) == ("DE", "EMD"), headers
    assert [r.path for r in net230.emsp211.received if "/authorize" in r.path], "the eMSP was asked"
    [rec] = [r for r in await records(hub, module="tokens") if r.method == "POST"]
    assert (rec.http_status, rec.ocpi_status, rec.receiver_http_status) == (404, 2004, 404), rec
    [reply] = [r for r in translations([rec]) if r["of"] == "reply"]
    assert [(loss["field"], loss["rule"]) for loss in reply["losses"]] == [("status_code", "mapped")], reply


# -- GET All across versions: a left-out object does not move the next page (OCPI 2.2.1 Pagination) ------------

async def test_get_all_pages_past_an_object_the_viewers_version_cannot_hold(net230: Net230) -> None:
    hub = net230.hub
    hub_party = Party("NL", "HUB", "HUB")
    inclusive = example("2.3.0", "tariff_20_simple_north_american_inclusive.json")  # no 2.2.1 form: left out
    plain = example("2.3.0", "tariff_1_simple_2hour.json")
    pushed = [{**inclusive, "id": "T1"}, {**plain, "id": "T2"}, {**inclusive, "id": "T3"}, {**plain, "id": "T4"}]
    for i, tariff in enumerate(pushed):
        tariff.update(country_code="NL", party_id="CPE", last_updated=f"2026-12-01T10:00:0{i}Z")
        status, _, doc = await net230.cpo230.call(hub.session, "PUT", "tariffs", "RECEIVER", f"NL/CPE/{tariff['id']}",
                                                  to=hub_party, json=tariff)
        assert status == 200, doc
    seen: list[str] = []
    query = "limit=1"
    offsets: list[str] = []
    for _ in range(len(pushed)):
        status, headers, doc = await net230.emsp221.call(hub.session, "GET", "tariffs", "SENDER", to=hub_party,
                                                         query=query)
        assert status == 200, doc
        # X-Total-Count sizes the list the offsets index, left-out objects included (docs/versions.md): a client
        # that pages by offset and X-Total-Count (OCPI 2.2.1 Pagination) walks the same pages as one following Link
        assert headers["X-Total-Count"] == "4", headers
        seen += [t["id"] for t in doc["data"]]
        if "Link" not in headers:
            break
        query = headers["Link"].split("?", 1)[1].split(">", 1)[0]
        offsets.append(dict(part.split("=") for part in query.split("&"))["offset"])
    assert seen == ["T2", "T4"], seen  # each once; the page holding only T1 still links to the rest
    assert offsets == ["1", "2", "3"], offsets


# -- Charging preferences for a 2.1.1 CPO (OCPI 2.3.0 mod_sessions, Set Charging Preferences) -----------------

async def test_charging_preferences_for_a_2_1_1_cpo_are_404_2001_as_for_an_evse_not_capable(net230: Net230) -> None:
    # 2.1.1 has no CHARGING_PREFERENCES_CAPABLE EVSE: the answer the spec gives for such an EVSE, nothing sent
    hub = net230.hub
    status, _, doc = await net230.emsp230.call(hub.session, "PUT", "sessions", "SENDER", "S1/charging_preferences",
                                               to=net230.cpo211.party, json={"profile_type": "FAST"})
    assert (status, doc["status_code"]) == (404, 2001), doc
    assert "2.1.1" in doc["status_message"], doc
    assert not [r for r in net230.cpo211.received if "/sessions" in r.path]


# -- Catch-up copy of a Session: a PATCH's charging_periods are appended (OCPI 2.3.0 mod_sessions, PATCH) ---------

async def test_the_catch_up_copy_of_a_session_keeps_its_periods_when_a_patch_adds_some(net230: Net230) -> None:
    hub = net230.hub
    session = example("2.3.0", "session_example_2_short_finished.json")
    session.update(country_code="NL", party_id="CPE")
    session["cdr_token"].update(country_code="DE", party_id="EMB")
    patch = example("2.3.0", "session_patch_example_charging_period.json")
    for method, body in (("PUT", session), ("PATCH", patch)):
        status, _, doc = await net230.cpo230.call(hub.session, method, "sessions", "RECEIVER", "NL/CPE/101",
                                                  to=net230.emsp221.party, json=body)
        assert status == 200, doc
    status, _, doc = await net230.emsp221.call(hub.session, "GET", "sessions", "SENDER", to=Party("NL", "HUB", "HUB"),
                                               query="date_from=2015-01-01T00:00:00Z")
    assert status == 200, doc
    [kept] = doc["data"]
    starts = [p["start_date_time"] for p in kept["charging_periods"]]
    assert starts == [p["start_date_time"] for p in session["charging_periods"] + patch["charging_periods"]], starts
    assert kept["kwh"] == 15.0 and kept["total_cost"] == {"excl_vat": 0.80, "incl_vat": 0.88}, kept


# -- An unpublished Location stays away from 2.1.1 eMSPs, its EVSEs and PATCHes too (docs/versions.md, Locations) --

async def test_pushes_below_an_unpublished_location_do_not_reach_2_1_1_emsps(net230: Net230) -> None:
    hub = net230.hub
    hub_party = Party("NL", "HUB", "HUB")
    loc = example("2.3.0", "location_example_uc5_home_charge_point.json")  # publish: false
    loc.update(country_code="NL", party_id="CPE")
    evse = loc["evses"][0]
    base = f"NL/CPE/{loc['id']}"
    status, _, doc = await net230.cpo230.call(hub.session, "PUT", "locations", "RECEIVER", base, to=hub_party,
                                              json=loc)
    assert status == 200 and "not sent to OCPI 2.1.1" in doc["status_message"], doc
    for method, tail, body in (("PATCH", f"{base}/{evse['uid']}", {"status": "CHARGING",
                                                                   "last_updated": "2026-12-01T10:00:00Z"}),
                               ("PUT", f"{base}/{evse['uid']}", {**evse, "last_updated": "2026-12-01T10:00:01Z"}),
                               ("PATCH", base, {"name": "Home", "last_updated": "2026-12-01T10:00:02Z"})):
        status, _, doc = await net230.cpo230.call(hub.session, method, "locations", "RECEIVER", tail, to=hub_party,
                                                  json=body)
        assert status == 200 and "not sent to OCPI 2.1.1" in doc["status_message"], doc
    await eventually(lambda: len([r for r in net230.emsp221.received if "/locations/" in r.path]) == 4,
                     "the 2.2.1 eMSP receiving all four pushes")
    assert not [r for r in net230.emsp211.received if "/locations/" in r.path]
