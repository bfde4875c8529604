"""hubclientinfo (OCPI 2.2.1 hubclientinfo): the hub's SENDER list of the other parties' ClientInfo, pushes of every
status change to platforms offering the RECEIVER interface, and the still-alive check that turns a silent,
unreachable partner OFFLINE and back CONNECTED when it answers again (docs/ocpi-decisions.md, Still-alive failure)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import ALL_MODULES, FakePartner, Party, Received, ocpi_token

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "ocpi" / "examples" / "2.2.1"
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?$")
ROLES = {"CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"}
STATUSES = {"CONNECTED", "OFFLINE", "PLANNED", "SUSPENDED"}
ROUTING = ("OCPI-to-country-code", "OCPI-to-party-id", "OCPI-from-country-code", "OCPI-from-party-id")


def listener(name: str = "Listening CPO", pid: str = "LIS") -> FakePartner:
    """A CPO platform that also implements the hubclientinfo RECEIVER interface."""
    modules: dict[str, tuple[str, ...]] = {m: ("SENDER", "RECEIVER") for m in ALL_MODULES}
    modules["hubclientinfo"] = ("RECEIVER",)
    return cpo(name=name, pid=pid, modules=modules)


def assert_client_info(doc: Any) -> None:
    """A valid ClientInfo object (OCPI 2.2.1 hubclientinfo, ClientInfo object), nothing more and nothing less."""
    assert isinstance(doc, dict), doc
    assert set(doc) == {"party_id", "country_code", "role", "status", "last_updated"}, doc
    assert re.fullmatch(r"[A-Z]{2}", doc["country_code"]) and re.fullmatch(r"[A-Z0-9]{3}", doc["party_id"]), doc
    assert doc["role"] in ROLES and doc["status"] in STATUSES, doc
    assert DATETIME.match(doc["last_updated"]), doc


def official_examples() -> list[Any]:
    if not EXAMPLES.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))
            if "clientinfo" in p.name.lower() or "client_info" in p.name.lower()]


def pushes(partner: FakePartner) -> list[Received]:
    return [r for r in partner.received if "/hubclientinfo" in r.path]


def statuses_for(partner: FakePartner, party: Party) -> list[str]:
    path = f"/{party.country_code}/{party.party_id}"
    return [r.json()["status"] for r in pushes(partner) if r.path.endswith(path)]


async def eventually(check: Callable[[], Any], what: str, limit: float = 8.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def client_infos(hub: HubHarness, partner: FakePartner, query: str = "",
                       url: str | None = None) -> tuple[int, Any, Any]:
    target = url or f"{hub.url}/ocpi/2.2.1/hubclientinfo" + (f"?{query}" if query else "")
    async with hub.session.get(target, headers={"Authorization": ocpi_token(partner.token_c or "")}) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


def rows(doc: Any) -> list[tuple[str, str, str]]:
    return [(x["country_code"], x["party_id"], x["status"]) for x in doc["data"]]


# -- SENDER interface ---------------------------------------------------------------------------------------------

async def test_version_details_advertise_the_hubclientinfo_sender(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    assert alpha.hub_endpoints[("hubclientinfo", "SENDER")] == f"{hub.url}/ocpi/2.2.1/hubclientinfo"
    assert ("hubclientinfo", "RECEIVER") not in alpha.hub_endpoints, "parties implement the RECEIVER, not the hub"
    status, _, doc = await client_infos(hub, alpha, url=alpha.hub_endpoints[("hubclientinfo", "SENDER")])
    assert status == 200 and doc["status_code"] == 1000, doc


async def test_list_shows_the_other_parties_never_the_callers_own(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    await hub.onboard(cpo(name="Planned CPO", pid="PLA"))
    status, headers, doc = await client_infos(hub, alpha)
    assert status == 200, doc
    for item in doc["data"]:
        assert_client_info(item)
    assert sorted(rows(doc)) == [("DE", "EMA", "CONNECTED"), ("NL", "PLA", "PLANNED")]
    assert {x["role"] for x in doc["data"]} == {"EMSP", "CPO"}
    assert "OCPI-to-country-code" not in headers, "hubclientinfo is never routed"
    status, _, doc = await client_infos(hub, beta)
    assert sorted(rows(doc)) == [("NL", "CPA", "CONNECTED"), ("NL", "PLA", "PLANNED")]


async def test_list_is_paginated_with_link_total_and_limit(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    for i in range(5):
        await hub.onboard(emsp(name=f"eMSP {i}", pid=f"EM{i}"))
    status, headers, doc = await client_infos(hub, alpha, "limit=2")
    seen = rows(doc)
    assert status == 200 and len(seen) == 2, doc
    assert headers["X-Total-Count"] == "5" and int(headers["X-Limit"]) >= 2
    pages = 1
    while "Link" in headers:
        link = headers["Link"]
        assert link.endswith('; rel="next"') and link.startswith(f"<{hub.url}/ocpi/2.2.1/hubclientinfo?"), link
        status, headers, doc = await client_infos(hub, alpha, url=link[1:link.index(">")])
        assert status == 200, doc
        seen += rows(doc)
        pages += 1
    assert pages == 3
    assert sorted(seen) == [("DE", f"EM{i}", "PLANNED") for i in range(5)]
    status, headers, doc = await client_infos(hub, alpha, "offset=4&limit=2")
    assert len(doc["data"]) == 1 and "Link" not in headers


async def test_list_is_filtered_by_last_updated(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    await hub.onboard(emsp(name="Early", pid="EAR"))
    await asyncio.sleep(0.02)
    middle = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    await asyncio.sleep(0.02)
    await hub.onboard(emsp(name="Late", pid="LAT"))
    _, _, doc = await client_infos(hub, alpha, f"date_from={middle}")
    assert rows(doc) == [("DE", "LAT", "PLANNED")]
    _, _, doc = await client_infos(hub, alpha, f"date_to={middle}")
    assert rows(doc) == [("DE", "EAR", "PLANNED")]
    _, _, doc = await client_infos(hub, alpha, "date_from=2000-01-01T00:00:00Z&date_to=2000-01-02T00:00:00Z")
    assert doc["data"] == []
    status, _, doc = await client_infos(hub, alpha, "date_from=yesterday")
    assert status == 400 and doc["status_code"] == 2001, doc


async def test_a_pair_onboarded_again_is_listed_once(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    old = await hub.onboard(emsp(name="Old", pid="AGN"))
    assert (await hub.admin("DELETE", f"/admin/platforms/{old['id']}"))[0] == 200
    _, _, doc = await client_infos(hub, alpha)
    assert rows(doc) == [("DE", "AGN", "SUSPENDED")], "ClientInfo is never deleted"
    await hub.onboard(emsp(name="New", pid="AGN"))
    _, _, doc = await client_infos(hub, alpha)
    assert rows(doc) == [("DE", "AGN", "PLANNED")], "the current holder of the pair, not the removed one too"


@pytest.mark.skipif(not official_examples(), reason="no official ClientInfo example in shared/ocpi/examples/2.2.1")
async def test_client_infos_have_the_shape_of_the_official_example(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    _, _, doc = await client_infos(hub, alpha)
    for example in official_examples():
        sample = example.get("data", example) if isinstance(example, dict) else example
        sample = sample[0] if isinstance(sample, list) else sample
        for item in doc["data"]:
            assert set(sample) <= set(item), (sample, item)
            assert all(type(item[k]) is type(v) for k, v in sample.items()), (sample, item)


# -- pushes to RECEIVER interfaces --------------------------------------------------------------------------------

async def test_every_status_change_is_pushed_to_receivers(hub: HubHarness) -> None:
    watcher, quiet = listener(), cpo(name="Quiet CPO", pid="QUI")
    await hub.connect(watcher)
    await hub.connect(quiet)
    beta = emsp()
    platform = await hub.connect(beta)
    await eventually(lambda: statuses_for(watcher, beta.party) == ["PLANNED", "CONNECTED"], "registration push")
    for action, expected in (("suspend", "SUSPENDED"), ("resume", "CONNECTED")):
        status, _ = await hub.admin("POST", f"/admin/platforms/{platform['id']}/{action}")
        assert status == 200
        await eventually(lambda e=expected: statuses_for(watcher, beta.party)[-1:] == [e], f"{action} push")
    # The partner unregisters itself: credentials DELETE.
    async with hub.session.delete(beta.hub_url("credentials", "SENDER"),
                                  headers={"Authorization": ocpi_token(beta.token_c or "")}) as resp:
        assert resp.status == 200
    await eventually(lambda: statuses_for(watcher, beta.party)[-1:] == ["SUSPENDED"], "unregister push")
    gamma = emsp(name="Gamma eMSP", pid="GAM")
    gone = await hub.connect(gamma)
    assert (await hub.admin("DELETE", f"/admin/platforms/{gone['id']}"))[0] == 200
    await eventually(lambda: statuses_for(watcher, gamma.party) == ["PLANNED", "CONNECTED", "SUSPENDED"],
                     "remove push")
    assert statuses_for(watcher, beta.party) == ["PLANNED", "CONNECTED", "SUSPENDED", "CONNECTED", "SUSPENDED"]
    for rec in pushes(watcher):
        assert rec.method == "PUT"
        assert rec.headers["Authorization"] == ocpi_token(watcher.token_b)
        assert not any(h in rec.headers for h in ROUTING), "hubclientinfo is never routed"
        body = rec.json()
        assert_client_info(body)
        assert rec.path == f"/ocpi/2.2.1/receiver/hubclientinfo/{body['country_code']}/{body['party_id']}"
        assert body["role"] in ("EMSP", "CPO")
    assert all(not r.path.endswith("/NL/LIS") for r in pushes(watcher)), "nobody is told about itself"
    assert pushes(quiet) == [] and pushes(beta) == [], "no RECEIVER interface, no pushes"


async def test_a_newcomer_receives_every_existing_client_info(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    await hub.onboard(emsp(name="Planned", pid="PLA"))
    watcher = listener()
    await hub.connect(watcher)
    expected = {("NL", "CPA", "CONNECTED"), ("DE", "EMA", "CONNECTED"), ("DE", "PLA", "PLANNED")}

    def got() -> set[tuple[str, str, str]]:
        return {(b["country_code"], b["party_id"], b["status"]) for b in (r.json() for r in pushes(watcher))}

    await eventually(lambda: got() == expected, "the initial ClientInfo pushes")
    for rec in pushes(watcher):
        assert_client_info(rec.json())
    assert pushes(alpha) == [] and pushes(beta) == []


# -- still-alive --------------------------------------------------------------------------------------------------

LIVELY = {"alive_interval": 0.3, "alive_check_every": 0.1}  # checks platforms silent for 0.3 s, every 0.1 s


async def platform_status(hub: HubHarness, platform_id: str) -> str:
    status, view = await hub.admin("GET", f"/admin/platforms/{platform_id}")
    assert status == 200, view
    return str(view["status"])


async def wait_status(hub: HubHarness, platform_id: str, expected: str) -> None:
    deadline = time.monotonic() + 8
    while (current := await platform_status(hub, platform_id)) != expected:
        assert time.monotonic() < deadline, f"platform still {current}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_a_silent_unreachable_partner_turns_offline_and_back(make_hub: MakeHub) -> None:
    hub = await make_hub(**LIVELY)
    watcher, silent, beta = listener(), cpo(name="Silent CPO", pid="SIL"), emsp()
    await hub.connect(watcher)
    platform = await hub.connect(silent)
    await hub.connect(beta)
    silent.versions_status = 503
    await wait_status(hub, platform["id"], "OFFLINE")
    pings = [r for r in silent.config_calls if r.path == "/ocpi/versions"]
    assert pings and pings[-1].headers["Authorization"] == ocpi_token(silent.token_b), "GET versions, hub's token"
    # OCPI 2.2.1 Unique message IDs: every request carries a unique X-Request-ID and an X-Correlation-ID
    ids = [(r.headers.get("X-Request-ID"), r.headers.get("X-Correlation-ID")) for r in pings]
    assert all(request_id and correlation_id for request_id, correlation_id in ids), ids
    assert len({request_id for request_id, _ in ids}) == len(ids), ids
    await eventually(lambda: statuses_for(watcher, silent.party)[-1:] == ["OFFLINE"], "OFFLINE push")
    _, _, doc = await client_infos(hub, beta)
    assert ("NL", "SIL", "OFFLINE") in rows(doc)
    status, _, doc = await beta.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=silent.party)
    assert status == 503 and doc["status_code"] == 4003, doc
    assert [r for r in silent.received if "/locations" in r.path] == [], "nothing is sent to an OFFLINE party"

    silent.versions_status = 200
    await wait_status(hub, platform["id"], "CONNECTED")
    await eventually(lambda: statuses_for(watcher, silent.party)[-2:] == ["OFFLINE", "CONNECTED"], "back push")
    status, _, doc = await beta.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=silent.party)
    assert status == 200, doc
    assert await platform_status(hub, platform["id"]) == "CONNECTED"


async def test_a_partner_that_keeps_talking_is_not_declared_offline(make_hub: MakeHub) -> None:
    """Still-alive checks are for silent partners: traffic from a partner counts as hearing from it."""
    hub = await make_hub(**LIVELY)
    chatty, beta = cpo(name="Chatty CPO", pid="CHA"), emsp()
    platform = await hub.connect(chatty)
    await hub.connect(beta)
    chatty.versions_status = 503  # it would fail a check, were one made
    registered = len(chatty.config_calls)
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        status, _, doc = await chatty.call(hub.session, "GET", "tokens", "SENDER", "TOK1", to=beta.party)
        assert status == 200, doc
        await asyncio.sleep(0.05)
    assert await platform_status(hub, platform["id"]) == "CONNECTED"
    assert chatty.config_calls[registered:] == [], "no check while it talks"
