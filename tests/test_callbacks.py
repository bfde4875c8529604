"""URL rewriting (docs/ocpi-decisions.md, Callback URLs): URLs one party hands another through the hub are replaced by
unguessable
hub URLs that map back — command and charging-profile ``response_url`` (body and query), the CDR ``Location``
header and pagination ``Link`` headers. A hub URL reaches the original URL with the owner's token and routing
headers, only for the party it was issued to, only with its method, and only until it expires.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import HubHarness, MakeHub, cpo, emsp, running_hub
from tests.partners import FakePartner, Party, Received, default_responder, envelope, ocpi_token

TS = "2024-05-01T10:00:00Z"
CALLBACKS = "/ocpi/2.2.1/callbacks/"
ROUTING = ("OCPI-to-country-code", "OCPI-to-party-id", "OCPI-from-country-code", "OCPI-from-party-id")


def swapped(request: web.Request) -> dict[str, str]:
    pairs = (("OCPI-from-country-code", "OCPI-to-country-code"), ("OCPI-from-party-id", "OCPI-to-party-id"),
             ("OCPI-to-country-code", "OCPI-from-country-code"), ("OCPI-to-party-id", "OCPI-from-party-id"))
    return {dst: request.headers[src] for src, dst in pairs if src in request.headers}


class Cpo:
    """CPO behaviour: answers commands and profile requests (``result``, ``timeout``); serves a paginated list."""

    def __init__(self, timeout: int = 30, total: int = 5) -> None:
        self.timeout = timeout
        self.result = "ACCEPTED"
        self.total = total
        self.base_url = ""

    async def __call__(self, request: web.Request, rec: Received) -> web.StreamResponse:
        if "/receiver/commands/" in rec.path or "/receiver/chargingprofiles/" in rec.path:
            return web.json_response(envelope({"result": self.result, "timeout": self.timeout}),
                                     headers=swapped(request))
        if rec.method == "GET" and rec.path.rstrip("/") == "/ocpi/2.2.1/sender/locations":
            offset, limit = int(request.query.get("offset", 0)), int(request.query.get("limit", 2))
            items = [{"id": f"LOC{i}"} for i in range(offset, min(offset + limit, self.total))]
            headers = {**swapped(request), "X-Total-Count": str(self.total), "X-Limit": str(limit)}
            if offset + limit < self.total:
                nxt = urlencode({"offset": offset + limit, "limit": limit})
                headers["Link"] = f'<{self.base_url}/ocpi/2.2.1/sender/locations?{nxt}>; rel="next"'
            return web.json_response(envelope(items), headers=headers)
        return await default_responder(request, rec)


CDR = {"country_code": "NL", "party_id": "CPA", "id": "CDR1", "total_energy": 3.25, "last_updated": TS}


async def emsp_responder(request: web.Request, rec: Received) -> web.StreamResponse:
    """eMSP behaviour: takes results on its own URLs; stores CDRs and tells where (Location)."""
    base = f"{request.scheme}://{request.host}"
    if rec.method == "POST" and rec.path.rstrip("/") == "/ocpi/2.2.1/receiver/cdrs":
        return web.json_response(envelope(), status=201, headers={
            **swapped(request), "Location": f"{base}/ocpi/2.2.1/receiver/cdrs/stored/CDR1"})
    if rec.method == "GET" and rec.path == "/ocpi/2.2.1/receiver/cdrs/stored/CDR1":
        return web.json_response(envelope(CDR), headers=swapped(request))
    if rec.method == "POST" and "/results/" in rec.path:
        return web.json_response(envelope(message="result noted"), headers=swapped(request))
    return await default_responder(request, rec)


@pytest.fixture
async def parties(hub: HubHarness) -> tuple[FakePartner, FakePartner, FakePartner, FakePartner]:
    return await connect_parties(hub)


async def connect_parties(hub: HubHarness) -> tuple[FakePartner, FakePartner, FakePartner, FakePartner]:
    """CPO NL/CPA (the one commands go to), eMSP DE/EMA (the requester), and a bystander of each role."""
    cpa, cpb = cpo(), cpo(name="Other CPO", pid="CPB")
    ema, emb = emsp(), emsp(name="Other eMSP", pid="EMB")
    behaviour = Cpo()
    cpa.responder = cpb.responder = behaviour
    ema.responder = emb.responder = emsp_responder
    for partner in (cpa, cpb, ema, emb):
        await hub.connect(partner)
    behaviour.base_url = cpa.base_url
    return cpa, cpb, ema, emb


def original_url(ema: FakePartner, name: str) -> str:
    return f"{ema.base_url}/ocpi/2.2.1/sender/results/{name}/{uuid.uuid4().hex[:8]}?ref=kept"


def request_for(case: str, ema: FakePartner, response_url: str,
                expiry_date: str = TS) -> tuple[str, str, str, str, Any]:
    """(method, module, tail, query, body) of one request carrying ``response_url``."""
    token = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID", "contract_id": "DE-EMA-C1",
             "issuer": "Beta", "valid": True, "whitelist": "ALLOWED", "last_updated": TS}
    profile = {"charging_rate_unit": "W", "charging_profile_period": [{"start_period": 0, "limit": 11000.0}]}
    bodies: dict[str, Any] = {
        "START_SESSION": {"token": token, "location_id": "LOC1", "evse_uid": "EVSE1"},
        "STOP_SESSION": {"session_id": "S1"},
        "RESERVE_NOW": {"token": token, "expiry_date": expiry_date, "reservation_id": "R1", "location_id": "LOC1"},
        "UNLOCK_CONNECTOR": {"location_id": "LOC1", "evse_uid": "EVSE1", "connector_id": "1"},
        "CANCEL_RESERVATION": {"reservation_id": "R1"},
    }
    if case in bodies:
        return "POST", "commands", case, "", {"response_url": response_url, **bodies[case]}
    if case == "SET_PROFILE":
        return "PUT", "chargingprofiles", "S1", "", {"charging_profile": profile, "response_url": response_url}
    if case == "GET_PROFILE":
        return "GET", "chargingprofiles", "S1", urlencode({"duration": 900, "response_url": response_url}), None
    return "DELETE", "chargingprofiles", "S1", urlencode({"response_url": response_url}), None


def hub_url_seen_by_cpo(rec: Received) -> str:
    if rec.body:
        return str(rec.json()["response_url"])
    return parse_qs(rec.query)["response_url"][0]


async def post_raw(hub: HubHarness, url: str, token: str, body: bytes, *, method: str = "POST",
                   headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], Any]:
    h = {"Authorization": ocpi_token(token), "X-Request-ID": uuid.uuid4().hex, "Content-Type": "application/json",
         **(headers or {})}
    async with hub.session.request(method, url, data=body or None, headers=h) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None)


def from_(party: Party) -> dict[str, str]:
    return {"OCPI-from-country-code": party.country_code, "OCPI-from-party-id": party.party_id}


def routing_of(rec: Received) -> tuple[str | None, ...]:
    return tuple(rec.headers.get(h) for h in ("OCPI-to-country-code", "OCPI-to-party-id",
                                                "OCPI-from-country-code", "OCPI-from-party-id"))


async def issue(hub: HubHarness, cpa: FakePartner, ema: FakePartner, case: str = "START_SESSION",
                expiry_date: str = TS) -> tuple[str, str]:
    """The eMSP sends one request with a response_url to the CPO; returns (original URL, hub URL the CPO got)."""
    original = original_url(ema, case)
    method, module, tail, query, body = request_for(case, ema, original, expiry_date)
    before = len(cpa.received)
    status, _, doc = await ema.call(hub.session, method, module, "RECEIVER", tail, to=cpa.party, json=body,
                                    query=query)
    assert status == 200 and doc["data"]["result"] == "ACCEPTED", doc
    [rec] = cpa.received[before:]
    return original, hub_url_seen_by_cpo(rec)


RESULT = b'{"result" :  "ACCEPTED", "message": [{"language": "en", "text": "gestart \xc3\xa9"}]}'
CASES = ["START_SESSION", "STOP_SESSION", "RESERVE_NOW", "UNLOCK_CONNECTOR", "CANCEL_RESERVATION",
         "SET_PROFILE", "GET_PROFILE", "DELETE_PROFILE"]


@pytest.mark.parametrize("case", CASES)
async def test_result_posted_to_the_hub_url_reaches_the_original_url_at_the_emsp(
        hub: HubHarness, parties: tuple[FakePartner, ...], case: str) -> None:
    cpa, _, ema, _ = parties
    original, hub_url = await issue(hub, cpa, ema, case)
    assert hub_url.startswith(hub.url + CALLBACKS), hub_url
    assert original not in hub_url and ema.base_url not in hub_url and "results" not in hub_url
    assert len(hub_url.rsplit("/", 1)[1]) >= 22, "unguessable: at least 128 random bits"
    # The CPO posts its result with its own token, FROM = itself.
    status, headers, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT, headers=from_(cpa.party))
    assert status == 200, doc
    assert doc["status_message"] == "result noted", "the CPO gets the eMSP's own answer"
    assert (headers["OCPI-from-country-code"], headers["OCPI-from-party-id"]) == ("DE", "EMA")
    assert (headers["OCPI-to-country-code"], headers["OCPI-to-party-id"]) == ("NL", "CPA")
    [rec] = [r for r in ema.received if "/results/" in r.path]
    assert f"{ema.base_url}{rec.path}?{rec.query}" == original
    assert rec.method == "POST" and rec.body == RESULT
    assert rec.headers["Authorization"] == ocpi_token(ema.token_b), "the hub calls the eMSP with its token"
    assert routing_of(rec) == ("DE", "EMA", "NL", "CPA")


async def test_each_request_gets_its_own_hub_url(hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, _ = parties
    urls = {(await issue(hub, cpa, ema))[1] for _ in range(3)}
    assert len(urls) == 3


@pytest.mark.parametrize("routing", ["none", "to-hub", "to-emsp"])
async def test_the_hub_sets_routing_headers_of_a_result_itself(
        hub: HubHarness, parties: tuple[FakePartner, ...], routing: str) -> None:
    """Whatever the CPO puts in (or leaves out of) the routing headers, the eMSP sees TO = itself, FROM = CPO."""
    cpa, _, ema, _ = parties
    _, hub_url = await issue(hub, cpa, ema)
    headers = {"none": {},
               "to-hub": {**from_(cpa.party), "OCPI-to-country-code": "NL", "OCPI-to-party-id": "HUB"},
               "to-emsp": {**from_(cpa.party), "OCPI-to-country-code": "DE", "OCPI-to-party-id": "EMA"}}[routing]
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT, headers=headers)
    assert status == 200, doc
    [rec] = [r for r in ema.received if "/results/" in r.path]
    assert routing_of(rec) == ("DE", "EMA", "NL", "CPA")


async def test_another_party_using_the_hub_url_is_403(hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, cpb, ema, emb = parties
    _, hub_url = await issue(hub, cpa, ema)
    attempts = [(cpb, from_(cpb.party)), (cpb, from_(cpa.party)), (emb, from_(emb.party)), (ema, from_(ema.party)),
                (cpa, from_(cpb.party))]  # the last: the right platform speaking for a party it does not host
    for partner, headers in attempts:
        status, _, doc = await post_raw(hub, hub_url, partner.token_c or "", RESULT, headers=headers)
        assert status == 403, (partner.name, headers, doc)
        assert doc["status_code"] in (2000, 2001), doc
    assert [r for r in ema.received if "/results/" in r.path] == []
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT, headers=from_(cpa.party))
    assert status == 200, "refusals did not use the hub URL up"


async def test_wrong_method_is_405_unknown_id_is_404_no_token_is_401(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, _ = parties
    _, hub_url = await issue(hub, cpa, ema)
    for method in ("GET", "PUT", "DELETE"):
        status, headers, doc = await post_raw(hub, hub_url, cpa.token_c or "", b"", method=method,
                                              headers=from_(cpa.party))
        assert status == 405, (method, doc)
        assert headers.get("Allow") == "POST"
    status, _, doc = await post_raw(hub, hub.url + CALLBACKS + "x" * 32, cpa.token_c or "", RESULT,
                                    headers=from_(cpa.party))
    assert status == 404, doc
    status, _, doc = await post_raw(hub, hub_url, "not-a-token", RESULT, headers=from_(cpa.party))
    assert status == 401, doc
    assert [r for r in ema.received if "/results/" in r.path] == []


async def test_result_for_an_emsp_that_is_not_connected_is_4003(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, _ = parties
    _, hub_url = await issue(hub, cpa, ema)
    platform = next(p for p in (await hub.admin("GET", "/admin/platforms"))[1] if p["name"] == ema.name)
    assert (await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend"))[0] == 200
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT, headers=from_(cpa.party))
    assert status == 503 and doc["status_code"] == 4003, doc
    assert (await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume"))[0] == 200
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT, headers=from_(cpa.party))
    assert status == 200, doc
    assert len([r for r in ema.received if "/results/" in r.path]) == 1


async def test_hub_url_expires_after_the_cpo_timeout_plus_grace(make_hub: MakeHub) -> None:
    hub = await make_hub(result_url_grace=0.4)
    cpa, _, ema, _ = await connect_parties(hub)
    behaviour = cpa.responder
    assert isinstance(behaviour, Cpo)
    behaviour.timeout = 0
    _, short = await issue(hub, cpa, ema, "START_SESSION")
    _, short_query = await issue(hub, cpa, ema, "GET_PROFILE")
    behaviour.timeout = 30
    _, long = await issue(hub, cpa, ema, "STOP_SESSION")
    await asyncio.sleep(0.8)
    for url in (short, short_query):
        status, _, doc = await post_raw(hub, url, cpa.token_c or "", RESULT, headers=from_(cpa.party))
        assert status == 404 and "expired" in doc["status_message"], doc
    status, _, doc = await post_raw(hub, long, cpa.token_c or "", RESULT, headers=from_(cpa.party))
    assert status == 200, "a result within the CPO's timeout still gets through"
    assert len([r for r in ema.received if "/results/" in r.path]) == 1


# -- how long a result URL lives: a reservation's results come until its expiry_date ------------------------------

CANCELED = b'{"result": "CANCELED_RESERVATION"}'


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def sleep_until(epoch: float) -> None:
    await asyncio.sleep(max(0.0, epoch - time.time()))


def results_at(ema: FakePartner, original: str) -> list[bytes]:
    return [r.body for r in ema.received if f"{ema.base_url}{r.path}?{r.query}" == original]


async def test_a_late_canceled_reservation_reaches_the_emsp_until_expiry_date_plus_grace(make_hub: MakeHub) -> None:
    """RESERVE_NOW: ACCEPTED first, CANCELED_RESERVATION later, when the CPO cancels the reservation (OCPI 2.2.1
    Commands) - long after the CPO's timeout + grace. Only after expiry_date + grace is the URL gone."""
    grace = 0.5
    hub = await make_hub(result_url_grace=grace)
    cpa, _, ema, _ = await connect_parties(hub)
    behaviour = cpa.responder
    assert isinstance(behaviour, Cpo)
    behaviour.timeout = 0
    expiry = float(int(time.time()) + 4)  # whole seconds: an OCPI DateTime without fractions
    original, hub_url = await issue(hub, cpa, ema, "RESERVE_NOW", expiry_date=utc(expiry))
    _, start_url = await issue(hub, cpa, ema, "START_SESSION")  # the same timeout, no reservation
    cpo_headers = from_(cpa.party)
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT, headers=cpo_headers)
    assert status == 200, doc
    await asyncio.sleep(grace + 0.5)  # past the CPO's timeout (0) + grace
    status, _, doc = await post_raw(hub, start_url, cpa.token_c or "", RESULT, headers=cpo_headers)
    assert status == 404, "a START_SESSION's URL lives by the CPO's timeout"
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", CANCELED, headers=cpo_headers)
    assert status == 200 and doc["status_message"] == "result noted", doc
    assert results_at(ema, original) == [RESULT, CANCELED], "both results, in order, at the eMSP's own URL"
    await sleep_until(expiry + grace + 0.5)
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", CANCELED, headers=cpo_headers)
    assert status == 404 and "expired" in doc["status_message"], doc
    assert results_at(ema, original) == [RESULT, CANCELED]


async def test_a_refused_reservation_lives_by_the_cpo_timeout_alone(make_hub: MakeHub) -> None:
    """A RESERVE_NOW the CPO answers REJECTED holds no reservation: nothing can be canceled later."""
    hub = await make_hub(result_url_grace=0.4)
    cpa, _, ema, _ = await connect_parties(hub)
    behaviour = cpa.responder
    assert isinstance(behaviour, Cpo)
    behaviour.timeout, behaviour.result = 0, "REJECTED"
    method, module, tail, _, body = request_for("RESERVE_NOW", ema, original_url(ema, "RESERVE_NOW"),
                                                utc(time.time() + 3600))
    status, _, doc = await ema.call(hub.session, method, module, "RECEIVER", tail, to=cpa.party, json=body)
    assert status == 200 and doc["data"]["result"] == "REJECTED", doc
    hub_url = hub_url_seen_by_cpo(cpa.received[-1])
    await asyncio.sleep(0.8)
    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT, headers=from_(cpa.party))
    assert status == 404, doc


async def test_no_expiry_date_or_timeout_keeps_a_result_url_past_the_maximum(make_hub: MakeHub) -> None:
    """HUB_RESULT_URL_MAX_LIFETIME bounds what partners ask for: a reservation until the year 9999, a CPO timeout
    of a billion seconds."""
    hub = await make_hub(result_url_grace=0.2, result_url_max_lifetime=1.0)
    cpa, _, ema, _ = await connect_parties(hub)
    behaviour = cpa.responder
    assert isinstance(behaviour, Cpo)
    behaviour.timeout = 0
    _, year_9999 = await issue(hub, cpa, ema, "RESERVE_NOW", expiry_date="9999-12-31T23:59:59Z")
    behaviour.timeout = 10**9
    _, huge_timeout = await issue(hub, cpa, ema, "STOP_SESSION")
    _, huge_both = await issue(hub, cpa, ema, "RESERVE_NOW", expiry_date="9999-12-31T23:59:59Z")
    status, _, doc = await post_raw(hub, huge_both, cpa.token_c or "", RESULT, headers=from_(cpa.party))
    assert status == 200, "within the maximum, the URL works"
    await asyncio.sleep(1.5)
    for url in (year_9999, huge_timeout, huge_both):
        status, _, doc = await post_raw(hub, url, cpa.token_c or "", CANCELED, headers=from_(cpa.party))
        assert status == 404, doc
    assert len([r for r in ema.received if "/results/" in r.path]) == 1


# -- CDR Location ------------------------------------------------------------------------------------------------

async def test_cdr_location_points_at_the_hub_and_returns_the_emsps_cdr(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, cpb, ema, _ = parties
    cdr = {**CDR, "cdr_token": {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID",
                                "contract_id": "DE-EMA-C1"}}
    status, headers, doc = await cpa.call(hub.session, "POST", "cdrs", "RECEIVER", to=ema.party, json=cdr)
    assert status == 201, doc
    location = headers["Location"]
    assert location.startswith(hub.url + CALLBACKS) and ema.base_url not in location, location
    status, headers, doc = await post_raw(hub, location, cpa.token_c or "", b"", method="GET",
                                          headers=from_(cpa.party))
    assert status == 200 and doc["data"] == CDR, doc
    assert (headers["OCPI-from-country-code"], headers["OCPI-from-party-id"]) == ("DE", "EMA")
    [rec] = [r for r in ema.received if r.method == "GET"]
    assert rec.path == "/ocpi/2.2.1/receiver/cdrs/stored/CDR1"
    assert rec.headers["Authorization"] == ocpi_token(ema.token_b)
    assert routing_of(rec) == ("DE", "EMA", "NL", "CPA")
    status, _, doc = await post_raw(hub, location, cpb.token_c or "", b"", method="GET", headers=from_(cpb.party))
    assert status == 403, doc
    status, _, doc = await post_raw(hub, location, cpa.token_c or "", b"{}", headers=from_(cpa.party))
    assert status == 405, doc


async def test_the_answer_to_a_result_is_addressed_to_the_party_the_hub_url_was_issued_to(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    """A CPO that posts its result without routing headers, to an eMSP that answers without them, still gets an
    answer TO = itself, FROM = the eMSP (OCPI 2.2.1 Routing headers: on every response of a functional module)."""
    cpa, _, ema, _ = parties

    async def bare(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope(message="result noted"))

    _, hub_url = await issue(hub, cpa, ema)
    ema.responder = bare
    status, headers, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT)
    assert status == 200, doc
    assert {h: headers.get(h) for h in ROUTING} == {"OCPI-to-country-code": "NL", "OCPI-to-party-id": "CPA",
                                                   "OCPI-from-country-code": "DE", "OCPI-from-party-id": "EMA"}
    # the hub's own refusal of that result, once the eMSP is gone, is addressed to the CPO too
    platform = next(p for p in (await hub.admin("GET", "/admin/platforms"))[1] if p["name"] == ema.name)
    assert (await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend"))[0] == 200
    status, headers, doc = await post_raw(hub, hub_url, cpa.token_c or "", RESULT)
    assert (status, doc["status_code"]) == (503, 4003), doc
    assert {h: headers.get(h) for h in ROUTING} == {"OCPI-to-country-code": "NL", "OCPI-to-party-id": "CPA",
                                                   "OCPI-from-country-code": "NL", "OCPI-from-party-id": "HUB"}


# -- pagination Link -----------------------------------------------------------------------------------------------

async def test_link_of_a_forwarded_list_points_at_the_hub_and_can_be_followed_to_the_end(
        hub: HubHarness, parties: tuple[FakePartner, ...]) -> None:
    cpa, _, ema, emb = parties
    status, headers, doc = await ema.call(hub.session, "GET", "locations", "SENDER", to=cpa.party, query="limit=2")
    assert status == 200, doc
    ids = [x["id"] for x in doc["data"]]
    links = []
    while "Link" in headers:
        link = headers["Link"]
        assert link.endswith('; rel="next"'), link
        url = link[link.index("<") + 1:link.index(">")]
        assert url.startswith(hub.url + CALLBACKS) and cpa.base_url not in url, url
        links.append(url)
        status, headers, doc = await post_raw(hub, url, ema.token_c or "", b"", method="GET",
                                              headers=from_(ema.party))
        assert status == 200, doc
        assert headers["X-Total-Count"] == "5"
        assert (headers["OCPI-from-country-code"], headers["OCPI-from-party-id"]) == ("NL", "CPA")
        ids += [x["id"] for x in doc["data"]]
    assert ids == ["LOC0", "LOC1", "LOC2", "LOC3", "LOC4"]
    assert len(links) == 2
    gets = [r for r in cpa.received if r.method == "GET"]
    assert [parse_qs(r.query).get("offset", ["0"])[0] for r in gets] == ["0", "2", "4"]
    assert all(routing_of(r) == ("NL", "CPA", "DE", "EMA") for r in gets)
    assert all(r.headers["Authorization"] == ocpi_token(cpa.token_b) for r in gets)
    # The link is the caller's: another eMSP cannot use it to read the CPO's list.
    status, _, doc = await post_raw(hub, links[0], emb.token_c or "", b"", method="GET", headers=from_(emb.party))
    assert status == 403, doc
    assert urlsplit(links[0]).query == "", "nothing of the CPO's URL leaks into the hub URL"


# A receiver's Link may hold several link-values, in one header line or in several (RFC 8288 §3; RFC 9110 §5.3).
# OCPI 2.2.1 transport_and_format (Pagination) defines one relation, rel="next": the hub relays that one as a hub URL
# and drops the others, so none of the receiver's URLs reaches the caller.
HUB_LINK = re.compile(r'<([^>]*)>; rel="next"')


@pytest.fixture(params=["lean", "aiohttp"])
async def forwarding_hub(backend: str | None, request: pytest.FixtureRequest) -> AsyncIterator[HubHarness]:
    """Both forward clients (HUB_FORWARD_CLIENT): each reads the receiver's answer headers its own way."""
    async with running_hub(backend, forward_client=request.param) as h:
        yield h


async def crawl_with_links(hub: HubHarness, lines: list[str]) -> tuple[list[str], FakePartner, FakePartner]:
    """The eMSP reads the CPO's locations; the CPO's first page answers ``lines`` as its Link header lines ({cpo}:
    its base URL), the page they lead to has none. Returns the Link values the eMSP got, each page's."""
    cpa, ema = cpo(), emsp()

    async def pages(request: web.Request, rec: Received) -> web.StreamResponse:
        if "page=" in rec.query:
            return web.json_response(envelope([{"id": "LOC2"}]), headers=swapped(request))
        headers = CIMultiDict(swapped(request))
        for line in lines:
            headers.add("Link", line.format(cpo=cpa.base_url + "/ocpi/2.2.1/sender/locations"))
        return web.json_response(envelope([{"id": "LOC1"}]), headers=headers)

    cpa.responder = pages
    await hub.connect(cpa)
    await hub.connect(ema)
    status, headers, doc = await ema.call(hub.session, "GET", "locations", "SENDER", to=cpa.party)
    assert status == 200, doc
    got = headers.getall("Link", [])
    assert all(cpa.base_url not in link for link in got), got
    if got:
        match = HUB_LINK.fullmatch(got[0])
        assert len(got) == 1 and match is not None and match.group(1).startswith(hub.url + CALLBACKS), got
        status, headers, doc = await post_raw(hub, match.group(1), ema.token_c or "", b"", method="GET",
                                              headers=from_(ema.party))
        assert (status, doc["data"], headers.get("Link")) == (200, [{"id": "LOC2"}], None), doc
    return got, cpa, ema


def queries(cpa: FakePartner) -> list[str]:
    return [r.query for r in cpa.received if r.method == "GET"]


async def test_of_several_link_values_only_next_is_relayed_and_as_a_hub_url(forwarding_hub: HubHarness) -> None:
    got, cpa, _ = await crawl_with_links(forwarding_hub, [
        '<{cpo}?page=first>; rel="first", <{cpo}?page=2&ids=a,b>; rel="next", <{cpo}?page=9>; rel="last"'])
    assert len(got) == 1
    assert queries(cpa) == ["", "page=2&ids=a,b"]


async def test_a_repeated_link_header_is_read_whole_not_only_its_first_line(forwarding_hub: HubHarness) -> None:
    got, cpa, _ = await crawl_with_links(forwarding_hub, [
        '<{cpo}?page=first>; rel="first"', '<{cpo}?page=0>; rel="prev", <{cpo}?page=2>; rel="next"'])
    assert len(got) == 1
    assert queries(cpa) == ["", "page=2"]


@pytest.mark.parametrize("lines", [
    # a comma, a '<' and a rel inside a quoted parameter; parameter names in any case; several relation types
    ['<{cpo}?page=0>; title="back, <{cpo}?page=x>; rel=next"; rel=prev, <{cpo}?page=2>; REL="last next"'],
    # whitespace and empty list elements (RFC 9110 §5.6.1)
    [' , <{cpo}?page=2> ;  rel = next ,, '],
    # a second rel parameter is ignored (RFC 8288 §3.3); of two next links the first is the page
    ['<{cpo}?page=0>; rel="prev"; rel="next", <{cpo}?page=2>; rel="next", <{cpo}?page=3>; rel="next"'],
    # no rel at all (RFC 8288 requires one): the next page, the only relation OCPI defines
    ['<{cpo}?page=2>'],
], ids=["quoted", "whitespace", "first-rel", "no-rel"])
async def test_link_values_are_parsed_as_rfc_8288_writes_them(forwarding_hub: HubHarness, lines: list[str]) -> None:
    got, cpa, _ = await crawl_with_links(forwarding_hub, lines)
    assert len(got) == 1
    assert queries(cpa) == ["", "page=2"]


async def test_a_page_whose_links_are_none_of_them_next_is_relayed_without_link(hub: HubHarness) -> None:
    got, cpa, _ = await crawl_with_links(hub, ['<{cpo}?page=0>; rel="prev", <{cpo}?page=0>; rel="first"'])
    assert got == []
    assert queries(cpa) == [""]


async def test_a_link_header_that_is_not_link_values_makes_the_answer_unusable(hub: HubHarness) -> None:
    cpa, ema = cpo(), emsp()

    async def answer(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope([]), headers={
            "Link": f'{cpa.base_url}/ocpi/2.2.1/sender/locations?page=2; rel="next"'})

    cpa.responder = answer
    await hub.connect(cpa)
    await hub.connect(ema)
    status, headers, body = await ema.call(hub.session, "GET", "locations", "SENDER", to=cpa.party)
    assert (status, body["status_code"]) == (502, 4000), body
    assert "Link" not in headers and cpa.base_url not in body["status_message"], body
