"""Roaming agreements enforced end to end over HTTP (docs/agreements.md, "Enforcement"): direct and open-routed
requests, the broadcast audience and its queued deliveries, GET All, ClientInfo, callbacks, and the policy
override of one platform. Fake partners on both queue backends; the hub runs with HUB_ROAMING_POLICY=agreements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from hub.context import HUB_KEY, Hub
from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import ALL_MODULES, FakePartner, Party, Received, default_responder, envelope, ocpi_token
from tests.test_broadcast import HUB, LOCATION

CPA, CPB = Party("NL", "CPA", "CPO"), Party("NL", "CPB", "CPO")
EMA, EMB = Party("DE", "EMA", "EMSP"), Party("DE", "EMB", "EMSP")
SESSION = {"country_code": "NL", "party_id": "CPA", "id": "S1", "start_date_time": "2025-01-01T10:00:00Z",
           "kwh": 1.5, "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": "EVSE1", "connector_id": "1",
           "currency": "EUR", "status": "ACTIVE", "last_updated": "2025-01-01T10:00:00Z",
           "cdr_token": {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID",
                         "contract_id": "DE-EMA-C1"}}


def listening(partner: FakePartner) -> FakePartner:
    """The partner also implements the hubclientinfo RECEIVER: the hub pushes it ClientInfo."""
    partner.modules = {**{m: ("SENDER", "RECEIVER") for m in ALL_MODULES}, "hubclientinfo": ("RECEIVER",)}
    return partner


@dataclass
class Net:
    hub: HubHarness
    cpa: FakePartner
    cpb: FakePartner
    ema: FakePartner
    emb: FakePartner
    ids: dict[str, str]

    @property
    def core(self) -> Hub:
        return self.hub.app[HUB_KEY]

    async def agree(self, a: Party, b: Party, *modules: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.hub.admin("POST", "/admin/agreements", {
            "party_a": a.role_spec, "party_b": b.role_spec, "modules": list(modules), **fields})
        assert status == 201, body
        return dict(body)

    def refused(self) -> float:
        return float(self.core.metrics.pushes_refused.labels(kind="broadcast")._value.get())


@pytest.fixture
def make_hub(make_store_hub: MakeHub) -> MakeHub:
    """Every enforcement test on both stores (agreements, the GET All owner filter and platforms live there) and
    both queue backends."""
    return make_store_hub


async def network(make_hub: MakeHub, **settings: Any) -> Net:
    h = await make_hub(**{"roaming_policy": "agreements", **settings})
    partners = [listening(cpo("CPO A", "CPA")), cpo("CPO B", "CPB"), listening(emsp("eMSP A", "EMA")),
                listening(emsp("eMSP B", "EMB"))]
    ids = {}
    for p in partners:
        ids[p.parties[0].party_id] = (await h.connect(p))["id"]
    return Net(h, *partners, ids=ids)


async def eventually(check: Callable[[], Any], what: str, limit: float = 10.0) -> Any:
    deadline = time.monotonic() + limit
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return result


def module_calls(partner: FakePartner, fragment: str) -> list[Received]:
    return [r for r in partner.received if fragment in r.path]


# -- direct requests ------------------------------------------------------------------------------------------

async def test_a_direct_request_without_an_agreement_is_403_2001_with_the_reason_and_never_forwarded(
        make_hub: MakeHub) -> None:
    net = await network(make_hub)
    status, headers, doc = await net.ema.call(net.hub.session, "GET", "locations", "SENDER", "LOC1", to=CPA)
    assert status == 403, doc
    assert doc["status_code"] == 2001
    assert doc["status_message"] == "no agreement between DE/EMA and NL/CPA covering locations"
    assert (headers["OCPI-from-party-id"], headers["OCPI-to-party-id"]) == ("HUB", "EMA")
    assert module_calls(net.cpa, "/locations") == []
    await net.core.audit.flush()
    records = [r for r in await net.core.store.query_audit(_audit_query()) if r.module == "locations"]
    assert records and records[0].http_status == 403 and records[0].ocpi_status == 2001


def _audit_query() -> Any:
    from hub.audit import AuditQuery

    return AuditQuery(limit=50)


async def test_an_agreement_allows_both_ways_only_the_modules_it_covers(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    await net.agree(CPA, EMA, "sessions", id="A12")
    status, _, doc = await net.cpa.call(net.hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", to=EMA,
                                        json=SESSION)
    assert (status, doc["status_code"]) == (200, 1000), doc
    assert len(module_calls(net.ema, "/sessions/NL/CPA/S1")) == 1
    status, _, doc = await net.ema.call(net.hub.session, "GET", "sessions", "SENDER", to=CPA)
    assert status == 200, doc  # the eMSP asks back: the agreement is symmetric
    status, _, doc = await net.ema.call(net.hub.session, "GET", "locations", "SENDER", "LOC1", to=CPA)
    assert status == 403
    assert doc["status_message"] == "no agreement between DE/EMA and NL/CPA covering locations (A12 covers sessions)"
    status, _, doc = await net.emb.call(net.hub.session, "GET", "sessions", "SENDER", to=CPA)
    assert status == 403 and "no agreement between DE/EMB and NL/CPA covering sessions" == doc["status_message"]


@pytest.mark.parametrize(("fields", "reason"), [
    ({"status": "suspended"}, "agreement A7 is suspended"),
    ({"valid_from": "2099-01-01T00:00:00Z"}, "agreement A7 is valid from 2099-01-01T00:00:00Z"),
    ({"valid_from": "2020-01-01T00:00:00Z", "valid_until": "2021-01-01T00:00:00Z"},
     "agreement A7 ended on 2021-01-01T00:00:00Z"),
])
async def test_a_suspended_not_yet_valid_or_ended_agreement_refuses_with_its_reason(
        make_hub: MakeHub, fields: dict[str, str], reason: str) -> None:
    net = await network(make_hub)
    await net.agree(CPA, EMA, id="A7", **fields)
    status, _, doc = await net.cpa.call(net.hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", to=EMA,
                                        json=SESSION)
    assert (status, doc["status_code"], doc["status_message"]) == (403, 2001, reason)
    assert module_calls(net.ema, "/sessions") == []


async def test_suspend_and_resume_take_effect_at_once(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    agreement = await net.agree(CPA, EMA)

    async def put() -> int:
        status, _, _ = await net.cpa.call(net.hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", to=EMA,
                                          json=SESSION)
        return status

    assert await put() == 200
    assert (await net.hub.admin("POST", f"/admin/agreements/{agreement['id']}/suspend"))[0] == 200
    assert await put() == 403
    assert (await net.hub.admin("POST", f"/admin/agreements/{agreement['id']}/resume"))[0] == 200
    assert await put() == 200
    assert (await net.hub.admin("DELETE", f"/admin/agreements/{agreement['id']}"))[0] == 200
    assert await put() == 403


async def test_the_refusal_comes_before_the_receivers_status_so_it_reveals_nothing(make_hub: MakeHub) -> None:
    """Without an agreement a party learns neither that the other is suspended (4003) nor unknown (4001)."""
    net = await network(make_hub)
    assert (await net.hub.admin("POST", f"/admin/platforms/{net.ids['EMB']}/suspend"))[0] == 200
    for to in (EMB, Party("FR", "XXX", "EMSP")):
        status, _, doc = await net.cpa.call(net.hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", to=to,
                                            json=SESSION)
        assert (status, doc["status_code"]) == (403, 2001), doc


# -- open routing ----------------------------------------------------------------------------------------------

async def test_open_routing_only_routes_to_a_candidate_the_sender_has_an_agreement_with(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    await net.agree(CPA, EMA, "locations")
    status, _, _ = await net.cpa.call(net.hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=EMA,
                                      json=LOCATION)
    assert status == 200  # the hub learns: location LOC1 is NL/CPA's
    status, _, doc = await net.ema.call(net.hub.session, "GET", "locations", "SENDER", "LOC1")  # no TO
    assert (status, doc["status_code"]) == (200, 1000), doc
    assert len(module_calls(net.cpa, "/locations/LOC1")) == 1
    status, _, doc = await net.emb.call(net.hub.session, "GET", "locations", "SENDER", "LOC1")
    assert (status, doc["status_code"]) == (404, 4001), doc
    assert doc["status_message"] == ("open routing: no receiver you have a roaming agreement with is known for "
                                     "location LOC1; send OCPI-to-* headers")
    assert "CPA" not in doc["status_message"]
    assert len(module_calls(net.cpa, "/locations/LOC1")) == 1


# -- broadcast ------------------------------------------------------------------------------------------------

async def test_a_broadcast_reaches_only_the_parties_the_owner_has_an_agreement_with(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    await net.agree(CPA, EMA, "locations")
    await net.agree(CPA, EMB, "tariffs")  # not locations
    status, _, doc = await net.cpa.call(net.hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=HUB,
                                        json=LOCATION)
    assert status == 200 and doc["status_message"] == "accepted for 1 receivers", doc
    await eventually(lambda: module_calls(net.ema, "/locations/NL/CPA/LOC1"), "the eMSP with an agreement")
    await asyncio.sleep(0.3)
    assert module_calls(net.emb, "/locations") == []


async def test_a_broadcast_retry_after_the_agreement_was_removed_is_dropped_and_counted(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    agreement = await net.agree(CPA, EMA, "locations")
    attempts: list[float] = []

    async def down_once(request: web.Request, rec: Received) -> web.StreamResponse:
        if "/locations/" in rec.path:
            attempts.append(time.monotonic())
            if len(attempts) == 1:
                return web.Response(status=503, text="busy")
        return await default_responder(request, rec)

    net.ema.responder = down_once
    status, _, _ = await net.cpa.call(net.hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=HUB,
                                      json=LOCATION)
    assert status == 200
    await eventually(lambda: attempts, "the first delivery (refused by the eMSP: a retry is scheduled)")
    before = net.refused()
    assert (await net.hub.admin("DELETE", f"/admin/agreements/{agreement['id']}"))[0] == 200
    await eventually(lambda: net.refused() > before, "the retry to be judged again and dropped")
    assert len(attempts) == 1, "the retry must not reach the eMSP any more"
    status, letters = await net.hub.admin("GET", "/admin/dead-letters")
    assert status == 200 and letters == []
    status, queues = await net.hub.admin("GET", "/admin/queues")
    assert all(q["depth"] == 0 for q in queues), queues


async def test_a_dead_letter_replayed_after_the_agreement_was_suspended_is_dropped(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    agreement = await net.agree(CPA, EMA, "locations")

    async def refuse(request: web.Request, rec: Received) -> web.StreamResponse:
        if "/locations/" in rec.path:
            return web.json_response(envelope(status_code=2001, message="no"), status=400)
        return await default_responder(request, rec)

    net.ema.responder = refuse
    await net.cpa.call(net.hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=HUB, json=LOCATION)
    deadline = time.monotonic() + 10
    while True:
        status, letters = await net.hub.admin("GET", "/admin/dead-letters")
        if letters:
            break
        assert time.monotonic() < deadline, "the refused push should become a dead letter"
        await asyncio.sleep(0.05)
    net.ema.responder = default_responder
    net.ema.received.clear()
    assert (await net.hub.admin("POST", f"/admin/agreements/{agreement['id']}/suspend"))[0] == 200
    before = net.refused()
    status, body = await net.hub.admin("POST", f"/admin/dead-letters/{letters[0]['id']}/replay")
    assert status == 200, body
    await eventually(lambda: net.refused() > before, "the replay to be dropped")
    assert module_calls(net.ema, "/locations") == []


# -- GET All ---------------------------------------------------------------------------------------------------

async def test_get_all_lists_only_objects_of_owners_the_viewer_has_an_agreement_with(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    await net.agree(CPA, EMA, "locations")
    await net.agree(CPB, EMA, "tariffs")  # CPB's locations are not covered
    for partner, owner in ((net.cpa, "CPA"), (net.cpb, "CPB")):
        for n in range(3):
            location = {**LOCATION, "party_id": owner, "id": f"L{owner}{n}"}
            status, _, _ = await partner.call(net.hub.session, "PUT", "locations", "RECEIVER",
                                              f"NL/{owner}/L{owner}{n}", to=HUB, json=location)
            assert status == 200
    status, headers, doc = await net.ema.call(net.hub.session, "GET", "locations", "SENDER", to=HUB,
                                              query="limit=2")
    assert status == 200, doc
    assert [x["id"] for x in doc["data"]] == ["LCPA0", "LCPA1"]
    assert headers["X-Total-Count"] == "3"  # the total counts what the viewer may see, not the store
    status, _, doc = await net.emb.call(net.hub.session, "GET", "locations", "SENDER", to=HUB)
    assert (status, doc["data"]) == (200, [])


# -- ClientInfo --------------------------------------------------------------------------------------------------

async def _client_infos(net: Net, partner: FakePartner) -> list[str]:
    async with net.hub.session.get(f"{net.hub.url}/ocpi/2.2.1/hubclientinfo",
                                   headers={"Authorization": ocpi_token(partner.token_c or "")}) as resp:
        doc = await resp.json()
    assert resp.status == 200, doc
    return sorted(f"{x['country_code']}/{x['party_id']}" for x in doc["data"])


async def test_client_info_lists_and_pushes_only_the_parties_a_platform_has_an_agreement_with(
        make_hub: MakeHub) -> None:
    net = await network(make_hub)
    assert await _client_infos(net, net.ema) == []
    await net.agree(CPA, EMA, "cdrs")  # any module makes the status visible
    assert await _client_infos(net, net.ema) == ["NL/CPA"]
    assert await _client_infos(net, net.emb) == []
    net.ema.received.clear()
    net.emb.received.clear()
    for pid in ("CPA", "CPB"):
        assert (await net.hub.admin("POST", f"/admin/platforms/{net.ids[pid]}/suspend"))[0] == 200
    await eventually(lambda: module_calls(net.ema, "/hubclientinfo/NL/CPA"), "the push about its partner")
    await asyncio.sleep(0.3)
    assert module_calls(net.ema, "/hubclientinfo/NL/CPB") == []
    assert module_calls(net.emb, "/hubclientinfo") == []


async def test_an_agreement_coming_into_force_pushes_each_side_the_clientinfo_of_the_other(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    net.ema.received.clear()
    net.emb.received.clear()
    await net.agree(CPA, EMA, "cdrs")
    await eventually(lambda: module_calls(net.ema, "/hubclientinfo/NL/CPA"), "eMSP A told about its new partner")
    await asyncio.sleep(0.3)
    assert module_calls(net.emb, "/hubclientinfo") == [], "no agreement, no ClientInfo"
    assert module_calls(net.ema, "/hubclientinfo/NL/CPB") == []


# -- callbacks -------------------------------------------------------------------------------------------------

async def test_a_callback_of_an_allowed_command_keeps_working_after_the_agreement_ended(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    agreement = await net.agree(CPA, EMA, "commands")
    response_url = f"{net.ema.base_url}/ocpi/2.2.1/sender/results/START_SESSION/42"
    command = {"response_url": response_url, "location_id": "LOC1", "evse_uid": "EVSE1",
               "token": {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID",
                         "contract_id": "DE-EMA-C1", "issuer": "A", "valid": True, "whitelist": "ALLOWED",
                         "last_updated": "2025-01-01T00:00:00Z"}}
    status, _, doc = await net.ema.call(net.hub.session, "POST", "commands", "RECEIVER", "START_SESSION", to=CPA,
                                        json=command)
    assert status == 200, doc
    forwarded = module_calls(net.cpa, "/commands/START_SESSION")[0].json()
    hub_url = forwarded["response_url"]
    assert hub_url.startswith(net.hub.url + "/ocpi/2.2.1/callbacks/")
    assert (await net.hub.admin("DELETE", f"/admin/agreements/{agreement['id']}"))[0] == 200
    async with net.hub.session.post(hub_url, json={"result": "ACCEPTED"}, headers={
            "Authorization": ocpi_token(net.cpa.token_c or ""), "OCPI-from-country-code": "NL",
            "OCPI-from-party-id": "CPA", "OCPI-to-country-code": "DE", "OCPI-to-party-id": "EMA"}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert [r for r in net.ema.received if r.path.endswith("/START_SESSION/42")]


# -- policy ----------------------------------------------------------------------------------------------------

async def test_with_policy_open_nothing_is_checked_and_a_platform_may_ask_for_agreements(make_hub: MakeHub) -> None:
    net = await network(make_hub, roaming_policy="open")
    assert net.core.roaming.idle
    status, _, _ = await net.ema.call(net.hub.session, "GET", "locations", "SENDER", "LOC1", to=CPA)
    assert status == 200
    status, body = await net.hub.admin("PUT", f"/admin/platforms/{net.ids['CPA']}/roaming-policy",
                                       {"policy": "agreements"})
    assert status == 200 and body["roaming_policy"] == {"policy": "agreements", "source": "platform"}, body
    status, _, doc = await net.ema.call(net.hub.session, "GET", "locations", "SENDER", "LOC1", to=CPA)
    assert (status, doc["status_message"]) == (403, "no agreement between DE/EMA and NL/CPA covering locations")
    status, _, _ = await net.ema.call(net.hub.session, "GET", "locations", "SENDER", "LOC1", to=CPB)
    assert status == 200  # CPB's platform follows the hub: open
    status, body = await net.hub.admin("PUT", f"/admin/platforms/{net.ids['CPA']}/roaming-policy", {"policy": None})
    assert status == 200 and body["roaming_policy"] == {"policy": "open", "source": "default"}
    assert net.core.roaming.idle


async def test_an_agreement_added_valid_from_now_on_is_in_force_at_once(make_hub: MakeHub) -> None:
    net = await network(make_hub)
    start = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await net.agree(CPA, EMA, "sessions", valid_from=start)
    status, _, _ = await net.cpa.call(net.hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1", to=EMA,
                                      json=SESSION)
    assert status == 200
