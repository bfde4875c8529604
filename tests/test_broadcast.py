"""Broadcast push (TO = the hub): the hub answers the sender itself, then fans the push out (OCPI 2.2.1 Broadcast Push).

A network of partners registered with a real hub: two CPOs, an eMSP that takes everything, an eMSP without the
broadcast modules' RECEIVER interfaces, an eMSP that is down, an NSP (locations only), an OTHER party, a
platform with one CONNECTED and one PLANNED eMSP party, a PLANNED platform and a SUSPENDED one. Every push runs
end to end over HTTP; each side is checked: the sender's answer and every receiver's request.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import HubHarness, cpo, emsp
from tests.partners import FakePartner, Party, Received, envelope, ocpi_token

ROUTING = ("OCPI-to-country-code", "OCPI-to-party-id", "OCPI-from-country-code", "OCPI-from-party-id")
HUB = Party("NL", "HUB", "HUB")
BROADCAST_MODULES = ("locations", "tariffs", "tokens")
EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "ocpi" / "examples" / "2.2.1"
TS = "2015-06-29T20:39:09.123456+01:00"  # odd on purpose: a hub that re-serialises or "fixes" it fails
OCPI_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?$")


def raw(obj: Any) -> bytes:
    """JSON bytes in a layout no re-serialiser produces, non-ASCII kept: only a byte-exact relay matches them."""
    return json.dumps(obj, ensure_ascii=False, separators=(" ,", ":  ")).encode()


UNKNOWN = {"x-vendor": {"kept": [1, 2.5, None, "é"]}}
CONNECTOR = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
             "max_voltage": 230, "max_amperage": 32, "last_updated": TS}
EVSE = {"uid": "EVSE1", "status": "AVAILABLE", "connectors": [CONNECTOR], "last_updated": TS}
LOCATION = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "publish": True, "address": "Stationsplein 1",
            "city": "Amsterdam – Centrum", "country": "NLD",
            "coordinates": {"latitude": "52.379189", "longitude": "4.899431"},
            "time_zone": "Europe/Amsterdam", "evses": [EVSE], "last_updated": TS, **UNKNOWN}
TARIFF = {"country_code": "NL", "party_id": "CPA", "id": "T1", "currency": "EUR",
          "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "step_size": 1}]}],
          "last_updated": TS, **UNKNOWN}
TOKEN = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID", "contract_id": "DE-EMA-C1",
         "issuer": "Beta", "valid": True, "whitelist": "ALLOWED", "last_updated": TS, **UNKNOWN}
OTHER_TOKEN = {**TOKEN, "country_code": "DE", "party_id": "OTH", "uid": "TOK9"}


async def eventually(check: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def assert_ocpi_envelope(doc: Any, status_code: int) -> None:
    """What the hub builds itself is a 2.2.1 response envelope (OCPI 2.2.1 Response format), keys as in the official
    examples."""
    assert isinstance(doc, dict), doc
    assert set(doc) <= {"data", "status_code", "status_message", "timestamp"}, doc
    assert doc["status_code"] == status_code and not isinstance(doc["status_code"], bool)
    assert isinstance(doc.get("status_message", ""), str)
    assert isinstance(doc["timestamp"], str) and OCPI_DATETIME.match(doc["timestamp"]), doc
    if EXAMPLES.is_dir():
        official = json.loads((EXAMPLES / "transport_and_format_get_token_example.json").read_bytes())
        assert set(doc) - {"data"} <= set(official)


def only_party(partner: FakePartner, *, modules: tuple[str, ...] = (), role: str = "EMSP",
               cc: str = "DE", pid: str = "EMX") -> FakePartner:
    offered = {m: ("SENDER", "RECEIVER") for m in modules}
    return FakePartner(name=f"{role} {pid}", parties=[Party(cc, pid, role)], modules=offered)


@dataclass
class Network:
    cpo_a: FakePartner  # NL/CPA, all modules
    cpo_b: FakePartner  # NL/CPB, all modules
    emsp_a: FakePartner  # DE/EMA, all modules
    emsp_b: FakePartner  # DE/EMB, no locations/tariffs/tokens interfaces at all: never a broadcast receiver
    emsp_down: FakePartner  # DE/EMD, all modules, its server stopped after registration
    nsp: FakePartner  # NL/NSP, locations RECEIVER only
    other: FakePartner  # DE/OTH, role OTHER, all modules
    duo: FakePartner  # DE/EMC CONNECTED + DE/EMP PLANNED (reserved, never claimed in credentials)
    planned: FakePartner  # DE/EMQ, onboarded, never registered: platform PLANNED
    suspended: FakePartner  # DE/EMS, registered then suspended by the operator
    ids: dict[str, str] = field(default_factory=dict)  # platform name -> id

    def all(self) -> list[FakePartner]:
        return [self.cpo_a, self.cpo_b, self.emsp_a, self.emsp_b, self.emsp_down, self.nsp, self.other, self.duo,
                self.planned, self.suspended]


async def network(hub: HubHarness) -> Network:
    net = Network(
        cpo_a=cpo("Alpha CPO", "CPA"),
        cpo_b=cpo("Bravo CPO", "CPB"),
        emsp_a=emsp("Alpha eMSP", "EMA"),
        emsp_b=emsp("Bravo eMSP", "EMB", modules={m: ("SENDER", "RECEIVER") for m in ("sessions", "cdrs")}),
        emsp_down=emsp("Down eMSP", "EMD"),
        nsp=FakePartner(name="Navi NSP", parties=[Party("NL", "NSP", "NSP")], modules={"locations": ("RECEIVER",)}),
        other=FakePartner(name="Other", parties=[Party("DE", "OTH", "OTHER")],
                          modules={m: ("SENDER", "RECEIVER") for m in BROADCAST_MODULES}),
        duo=FakePartner(name="Duo", parties=[Party("DE", "EMC", "EMSP"), Party("DE", "EMP", "EMSP")],
                        modules={m: ("SENDER", "RECEIVER") for m in BROADCAST_MODULES}),
        planned=emsp("Planned eMSP", "EMQ"),
        suspended=emsp("Suspended eMSP", "EMS"),
    )
    for partner in (net.cpo_a, net.cpo_b, net.emsp_a, net.emsp_b, net.emsp_down, net.nsp, net.other,
                    net.suspended):
        await hub.connect(partner)
    # duo reserves two parties but claims only DE/EMC in its credentials: DE/EMP stays PLANNED
    await net.duo.start()
    hub.partners.append(net.duo)
    duo_platform = await hub.onboard(net.duo)
    net.duo.parties = net.duo.parties[:1]
    await net.duo.register(hub.session, duo_platform["versions_url"], duo_platform["token_a"])
    net.duo.parties.append(Party("DE", "EMP", "EMSP"))
    # planned: its server runs, the operator reserved its party, it never registered
    await net.planned.start()
    hub.partners.append(net.planned)
    await hub.onboard(net.planned)
    net.ids = {p["name"]: p["id"] for p in (await hub.admin("GET", "/admin/platforms"))[1]}
    status, _ = await hub.admin("POST", f"/admin/platforms/{net.ids['Suspended eMSP']}/suspend")
    assert status == 200
    await net.emsp_down.stop()
    return net


async def settled(hub: HubHarness, net: Network | None = None) -> None:
    """Every queued delivery is done (the down eMSP's aside): a wrong receiver would have heard by now."""
    down = net.ids[net.emsp_down.name] if net is not None else None

    async def busy() -> bool:
        status, queues = await hub.admin("GET", "/admin/queues")
        assert status == 200, queues
        return any(q["depth"] for q in queues if q["receiver"] != down)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await busy():
        assert loop.time() < deadline, "queues did not drain"
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class Case:
    id: str
    sender: str  # attribute of Network
    method: str
    module: str
    tail: str
    body: bytes
    receivers: tuple[tuple[str, str], ...]  # (attribute of Network, party id it is addressed to)
    query: str = ""


CPO_AUDIENCE = (("emsp_a", "EMA"), ("other", "OTH"), ("duo", "EMC"))
CASES = [
    Case("cpo-put-location", "cpo_a", "PUT", "locations", "NL/CPA/LOC1", raw(LOCATION),
         (*CPO_AUDIENCE, ("nsp", "NSP"))),
    Case("cpo-patch-location", "cpo_a", "PATCH", "locations", "NL/CPA/LOC1",
         raw({"publish": False, "last_updated": TS}), (*CPO_AUDIENCE, ("nsp", "NSP"))),
    Case("cpo-put-evse", "cpo_a", "PUT", "locations", "NL/CPA/LOC1/EVSE1", raw(EVSE), (*CPO_AUDIENCE, ("nsp", "NSP"))),
    Case("cpo-patch-evse", "cpo_a", "PATCH", "locations", "NL/CPA/LOC1/EVSE1",
         raw({"status": "CHARGING", "last_updated": TS}), (*CPO_AUDIENCE, ("nsp", "NSP"))),
    Case("cpo-patch-connector", "cpo_a", "PATCH", "locations", "NL/CPA/LOC1/EVSE1/1",
         raw({"max_amperage": 16, "last_updated": TS}), (*CPO_AUDIENCE, ("nsp", "NSP"))),
    # the NSP offers no tariffs RECEIVER: not a receiver of tariffs
    Case("cpo-put-tariff", "cpo_a", "PUT", "tariffs", "NL/CPA/T1", raw(TARIFF), CPO_AUDIENCE),
    Case("emsp-put-token", "emsp_a", "PUT", "tokens", "DE/EMA/TOK1", raw(TOKEN), (("cpo_a", "CPA"), ("cpo_b", "CPB")),
         query="type=RFID"),
    Case("emsp-patch-token", "emsp_a", "PATCH", "tokens", "DE/EMA/TOK1", raw({"valid": False, "last_updated": TS}),
         (("cpo_a", "CPA"), ("cpo_b", "CPB")), query="type=RFID"),
    # OTHER's data goes to CPOs only, not to eMSPs (OCPI 2.2.1 Broadcast Push)
    Case("other-put-token", "other", "PUT", "tokens", "DE/OTH/TOK9", raw(OTHER_TOKEN),
         (("cpo_a", "CPA"), ("cpo_b", "CPB"))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_a_broadcast_is_answered_by_the_hub_and_reaches_every_connected_party_of_the_opposite_role(
    hub: HubHarness, case: Case
) -> None:
    net = await network(hub)
    sender: FakePartner = getattr(net, case.sender)
    request_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex

    status, headers, body = await sender.call_raw(
        hub.session, case.method, case.module, "RECEIVER", case.tail, to=HUB, data=case.body, query=case.query,
        headers={"X-Request-ID": request_id, "X-Correlation-ID": correlation_id,
                 "Content-Type": "application/json"},
    )

    # the sender: the hub's own answer, TO = sender, FROM = hub, its own ids
    assert status == 200, body
    doc = json.loads(body)
    assert_ocpi_envelope(doc, 1000)
    assert {h: headers.get(h) for h in ROUTING} == {
        "OCPI-to-country-code": sender.party.country_code, "OCPI-to-party-id": sender.party.party_id,
        "OCPI-from-country-code": "NL", "OCPI-from-party-id": "HUB",
    }
    assert headers.get("X-Request-ID") == request_id
    assert headers.get("X-Correlation-ID") == correlation_id

    # every receiver: one request, FROM = hub, TO = it, the owner's path, the same bytes and correlation id
    expected = {name: pid for name, pid in case.receivers}
    receivers = [getattr(net, name) for name in expected]
    await eventually(lambda: all(r.received for r in receivers), what="the fan-out")
    await settled(hub, net)
    request_ids = set()
    for name, pid in case.receivers:
        partner: FakePartner = getattr(net, name)
        assert len(partner.received) == 1, (name, [r.path for r in partner.received])
        got = partner.received[0]
        assert got.method == case.method
        assert got.raw_path == partner.endpoint_path(case.module, "RECEIVER") + "/" + case.tail
        assert got.raw_query == case.query
        assert got.body == case.body
        owner = next(p for p in partner.parties if p.party_id == pid)
        assert {h: got.headers.get(h) for h in ROUTING} == {
            "OCPI-to-country-code": owner.country_code, "OCPI-to-party-id": owner.party_id,
            "OCPI-from-country-code": "NL", "OCPI-from-party-id": "HUB",
        }
        assert got.headers.get("X-Correlation-ID") == correlation_id
        assert got.headers.get("X-Request-ID") not in (None, "", request_id)
        request_ids.add(got.headers["X-Request-ID"])
        assert got.headers.get("Authorization") == ocpi_token(partner.token_b)
    assert len(request_ids) == len(case.receivers)  # a new request id per delivery
    # nobody else: not the sender, not a platform without the interface, not down/PLANNED/SUSPENDED parties
    for partner in net.all():
        if partner not in receivers:
            assert not partner.received, (partner.name, [r.path for r in partner.received])


async def test_a_party_that_is_planned_on_a_connected_platform_gets_nothing(hub: HubHarness) -> None:
    """The duo platform is CONNECTED but only DE/EMC registered: exactly one delivery, addressed to DE/EMC."""
    net = await network(hub)
    status, _, body = await net.cpo_a.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=HUB,
                                           json=LOCATION)
    assert status == 200, body
    await eventually(lambda: bool(net.duo.received and net.emsp_a.received), what="the fan-out")
    await settled(hub, net)
    assert [r.headers["OCPI-to-party-id"] for r in net.duo.received] == ["EMC"]


async def test_a_receiver_that_answers_an_error_does_not_change_the_senders_answer(hub: HubHarness) -> None:
    """Receiver errors never reach the sender (OCPI 2.2.1 Broadcast Push): it got 1000 before the fan-out ran anyway."""
    net = await network(hub)

    async def refuse(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope(status_code=2001, message="we do not like it"), status=400)

    async def crash(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.Response(status=500, text="<html>oops</html>")

    net.emsp_a.responder, net.other.responder = refuse, crash
    status, headers, body = await net.cpo_a.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                                 to=HUB, json=LOCATION)
    assert status == 200
    assert_ocpi_envelope(body, 1000)
    assert headers["OCPI-from-party-id"] == "HUB"
    await eventually(lambda: bool(net.emsp_a.received and net.other.received and net.nsp.received),
                     what="the fan-out")
    assert net.nsp.received[0].json() == LOCATION


async def test_back_to_back_broadcasts_of_one_location_reach_every_receiver_in_order(hub: HubHarness) -> None:
    net = await network(hub)
    statuses = []
    for n in range(6):
        body = {"status": "CHARGING" if n % 2 else "AVAILABLE", "last_updated": f"2024-01-01T00:00:0{n}Z"}
        status, _, _ = await net.cpo_a.call(hub.session, "PATCH", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1",
                                            to=HUB, json=body)
        statuses.append(status)
    assert statuses == [200] * 6
    receivers = (net.emsp_a, net.nsp, net.other, net.duo)
    await eventually(lambda: all(len(r.received) == 6 for r in receivers), what="six deliveries each")
    for partner in receivers:
        assert [r.json()["last_updated"][-3:-1] for r in partner.received] == [f"0{n}" for n in range(6)]


SESSION = {"country_code": "NL", "party_id": "CPA", "id": "S1", "start_date_time": TS, "kwh": 0.0,
           "cdr_token": {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID",
                         "contract_id": "DE-EMA-C1"},
           "auth_method": "WHITELIST", "location_id": "LOC1", "currency": "EUR", "status": "ACTIVE",
           "last_updated": TS}
CDR = {"country_code": "NL", "party_id": "CPA", "id": "CDR1", "start_date_time": TS, "end_date_time": TS,
       "cdr_token": SESSION["cdr_token"], "auth_method": "WHITELIST", "currency": "EUR", "charging_periods": [],
       "total_cost": {"excl_vat": 1.5}, "total_energy": 3.25, "total_time": 0.5, "last_updated": TS}
REFUSED = [
    # GET is never broadcast: on a RECEIVER interface, or one object of a SENDER interface (not GET All)
    ("emsp_a", "GET", "locations", "RECEIVER", "NL/CPA/LOC1", "", None),
    ("cpo_a", "GET", "locations", "RECEIVER", "NL/CPA/LOC1", "", None),
    ("emsp_a", "GET", "locations", "SENDER", "LOC1", "", None),
    ("emsp_a", "GET", "locations", "SENDER", "LOC1/EVSE1/1", "", None),
    ("cpo_a", "GET", "tokens", "RECEIVER", "DE/EMA/TOK1", "type=RFID", None),
    ("emsp_a", "GET", "tariffs", "RECEIVER", "NL/CPA/T1", "", None),
    # Sessions and CDRs are one party's business (and personal data); commands need one receiver
    ("cpo_a", "PUT", "sessions", "RECEIVER", "NL/CPA/S1", "", SESSION),
    ("cpo_a", "PATCH", "sessions", "RECEIVER", "NL/CPA/S1", "", {"kwh": 2.0, "last_updated": TS}),
    ("cpo_a", "POST", "cdrs", "RECEIVER", "", "", CDR),
    ("emsp_a", "POST", "commands", "RECEIVER", "START_SESSION", "",
     {"response_url": "https://emsp.example/cb/1", "token": TOKEN, "location_id": "LOC1"}),
    # DELETE is not a broadcast method (OCPI 2.2.1 Broadcast Push; docs/ocpi-decisions.md item 6: our decision)
    ("cpo_a", "DELETE", "tariffs", "RECEIVER", "NL/CPA/T1", "", None),
    # a path past the object: a Tariff or Token has no parts, a Location's deepest is its Connector
    ("cpo_a", "PUT", "tariffs", "RECEIVER", "NL/CPA/T1/extra", "", TARIFF),
    ("emsp_a", "PUT", "tokens", "RECEIVER", "DE/EMA/TOK1/extra", "type=RFID", TOKEN),
    ("cpo_a", "PUT", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1/1/extra", "", CONNECTOR),
]


async def test_gets_and_party_specific_pushes_addressed_to_the_hub_are_refused_with_2001(hub: HubHarness) -> None:
    net = await network(hub)
    for caller, method, module, role, tail, query, doc in REFUSED:
        partner: FakePartner = getattr(net, caller)
        status, headers, body = await partner.call(hub.session, method, module, role, tail, to=HUB, json=doc,
                                                   query=query)
        what = (method, module, role, tail)
        assert (status, body["status_code"]) == (400, 2001), (what, body)
        assert_ocpi_envelope(body, 2001)
        assert (headers["OCPI-to-party-id"], headers["OCPI-from-party-id"]) == (partner.party.party_id, "HUB"), what
    await settled(hub, net)
    assert not any(p.received for p in net.all())


async def test_a_broadcast_from_a_party_of_another_platform_or_with_a_foreign_path_is_refused(
    hub: HubHarness,
) -> None:
    """Anti-spoofing applies to broadcasts too: the path owner must be FROM, and FROM the caller's own party."""
    net = await network(hub)
    status, _, body = await net.cpo_a.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPB/LOC1", to=HUB,
                                           json={**LOCATION, "party_id": "CPB"})
    assert (status, body["status_code"]) == (400, 2001), body
    status, _, body = await net.cpo_a.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPB/LOC1", to=HUB,
                                           from_=net.cpo_b.party, json={**LOCATION, "party_id": "CPB"})
    assert status == 403, body
    await settled(hub, net)
    assert not any(p.received for p in net.all())


async def test_a_party_with_several_roles_broadcasts_each_module_as_its_owner_and_is_reached_once(
    hub: HubHarness,
) -> None:
    """One pair may hold several roles (OCPI 2.2.1 credentials, Credentials object): NL/ABC is CPO and eMSP, DE/XYZ is
    eMSP and NSP."""
    offered = {m: ("SENDER", "RECEIVER") for m in BROADCAST_MODULES}
    both = FakePartner(name="Both", parties=[Party("NL", "ABC", "CPO"), Party("NL", "ABC", "EMSP")], modules=offered)
    twice = FakePartner(name="Twice", parties=[Party("DE", "XYZ", "EMSP"), Party("DE", "XYZ", "NSP")],
                        modules=offered)
    cpo_a, emsp_a = cpo(), emsp()
    for partner in (both, twice, cpo_a, emsp_a):
        await hub.connect(partner)

    abc_token = {**TOKEN, "country_code": "NL", "party_id": "ABC"}
    status, _, body = await both.call(hub.session, "PUT", "tokens", "RECEIVER", "NL/ABC/TOK1", to=HUB, json=abc_token)
    assert status == 200, body
    await eventually(lambda: bool(cpo_a.received), what="the token at the CPO")
    abc_location = {**LOCATION, "party_id": "ABC"}
    status, _, body = await both.call(hub.session, "PUT", "locations", "RECEIVER", "NL/ABC/LOC1", to=HUB,
                                      json=abc_location)
    assert status == 200, body
    status, _, body = await cpo_a.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=HUB,
                                       json=LOCATION)
    assert status == 200, body
    await eventually(lambda: len(twice.received) == 2 and len(emsp_a.received) == 2 and len(both.received) == 1,
                     what="the locations")
    await settled(hub)

    def seen(partner: FakePartner) -> list[tuple[str, str]]:
        return [(r.path.rsplit("/receiver/", 1)[1], r.headers["OCPI-to-party-id"]) for r in partner.received]

    assert seen(cpo_a) == [("tokens/NL/ABC/TOK1", "CPA")]  # Tokens are eMSP data: to the CPOs
    assert sorted(seen(emsp_a)) == [("locations/NL/ABC/LOC1", "EMA"), ("locations/NL/CPA/LOC1", "EMA")]
    assert sorted(seen(twice)) == [("locations/NL/ABC/LOC1", "XYZ"), ("locations/NL/CPA/LOC1", "XYZ")]  # once each
    assert seen(both) == [("locations/NL/CPA/LOC1", "ABC")]  # it is an eMSP too

    for module, expected in (("locations", [abc_location, LOCATION]), ("tokens", [abc_token])):
        status, _, listed = await both.call(hub.session, "GET", module, "SENDER", to=HUB)
        assert status == 200, listed
        assert listed["data"] == expected, module  # as an eMSP it sees Locations, as a CPO Tokens


# -- official OCPI examples as broadcast bodies ------------------------------------------------------------

def example(name: str) -> bytes:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"official OCPI examples not found at {EXAMPLES}")
    return path.read_bytes()


async def test_official_examples_reach_receivers_byte_for_byte_and_come_back_equal_from_get_all(
    hub: HubHarness,
) -> None:
    location = example("location_example.json")  # BE/BEC
    tariff = example("tariff_1_simple_2hour.json")  # DE/ALL
    token = example("token_example_2_full_rfid.json")  # DE/TNM, RFID
    cpos = FakePartner(name="Example CPOs", parties=[Party("BE", "BEC", "CPO"), Party("DE", "ALL", "CPO")],
                       modules={m: ("SENDER", "RECEIVER") for m in BROADCAST_MODULES})
    msp = FakePartner(name="Example eMSP", parties=[Party("DE", "TNM", "EMSP")],
                      modules={m: ("SENDER", "RECEIVER") for m in BROADCAST_MODULES})
    for partner in (cpos, msp):
        await hub.connect(partner)
    bec, all_, tnm = cpos.parties[0], cpos.parties[1], msp.party
    pushes = [
        (cpos, bec, "locations", "BE/BEC/" + json.loads(location)["id"], location, ""),
        (cpos, all_, "tariffs", "DE/ALL/" + json.loads(tariff)["id"], tariff, ""),
        (msp, tnm, "tokens", "DE/TNM/" + json.loads(token)["uid"], token, "type=RFID"),
    ]
    for sender, party, module, tail, body, query in pushes:
        status, _, answer = await sender.call(hub.session, "PUT", module, "RECEIVER", tail, to=HUB, from_=party,
                                              data=body, query=query, headers={"Content-Type": "application/json"})
        assert status == 200, answer
        assert_ocpi_envelope(answer, 1000)

    # the CPO platform hosts two CPO parties: the token reaches each of them
    await eventually(lambda: len(msp.received) == 2 and len(cpos.received) == 2, what="the fan-out")
    assert sorted(r.body for r in msp.received) == sorted([location, tariff])  # two objects: either order
    assert [r.body for r in cpos.received] == [token, token]
    assert sorted(r.headers["OCPI-to-party-id"] for r in cpos.received) == ["ALL", "BEC"]

    for caller, party, module, body in ((msp, tnm, "locations", location), (msp, tnm, "tariffs", tariff),
                                        (cpos, bec, "tokens", token)):
        status, _, listed = await caller.call(hub.session, "GET", module, "SENDER", to=HUB, from_=party)
        assert status == 200, listed
        assert_ocpi_envelope(listed, 1000)
        assert listed["data"] == [json.loads(body)]
