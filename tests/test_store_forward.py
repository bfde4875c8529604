"""Store-and-forward (docs/store-and-forward.md): a receiving platform opts in per module; the hub then answers
the sender 1000 once the message is queued and delivers it with backoff, in order per object, under one
X-Request-ID, dead-lettering it after the window. Without opt-in, routing stays synchronous.

Every test runs on both queue backends (embedded fakeredis and the real Redis at 127.0.0.1:6379).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import pytest
from aiohttp import web

from hub.context import HUB_KEY
from tests.conftest import ADMIN_TOKEN, HubHarness, MakeHub, cpo, emsp
from tests.console_helpers import Console
from tests.partners import FakePartner, Party, Received, default_responder, envelope
from tests.test_callbacks import from_, issue, post_raw
from tests.test_cli import Result
from tests.test_cli import cli as run_cli
from tests.test_dead_letters import (
    a_second_past,
    dead_letters,
    eventually,
    failing,
    from_the_hubs_copy,
    location,
    received_between,
    redeliveries,
    redelivery_reports,
    restart_on_same_port,
)
from tests.test_versions_registration import MODULES_BOTH, register
from tests.test_versions_routing import HUB, cdr_211, metric, session_211

FAST = {"store_forward_max_backoff": 1.0}
ALL_VERSIONS = ("2.3.0", "2.2.1", "2.1.1")
# A 2.2.1 CDR as a CPO writes it: its own key order and spacing, which a delivery as sent keeps byte for byte.
CDR_AS_SENT = (b'{"id": "CDR1", "country_code": "NL", "party_id": "CPA", "start_date_time": "2024-01-01T10:00:00Z", '
               b'"end_date_time": "2024-01-01T11:00:00Z", "currency": "EUR", "total_energy": 3.25, '
               b'"total_cost": {"excl_vat": 10.0, "incl_vat": 12.1}, "last_updated": "2024-01-01T11:00:05Z"}')


def cdr(cdr_id: str = "CDR1") -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPA", "id": cdr_id, "start_date_time": "2024-01-01T10:00:00Z",
            "end_date_time": "2024-01-01T11:00:00Z", "currency": "EUR", "total_energy": 3.25,
            "last_updated": "2024-01-01T11:00:05Z"}


def session(session_id: str, stamp: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPA", "id": session_id, "start_date_time": "2024-01-01T10:00:00Z",
            "kwh": 0.0, "currency": "EUR", "status": status, "last_updated": stamp}


async def opt_in(hub: HubHarness, platform_id: str, *modules: str) -> dict[str, Any]:
    status, body = await hub.admin("PUT", f"/admin/platforms/{platform_id}/store-and-forward",
                                   {"modules": list(modules)})
    assert status == 200, body
    return dict(body)


async def send_cdr(hub: HubHarness, sender: FakePartner, to: FakePartner, doc: dict[str, Any],
                   request_id: str | None = None) -> tuple[int, dict[str, Any]]:
    status, _, body = await sender.call(hub.session, "POST", "cdrs", "RECEIVER", "", to=to.party, json=doc,
                                        headers={"X-Request-ID": request_id or uuid.uuid4().hex})
    return status, body


async def deliveries(hub: HubHarness, request_id: str) -> list[dict[str, Any]]:
    status, body = await hub.admin("GET", f"/admin/deliveries/{request_id}")
    assert status == 200, body
    return list(body)


async def stored_figures(hub: HubHarness, receiver: str, module: str) -> dict[str, Any]:
    status, queues = await hub.admin("GET", "/admin/queues")
    assert status == 200, queues
    for row in queues:
        if row["receiver"] == receiver:
            for figures in row["store_and_forward"]:
                if figures["module"] == module:
                    return dict(figures)
    return {}


async def pair(make_hub: MakeHub, **settings: Any) -> tuple[HubHarness, FakePartner, FakePartner, str]:
    hub = await make_hub(**{**FAST, **settings})
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    receiver_id = (await hub.connect(receiver))["id"]
    return hub, sender, receiver, receiver_id


async def test_a_cdr_the_emsp_fails_to_take_is_accepted_then_delivered_under_one_request_id(
        make_hub: MakeHub) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub)
    view = await opt_in(hub, receiver_id, "cdrs", "sessions")
    assert view["store_and_forward"] == ["cdrs", "sessions"]
    receiver.responder = failing(2, status=500)  # an eMSP having a bad moment: HTTP 500 twice
    request_id = "cdr-" + uuid.uuid4().hex

    status, body = await send_cdr(hub, sender, receiver, cdr(), request_id)

    assert (status, body["status_code"]) == (200, 1000), body
    assert body["status_message"].startswith("accepted for delivery"), body
    await eventually(lambda: len(receiver.received) == 3, within=15, what="two retries and a delivery")
    assert all(r.json() == cdr() for r in receiver.received)
    assert len({r.headers["X-Request-ID"] for r in receiver.received}) == 1, "every attempt carries one id"
    assert all(r.path == "/ocpi/2.2.1/receiver/cdrs" for r in receiver.received)
    assert {r.headers["OCPI-from-party-id"] for r in receiver.received} == {"CPA"}, "FROM stays the CPO"

    states: list[dict[str, Any]] = []

    async def delivered() -> bool:
        states[:] = await deliveries(hub, request_id)
        return states[0]["state"] == "delivered"

    await eventually_async(delivered, what="the delivered state")
    (state,) = states
    assert state["receiver"] == receiver_id and state["module"] == "cdrs" and state["sender"] == "NL:CPA"
    assert state["attempts"] == 3
    assert state["forwarded_request_id"] == receiver.received[0].headers["X-Request-ID"]
    figures = await stored_figures(hub, receiver_id, "cdrs")
    assert figures["accepted"] == 1 and figures["delivered"] == 1 and figures["retried"] == 2
    assert figures["waiting"] == 0 and figures["dead_lettered"] == 0
    async with hub.session.get(hub.url + "/metrics") as resp:
        text = await resp.text()
    assert (f'ocpi_hub_store_forward_events_total{{event="delivered",module="cdrs",receiver="{receiver_id}"}} 1.0'
            in text), text[-3000:]


async def test_a_receiver_that_is_down_gets_what_waited_when_it_is_back(make_hub: MakeHub) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "cdrs")
    await receiver.stop()
    request_id = uuid.uuid4().hex

    for i in range(3):
        status, body = await send_cdr(hub, sender, receiver, cdr(f"CDR{i}"), request_id if i == 0 else None)
        assert (status, body["status_code"]) == (200, 1000), body

    figures = await stored_figures(hub, receiver_id, "cdrs")
    assert figures["waiting"] == 3 and figures["oldest_age_seconds"] >= 0
    [state] = await deliveries(hub, request_id)
    assert state["state"] in ("queued", "retrying")
    await restart_on_same_port(receiver)
    await eventually(lambda: len(receiver.received) == 3, within=15, what="the three CDRs")
    assert sorted(r.json()["id"] for r in receiver.received) == ["CDR0", "CDR1", "CDR2"]


async def test_without_opt_in_a_down_receiver_is_refused_at_once_and_nothing_is_kept(make_hub: MakeHub) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await receiver.stop()

    status, body = await send_cdr(hub, sender, receiver, cdr())

    assert (status, body["status_code"]) == (503, 4003), body
    assert await stored_figures(hub, receiver_id, "cdrs") == {}
    status, queues = await hub.admin("GET", "/admin/queues")
    assert sum(q["depth"] for q in queues) == 0


async def test_a_sender_repeating_a_request_id_is_answered_again_but_delivered_once(make_hub: MakeHub) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "cdrs")
    await receiver.stop()  # still queued when the repeat comes
    request_id = uuid.uuid4().hex

    first = await send_cdr(hub, sender, receiver, cdr(), request_id)
    again = await send_cdr(hub, sender, receiver, cdr(), request_id)

    assert first[1]["status_code"] == again[1]["status_code"] == 1000
    assert "accepted before" in again[1]["status_message"], again
    await restart_on_same_port(receiver)
    await eventually(lambda: receiver.received, within=15, what="the CDR")
    await eventually_async(lambda: _state_is(hub, request_id, "delivered"), what="delivered")
    assert len(receiver.received) == 1


async def test_a_repeated_request_id_is_kept_for_catch_up_and_counted_once(make_hub: MakeHub) -> None:
    """A sender's retry of what the hub accepted (same X-Request-ID) is not a second message: the catch-up copy
    does not take a Session PATCH's charging_periods twice (a PATCH's periods are appended, OCPI 2.2.1
    mod_sessions), and Insights count a CDR once."""
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "cdrs", "sessions")
    await receiver.stop()  # everything waits in the queue: the catch-up copy is all the eMSP can see
    patch = {"kwh": 2.5, "charging_periods": [_period("2024-01-01T10:00:00Z", 2.5)],
             "last_updated": "2024-01-01T10:05:00Z"}
    calls = [("PUT", "sessions", "NL/CPA/S1", session("S1", "2024-01-01T10:00:00Z"), uuid.uuid4().hex),
             ("PATCH", "sessions", "NL/CPA/S1", patch, uuid.uuid4().hex),
             ("POST", "cdrs", "", cdr(), uuid.uuid4().hex)]
    for method, module, path, doc, request_id in calls:
        for attempt in ("first", "repeat"):
            status, _, body = await sender.call(hub.session, method, module, "RECEIVER", path, to=receiver.party,
                                                json=doc, headers={"X-Request-ID": request_id})
            assert (status, body["status_code"]) == (200, 1000), body
            assert ("accepted before" in body["status_message"]) is (attempt == "repeat"), body

    status, _, page = await receiver.call(hub.session, "GET", "sessions", "SENDER", "", to=HUB)
    assert status == 200, page
    [kept] = page["data"]
    assert kept["charging_periods"] == patch["charging_periods"] and kept["kwh"] == 2.5, kept
    h = hub.app[HUB_KEY]
    await h.usage.flush()
    assert {row.module: row.count for row in await h.store.query_usage()} == {"sessions": 1, "cdrs": 1}


async def test_session_updates_reach_the_emsp_in_order_and_never_before_the_put(make_hub: MakeHub) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "sessions")
    receiver.responder = failing(2, status=503)
    path = "NL/CPA/S1"
    stamps = [f"2024-01-01T10:0{i}:00Z" for i in range(4)]

    status, _, body = await sender.call(hub.session, "PUT", "sessions", "RECEIVER", path, to=receiver.party,
                                        json=session("S1", stamps[0]))
    assert (status, body["status_code"]) == (200, 1000), body
    for i, stamp in enumerate(stamps[1:], 1):
        status, _, body = await sender.call(hub.session, "PATCH", "sessions", "RECEIVER", path, to=receiver.party,
                                            json={"kwh": float(i), "last_updated": stamp})
        assert (status, body["status_code"]) == (200, 1000), body

    await eventually(lambda: len(receiver.received) == 6, within=20, what="PUT (3 tries) and three PATCHes")
    assert [r.method for r in receiver.received] == ["PUT", "PUT", "PUT", "PATCH", "PATCH", "PATCH"]
    assert [r.json()["last_updated"] for r in receiver.received[2:]] == stamps


async def test_an_older_version_never_overwrites_a_newer_one_on_replay(make_hub: MakeHub) -> None:
    """A session PUT the eMSP refused is a dead letter; a newer PUT of it gets through; replaying the old one
    afterwards would restore stale data: it is dropped as superseded, never delivered."""
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "sessions")
    receiver.responder = failing(1, status=400, ocpi_status=2001)
    old_id = uuid.uuid4().hex

    for request_id, stamp in ((old_id, "2024-01-01T10:00:00Z"), (uuid.uuid4().hex, "2024-01-01T10:05:00Z")):
        status, _, body = await sender.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1",
                                            to=receiver.party, json=session("S1", stamp),
                                            headers={"X-Request-ID": request_id})
        assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) == 2, within=15, what="the refused and the newer PUT")
    [letter] = await dead_letters(hub)
    await eventually_async(lambda: _state_is(hub, old_id, "dead_lettered"), what="dead-lettered")

    status, body = await hub.admin("POST", f"/admin/dead-letters/{letter['id']}/replay")
    assert status == 200, body

    await eventually_async(lambda: _state_is(hub, old_id, "superseded"), what="superseded")
    assert len(receiver.received) == 2
    assert receiver.received[-1].json()["last_updated"] == "2024-01-01T10:05:00Z"
    assert (await stored_figures(hub, receiver_id, "sessions"))["superseded"] == 1


def _period(start: str, kwh: float) -> dict[str, Any]:
    return {"start_date_time": start, "dimensions": [{"type": "ENERGY", "volume": kwh}]}


async def _second_refused_then_replayed(hub: HubHarness, sender: FakePartner, receiver: FakePartner, module: str,
                                        pushes: list[tuple[str, str, dict[str, Any]]], to: Party | None = None,
                                        ) -> str:
    """``pushes`` (method, path, body) sent in turn to ``to`` (default: the hub, a broadcast), each under an
    X-Request-ID of its own, the second refused by ``receiver`` (a dead letter), then that dead letter replayed: the
    refused push's request id."""
    request_ids = [uuid.uuid4().hex for _ in pushes]
    for i, (verb, path, doc) in enumerate(pushes):
        if i == 1:
            receiver.responder = failing(1, status=400, ocpi_status=2001)
        status, _, body = await sender.call(hub.session, verb, module, "RECEIVER", path, to=to or HUB, json=doc,
                                            headers={"X-Request-ID": request_ids[i]})
        assert (status, body["status_code"]) == (200, 1000), body
        await eventually(lambda n=i + 1: len(receiver.received) == n, within=15, what=f"push number {i + 1}")
    [letter] = await dead_letters(hub)  # the third push waited for it: one ordering group per object
    status, body = await hub.admin("POST", f"/admin/dead-letters/{letter['id']}/replay")
    assert status == 200, body
    return request_ids[1]


async def _periods_patch_refused_then_overtaken(make_hub: MakeHub, **settings: Any,
                                                ) -> tuple[HubHarness, FakePartner, str, str]:
    """A Session PUT the eMSP takes; a PATCH with a charging period that it refuses (a dead letter); a newer PATCH
    with the next period that it takes. Then the dead letter is replayed: the eMSP's platform id, the PATCH's
    request id."""
    hub, sender, receiver, receiver_id = await pair(make_hub, **settings)
    await opt_in(hub, receiver_id, "sessions")
    pushes = [("PUT", "NL/CPA/S1", session("S1", "2024-01-01T10:00:00Z")),
              ("PATCH", "NL/CPA/S1", {"kwh": 2.5, "charging_periods": [_period("2024-01-01T10:00:00Z", 2.5)],
                                      "last_updated": "2024-01-01T10:05:00Z"}),
              ("PATCH", "NL/CPA/S1", {"kwh": 4.0, "charging_periods": [_period("2024-01-01T10:05:00Z", 1.5)],
                                      "last_updated": "2024-01-01T10:10:00Z"})]
    refused_id = await _second_refused_then_replayed(hub, sender, receiver, "sessions", pushes, receiver.party)
    return hub, receiver, receiver_id, refused_id


async def test_a_replayed_session_patch_whose_periods_a_newer_version_lacks_goes_as_the_whole_session(
        make_hub: MakeHub) -> None:
    """OCPI 2.2.1 mod_sessions: the charging_periods of a PATCH are appended to the receiver's. The newer PATCH the
    eMSP took carries only its own period, so dropping the replayed one as superseded would lose the first period
    for good: it goes as a PUT of the Session as the hub holds it, every period in the order accepted, and the
    newest state (a replay never takes the Session back to older data)."""
    hub, receiver, receiver_id, refused_id = await _periods_patch_refused_then_overtaken(make_hub)

    await eventually(lambda: len(receiver.received) == 4, within=15, what="the replayed PATCH, as a PUT")
    await eventually_async(lambda: _state_is(hub, refused_id, "delivered"), what="delivered")
    whole = receiver.received[-1]
    assert (whole.method, whole.path) == ("PUT", "/ocpi/2.2.1/receiver/sessions/NL/CPA/S1")
    doc = whole.json()
    assert doc["charging_periods"] == [_period("2024-01-01T10:00:00Z", 2.5), _period("2024-01-01T10:05:00Z", 1.5)]
    assert (doc["kwh"], doc["last_updated"], doc["status"]) == (4.0, "2024-01-01T10:10:00Z", "ACTIVE")
    [state] = await deliveries(hub, refused_id)
    assert state["last_error"] == "" and whole.headers["X-Request-ID"] == state["forwarded_request_id"], state
    assert (await stored_figures(hub, receiver_id, "sessions"))["superseded"] == 0
    [report] = await redelivery_reports(hub, "sessions", receiver_id)
    assert from_the_hubs_copy(report) and report["written_for"] == "2.2.1", report
    assert any("the receiver has both" in loss["detail"] for loss in report["losses"]), report


async def test_a_replayed_session_put_behind_a_newer_patch_goes_as_the_whole_session(make_hub: MakeHub) -> None:
    """The eMSP refuses the PUT that completes a Session, then takes a newer PATCH of its kWh: dropped as superseded
    on replay, the Session would stay ACTIVE at the eMSP for good; sent as it is, it would take the kWh back. It
    goes as the Session the hub holds: COMPLETED, with the newer kWh."""
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "sessions")
    done = {**session("S1", "2024-01-01T11:00:00Z", "COMPLETED"), "kwh": 3.0, "end_date_time": "2024-01-01T11:00:00Z"}
    pushes = [("PUT", "NL/CPA/S1", session("S1", "2024-01-01T10:00:00Z")), ("PUT", "NL/CPA/S1", done),
              ("PATCH", "NL/CPA/S1", {"kwh": 3.25, "last_updated": "2024-01-01T11:05:00Z"})]
    refused_id = await _second_refused_then_replayed(hub, sender, receiver, "sessions", pushes, receiver.party)

    await eventually_async(lambda: _state_is(hub, refused_id, "delivered"), what="delivered")
    whole = receiver.received[-1]
    assert (len(receiver.received), whole.method) == (4, "PUT")
    assert {k: whole.json()[k] for k in ("status", "kwh", "end_date_time", "last_updated")} == {
        "status": "COMPLETED", "kwh": 3.25, "end_date_time": "2024-01-01T11:00:00Z",
        "last_updated": "2024-01-01T11:05:00Z"}, whole.json()


async def test_without_a_copy_of_the_session_the_replayed_periods_patch_is_dropped_and_says_what_is_lost(
        make_hub: MakeHub) -> None:
    """With catch-up off (HUB_CATCHUP_DAYS=0) the hub holds no Session to send whole: the replayed PATCH is dropped
    as superseded as before, and its state says that its periods are lost to the receiver."""
    hub, receiver, receiver_id, refused_id = await _periods_patch_refused_then_overtaken(make_hub, catchup_days=0)

    await eventually_async(lambda: _state_is(hub, refused_id, "superseded"), what="superseded")
    assert len(receiver.received) == 3
    assert (await stored_figures(hub, receiver_id, "sessions"))["superseded"] == 1
    [state] = await deliveries(hub, refused_id)
    assert "charging_periods" in state["last_error"] and "HUB_CATCHUP_DAYS=0" in state["last_error"], state


async def test_a_message_the_receiver_never_takes_is_dead_lettered_after_the_window(make_hub: MakeHub) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub, store_forward_window=1.5)
    await opt_in(hub, receiver_id, "cdrs")
    await receiver.stop()
    request_id = uuid.uuid4().hex

    _, body = await send_cdr(hub, sender, receiver, cdr(), request_id)
    assert body["status_code"] == 1000

    await eventually_async(lambda: _state_is(hub, request_id, "dead_lettered"), within=15, what="dead-lettered")
    [letter] = await dead_letters(hub)
    assert letter["receiver"] == receiver_id and letter["kind"] == "stored"
    figures = await stored_figures(hub, receiver_id, "cdrs")
    assert figures["dead_lettered"] == 1 and figures["waiting"] == 0


async def test_a_command_result_waits_for_an_emsp_that_opted_in(make_hub: MakeHub) -> None:
    hub = await make_hub(**FAST)
    cpa = cpo()
    ema = emsp()

    async def cpo_responder(request: web.Request, rec: Received) -> web.StreamResponse:
        if "/receiver/commands/" in rec.path:
            return web.json_response(envelope({"result": "ACCEPTED", "timeout": 30}))
        return await default_responder(request, rec)

    cpa.responder = cpo_responder
    await hub.connect(cpa)
    ema_id = (await hub.connect(ema))["id"]
    await opt_in(hub, ema_id, "commands")
    _, hub_url = await issue(hub, cpa, ema)
    await ema.stop()

    status, _, doc = await post_raw(hub, hub_url, cpa.token_c or "", b'{"result": "ACCEPTED"}',
                                    headers=from_(cpa.party))

    assert (status, doc["status_code"]) == (200, 1000), doc
    assert doc["status_message"].startswith("accepted for delivery")
    await restart_on_same_port(ema)
    await eventually(lambda: [r for r in ema.received if "/results/" in r.path], within=15, what="the result")


async def test_opt_in_through_the_cli_and_bad_modules_are_refused(make_hub: MakeHub) -> None:
    hub, _, _, receiver_id = await pair(make_hub)

    def cli(*args: str, url: str) -> Result:  # in a thread: the hub answers on this test's event loop
        return run_cli(*args, url=url, token=ADMIN_TOKEN)

    async def ocpi_hub(*args: str) -> Result:
        return await asyncio.to_thread(cli, *args, url=hub.url)

    done = await ocpi_hub("platforms", "store-and-forward", receiver_id, "cdrs", "commands")
    assert done.json()["store_and_forward"] == ["cdrs", "commands"]
    status, body = await hub.admin("GET", f"/admin/platforms/{receiver_id}")
    assert body["store_and_forward"] == ["cdrs", "commands"]
    wrong = await ocpi_hub("platforms", "store-and-forward", receiver_id, "versions")
    assert wrong.code != 0 and "invalid choice" in wrong.stderr
    status, body = await hub.admin("PUT", f"/admin/platforms/{receiver_id}/store-and-forward",
                                   {"modules": ["credentials"]})
    assert status == 400 and "credentials" in str(body), body
    assert (await ocpi_hub("platforms", "store-and-forward", receiver_id)).json()["store_and_forward"] == []
    unknown = await ocpi_hub("deliveries", "no-such-request")
    assert unknown.code != 0 and "no message accepted" in unknown.stderr


async def _state_is(hub: HubHarness, request_id: str, state: str) -> bool:
    status, body = await hub.admin("GET", f"/admin/deliveries/{request_id}")
    return status == 200 and body[0]["state"] == state


async def eventually_async(check: Any, within: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


pytestmark = pytest.mark.timeout(120)


async def test_a_replayed_broadcast_older_than_what_the_receiver_has_is_dropped(make_hub: MakeHub) -> None:
    """Broadcast fan-out too: the refused v1 is a dead letter, v2 gets through, replaying v1 would restore stale
    data at the receiver: it is dropped, counted as superseded, never delivered."""
    hub = await make_hub(**FAST)
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    await hub.connect(receiver)
    receiver.responder = failing(1, status=400, ocpi_status=2001)
    hub_party = Party("NL", "HUB", "HUB")
    for stamp, name in (("2024-01-01T10:00:00Z", "v1"), ("2024-01-01T10:05:00Z", "v2")):
        doc = {**location(), "name": name, "last_updated": stamp}
        status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                            to=hub_party, json=doc)
        assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) == 2, within=15, what="refused v1, delivered v2")
    [letter] = await dead_letters(hub)

    status, body = await hub.admin("POST", f"/admin/dead-letters/{letter['id']}/replay")
    assert status == 200, body

    async def dropped() -> bool:
        async with hub.session.get(hub.url + "/metrics") as resp:
            return 'event="superseded",module="locations"' in await resp.text()

    await eventually_async(dropped, what="the superseded count")
    assert [r.json()["name"] for r in receiver.received] == ["v1", "v2"]
    status, queues = await hub.admin("GET", "/admin/queues")
    assert sum(q["depth"] for q in queues) == 0


CONNECTOR = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
             "max_voltage": 230, "max_amperage": 16, "last_updated": "2024-01-01T10:00:00Z"}


def _evse(stamp: str, status: str = "AVAILABLE") -> dict[str, Any]:
    return {"uid": "EVSE1", "evse_id": "NL*CPA*E1", "status": status, "connectors": [{**CONNECTOR}],
            "last_updated": stamp}


async def _superseded_count(hub: HubHarness) -> int:
    async with hub.session.get(hub.url + "/metrics") as resp:
        found = re.search(r'event="superseded",module="locations",receiver="[^"]*"} (\S+)', await resp.text())
    return int(float(found.group(1))) if found else 0


@pytest.mark.parametrize(("part", "change", "later"), [
    ("NL/CPA/LOC1/EVSE1", {"status": "CHARGING"}, ("PUT", "NL/CPA/LOC1")),  # the Location PUT holds the EVSE
    ("NL/CPA/LOC1/EVSE1/1", {"max_amperage": 32}, ("PUT", "NL/CPA/LOC1/EVSE1")),  # the EVSE PUT the Connector
    ("NL/CPA/LOC1/EVSE1/1", {"max_amperage": 32}, ("PUT", "NL/CPA/LOC1")),
    ("NL/CPA/LOC1/EVSE1", {"status": "CHARGING"}, ("PATCH", "NL/CPA/LOC1")),  # a PATCH holds only its fields
])
async def test_a_replayed_evse_or_connector_push_older_than_a_put_holding_it_is_dropped(
        make_hub: MakeHub, part: str, change: dict[str, Any], later: tuple[str, str]) -> None:
    """An EVSE status PATCH the eMSP refused, then a newer PUT of its Location (a CPO's periodic full push): the
    PUT carried the EVSE as it is then, so replaying the PATCH would put the older status back. It is dropped as
    superseded, as is a Connector PATCH behind a newer PUT of its EVSE or Location. A newer Location PATCH carries
    only its own fields: the replayed EVSE PATCH is still news, and is delivered."""
    hub = await make_hub(**FAST)
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    await hub.connect(receiver)
    whole = {**location(), "evses": [_evse("2024-01-01T10:00:00Z")], "last_updated": "2024-01-01T10:00:00Z"}
    method, path = later
    newer = {"name": "v2", "last_updated": "2024-01-01T10:10:00Z"} if method == "PATCH" else (
        {**whole, "last_updated": "2024-01-01T10:10:00Z"} if path == "NL/CPA/LOC1" else _evse("2024-01-01T10:10:00Z"))
    pushes = [("PUT", "NL/CPA/LOC1", whole), ("PATCH", part, {**change, "last_updated": "2024-01-01T10:05:00Z"}),
              (method, path, newer)]
    await _second_refused_then_replayed(hub, sender, receiver, "locations", pushes)

    if method == "PATCH":
        await eventually(lambda: len(receiver.received) == 4, within=15, what="the replayed PATCH")
        assert receiver.received[-1].path.endswith(part) and receiver.received[-1].method == "PATCH"
        assert await _superseded_count(hub) == 0
    else:
        await eventually_async(lambda: _count_is(hub, 1), what="the superseded count")
        assert [(r.method, r.path.split("/locations/")[1]) for r in receiver.received] == [
            (verb, at) for verb, at, _ in pushes]
    status, queues = await hub.admin("GET", "/admin/queues")
    assert status == 200 and sum(q["depth"] for q in queues) == 0, queues


@pytest.mark.parametrize(("refused", "newer"), [
    # An older Location PUT after a newer EVSE status PATCH: as it was, it would put the older status back.
    (("PUT", "NL/CPA/LOC1", {"name": "v1"}), ("PATCH", "NL/CPA/LOC1/EVSE1", {"status": "CHARGING"})),
    # An older EVSE PATCH after a newer one of other fields: dropped, its status change would be lost.
    (("PATCH", "NL/CPA/LOC1/EVSE1", {"status": "CHARGING"}), ("PATCH", "NL/CPA/LOC1/EVSE1", {"floor_level": "2"})),
])
async def test_a_replayed_location_push_behind_newer_ones_goes_as_the_hubs_copy(
        make_hub: MakeHub, refused: tuple[str, str, dict[str, Any]], newer: tuple[str, str, dict[str, Any]]) -> None:
    """A push the eMSP refused, then a newer push of the same Location that carries other changes: replayed, the
    old push is neither sent as it is (stale data over newer) nor dropped (its change lost): it goes as a PUT of
    the object as the hub holds it, which holds both changes."""
    hub = await make_hub(**FAST)
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    receiver_id = (await hub.connect(receiver))["id"]
    whole = {**location(), "evses": [_evse("2024-01-01T10:00:00Z")], "last_updated": "2024-01-01T10:00:00Z"}

    def at(stamp: str, push: tuple[str, str, dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
        verb, path, change = push
        doc = {**whole, **change} if verb == "PUT" else change
        return verb, path, {**doc, "last_updated": stamp}

    pushes = [("PUT", "NL/CPA/LOC1", whole), at("2024-01-01T10:05:00Z", refused), at("2024-01-01T10:10:00Z", newer)]
    await _second_refused_then_replayed(hub, sender, receiver, "locations", pushes)

    await eventually(lambda: len(receiver.received) == 4, within=15, what="the replayed push, as the hub's copy")
    sent = receiver.received[-1]
    assert (sent.method, sent.path) == ("PUT", f"/ocpi/2.2.1/receiver/locations/{refused[1]}"), sent
    evse = sent.json()["evses"][0] if refused[1] == "NL/CPA/LOC1" else sent.json()
    assert evse["status"] == "CHARGING", evse
    if refused[1] == "NL/CPA/LOC1":
        assert sent.json()["name"] == "v1"
    else:
        assert evse["floor_level"] == "2"
    assert await _superseded_count(hub) == 0
    [report] = await redelivery_reports(hub, "locations", receiver_id)
    assert from_the_hubs_copy(report), report


async def test_a_replayed_token_patch_behind_a_newer_one_goes_as_the_hubs_copy(make_hub: MakeHub) -> None:
    """An eMSP blocks a token (PATCH valid: false) while a CPO refuses it, then changes its whitelist (a newer PATCH
    the CPO takes): dropped as superseded on replay, the block would never reach the CPO. It goes as a PUT of the
    Token as the hub holds it: blocked, with the newer whitelist."""
    hub = await make_hub(**FAST)
    sender, receiver = emsp(), cpo()
    await hub.connect(sender)
    receiver_id = (await hub.connect(receiver))["id"]
    token = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID", "contract_id": "DE-EMA-C1",
             "issuer": "eMSP A", "valid": True, "whitelist": "ALLOWED", "last_updated": "2024-01-01T10:00:00Z"}
    pushes = [("PUT", "DE/EMA/TOK1", token),
              ("PATCH", "DE/EMA/TOK1", {"valid": False, "last_updated": "2024-01-01T10:05:00Z"}),
              ("PATCH", "DE/EMA/TOK1", {"whitelist": "ALLOWED_OFFLINE", "last_updated": "2024-01-01T10:10:00Z"})]
    await _second_refused_then_replayed(hub, sender, receiver, "tokens", pushes)

    await eventually(lambda: len(receiver.received) == 4, within=15, what="the replayed PATCH, as the hub's copy")
    sent = receiver.received[-1]
    assert (sent.method, sent.path) == ("PUT", "/ocpi/2.2.1/receiver/tokens/DE/EMA/TOK1"), sent
    assert {k: sent.json()[k] for k in ("uid", "valid", "whitelist", "last_updated")} == {
        "uid": "TOK1", "valid": False, "whitelist": "ALLOWED_OFFLINE", "last_updated": "2024-01-01T10:10:00Z"}
    [report] = await redelivery_reports(hub, "tokens", receiver_id)
    assert from_the_hubs_copy(report), report


async def _count_is(hub: HubHarness, count: int) -> bool:
    return await _superseded_count(hub) == count


async def test_a_cdr_accepted_for_later_delivery_can_be_fetched_through_catch_up_at_once(make_hub: MakeHub) -> None:
    """Accepted means kept: the eMSP that was away can fetch it from the hub (docs/catchup.md) even before the
    hub managed to deliver it."""
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "cdrs")
    receiver.responder = failing(1000, status=503)
    status, body = await send_cdr(hub, sender, receiver, cdr("CDR9"))
    assert (status, body["status_code"]) == (200, 1000), body

    status, _, page = await receiver.call(hub.session, "GET", "cdrs", "SENDER", "", to=Party("NL", "HUB", "HUB"))

    assert status == 200 and [c["id"] for c in page["data"]] == ["CDR9"], page


async def test_the_console_shows_what_waits_for_whom(make_hub: MakeHub) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await opt_in(hub, receiver_id, "cdrs")
    await receiver.stop()
    for i in range(2):
        assert (await send_cdr(hub, sender, receiver, cdr(f"CDR{i}")))[1]["status_code"] == 1000
    console = Console(hub)
    await console.login()

    status, _, panel = await console.request("GET", "/console/messages/queues")

    assert status == 200
    row = re.search(r'<table class="grid" id="stored-table">.*?</table>', panel, re.S)
    assert row is not None, panel
    cells = re.findall(r"<td>(.*?)</td>", row.group(0))
    module, waiting, oldest, accepted = cells[1:5]
    assert (module, waiting, accepted) == ("cdrs", "2", "2") and oldest.endswith(" s"), cells


async def _waiting_at(make_hub: MakeHub, version: str, total_cost: dict[str, Any] | None = None,
                     offered: tuple[str, ...] = ("2.3.0", "2.2.1"), sender_version: str = "2.2.1",
                     raw: bytes | None = None,
                     ) -> tuple[HubHarness, FakePartner, FakePartner, dict[str, Any], str]:
    """A CPO in ``sender_version`` and an eMSP registered in ``version`` (offering ``offered``) that opted in for
    CDRs and answers 503: a CDR with a total_cost (a Price, whose shape differs between 2.2.1 and 2.3.0) waits for
    it; ``raw``: the CDR's bytes as the CPO sends them."""
    hub = await make_hub(**FAST)
    if sender_version == "2.2.1":
        sender = cpo()
        await hub.connect(sender)
    else:
        sender = FakePartner(name=f"CPO {sender_version}", parties=[Party("NL", "CPA", "CPO")],
                             version=sender_version, modules=dict(MODULES_BOTH))
        await register(hub, sender, sender_version)
    receiver = FakePartner(name="eMSP moving", parties=[Party("DE", "EMA", "EMSP")], version=version,
                           offered_versions=offered, modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, receiver, version)
    await opt_in(hub, platform["id"], "cdrs")
    receiver.responder = failing(1000, status=503)
    request_id = "moved-" + uuid.uuid4().hex
    if raw is None:
        status, body = await send_cdr(hub, sender, receiver,
                                      {**cdr(), "total_cost": total_cost or {"excl_vat": 10.0}}, request_id)
    else:
        status, _, body = await sender.call(hub.session, "POST", "cdrs", "RECEIVER", "", to=receiver.party, data=raw,
                                            headers={"X-Request-ID": request_id, "Content-Type": "application/json"})
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1, within=15, what="a first, refused attempt")
    return hub, sender, receiver, platform, request_id


async def _cdr_after_coming_back(hub: HubHarness, receiver: FakePartner, platform: dict[str, Any], request_id: str,
                                  version: str, path: str) -> Received:
    """The eMSP comes back in ``version``; the one request that then reaches it, at ``path``, once the waiting
    CDR is delivered, under the request id every attempt carried (the one id of a stored message)."""
    first_id = receiver.received[0].headers["X-Request-ID"]
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], version)
    await eventually_async(lambda: _state_is(hub, request_id, "delivered"), within=15, what="delivered")
    later = receiver.received[tried:]
    assert [(r.method, r.path) for r in later] == [("POST", path)], [(r.method, r.path) for r in later]
    assert later[0].headers["X-Request-ID"] == first_id, "the one request id of a stored message"
    return later[0]


async def _redelivery_reports(hub: HubHarness, receiver_id: str) -> list[dict[str, Any]]:
    return await redelivery_reports(hub, "cdrs", receiver_id)


async def test_a_waiting_cdr_reaches_its_emsp_that_moved_from_2_2_1_to_2_3_0_in_2_3_0(make_hub: MakeHub) -> None:
    """The eMSP moves from 2.2.1 to 2.3.0 (credentials PUT) while a CDR written for 2.2.1 waits for it. A 2.2.1
    CDR reads as 2.3.0 without anything the hub knew when it arrived: it is translated again at delivery
    (docs/store-and-forward.md, "When the receiver changes version or endpoint") and delivered in 2.3.0, its
    Price as OCPI 2.3.0 writes it (before_taxes and taxes), under the request id every attempt carried; the loss
    report is in the audit and the translation metrics like any other."""
    hub, _, receiver, platform, request_id = await _waiting_at(make_hub, "2.2.1",
                                                                {"excl_vat": 10.0, "incl_vat": 12.1})
    assert all(r.path == "/ocpi/2.2.1/receiver/cdrs" for r in receiver.received)
    sent = await _cdr_after_coming_back(hub, receiver, platform, request_id, "2.3.0", "/ocpi/2.3.0/receiver/cdrs")
    got = sent.json()
    assert got["total_cost"] == {"before_taxes": 10.0, "taxes": [{"name": "VAT", "amount": 2.1}]}, got
    assert "excl_vat" not in sent.body.decode()
    [state] = await deliveries(hub, request_id)
    assert state["state"] == "delivered" and state["last_error"] == "", state
    assert await dead_letters(hub) == []
    [report] = await _redelivery_reports(hub, platform["id"])
    assert (report["from"], report["to"]) == ("2.2.1", "2.3.0"), report
    assert {(loss["field"], loss["rule"]) for loss in report["losses"]} == {("total_cost.incl_vat", "derived")}
    assert await metric(hub, "ocpi_hub_translations_total", module="cdrs", from_version="2.2.1",
                        to_version="2.3.0") == 1


async def test_a_waiting_cdr_reaches_its_emsp_that_moved_from_2_3_0_to_2_2_1_in_2_2_1(make_hub: MakeHub) -> None:
    """The reverse: a 2.3.0 CPO's CDR written for a 2.3.0 eMSP (its Price with taxes) reaches it in 2.2.1 once it
    moved there, the taxes summed into incl_vat (derived, reported)."""
    raw = (b'{"id": "CDR1", "country_code": "NL", "party_id": "CPA", "start_date_time": "2024-01-01T10:00:00Z", '
           b'"end_date_time": "2024-01-01T11:00:00Z", "currency": "EUR", "total_energy": 3.25, "total_cost": '
           b'{"before_taxes": 10.0, "taxes": [{"name": "VAT", "amount": 2.1}]}, '
           b'"last_updated": "2024-01-01T11:00:05Z"}')
    hub, _, receiver, platform, request_id = await _waiting_at(make_hub, "2.3.0", sender_version="2.3.0", raw=raw)
    assert (receiver.received[0].path, receiver.received[0].body) == ("/ocpi/2.3.0/receiver/cdrs", raw)
    sent = await _cdr_after_coming_back(hub, receiver, platform, request_id, "2.2.1", "/ocpi/2.2.1/receiver/cdrs")
    assert sent.json()["total_cost"] == {"excl_vat": 10.0, "incl_vat": 12.1}
    [report] = await _redelivery_reports(hub, platform["id"])
    assert (report["from"], report["to"], report["written_for"], report["basis"]) == (
        "2.3.0", "2.2.1", "2.3.0", "queued"), report
    assert [(loss["field"], loss["rule"], loss["step"]) for loss in report["losses"]] == [
        ("total_cost.taxes", "derived", "2.3.0>2.2.1")], report


async def test_a_cdr_written_for_a_2_3_0_emsp_reaches_it_in_2_2_1_as_its_2_2_1_cpo_sent_it(
        make_hub: MakeHub) -> None:
    """A 2.2.1 CPO's CDR written for a 2.3.0 eMSP that moves to 2.2.1: the eMSP now speaks the CPO's version and
    gets the CDR as the CPO sent it (the hub kept it with the cross-version message), not the 2.3.0 copy
    translated back (which would have made incl_vat from one tax named VAT)."""
    hub, _, receiver, platform, request_id = await _waiting_at(make_hub, "2.3.0", raw=CDR_AS_SENT)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    await eventually_async(lambda: _state_is(hub, request_id, "delivered"), within=15, what="delivered")
    later = receiver.received[tried:]
    assert [(r.path, r.body) for r in later] == [("/ocpi/2.2.1/receiver/cdrs", CDR_AS_SENT)], later
    [report] = await _redelivery_reports(hub, platform["id"])
    assert report == {"of": "redelivery", "from": "2.2.1", "to": "2.2.1", "losses": [], "written_for": "2.3.0",
                      "basis": "sent"}, report


# A 2.3.0 CDR whose two named taxes the copy written for 2.2.1 summed into incl_vat.
CDR_230_AS_SENT = (b'{"id": "CDR1", "country_code": "NL", "party_id": "CPA", '
                   b'"start_date_time": "2024-01-01T10:00:00Z", "end_date_time": "2024-01-01T11:00:00Z", '
                   b'"currency": "EUR", "total_energy": 3.25, "total_cost": {"before_taxes": 10.0, "taxes": '
                   b'[{"name": "BTW", "amount": 2.1}, {"name": "City", "amount": 0.5}]}, '
                   b'"last_updated": "2024-01-01T11:00:05Z"}')


@pytest.mark.parametrize(("sender_version", "raw", "basis"), [("2.2.1", CDR_AS_SENT, "queued"),
                                                               ("2.3.0", CDR_230_AS_SENT, "sent")])
async def test_a_waiting_cdr_reaches_its_emsp_moved_down_to_2_1_1_translated_from_what_its_cpo_sent(
        make_hub: MakeHub, sender_version: str, raw: bytes, basis: str) -> None:
    """A CPO's CDR written for a 2.2.1 eMSP waits for it; the eMSP moves down to 2.1.1 (credentials PUT: a rolled
    back upgrade). The hub writes the CDR in 2.1.1 from what the CPO sent (a 2.2.1 CPO's is the queued copy; a 2.3.0
    CPO's was kept with the message), as the live path writes it for a 2.1.1 eMSP: at the eMSP's 2.1.1 endpoint,
    without routing headers, under the one request id of the stored message, never in the 2.2.1 shape. Delivered,
    no dead letter, the redelivery's audit record names the steps (docs/store-and-forward.md)."""
    hub, _, receiver, platform, request_id = await _waiting_at(make_hub, "2.2.1", offered=("2.2.1", "2.1.1"),
                                                                sender_version=sender_version, raw=raw)
    assert "country_code" in receiver.received[0].json(), "written for 2.2.1"
    got = await _cdr_after_coming_back(hub, receiver, platform, request_id, "2.1.1", "/ocpi/2.1.1/cdrs")
    doc = got.json()
    assert (doc["id"], doc["total_energy"], doc["stop_date_time"]) == ("CDR1", 3.25, "2024-01-01T11:00:00Z"), doc
    assert doc["total_cost"] == 10.0 and "country_code" not in doc, doc
    assert not any(h.startswith("OCPI-") for h in got.headers), "a 2.1.1 receiver gets no routing headers"
    [state] = await deliveries(hub, request_id)
    assert state["state"] == "delivered" and state["last_error"] == "", state
    assert await dead_letters(hub) == []
    [report] = await _redelivery_reports(hub, platform["id"])
    assert (report["from"], report["to"], report["written_for"], report["basis"]) == (
        sender_version, "2.1.1", "2.2.1", basis), report
    assert any(loss["field"].startswith("total_cost.") for loss in report["losses"]), report


async def test_a_waiting_cdr_reaches_its_2_1_1_emsp_back_in_2_2_1_as_its_cpo_sent_it(make_hub: MakeHub) -> None:
    """The common upgrade: a 2.1.1 eMSP opted in for CDRs is down while a 2.2.1 CPO's CDR, written for 2.1.1,
    waits for it; it comes back registered in 2.2.1 (credentials PUT). The hub kept what the CPO sent (the message
    crosses versions), so the eMSP gets the CDR at its 2.2.1 endpoint byte for byte as the CPO sent it, FROM the
    CPO, under the one request id every attempt carried: state delivered, no dead letter, and one audit record
    saying it went as sent in the eMSP's new version (docs/store-and-forward.md, "When the receiver changes
    version or endpoint")."""
    hub, _, receiver, platform, request_id = await _waiting_at(make_hub, "2.1.1", offered=ALL_VERSIONS,
                                                                raw=CDR_AS_SENT)
    assert all(r.path == "/ocpi/2.1.1/cdrs" for r in receiver.received)
    sent = await _cdr_after_coming_back(hub, receiver, platform, request_id, "2.2.1", "/ocpi/2.2.1/receiver/cdrs")
    assert sent.body == CDR_AS_SENT, sent.body
    assert (sent.headers["OCPI-from-party-id"], sent.headers["OCPI-to-party-id"]) == ("CPA", "EMA")
    [state] = await deliveries(hub, request_id)
    assert state["state"] == "delivered" and state["last_error"] == "", state
    assert await dead_letters(hub) == []
    [report] = await _redelivery_reports(hub, platform["id"])
    assert report == {"of": "redelivery", "from": "2.2.1", "to": "2.2.1", "losses": [], "written_for": "2.1.1",
                      "basis": "sent"}, report


async def test_a_waiting_cdr_reaches_its_2_1_1_emsp_back_in_2_3_0_translated_from_what_its_cpo_sent(
        make_hub: MakeHub) -> None:
    """The same eMSP comes back in 2.3.0: the CDR is translated 2.2.1 -> 2.3.0 from what the CPO sent, not from
    the copy written for 2.1.1 (whose total_cost, a 2.1.1 number, lost incl_vat): its Price has the VAT that
    incl_vat tells; the loss report is the 2.2.1 -> 2.3.0 step's, in the audit and the translation metrics."""
    hub, _, receiver, platform, request_id = await _waiting_at(make_hub, "2.1.1", offered=ALL_VERSIONS,
                                                                raw=CDR_AS_SENT)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.3.0")

    await eventually_async(lambda: _state_is(hub, request_id, "delivered"), within=15, what="delivered")
    later = receiver.received[tried:]
    assert [r.path for r in later] == ["/ocpi/2.3.0/receiver/cdrs"], [r.path for r in later]
    got = later[0].json()
    assert got["total_cost"] == {"before_taxes": 10.0, "taxes": [{"name": "VAT", "amount": 2.1}]}, got
    assert (got["country_code"], got["party_id"], got["total_energy"]) == ("NL", "CPA", 3.25), got
    assert await dead_letters(hub) == []
    [report] = await _redelivery_reports(hub, platform["id"])
    assert (report["from"], report["to"], report["written_for"], report["basis"]) == (
        "2.2.1", "2.3.0", "2.1.1", "sent"), report
    assert {(loss["field"], loss["rule"]) for loss in report["losses"]} == {("total_cost.incl_vat", "derived")}
    assert await metric(hub, "ocpi_hub_translations_total", module="cdrs", from_version="2.2.1",
                        to_version="2.3.0") == 1


TOKEN_211 = {"uid": "012345678", "type": "RFID", "auth_id": "DE8EMAC12345678", "issuer": "eMSP A", "valid": True,
             "whitelist": "ALLOWED", "last_updated": "2024-01-01T09:00:00Z"}


async def _both_on_2_1_1(make_hub: MakeHub, module: str, **settings: Any,
                         ) -> tuple[HubHarness, FakePartner, FakePartner, dict[str, Any]]:
    """A 2.1.1 CPO and a 2.1.1 eMSP (offering every version) that pushed its token to the hub, opted in for
    ``module`` and now answers 503: what the CPO sends it waits, written in 2.1.1 as the CPO sent it. ``settings``:
    the hub's, beyond the fast retries."""
    hub = await make_hub(**FAST, **settings)
    sender = FakePartner(name="CPO 2.1.1", parties=[Party("NL", "CPA", "CPO")], version="2.1.1",
                         modules=dict(MODULES_BOTH))
    await register(hub, sender, "2.1.1")
    receiver = FakePartner(name="eMSP upgrading", parties=[Party("DE", "EMA", "EMSP")], version="2.1.1",
                           offered_versions=ALL_VERSIONS, modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, receiver, "2.1.1")
    status, _, body = await receiver.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/012345678",
                                          json=TOKEN_211)
    assert (status, body["status_code"]) == (200, 1000), body
    await opt_in(hub, platform["id"], module)
    receiver.responder = failing(1000, status=503)
    return hub, sender, receiver, platform


async def test_a_2_1_1_cpos_cdr_reaches_its_2_1_1_emsp_back_in_2_2_1_translated_with_what_the_hub_knows(
        make_hub: MakeHub) -> None:
    """The common upgrade between two 2.1.1 parties: the eMSP is down while the 2.1.1 CPO's CDR waits for it,
    written in 2.1.1 (the CPO's own body, nothing more kept); it comes back registered in 2.2.1. The CDR is
    translated 2.1.1 -> 2.2.1 at delivery as the live path does it, with what the hub knows: the eMSP behind the
    ``auth_id`` (from its token push) becomes the ``cdr_token`` owner, the embedded Location the ``cdr_location``,
    the bare total_cost an ``excl_vat`` Price; state delivered, no dead letter, and the loss report of the step
    in the audit and the translation metrics (docs/store-and-forward.md, "When the receiver changes version or
    endpoint")."""
    hub, sender, receiver, platform = await _both_on_2_1_1(make_hub, "cdrs")
    request_id = "up-" + uuid.uuid4().hex
    status, _, body = await sender.call(hub.session, "POST", "cdrs", "RECEIVER",
                                        json=cdr_211("DE8EMAC12345678"), headers={"X-Request-ID": request_id})
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1, within=15, what="a first, refused attempt")
    assert receiver.received[0].path == "/ocpi/2.1.1/cdrs" and receiver.received[0].json() == cdr_211(
        "DE8EMAC12345678"), "written in 2.1.1, as the CPO sent it"
    sent = await _cdr_after_coming_back(hub, receiver, platform, request_id, "2.2.1", "/ocpi/2.2.1/receiver/cdrs")
    got = sent.json()
    assert (got["country_code"], got["party_id"], got["id"]) == ("NL", "CPA", "CDR1"), got
    token = got["cdr_token"]
    assert (token["country_code"], token["party_id"], token["contract_id"]) == ("DE", "EMA", "DE8EMAC12345678"), got
    place = got["cdr_location"]
    assert (place["id"], place["evse_uid"], place["connector_id"], place["connector_standard"]) == (
        "LOC1", "3256", "1", "IEC_62196_T2"), got
    assert got["total_cost"] == {"excl_vat": 4.0} and got["end_date_time"] == "2026-12-01T11:00:00Z", got
    assert not {"auth_id", "location", "stop_date_time"} & set(got), got
    assert (sent.headers["OCPI-from-party-id"], sent.headers["OCPI-to-party-id"]) == ("CPA", "EMA")
    [state] = await deliveries(hub, request_id)
    assert state["state"] == "delivered" and state["last_error"] == "", state
    assert await dead_letters(hub) == []
    [report] = await _redelivery_reports(hub, platform["id"])
    assert (report["from"], report["to"], report["written_for"], report["basis"]) == (
        "2.1.1", "2.2.1", "2.1.1", "queued"), report
    assert report["losses"] and {loss["step"] for loss in report["losses"]} == {"2.1.1>2.2.1"}, report
    assert {("country_code", "derived"), ("auth_id", "derived"), ("auth_id", "defaulted"),
            ("location.type", "dropped")} <= {(loss["field"], loss["rule"]) for loss in report["losses"]}, report
    assert await metric(hub, "ocpi_hub_translations_total", module="cdrs", from_version="2.1.1",
                        to_version="2.2.1") == 1


PERIODS = [{"start_date_time": "2026-12-01T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 2.5}]}]


async def _session_put_and_patches(hub: HubHarness, sender: FakePartner, *patches: dict[str, Any]) -> list[str]:
    """The CPO's Session PUT of NL/CPA/S1 and then ``patches``, accepted for the eMSP: their request ids."""
    ids = []
    for method, doc in [("PUT", session_211("DE8EMAC12345678")), *(("PATCH", p) for p in patches)]:
        ids.append(f"{method.lower()}-{uuid.uuid4().hex}")
        status, _, body = await sender.call(hub.session, method, "sessions", "RECEIVER", "NL/CPA/S1", json=doc,
                                            headers={"X-Request-ID": ids[-1]})
        assert (status, body["status_code"]) == (200, 1000), body
    return ids


@pytest.mark.parametrize("version", ["2.2.1", "2.3.0"])
async def test_a_2_1_1_session_patch_with_periods_reaches_its_2_1_1_emsp_back_in_a_newer_version_as_a_put(
        make_hub: MakeHub, version: str) -> None:
    """Same upgrade with a 2.1.1 CPO's Session PUT, a PATCH with charging_periods and a later PATCH without them
    (neither with last_updated) waiting; the eMSP comes back in 2.2.1 or 2.3.0. A 2.1.1 PATCH carries the whole
    list of periods, a PATCH of those versions appends to the receiver's, and to replace periods the Sender SHALL
    PUT (OCPI 2.2.1 mod_sessions): the PATCH with periods reaches the eMSP as a PUT of the whole Session, the hub's
    catch-up copy of what the eMSP was sent as it is at delivery, in the eMSP's version (its token's owner found as
    on arrival): it holds the periods and already the later PATCH's kwh and receive time; that PATCH follows as a
    PATCH. All delivered, no dead letter; the audit has the PUT made from the hub's copy, reported so."""
    hub, sender, receiver, platform = await _both_on_2_1_1(make_hub, "sessions")
    sent = time.time()
    put_id, periods_id, later_id = await _session_put_and_patches(
        hub, sender, {"kwh": 2.5, "charging_periods": PERIODS}, {"kwh": 3.0})
    answered = time.time()
    await eventually(lambda: len(receiver.received) >= 1, within=15, what="a first, refused attempt")
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], version)

    await eventually_async(lambda: _state_is(hub, later_id, "delivered"), within=15, what="delivered")
    later = receiver.received[tried:]
    path = f"/ocpi/{version}/receiver/sessions/NL/CPA/S1"
    assert [(r.method, r.path) for r in later] == [("PUT", path), ("PUT", path), ("PATCH", path)], later
    first, whole = later[0].json(), later[1].json()
    assert (whole["cdr_token"]["country_code"], whole["cdr_token"]["party_id"]) == ("DE", "EMA"), whole
    assert whole["location_id"] == "LOC1" and "location" not in whole, whole
    assert [{k: p[k] for k in ("start_date_time", "dimensions")} for p in whole["charging_periods"]] == PERIODS
    assert whole["kwh"] == 3.0, "the copy as it is at delivery, with the later change"
    assert received_between(whole["last_updated"], sent, answered), (whole, sent, answered)
    changed = ("kwh", "charging_periods", "last_updated")
    assert {k: v for k, v in whole.items() if k not in changed} == {k: v for k, v in first.items() if k not in changed}
    assert set(later[2].json()) == {"kwh", "last_updated"} and later[2].json()["kwh"] == 3.0, later[2].json()
    assert [r.headers["X-Request-ID"] for r in later] == [
        (await deliveries(hub, rid))[0]["forwarded_request_id"] for rid in (put_id, periods_id, later_id)]
    assert await dead_letters(hub) == []
    found = await redeliveries(hub, "sessions", platform["id"])
    assert sorted(method for method, _ in found) == ["PATCH", "PUT", "PUT"], found
    [report] = [r for _, r in found if r["basis"] == "kept"]
    assert (report["from"], report["to"], report["written_for"]) == ("2.1.1", version, "2.1.1"), report
    assert from_the_hubs_copy(report), report


async def test_a_2_1_1_session_patch_with_periods_is_dead_lettered_when_the_hub_keeps_no_copy(
        make_hub: MakeHub) -> None:
    """As above with catch-up off (``HUB_CATCHUP_DAYS=0``): the hub keeps no copy of what the eMSP was sent of
    the Session, so there is no whole Session to send for the PATCH with periods. The PUT reaches the eMSP back in
    2.2.1; the PATCH is dead-lettered (version_changed), the reason naming the missing copy."""
    hub, sender, receiver, platform = await _both_on_2_1_1(make_hub, "sessions", catchup_days=0)
    put_id, patch_id = await _session_put_and_patches(hub, sender, {"kwh": 2.5, "charging_periods": PERIODS})
    await eventually(lambda: len(receiver.received) >= 1, within=15, what="a first, refused attempt")
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    await eventually_async(lambda: _state_is(hub, patch_id, "dead_lettered"), within=15, what="dead-lettered")
    [put] = await deliveries(hub, put_id)
    assert put["state"] == "delivered", put
    later = receiver.received[tried:]
    assert [(r.method, r.path) for r in later] == [("PUT", "/ocpi/2.2.1/receiver/sessions/NL/CPA/S1")], later
    [letter] = await dead_letters(hub)
    assert letter["receiver"] == platform["id"], letter
    assert "charging_periods" in letter["reason"] and "keeps no copy" in letter["reason"] \
        and "HUB_CATCHUP_DAYS=0" in letter["reason"], letter


async def test_a_2_1_1_session_patch_without_periods_reaches_its_2_1_1_emsp_back_in_2_2_1(make_hub: MakeHub) -> None:
    """Same upgrade with a 2.1.1 CPO's Session PUT and a PATCH without charging_periods and without last_updated
    waiting: the PATCH needs nothing the hub read on arrival (no periods to read against the kept Session), so it
    reaches the eMSP back in 2.2.1 as a 2.2.1 PATCH, after the PUT, with the last_updated OCPI 2.2.1 requires: the
    time the hub received it, not the time it was delivered; FROM the CPO, TO the eMSP, under the message's one
    request id; state delivered, and a redelivery record in the audit (docs/store-and-forward.md)."""
    hub, sender, receiver, platform = await _both_on_2_1_1(make_hub, "sessions")
    put_id, patch_id = "put-" + uuid.uuid4().hex, "patch-" + uuid.uuid4().hex
    status, _, body = await sender.call(hub.session, "PUT", "sessions", "RECEIVER", "NL/CPA/S1",
                                        json=session_211("DE8EMAC12345678"), headers={"X-Request-ID": put_id})
    assert (status, body["status_code"]) == (200, 1000), body
    sent = time.time()
    status, _, body = await sender.call(hub.session, "PATCH", "sessions", "RECEIVER", "NL/CPA/S1",
                                        json={"kwh": 3.0}, headers={"X-Request-ID": patch_id})
    assert (status, body["status_code"]) == (200, 1000), body
    answered = time.time()
    await eventually(lambda: len(receiver.received) >= 1, within=15, what="a first, refused attempt")
    await a_second_past(answered)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    await eventually_async(lambda: _state_is(hub, patch_id, "delivered"), within=15, what="delivered")
    later = receiver.received[tried:]
    path = "/ocpi/2.2.1/receiver/sessions/NL/CPA/S1"
    assert [(r.method, r.path) for r in later] == [("PUT", path), ("PATCH", path)], later
    patch = later[1]
    got = patch.json()
    assert set(got) == {"kwh", "last_updated"} and got["kwh"] == 3.0, got
    assert received_between(got["last_updated"], sent, answered), (got, sent, answered)
    assert (patch.headers["OCPI-from-country-code"], patch.headers["OCPI-from-party-id"],
            patch.headers["OCPI-to-country-code"], patch.headers["OCPI-to-party-id"]) == ("NL", "CPA", "DE", "EMA")
    [state] = await deliveries(hub, patch_id)
    assert state["state"] == "delivered" and patch.headers["X-Request-ID"] == state["forwarded_request_id"], state
    assert await dead_letters(hub) == []
    reports = await redelivery_reports(hub, "sessions", platform["id"])
    assert len(reports) == 2 and {(r["from"], r["to"], r["written_for"], r["basis"]) for r in reports} == {
        ("2.1.1", "2.2.1", "2.1.1", "queued")}, reports
    assert any(("last_updated", "defaulted") in {(loss["field"], loss["rule"]) for loss in r["losses"]}
               for r in reports), reports


async def test_a_waiting_message_goes_to_the_endpoint_its_receiver_registered_last(make_hub: MakeHub) -> None:
    """Same version, new endpoint URL (the eMSP moved its CDRs endpoint and told the hub by a credentials PUT):
    the waiting CDR goes to the new URL, as it was written (the queue keeps module and path, not a URL)."""
    hub, _, receiver, platform, request_id = await _waiting_at(make_hub, "2.2.1")
    moved = receiver.base_url + "/ocpi/2.2.1/receiver/cdrs-v2"
    receiver.endpoint_urls[("cdrs", "RECEIVER")] = moved
    status, doc = await receiver.update(hub.session, platform["versions_url"], "2.2.1")
    assert status == 200, doc
    tried = len(receiver.received)
    receiver.responder = default_responder

    await eventually_async(lambda: _state_is(hub, request_id, "delivered"), within=15, what="delivered")
    later = receiver.received[tried:]
    assert later and all(r.path == "/ocpi/2.2.1/receiver/cdrs-v2" for r in later), [r.path for r in later]
    assert later[-1].json()["total_cost"] == {"excl_vat": 10.0}


# Sessions into 2.1.1 (an eMSP moving down): a 2.2.1 CPO's Location, held by the hub, and a Session at it.
T0, T1, T2 = "2026-12-01T10:00:00Z", "2026-12-01T10:15:00Z", "2026-12-01T10:30:00Z"
LOCATION_221 = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "publish": True, "name": "Gent Zuid",
                "address": "F.Rooseveltlaan 3A", "city": "Gent", "postal_code": "9000", "country": "BEL",
                "coordinates": {"latitude": "51.047599", "longitude": "3.729944"}, "parking_type": "ON_STREET",
                "time_zone": "Europe/Brussels", "last_updated": T0,
                "evses": [{"uid": uid, "status": "AVAILABLE", "last_updated": T0, "connectors": [
                    {"id": "1", "standard": "IEC_62196_T2", "format": "CABLE", "power_type": "AC_3_PHASE",
                     "max_voltage": 220, "max_amperage": 16, "last_updated": T0}]} for uid in ("3256", "3257")]}
SESSION_221 = {"country_code": "NL", "party_id": "CPA", "id": "S1", "start_date_time": T0, "kwh": 0.0,
               "cdr_token": {"country_code": "DE", "party_id": "EMA", "uid": "012345678", "type": "RFID",
                             "contract_id": "DE8EMAC12345678"},
               "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": "3256", "connector_id": "1",
               "currency": "EUR", "status": "ACTIVE", "last_updated": T0}


async def _sessions_moving_down(make_hub: MakeHub, later: bool = True, **settings: Any,
                                ) -> tuple[HubHarness, FakePartner, FakePartner, dict[str, Any], list[str]]:
    """A 2.2.1 CPO that broadcast its Location (the hub holds it) and a 2.2.1 eMSP (offering 2.1.1 too) opted in
    for Sessions, answering 503 while the CPO's Session PUT, a PATCH with charging_periods and (``later``) a later
    PATCH wait: the hub, CPO, eMSP, its platform and the request ids."""
    hub = await make_hub(**{**FAST, **settings})
    sender = cpo()
    await hub.connect(sender)
    receiver = FakePartner(name="eMSP moving down", parties=[Party("DE", "EMA", "EMSP")], version="2.2.1",
                           offered_versions=("2.2.1", "2.1.1"), modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, receiver, "2.2.1")
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=HUB,
                                        json=LOCATION_221)
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) == 1, what="the Location at the eMSP")
    await opt_in(hub, platform["id"], "sessions")
    receiver.responder = failing(1000, status=503)
    ids = []
    pushes = [("PUT", SESSION_221), ("PATCH", {"kwh": 2.5, "charging_periods": PERIODS, "last_updated": T1}),
              ("PATCH", {"kwh": 3.0, "last_updated": T2})]
    for method, doc in pushes if later else pushes[:2]:
        ids.append(f"{method.lower()}-{uuid.uuid4().hex}")
        status, _, body = await sender.call(hub.session, method, "sessions", "RECEIVER", "NL/CPA/S1", json=doc,
                                            to=receiver.party, headers={"X-Request-ID": ids[-1]})
        assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 2, within=15, what="a first, refused attempt")
    return hub, sender, receiver, platform, ids


async def test_waiting_sessions_reach_their_emsp_moved_down_to_2_1_1_with_the_held_location_and_periods(
        make_hub: MakeHub) -> None:
    """A 2.2.1 CPO's Session PUT, a PATCH with charging_periods and a later PATCH wait for a 2.2.1 eMSP, which moves
    down to 2.1.1. The hub writes them in 2.1.1 as the live path does: the PUT with the Location it holds embedded
    (OCPI 2.1.1 mod_sessions: a Session carries its Location, with the session's EVSE and connector only) and
    ``auth_id`` from the token; the PATCH with periods, whose periods a 2.1.1 eMSP would take for the whole list
    (a 2.2.1 PATCH appends them), as a PUT of the hub's copy of what the eMSP was sent of the Session, as it is at
    delivery (it already holds the later kwh); the later PATCH as a PATCH. All delivered, no dead letter."""
    hub, _, receiver, platform, ids = await _sessions_moving_down(make_hub)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.1.1")

    await eventually_async(lambda: _state_is(hub, ids[-1], "delivered"), within=15, what="delivered")
    later = receiver.received[tried:]
    path = "/ocpi/2.1.1/sessions/NL/CPA/S1"
    assert [(r.method, r.path) for r in later] == [("PUT", path), ("PUT", path), ("PATCH", path)], later
    assert not any(h.startswith("OCPI-") for r in later for h in r.headers), "no routing headers in 2.1.1"
    first, whole, last = (r.json() for r in later)
    for doc in (first, whole):
        assert doc["auth_id"] == "DE8EMAC12345678" and "cdr_token" not in doc and "country_code" not in doc, doc
        held = doc["location"]
        assert (held["id"], held["name"], held["type"]) == ("LOC1", "Gent Zuid", "ON_STREET"), held
        assert [e["uid"] for e in held["evses"]] == ["3256"], "the session's EVSE only"
    assert "charging_periods" not in first or first["charging_periods"] == [], first
    assert [{k: p[k] for k in ("start_date_time", "dimensions")} for p in whole["charging_periods"]] == PERIODS
    assert whole["kwh"] == 3.0 and whole["last_updated"] == T2, "the copy as it is at delivery"
    assert last == {"kwh": 3.0, "last_updated": T2}, last
    assert [r.headers["X-Request-ID"] for r in later] == [
        (await deliveries(hub, rid))[0]["forwarded_request_id"] for rid in ids]
    assert await dead_letters(hub) == []
    found = await redeliveries(hub, "sessions", platform["id"])
    assert sorted((method, r["basis"]) for method, r in found) == [
        ("PATCH", "queued"), ("PUT", "kept"), ("PUT", "queued")], found
    [kept] = [r for _, r in found if r["basis"] == "kept"]
    assert (kept["from"], kept["to"], kept["written_for"]) == ("2.2.1", "2.1.1", "2.2.1"), kept
    assert from_the_hubs_copy(kept), kept


async def test_a_session_patch_with_periods_into_2_1_1_without_a_copy_is_a_dead_letter_replayed_as_sent_later(
        make_hub: MakeHub) -> None:
    """As above with catch-up off (``HUB_CATCHUP_DAYS=0``) and no later PATCH: no copy of the Session to send whole,
    and the PATCH's periods alone would wipe the 2.1.1 eMSP's earlier ones, so that PATCH is dead-lettered
    (version_changed), the reason naming the missing copy; the PUT reaches the eMSP in 2.1.1. Once the eMSP is back
    on 2.2.1, a replay of the dead letter delivers the PATCH as the CPO sent it."""
    hub, _, receiver, platform, ids = await _sessions_moving_down(make_hub, later=False, catchup_days=0)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.1.1")

    await eventually_async(lambda: _state_is(hub, ids[1], "dead_lettered"), within=15, what="dead-lettered")
    [put] = await deliveries(hub, ids[0])
    assert put["state"] == "delivered", put
    assert [(r.method, r.path) for r in receiver.received[tried:]] == [("PUT", "/ocpi/2.1.1/sessions/NL/CPA/S1")]
    [letter] = await dead_letters(hub)
    assert letter["receiver"] == platform["id"], letter
    assert all(text in letter["reason"] for text in ("2.1.1", "2.2.1", "charging_periods", "keeps no copy",
                                                     "HUB_CATCHUP_DAYS=0")), letter

    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")
    status, body = await hub.admin("POST", f"/admin/dead-letters/{letter['id']}/replay")
    assert status == 200, body
    await eventually_async(lambda: _state_is(hub, ids[1], "delivered"), within=15, what="replayed")
    [got] = receiver.received[tried:]
    assert (got.method, got.path) == ("PATCH", "/ocpi/2.2.1/receiver/sessions/NL/CPA/S1"), got.path
    assert got.json() == {"kwh": 2.5, "charging_periods": PERIODS, "last_updated": T1}
    assert await dead_letters(hub) == []
