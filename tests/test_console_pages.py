"""What the console's pages show, over HTTP: Insights and its CSV from routed CDRs, partner figures, search
refusals, the reach matrix's reasons (docs/console.md)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hub.context import HUB_KEY
from tests.conftest import HubHarness, cpo, emsp, hub_settings, start_hub, stop_hub
from tests.console_helpers import Console
from tests.partners import Received, envelope

TS = "2026-03-01T10:00:00Z"
CDR = {"country_code": "NL", "party_id": "CPA", "start_date_time": TS, "end_date_time": TS,
       "cdr_token": {"uid": "T1", "type": "RFID", "contract_id": "DE-EMA-C1", "country_code": "DE",
                     "party_id": "EMA"}, "auth_method": "WHITELIST", "currency": "EUR", "charging_periods": [],
       "total_time": 0.5, "last_updated": TS}


@pytest.fixture
async def hub() -> AsyncIterator[HubHarness]:
    h = await start_hub(hub_settings(roaming_policy="agreements"))
    try:
        yield h
    finally:
        await stop_hub(h)


def text(page: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


async def test_insights_and_csv_add_up_the_routed_cdrs_and_partners_show_forward_errors(hub: HubHarness) -> None:
    c, e = cpo(), emsp()
    calls = {"n": 0}

    async def answer(request: web.Request, rec: Received) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] == 3:  # the third CDR is refused: not counted, and one forward error of three
            return web.json_response(envelope(status_code=2001, message="no"), status=400)
        return web.json_response(envelope(), status=201)

    e.responder = answer
    await hub.connect(c)
    platform = await hub.connect(e)
    status, body = await hub.admin("POST", "/admin/agreements", {"party_a": "NL:CPA:CPO", "party_b": "DE:EMA:EMSP"})
    assert status == 201, body
    for i, (kwh, cost, currency) in enumerate(((10.5, 3.25, "EUR"), (4.5, 1.0, "EUR"), (99.0, 9.0, "EUR"),
                                               (2.0, 0.75, "CHF"))):
        await c.call(hub.session, "POST", "cdrs", "RECEIVER", to=e.party,
                     json={**CDR, "id": f"C{i}", "total_energy": kwh, "total_cost": {"excl_vat": cost},
                           "currency": currency})
    console = Console(hub)
    await console.login()
    status, _, page = await console.request("GET", "/console/insights")
    assert status == 200
    shown = text(page)
    assert "NL:CPA → DE:EMA 0 3 17.000 kWh 0.75 CHF, 4.25 EUR" in shown
    status, _, data = await console.request("GET", "/console/insights.csv")
    rows = list(csv.DictReader(io.StringIO(data)))
    assert {(r["module"], r["currency"], r["count"], r["kwh"], r["cost_excl_vat"]) for r in rows} == {
        ("cdrs", "EUR", "2", "15.000", "4.25"), ("cdrs", "CHF", "1", "2.000", "0.75")}
    status, _, page = await console.request("GET", "/console/partners/table")
    row = text(page.split(f'data-platform="{platform["id"]}"')[1].split("</tr>")[0])
    assert "25.0 % of 4" in row  # one of four forwards failed


async def test_search_refuses_bad_filters_with_a_message_and_an_unknown_trail_says_so(hub: HubHarness) -> None:
    console = Console(hub)
    await console.login()
    status, headers, page = await console.request("GET", "/console/messages/search?party=N", headers={
        "HX-Request": "true"})
    assert status == 400 and "party is CC:PID" in page and headers["HX-Retarget"] == "#flash"
    status, _, page = await console.request("GET", "/console/messages/search?module=bogus")
    assert status == 400 and "unknown module" in page
    status, _, page = await console.request("GET", "/console/messages/trail?id=nothing-has-this-id")
    assert status == 200 and "No audit record has this correlation id" in page


async def test_the_reach_matrix_names_every_reason(hub: HubHarness) -> None:
    c = cpo()
    e = emsp(modules={"locations": ("SENDER", "RECEIVER")})  # no sessions endpoint
    await hub.connect(c)
    await hub.connect(e)
    await hub.onboard(emsp("Planned eMSP", "EMP"))
    status, body = await hub.admin("POST", "/admin/agreements", {
        "party_a": "NL:CPA:CPO", "party_b": "DE:EMA:EMSP", "modules": ["sessions"]})
    assert status == 201, body
    console = Console(hub)
    await console.login()
    status, _, page = await console.request("GET", "/console/reach/matrix?module=sessions")
    assert status == 200

    def cell(a: str, b: str) -> str:
        match = re.search(rf'data-from="{a}" data-to="{b}"[^>]*>(.*?)</td>', page, re.S)
        assert match is not None, (a, b)
        return text(match.group(1))

    assert cell("NL:CPA", "DE:EMA") == "missing endpoint: DE:EMA offers no sessions endpoint"
    assert cell("NL:CPA", "DE:EMP") == ("no agreement between NL/CPA and DE/EMP covering sessions; "
                                        "receiver DE:EMP has not registered")
    assert cell("DE:EMA", "NL:CPA") == "✓"
    status, _, page = await console.request("GET", "/console/reach/matrix?module=nope")
    assert status == 400
    assert hub.app[HUB_KEY].roaming.policy.value == "agreements"
