"""Direct requests through the hub, for every functional module, interface role and method OCPI allows.

One table (OCPI 2.2.1 module interfaces): who calls, what, and what the receiver answers. Each row runs end to end
over HTTP — a
CPO, an eMSP and a bystander eMSP registered with a real hub — and checks docs/architecture.md "Direct request" from
both
sides: the receiver gets the same method, path suffix under its own endpoint for that module and role, query
and body bytes, unchanged routing headers, a new X-Request-ID, the same X-Correlation-ID and the hub's Token B;
the caller gets the receiver's status, body bytes, routing and pagination headers, and its own X-Request-ID.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from tests.conftest import HubHarness, cpo, emsp, running_hub
from tests.partners import FakePartner, Party, Received, ocpi_token

ROUTING = ("OCPI-to-country-code", "OCPI-to-party-id", "OCPI-from-country-code", "OCPI-from-party-id")
TS = "2015-06-29T20:39:09.123456+01:00"  # odd on purpose: a hub that re-serialises or "fixes" it fails


@pytest.fixture(params=["lean", "aiohttp"])
async def hub(backend: str | None, request: pytest.FixtureRequest) -> AsyncIterator[HubHarness]:
    """Every case through both forward clients (HUB_FORWARD_CLIENT): the hub's own and aiohttp's ClientSession."""
    async with running_hub(backend, forward_client=request.param) as h:
        yield h



def raw(obj: Any) -> bytes:
    """JSON bytes in a layout no re-serialiser produces, non-ASCII kept: only a byte-exact relay matches them."""
    return json.dumps(obj, ensure_ascii=False, separators=(" ,", ":  ")).encode()


def answer(data: Any = None, status_code: int = 1000, message: str = "Fine  by   us") -> bytes:
    doc: dict[str, Any] = {"status_code": status_code, "status_message": message,
                           "timestamp": "2024-03-01T12:00:00Z", "x-receiver-extra": ["kept"]}
    if data is not None:
        doc = {"data": data, **doc}
    return raw(doc)


UNKNOWN = {"x-vendor": {"kept": [1, 2.5, None, "é"]}}
CONNECTOR = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
             "max_voltage": 230, "max_amperage": 32, "last_updated": TS, **UNKNOWN}
EVSE = {"uid": "EVSE1", "status": "AVAILABLE", "connectors": [CONNECTOR], "last_updated": TS, **UNKNOWN}
LOCATION = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "publish": True, "address": "Stationsplein 1",
            "city": "Amsterdam – Centrum", "country": "NLD",
            "coordinates": {"latitude": "52.379189", "longitude": "4.899431"},
            "time_zone": "Europe/Amsterdam", "evses": [EVSE], "last_updated": TS, **UNKNOWN}
CDR_TOKEN = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID", "contract_id": "DE-EMA-C1"}
SESSION = {"country_code": "NL", "party_id": "CPA", "id": "S1", "start_date_time": TS, "kwh": 0.0,
           "cdr_token": CDR_TOKEN, "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": "EVSE1",
           "connector_id": "1", "currency": "EUR", "status": "ACTIVE", "last_updated": TS, **UNKNOWN}
CDR = {"country_code": "NL", "party_id": "CPA", "id": "CDR1", "start_date_time": TS, "end_date_time": TS,
       "cdr_token": CDR_TOKEN, "auth_method": "WHITELIST", "currency": "EUR", "charging_periods": [],
       "total_cost": {"excl_vat": 1.5}, "total_energy": 3.25, "total_time": 0.5, "last_updated": TS, **UNKNOWN}
TARIFF = {"country_code": "NL", "party_id": "CPA", "id": "T1", "currency": "EUR",
          "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "step_size": 1}]}],
          "last_updated": TS, **UNKNOWN}
TOKEN = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID", "contract_id": "DE-EMA-C1",
         "issuer": "Beta", "valid": True, "whitelist": "ALLOWED", "last_updated": TS, **UNKNOWN}
RESPONSE_URL = "http://127.0.0.1/ocpi/emsp/2.2.1/commands/START_SESSION/77"
PROFILE = {"charging_rate_unit": "W", "charging_profile_period": [{"start_period": 0, "limit": 11000.0}]}
PAGED = {"X-Total-Count": "153", "X-Limit": "25"}


@dataclass(frozen=True)
class Case:
    id: str
    caller: str  # "cpo" (NL/CPA) or "emsp" (DE/EMA); the other one receives
    method: str
    module: str
    role: str  # interface role of the hub endpoint called, and of the receiver's endpoint reached
    tail: str = ""
    query: str = ""
    body: bytes = b""
    status: int = 200  # the receiver's answer
    answer: bytes = field(default_factory=answer)
    answer_headers: dict[str, str] = field(default_factory=dict)
    # Callback URLs the hub may replace by its own (docs/architecture.md URL rewriting): compared without them.
    rewritable: tuple[str, ...] = ()


def cpo_to_emsp(id: str, method: str, module: str, role: str, tail: str = "", **kw: Any) -> Case:
    return Case(id, "cpo", method, module, role, tail, **kw)


def emsp_to_cpo(id: str, method: str, module: str, role: str, tail: str = "", **kw: Any) -> Case:
    return Case(id, "emsp", method, module, role, tail, **kw)


LIST_QUERY = "date_from=2024-01-01T00:00:00Z&date_to=2024-02-01T00:00:00Z&offset=50&limit=25"
COMMANDS = {
    "START_SESSION": {"response_url": RESPONSE_URL, "token": TOKEN, "location_id": "LOC1", "evse_uid": "EVSE1"},
    "STOP_SESSION": {"response_url": RESPONSE_URL, "session_id": "S1"},
    "RESERVE_NOW": {"response_url": RESPONSE_URL, "token": TOKEN, "expiry_date": TS, "reservation_id": "R1",
                    "location_id": "LOC1"},
    "CANCEL_RESERVATION": {"response_url": RESPONSE_URL, "reservation_id": "R1"},
    "UNLOCK_CONNECTOR": {"response_url": RESPONSE_URL, "location_id": "LOC1", "evse_uid": "EVSE1",
                         "connector_id": "1"},
}

CASES = [
    # locations RECEIVER (CPO → eMSP): Client Owned Objects at NL/CPA/LOC1[/EVSE1[/1]]
    cpo_to_emsp("locations-receiver-put-location", "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                body=raw(LOCATION), status=201),
    cpo_to_emsp("locations-receiver-put-evse", "PUT", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1", body=raw(EVSE)),
    cpo_to_emsp("locations-receiver-put-connector", "PUT", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1/1",
                body=raw(CONNECTOR)),
    cpo_to_emsp("locations-receiver-patch-location", "PATCH", "locations", "RECEIVER", "NL/CPA/LOC1",
                body=raw({"publish": False, "last_updated": TS, **UNKNOWN})),
    cpo_to_emsp("locations-receiver-patch-evse", "PATCH", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1",
                body=raw({"status": "CHARGING", "last_updated": TS})),
    cpo_to_emsp("locations-receiver-patch-connector", "PATCH", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1/1",
                body=raw({"max_amperage": 16, "last_updated": TS})),
    cpo_to_emsp("locations-receiver-get-location", "GET", "locations", "RECEIVER", "NL/CPA/LOC1",
                answer=answer(LOCATION)),
    cpo_to_emsp("locations-receiver-get-evse", "GET", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1",
                answer=answer(EVSE)),
    cpo_to_emsp("locations-receiver-get-connector", "GET", "locations", "RECEIVER", "NL/CPA/LOC1/EVSE1/1",
                answer=answer(CONNECTOR)),
    cpo_to_emsp("locations-receiver-get-unknown-is-404", "GET", "locations", "RECEIVER", "NL/CPA/NOPE",
                status=404, answer=answer(status_code=2003, message="Unknown location")),
    # locations SENDER (eMSP → CPO): list with pagination, objects
    emsp_to_cpo("locations-sender-get-list", "GET", "locations", "SENDER", query=LIST_QUERY,
                answer=answer([LOCATION]), answer_headers=PAGED),
    emsp_to_cpo("locations-sender-get-location", "GET", "locations", "SENDER", "LOC1", answer=answer(LOCATION)),
    emsp_to_cpo("locations-sender-get-evse", "GET", "locations", "SENDER", "LOC1/EVSE1", answer=answer(EVSE)),
    emsp_to_cpo("locations-sender-get-connector", "GET", "locations", "SENDER", "LOC1/EVSE1/1",
                answer=answer(CONNECTOR)),
    # sessions RECEIVER (CPO → eMSP)
    cpo_to_emsp("sessions-receiver-put", "PUT", "sessions", "RECEIVER", "NL/CPA/S1", body=raw(SESSION)),
    cpo_to_emsp("sessions-receiver-patch", "PATCH", "sessions", "RECEIVER", "NL/CPA/S1",
                body=raw({"kwh": 3.5, "charging_periods": [{"start_date_time": TS, "dimensions": []}],
                          "last_updated": TS})),
    cpo_to_emsp("sessions-receiver-get", "GET", "sessions", "RECEIVER", "NL/CPA/S1", answer=answer(SESSION)),
    # sessions SENDER (eMSP → CPO)
    emsp_to_cpo("sessions-sender-get-list", "GET", "sessions", "SENDER", query=LIST_QUERY,
                answer=answer([SESSION]), answer_headers=PAGED),
    emsp_to_cpo("sessions-sender-put-charging-preferences", "PUT", "sessions", "SENDER", "S1/charging_preferences",
                body=raw({"profile_type": "GREEN", "departure_time": TS, "energy_need": 20.0}),
                answer=answer("ACCEPTED")),
    emsp_to_cpo("sessions-sender-charging-preferences-not-capable", "PUT", "sessions", "SENDER",
                "S1/charging_preferences", body=raw({"profile_type": "FAST"}),
                status=404, answer=answer(status_code=2001, message="EVSE is not CHARGING_PREFERENCES_CAPABLE")),
    # cdrs RECEIVER (CPO → eMSP): POST the CDR, GET it back at the Location the eMSP chose
    cpo_to_emsp("cdrs-receiver-post", "POST", "cdrs", "RECEIVER", body=raw(CDR), status=201),
    cpo_to_emsp("cdrs-receiver-get", "GET", "cdrs", "RECEIVER", "stored/CDR1", answer=answer(CDR)),
    # cdrs SENDER (eMSP → CPO)
    emsp_to_cpo("cdrs-sender-get-list", "GET", "cdrs", "SENDER", query=LIST_QUERY, answer=answer([CDR]),
                answer_headers=PAGED),
    # tariffs RECEIVER (CPO → eMSP) and SENDER (eMSP → CPO)
    cpo_to_emsp("tariffs-receiver-put", "PUT", "tariffs", "RECEIVER", "NL/CPA/T1", body=raw(TARIFF)),
    cpo_to_emsp("tariffs-receiver-delete", "DELETE", "tariffs", "RECEIVER", "NL/CPA/T1"),
    cpo_to_emsp("tariffs-receiver-get", "GET", "tariffs", "RECEIVER", "NL/CPA/T1", answer=answer(TARIFF)),
    emsp_to_cpo("tariffs-sender-get-list", "GET", "tariffs", "SENDER", query="offset=0&limit=100",
                answer=answer([TARIFF]), answer_headers={"X-Total-Count": "1", "X-Limit": "100"}),
    # tokens RECEIVER (eMSP → CPO): DE/EMA/TOK1, ?type kept
    emsp_to_cpo("tokens-receiver-put", "PUT", "tokens", "RECEIVER", "DE/EMA/TOK1", query="type=RFID",
                body=raw(TOKEN)),
    emsp_to_cpo("tokens-receiver-patch", "PATCH", "tokens", "RECEIVER", "DE/EMA/TOK1", query="type=RFID",
                body=raw({"valid": False, "last_updated": TS})),
    emsp_to_cpo("tokens-receiver-get", "GET", "tokens", "RECEIVER", "DE/EMA/TOK1", query="type=RFID",
                answer=answer(TOKEN)),
    # tokens SENDER (CPO → eMSP): list, real-time authorization (unknown token: HTTP 404 + 2004 relayed)
    cpo_to_emsp("tokens-sender-get-list", "GET", "tokens", "SENDER", query=LIST_QUERY, answer=answer([TOKEN]),
                answer_headers=PAGED),
    cpo_to_emsp("tokens-sender-authorize", "POST", "tokens", "SENDER", "TOK1/authorize", query="type=RFID",
                body=raw({"location_id": "LOC1", "evse_uids": ["EVSE1"]}),
                answer=answer({"allowed": "ALLOWED", "token": TOKEN, "authorization_reference": "AR1"})),
    cpo_to_emsp("tokens-sender-authorize-unknown-token", "POST", "tokens", "SENDER", "NOPE/authorize",
                query="type=RFID", body=raw({"location_id": "LOC1"}),
                status=404, answer=answer(status_code=2004, message="Unknown token")),
    cpo_to_emsp("tokens-sender-authorize-not-enough-information", "POST", "tokens", "SENDER", "TOK1/authorize",
                status=200, answer=answer(status_code=2002, message="LocationReferences required")),
    # commands RECEIVER (eMSP → CPO), one row per command
    *[
        emsp_to_cpo(f"commands-receiver-post-{name.lower()}", "POST", "commands", "RECEIVER", name, body=raw(body),
                    answer=answer({"result": "ACCEPTED", "timeout": 30}), rewritable=("response_url",))
        for name, body in COMMANDS.items()
    ],
    emsp_to_cpo("commands-receiver-server-error", "POST", "commands", "RECEIVER", "STOP_SESSION",
                body=raw(COMMANDS["STOP_SESSION"]), status=500, answer=answer(status_code=3000, message="Oops"),
                rewritable=("response_url",)),
    # commands SENDER (CPO → eMSP): the CommandResult to the path of the eMSP's response_url
    cpo_to_emsp("commands-sender-post-result", "POST", "commands", "SENDER", "START_SESSION/77",
                body=raw({"result": "ACCEPTED", "message": [{"language": "en", "text": "Charging"}]})),
    # chargingprofiles RECEIVER (eMSP → CPO): GET/PUT/DELETE {session_id}
    emsp_to_cpo("chargingprofiles-receiver-get", "GET", "chargingprofiles", "RECEIVER", "S1",
                query="duration=900&response_url=http%3A%2F%2F127.0.0.1%2Fcp%2F1",
                answer=answer({"result": "ACCEPTED", "timeout": 30}), rewritable=("response_url",)),
    emsp_to_cpo("chargingprofiles-receiver-put", "PUT", "chargingprofiles", "RECEIVER", "S1",
                body=raw({"charging_profile": PROFILE, "response_url": "http://127.0.0.1/cp/2"}),
                answer=answer({"result": "ACCEPTED", "timeout": 30}), rewritable=("response_url",)),
    emsp_to_cpo("chargingprofiles-receiver-delete", "DELETE", "chargingprofiles", "RECEIVER", "S1",
                query="response_url=http%3A%2F%2F127.0.0.1%2Fcp%2F3",
                answer=answer({"result": "UNKNOWN_SESSION", "timeout": 0}), rewritable=("response_url",)),
    # chargingprofiles SENDER (CPO → eMSP): result to the response_url path, ActiveChargingProfile pushes
    cpo_to_emsp("chargingprofiles-sender-post-result", "POST", "chargingprofiles", "SENDER", "cp/1",
                body=raw({"result": "ACCEPTED", "profile": {"start_date_time": TS, "charging_profile": PROFILE}})),
    cpo_to_emsp("chargingprofiles-sender-put", "PUT", "chargingprofiles", "SENDER", "S1",
                body=raw({"start_date_time": TS, "charging_profile": PROFILE})),
]


def answer_with(case: Case) -> Any:
    """A receiver that answers like an OCPI party: routing headers mirrored, its own ids echoed, the case's body."""

    async def respond(request: web.Request, rec: Received) -> web.StreamResponse:
        headers = {
            "OCPI-to-country-code": request.headers["OCPI-from-country-code"],
            "OCPI-to-party-id": request.headers["OCPI-from-party-id"],
            "OCPI-from-country-code": request.headers["OCPI-to-country-code"],
            "OCPI-from-party-id": request.headers["OCPI-to-party-id"],
            "X-Request-ID": request.headers["X-Request-ID"],
            "X-Correlation-ID": request.headers["X-Correlation-ID"],
            **case.answer_headers,
        }
        return web.Response(body=case.answer, status=case.status, content_type="application/json", headers=headers)

    return respond


def without(query: str, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in names]


def assert_same_body(sent: bytes, got: bytes, rewritable: tuple[str, ...]) -> None:
    if not rewritable or not sent:
        assert got == sent  # byte for byte: unknown fields, layout and last_updated untouched
        return
    sent_doc, got_doc = json.loads(sent), json.loads(got)
    for name in rewritable:
        if name in sent_doc:
            assert isinstance(got_doc.pop(name), str)
            sent_doc.pop(name)
    assert got_doc == sent_doc


async def connect_all(hub: HubHarness) -> tuple[FakePartner, FakePartner, FakePartner]:
    """CPO NL/CPA (endpoint URLs with a trailing slash), eMSP DE/EMA, and an eMSP DE/EMB that must hear nothing."""
    alpha, beta, bystander = cpo(), emsp(), emsp("Gamma eMSP", "EMB")
    alpha.trailing_slash = True
    for partner in (alpha, beta, bystander):
        await hub.connect(partner)
    return alpha, beta, bystander


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_direct_request_reaches_the_receiver_unchanged_and_its_answer_comes_back(
    hub: HubHarness, case: Case
) -> None:
    alpha, beta, bystander = await connect_all(hub)
    caller, receiver = (alpha, beta) if case.caller == "cpo" else (beta, alpha)
    receiver.responder = answer_with(case)
    request_id, correlation_id = uuid.uuid4().hex, uuid.uuid4().hex
    sent = {"X-Request-ID": request_id, "X-Correlation-ID": correlation_id}
    if case.body:
        sent["Content-Type"] = "application/json"

    status, headers, body = await caller.call_raw(
        hub.session, case.method, case.module, case.role, case.tail, to=receiver.party, data=case.body or None,
        headers=sent, query=case.query, encoded=True,
    )

    assert len(receiver.received) == 1, (status, body)
    got = receiver.received[0]
    assert got.method == case.method
    assert got.raw_path == receiver.served_path(case.module, case.role, case.tail)
    if case.rewritable:
        assert without(got.raw_query, case.rewritable) == without(case.query, case.rewritable)
    else:
        assert got.raw_query == case.query
    assert_same_body(case.body, got.body, case.rewritable)
    assert {h: got.headers.get(h) for h in ROUTING} == {
        "OCPI-to-country-code": receiver.party.country_code, "OCPI-to-party-id": receiver.party.party_id,
        "OCPI-from-country-code": caller.party.country_code, "OCPI-from-party-id": caller.party.party_id,
    }
    assert got.headers.get("X-Request-ID") not in (None, "", request_id)
    assert got.headers.get("X-Correlation-ID") == correlation_id
    assert got.headers.get("Authorization") == ocpi_token(receiver.token_b)
    assert not bystander.received

    assert status == case.status
    assert body == case.answer
    assert headers["Content-Type"].startswith("application/json")
    assert {h: headers.get(h) for h in ROUTING} == {
        "OCPI-to-country-code": caller.party.country_code, "OCPI-to-party-id": caller.party.party_id,
        "OCPI-from-country-code": receiver.party.country_code, "OCPI-from-party-id": receiver.party.party_id,
    }
    assert headers.get("X-Request-ID") == request_id
    assert headers.get("X-Correlation-ID") == correlation_id
    for name, value in case.answer_headers.items():
        assert headers.get(name) == value


def test_the_table_covers_every_module_role_and_method_ocpi_allows() -> None:
    """Digest §8: a module/role/method missing here would be an untested route."""
    allowed = {
        ("locations", "RECEIVER"): {"GET", "PUT", "PATCH"}, ("locations", "SENDER"): {"GET"},
        ("sessions", "RECEIVER"): {"GET", "PUT", "PATCH"}, ("sessions", "SENDER"): {"GET", "PUT"},
        ("cdrs", "RECEIVER"): {"GET", "POST"}, ("cdrs", "SENDER"): {"GET"},
        ("tariffs", "RECEIVER"): {"GET", "PUT", "DELETE"}, ("tariffs", "SENDER"): {"GET"},
        ("tokens", "RECEIVER"): {"GET", "PUT", "PATCH"}, ("tokens", "SENDER"): {"GET", "POST"},
        ("commands", "RECEIVER"): {"POST"}, ("commands", "SENDER"): {"POST"},
        ("chargingprofiles", "RECEIVER"): {"GET", "PUT", "DELETE"}, ("chargingprofiles", "SENDER"): {"POST", "PUT"},
    }
    covered: dict[tuple[str, str], set[str]] = {}
    for case in CASES:
        covered.setdefault((case.module, case.role), set()).add(case.method)
    assert covered == allowed
    assert {c.tail for c in CASES if c.module == "commands" and c.role == "RECEIVER"} >= set(COMMANDS)


async def test_percent_encoded_path_and_query_are_forwarded_byte_for_byte(hub: HubHarness) -> None:
    """Ids may hold '?', '#' or '%' (CiString is printable ASCII): decoding them on the way would change the
    path's shape or the query's meaning at the receiver. ('/' inside an id is refused: docs/ocpi-decisions.md.)"""
    alpha, beta, _ = await connect_all(hub)
    token = {**TOKEN, "uid": "A#B?C%41"}
    tail, query = "DE/EMA/A%23B%3FC%2541", "type=APP_USER&note=%3F%23%26x%3D1%2B"
    status, _, body = await beta.call_raw(hub.session, "PUT", "tokens", "RECEIVER", tail, to=alpha.party,
                                          data=raw(token), headers={"Content-Type": "application/json"},
                                          query=query, encoded=True)
    assert status == 200, body
    got = alpha.received[-1]
    assert got.raw_path == "/ocpi/2.2.1/receiver/tokens/" + tail
    assert got.raw_query == query
    assert got.json() == token


async def test_a_body_id_is_compared_with_the_decoded_path_id(hub: HubHarness) -> None:
    alpha, beta, _ = await connect_all(hub)
    status, _, body = await beta.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/A%2FB", to=alpha.party,
                                      json={**TOKEN, "uid": "A%2FB"})
    assert (status, body["status_code"]) == (400, 2001)
    assert not alpha.received


async def test_routing_header_values_are_case_insensitive_and_forwarded_as_sent(hub: HubHarness) -> None:
    """Party ids are CiString (OCPI 2.2.1 Routing headers): lower case routes like upper case, and reaches the
    receiver as is."""
    alpha, beta, _ = await connect_all(hub)
    sent = {"OCPI-to-country-code": "de", "OCPI-to-party-id": "ema",
            "OCPI-from-country-code": "nl", "OCPI-from-party-id": "cpa"}
    status, _, body = await alpha.call(hub.session, "GET", "locations", "RECEIVER", "NL/CPA/LOC1", headers=sent)
    assert status == 200, body
    assert {h: beta.received[-1].headers[h] for h in ROUTING} == sent


async def test_the_raw_token_is_accepted_like_the_base64_one(hub: HubHarness) -> None:
    alpha, beta, _ = await connect_all(hub)
    status, _, body = await beta.call(hub.session, "GET", "tokens", "RECEIVER", "DE/EMA/TOK1", to=alpha.party,
                                      headers={"Authorization": f"Token {beta.token_c}"})
    assert status == 200, body
    assert len(alpha.received) == 1


async def test_a_party_of_a_multi_party_platform_is_reached_by_its_own_pair(hub: HubHarness) -> None:
    """Addressing is by party (OCPI 2.2.1 Routing headers): the platform hosting two eMSPs is told which one is
    meant."""
    alpha = cpo()
    duo = FakePartner(name="Duo", parties=[Party("DE", "EMA", "EMSP"), Party("BE", "EMZ", "EMSP")],
                      modules={m: ("SENDER", "RECEIVER") for m in ("locations", "tokens")})
    await hub.connect(alpha)
    await hub.connect(duo)
    second = duo.parties[1]
    status, _, body = await alpha.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                       to=second, json=LOCATION)
    assert status == 200, body
    got = duo.received[-1]
    assert (got.headers["OCPI-to-country-code"], got.headers["OCPI-to-party-id"]) == ("BE", "EMZ")
    # and the token sent is the same platform's, whichever of its parties is addressed
    assert got.headers["Authorization"] == ocpi_token(duo.token_b)
    # a platform speaks for each of its parties
    status, _, body = await duo.call(hub.session, "GET", "tokens", "RECEIVER", "BE/EMZ/TOK9", to=alpha.party,
                                     from_=second)
    assert status == 200, body
    assert alpha.received[-1].headers["OCPI-from-party-id"] == "EMZ"
