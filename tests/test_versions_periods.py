"""A Session PATCH's ``charging_periods`` across the 2.1.1 boundary (docs/versions.md, "Sessions"): OCPI 2.2.1 and
2.3.0 mod_sessions append them to the periods the receiver holds, OCPI 2.1.1 has no such rule, so its PATCH
replaces the list (the general PATCH rule). The hub's catch-up copy of the Session (docs/catchup.md) carries the
meaning across: a 2.1.1 receiver gets the whole list, a 2.2.1 or 2.3.0 receiver only the periods it lacks. Without
a copy, the periods are left out of the PATCH and the loss is reported."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import HubHarness, MakeHub
from tests.partners import FakePartner, Party, Received
from tests.test_audit import records
from tests.test_clientinfo import eventually
from tests.test_versions_230 import example
from tests.test_versions_routing import HUB, got, partner, session_211, token_221, translations


@dataclass
class Net:
    hub: HubHarness
    cpo211: FakePartner
    cpo221: FakePartner
    emsp211: FakePartner
    emsp221: FakePartner


Network = Callable[..., Awaitable[Net]]


@pytest.fixture
async def network(make_hub: MakeHub) -> AsyncIterator[Network]:
    async def make(**settings: Any) -> Net:
        hub = await make_hub(**settings)
        n = Net(hub,
                cpo211=partner("CPO 2.1.1", Party("NL", "CPA", "CPO"), "2.1.1"),
                cpo221=partner("CPO 2.2.1", Party("NL", "CPB", "CPO"), "2.2.1"),
                emsp211=partner("eMSP 2.1.1", Party("DE", "EMD", "EMSP"), "2.1.1"),
                emsp221=partner("eMSP 2.2.1", Party("DE", "EMB", "EMSP"), "2.2.1"))
        for p in (n.cpo211, n.cpo221, n.emsp211, n.emsp221):
            await hub.connect(p)
        return n

    yield make


def period(start: str, kwh: float) -> dict[str, Any]:
    return {"start_date_time": start, "dimensions": [{"type": "ENERGY", "volume": kwh}]}


def starts(periods: list[dict[str, Any]]) -> list[str]:
    return [p["start_date_time"] for p in periods]


async def nth(p: FakePartner, method: str, fragment: str, n: int) -> Received:
    found = await eventually(lambda: got(p, method, fragment)[n - 1:], f"{p.name} receiving {method} #{n}")
    return found[0]


async def send(n: Net, sender: FakePartner, method: str, tail: str, body: Any, to: Party | None = None) -> None:
    status, _, doc = await sender.call(n.hub.session, method, "sessions", "RECEIVER", tail, to=to, json=body)
    assert (status, doc["status_code"]) == (200, 1000), doc


def session_221() -> dict[str, Any]:
    """The official 2.2.1 finished session (three periods), of the 2.2.1 CPO, for the 2.1.1 eMSP's token."""
    session = example("2.2.1", "session_example_2_short_finished.json")
    session.update(country_code="NL", party_id="CPB")
    session["cdr_token"].update(country_code="DE", party_id="EMD")
    return dict(session)


async def period_losses(hub: HubHarness) -> list[dict[str, Any]]:
    reports = translations([r for r in await records(hub, module="sessions") if r.method == "PATCH"])
    return [loss for r in reports for loss in r.get("losses", []) if loss["field"] == "charging_periods"]


async def test_a_2_2_1_period_patch_reaches_a_2_1_1_emsp_with_the_periods_it_had(network: Network) -> None:
    """The official 2.2.1 PATCH adds one period; a 2.1.1 eMSP replaces its list with what it gets, so it gets all
    four, never only the new one."""
    n = await network()
    session, patch = session_221(), example("2.2.1", "session_patch_example_charging_period.json")
    await send(n, n.cpo221, "PUT", "NL/CPB/101", session, to=n.emsp211.party)
    await send(n, n.cpo221, "PATCH", "NL/CPB/101", patch, to=n.emsp211.party)

    got_patch = (await nth(n.emsp211, "PATCH", "/sessions/NL/CPB/101", 1)).json()
    assert starts(got_patch["charging_periods"]) == starts(session["charging_periods"] + patch["charging_periods"])
    assert all("tariff_id" not in p for p in got_patch["charging_periods"]), got_patch
    assert got_patch["kwh"] == 15.0, got_patch
    [loss] = await period_losses(n.hub)
    assert loss["rule"] == "derived" and "3 periods" in loss["detail"], loss

    # the next PATCH: the kept copy now holds the four, the 2.1.1 eMSP gets five
    await send(n, n.cpo221, "PATCH", "NL/CPB/101",
               {"charging_periods": [period("2019-06-23T08:30:00Z", 100)], "last_updated": "2019-06-23T08:30:00Z"},
               to=n.emsp211.party)
    again = (await nth(n.emsp211, "PATCH", "/sessions/NL/CPB/101", 2)).json()
    assert starts(again["charging_periods"]) == [*starts(got_patch["charging_periods"]), "2019-06-23T08:30:00Z"]


async def test_a_2_1_1_full_list_patch_reaches_a_2_2_1_emsp_as_the_new_periods_only(network: Network) -> None:
    """A 2.1.1 CPO's PATCH carries the whole list; a 2.2.1 eMSP appends what it gets, so it gets the periods beyond
    those it was sent before. A PATCH that changes an earlier period cannot be appended: the whole Session goes as
    a PUT (OCPI 2.2.1 mod_sessions: to replace periods the Sender SHALL PUT)."""
    n = await network()
    await n.emsp221.call(n.hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678", to=HUB, json=token_221())
    await eventually(lambda: got(n.cpo211, "PUT", "/tokens/DE/EMB/012345678"), "the token at the 2.1.1 CPO")
    p1, p2, p3 = (period(f"2026-12-01T10:{m}:00Z", v) for m, v in (("00", 1.0), ("15", 2.0), ("30", 3.0)))
    await send(n, n.cpo211, "PUT", "NL/CPA/S1", {**session_211(), "charging_periods": [p1]})
    await nth(n.emsp221, "PUT", "/sessions/NL/CPA/S1", 1)

    await send(n, n.cpo211, "PATCH", "NL/CPA/S1", {"kwh": 3.0, "charging_periods": [p1, p2]})
    first = (await nth(n.emsp221, "PATCH", "/sessions/NL/CPA/S1", 1)).json()
    assert starts(first["charging_periods"]) == starts([p2]), first
    assert first["kwh"] == 3.0 and "last_updated" in first, first
    [loss] = await period_losses(n.hub)
    assert loss["rule"] == "derived" and "1 periods" in loss["detail"], loss

    changed = {**p2, "dimensions": [{"type": "ENERGY", "volume": 2.5}]}
    await send(n, n.cpo211, "PATCH", "NL/CPA/S1", {"kwh": 6.5, "charging_periods": [p1, changed, p3]})
    put = (await nth(n.emsp221, "PUT", "/sessions/NL/CPA/S1", 2)).json()
    assert [p["dimensions"][0]["volume"] for p in put["charging_periods"]] == [1.0, 2.5, 3.0], put
    assert (put["country_code"], put["id"], put["kwh"], put["cdr_token"]["party_id"]) == ("NL", "S1", 6.5, "EMB")
    assert len(got(n.emsp221, "PATCH", "/sessions/NL/CPA/S1")) == 1


async def test_without_a_kept_session_the_periods_are_left_out_and_reported(network: Network) -> None:
    """Catch-up off: the hub cannot know what the receiver holds. Sending the periods as they are would wipe a
    2.1.1 eMSP's earlier periods or duplicate a 2.2.1 eMSP's: they are left out, the rest of the PATCH goes."""
    n = await network(catchup_days=0)
    await send(n, n.cpo221, "PUT", "NL/CPB/101", session_221(), to=n.emsp211.party)
    await send(n, n.cpo221, "PATCH", "NL/CPB/101", example("2.2.1", "session_patch_example_charging_period.json"),
               to=n.emsp211.party)
    down = (await nth(n.emsp211, "PATCH", "/sessions/NL/CPB/101", 1)).json()
    assert "charging_periods" not in down and down["kwh"] == 15.0, down

    await n.emsp221.call(n.hub.session, "PUT", "tokens", "RECEIVER", "DE/EMB/012345678", to=HUB, json=token_221())
    await eventually(lambda: got(n.cpo211, "PUT", "/tokens/DE/EMB/012345678"), "the token at the 2.1.1 CPO")
    await send(n, n.cpo211, "PUT", "NL/CPA/S1", {**session_211(), "charging_periods": [period(
        "2026-12-01T10:00:00Z", 1.0)]})
    await send(n, n.cpo211, "PATCH", "NL/CPA/S1", {"kwh": 3.0, "charging_periods": [
        period("2026-12-01T10:00:00Z", 1.0), period("2026-12-01T10:15:00Z", 2.0)]})
    up = (await nth(n.emsp221, "PATCH", "/sessions/NL/CPA/S1", 1)).json()
    assert "charging_periods" not in up and up["kwh"] == 3.0, up

    losses = await period_losses(n.hub)
    assert [loss["rule"] for loss in losses] == ["dropped", "dropped"], losses
    assert all("no copy" in loss["detail"] for loss in losses), losses


async def test_periods_kept_for_later_delivery_reach_a_2_1_1_emsp_whole(network: Network) -> None:
    """Store-and-forward: the copy is kept when the hub accepts the PATCH, so each queued PATCH carries the
    periods of those queued before it."""
    n = await network()
    _, view = await n.hub.admin("GET", "/admin/platforms")
    [emsp_id] = [v["id"] for v in view if v["name"] == n.emsp211.name]
    status, body = await n.hub.admin("PUT", f"/admin/platforms/{emsp_id}/store-and-forward",
                                     {"modules": ["sessions"]})
    assert status == 200, body
    session = session_221()
    await send(n, n.cpo221, "PUT", "NL/CPB/101", session, to=n.emsp211.party)
    added = [period("2019-06-23T08:16:02Z", 10), period("2019-06-23T08:30:00Z", 20)]
    for p in added:
        await send(n, n.cpo221, "PATCH", "NL/CPB/101", {"charging_periods": [p], "last_updated": p["start_date_time"]},
                   to=n.emsp211.party)
    last = (await nth(n.emsp211, "PATCH", "/sessions/NL/CPB/101", 2)).json()
    assert starts(last["charging_periods"]) == starts(session["charging_periods"] + added), last
