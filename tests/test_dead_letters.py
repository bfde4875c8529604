"""Broadcast fan-out delivery: retries of transient failures, dead letters, their admin API and CLI, and
at-least-once delivery across a kill -9 of the hub (docs/ocpi-decisions.md item 1).

Retries follow routing/retry.py: transient failures (unreachable, timeout, 5xx) are retried with backoff (about
1 s, then 2 s, ...) within ``broadcast_retry_window``; refusals (4xx, OCPI 2xxx) are dead letters at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from hub.audit import AuditQuery
from hub.context import HUB_KEY
from tests import partners
from tests.conftest import (
    ADMIN_TOKEN,
    HubHarness,
    MakeHub,
    cpo,
    emsp,
    free_port,
    scratch_redis,
)
from tests.partners import FakePartner, Party, Received, Responder, default_responder, envelope
from tests.test_cli import Result
from tests.test_cli import cli as run_cli
from tests.test_versions_registration import MODULES_BOTH, register
from tests.test_versions_routing import location_211

HUB = Party("NL", "HUB", "HUB")
OCPI_HUB = str(Path(sys.executable).with_name("ocpi-hub"))
TS = "2024-01-01T00:00:00Z"


def location(lid: str = "LOC1", version: int = 1) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": "CPA", "id": lid, "publish": True, "address": "Stationsplein 1",
            "city": "Amsterdam", "country": "NLD", "coordinates": {"latitude": "52.379189", "longitude": "4.899431"},
            "time_zone": "Europe/Amsterdam", "evses": [], "name": f"v{version}", "last_updated": TS}


async def eventually(check: Callable[[], Any], within: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def failing(times: int, status: int = 503, ocpi_status: int = 3000, bare_after: int | None = None) -> Responder:
    """Answer ``status`` the first ``times`` requests, then like a healthy receiver.

    From failure number ``bare_after`` on, the failure is a bare page without an OCPI envelope, as a proxy or
    load balancer in front of a restarting receiver sends it.
    """
    failed = [0]

    async def respond(request: web.Request, rec: Received) -> web.StreamResponse:
        if failed[0] < times:
            failed[0] += 1
            if bare_after is not None and failed[0] > bare_after:
                return web.Response(status=status, text="<html>Service Unavailable</html>", content_type="text/html")
            return web.json_response(envelope(status_code=ocpi_status, message="not now"), status=status)
        return await default_responder(request, rec)

    return respond


async def broadcast(hub_session: aiohttp.ClientSession, sender: FakePartner, doc: dict[str, Any],
                    correlation_id: str | None = None) -> None:
    headers = {"X-Correlation-ID": correlation_id} if correlation_id else None
    status, _, body = await sender.call(hub_session, "PUT", "locations", "RECEIVER", f"NL/CPA/{doc['id']}", to=HUB,
                                        json=doc, headers=headers)
    assert (status, body["status_code"]) == (200, 1000), body


async def restart_on_same_port(partner: FakePartner) -> None:
    """Bring a stopped partner back where the hub knows it: same port, same routes, same tokens."""
    port = URL(partner.base_url).port
    real_site = web.TCPSite
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(partners.web, "TCPSite", lambda runner, host, _port: real_site(runner, host, port))
        await partner.start()
    assert URL(partner.base_url).port == port




async def dead_letters(hub: HubHarness, query: str = "") -> list[dict[str, Any]]:
    status, body = await hub.admin("GET", "/admin/dead-letters" + query)
    assert status == 200, body
    return list(body)


async def queue_depth(hub: HubHarness) -> int:
    status, queues = await hub.admin("GET", "/admin/queues")
    assert status == 200, queues
    return sum(q["depth"] for q in queues)


async def redeliveries(hub: HubHarness, module: str, receiver_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The method and loss report of each push of ``module`` written again at delivery for ``receiver_id``
    (audit)."""
    h = hub.app[HUB_KEY]
    await h.audit.flush()
    found = await h.store.query_audit(AuditQuery(module=module, limit=100))
    return [(rec.method, report) for rec in found if rec.translation and rec.receiver_platform_id == receiver_id
            for report in rec.translation["reports"] if report["of"] == "redelivery"]


async def redelivery_reports(hub: HubHarness, module: str, receiver_id: str) -> list[dict[str, Any]]:
    """The loss reports of the pushes of ``module`` written again at delivery for ``receiver_id`` (audit)."""
    return [report for _, report in await redeliveries(hub, module, receiver_id)]


def from_the_hubs_copy(report: dict[str, Any]) -> bool:
    """A redelivery made from the hub's copy of the object as it is at delivery, and reported so."""
    return report["basis"] == "kept" and any(
        (loss["field"], loss["rule"]) == ("", "derived") and "the hub's copy as it is at delivery" in loss["detail"]
        and "later changes" in loss["detail"] for loss in report["losses"])


def received_between(stamp: Any, sent: float, answered: float) -> bool:
    """A ``last_updated`` the hub wrote (whole seconds) for a push it received after ``sent`` and answered by
    ``answered``: the time it received it, not a later one."""
    if not isinstance(stamp, str):
        return False
    return math.floor(sent) <= datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() <= answered


def unstamped(doc: dict[str, Any]) -> dict[str, Any]:
    """A PATCH without the last_updated the hub gave it: taken when it made the queued message, milliseconds after
    the live receivers' copies were stamped, it may be one whole second later."""
    return {k: v for k, v in doc.items() if k != "last_updated"}

async def _upgrading(make_hub: MakeHub, sender_role: str, *, live: str | None = None, window: float = 30,
                     ) -> tuple[HubHarness, FakePartner, FakePartner | None, FakePartner, dict[str, Any]]:
    """A hub (fan-out retried for ``window`` seconds), a 2.1.1 ``sender_role`` ("CPO": NL/CPA; "EMSP": DE/EMD),
    a live counterpart on ``live`` when named (DE/EMB or NL/CPB), and a 2.1.1 counterpart that will upgrade
    (DE/EMA or NL/CPM; it offers the newer versions too): the set-up of every "comes back in another version"
    test below. Returns the hub, sender, live partner, upgrading receiver and its platform."""
    hub = await make_hub(broadcast_retry_window=window)
    cpo = sender_role == "CPO"
    other = "EMSP" if cpo else "CPO"
    mine, theirs, upgrading = (("NL", "CPA"), ("DE", "EMB"), ("DE", "EMA")) if cpo else (
        ("DE", "EMD"), ("NL", "CPB"), ("NL", "CPM"))
    sender = FakePartner(name=f"{sender_role} 2.1.1", parties=[Party(*mine, sender_role)], version="2.1.1",
                         modules=dict(MODULES_BOTH))
    await register(hub, sender, "2.1.1")
    partner = None
    if live is not None:
        partner = FakePartner(name=f"{other} {live}", parties=[Party(*theirs, other)], version=live,
                              modules=dict(MODULES_BOTH))
        await register(hub, partner, live)
    receiver = FakePartner(name=f"{other} upgrading", parties=[Party(*upgrading, other)], version="2.1.1",
                           offered_versions=("2.3.0", "2.2.1", "2.1.1") if cpo else ("2.2.1", "2.1.1"),
                           modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, receiver, "2.1.1")
    return hub, sender, partner, receiver, platform



async def emsp_refusing_on_2_2_1(hub: HubHarness) -> tuple[FakePartner, dict[str, Any]]:
    """An eMSP (DE/EMA) registered in 2.2.1, offering 2.1.1 too, that refuses every push for now (OCPI 503): what
    is pushed to it waits for a retry, written for 2.2.1. Returns it and its platform."""
    receiver = FakePartner(name="eMSP moving", parties=[Party("DE", "EMA", "EMSP")], version="2.2.1",
                           offered_versions=("2.2.1", "2.1.1"), modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, receiver, "2.2.1")
    receiver.responder = failing(1000)
    return receiver, platform


async def a_second_past(moment: float) -> None:
    """Wait until a stamp of the current time (whole seconds) is later than ``moment``."""
    await asyncio.sleep(max(0.0, math.floor(moment) + 1.2 - time.time()))


async def test_transient_failures_are_retried_in_order_until_delivered(make_hub: MakeHub) -> None:
    """503 twice (an OCPI one, then a bare one from a proxy), then 200: three deliveries of the first PUT, and the
    second PUT waits its turn behind them."""
    hub = await make_hub(broadcast_retry_window=30)
    sender, flaky, healthy = cpo(), emsp("Flaky eMSP", "EMF"), emsp("Healthy eMSP", "EMH")
    for partner in (sender, flaky, healthy):
        await hub.connect(partner)
    flaky.responder = failing(2, bare_after=1)

    await broadcast(hub.session, sender, location(version=1))
    await broadcast(hub.session, sender, location(version=2))

    await eventually(lambda: len(flaky.received) >= 4, within=15, what="three tries of v1 and then v2")
    assert [r.json()["name"] for r in flaky.received] == ["v1", "v1", "v1", "v2"]
    assert [r.json()["name"] for r in healthy.received] == ["v1", "v2"]  # never held up by the flaky one
    assert len({r.headers["X-Request-ID"] for r in flaky.received}) == 4  # every try is a new request
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await queue_depth(hub):
        assert loop.time() < deadline, "the retried push was never acked"
        await asyncio.sleep(0.05)
    assert await dead_letters(hub) == []
    assert len(flaky.received) == 4


async def test_a_retried_push_reaches_its_emsp_moved_down_to_2_1_1_as_the_live_fan_out_writes_it(
        make_hub: MakeHub) -> None:
    """A 2.2.1 CPO's Location fan-out and an EVSE status PATCH behind it, written for an eMSP on 2.2.1, wait for a
    retry (503); the eMSP moves down to 2.1.1 by a credentials PUT (a rolled-back upgrade). The hub writes both
    again in 2.1.1 from what the CPO sent, as the live fan-out writes them: at the eMSP's 2.1.1 endpoint, without
    routing headers, the Location as GET All serves it in 2.1.1 (no owner fields, ``type``), the PATCH as sent,
    never in the 2.2.1 shape the eMSP no longer reads. No dead letter; the redeliveries' audit records say how
    they were written (docs/store-and-forward.md)."""
    hub = await make_hub(broadcast_retry_window=30)
    sender = cpo()
    await hub.connect(sender)
    receiver, platform = await emsp_refusing_on_2_2_1(hub)
    await broadcast(hub.session, sender, location())
    status, _, body = await sender.call(hub.session, "PATCH", "locations", "RECEIVER", "NL/CPA/LOC1/E1", to=HUB,
                                        json={"status": "CHARGING", "last_updated": TS})  # the most frequent push
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1, what="a first, refused attempt")
    assert "country_code" in receiver.received[0].json(), "written for 2.2.1"
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.1.1")

    await eventually(lambda: len(receiver.received) >= tried + 2, within=15, what="the pushes in 2.1.1")
    got, patch = receiver.received[tried:tried + 2]
    assert (got.method, got.path) == ("PUT", "/ocpi/2.1.1/locations/NL/CPA/LOC1"), got.path
    assert not any(h.startswith("OCPI-") for h in got.headers), "a 2.1.1 receiver gets no routing headers"
    status, _, page = await receiver.call(hub.session, "GET", "locations", "SENDER")
    assert status == 200 and [got.json()] == page["data"], (got.json(), page)
    assert got.json()["type"] == "UNKNOWN" and "country_code" not in got.json(), got.json()
    assert (patch.method, patch.path, patch.json()) == (
        "PATCH", "/ocpi/2.1.1/locations/NL/CPA/LOC1/E1", {"status": "CHARGING", "last_updated": TS})
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 2 and await dead_letters(hub) == []
    reports = await redelivery_reports(hub, "locations", platform["id"])
    assert [(r["from"], r["to"], r["written_for"], r["basis"]) for r in reports] == [
        ("2.2.1", "2.1.1", "2.2.1", "queued")] * 2, reports


async def test_a_retried_push_reaches_its_2_1_1_emsp_back_in_2_2_1_as_its_cpo_sent_it(make_hub: MakeHub) -> None:
    """A 2.2.1 CPO's Location fan-out, written for an eMSP on 2.1.1, waits for a retry (503) while the eMSP
    upgrades; it comes back registered in 2.2.1. The fan-out crosses versions, so the hub kept what the CPO sent:
    the eMSP gets the Location at its 2.2.1 endpoint as the CPO sent it (owner fields, ``type``, which the 2.1.1
    copy had not), FROM the hub as every fan-out; no dead letter (docs/store-and-forward.md, "When the receiver
    changes version or endpoint")."""
    hub = await make_hub(broadcast_retry_window=30)
    sender = cpo()
    await hub.connect(sender)
    receiver = FakePartner(name="eMSP upgrading", parties=[Party("DE", "EMA", "EMSP")], version="2.1.1",
                           offered_versions=("2.2.1", "2.1.1"), modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, receiver, "2.1.1")
    receiver.responder = failing(1000)
    sent = {**location(), "type": "ON_STREET"}
    await broadcast(hub.session, sender, sent)
    await eventually(lambda: len(receiver.received) >= 1, what="a first, refused attempt")
    assert receiver.received[0].path == "/ocpi/2.1.1/locations/NL/CPA/LOC1"
    assert "country_code" not in receiver.received[0].json(), "written for 2.1.1"
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    await eventually(lambda: len(receiver.received) > tried, within=15, what="the push in 2.2.1")
    got = receiver.received[tried]
    assert got.path == "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1", got.path
    assert got.json() == sent
    assert (got.headers["OCPI-from-party-id"], got.headers["OCPI-to-party-id"]) == ("HUB", "EMA"), "a broadcast"
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 1 and await dead_letters(hub) == []


async def test_a_2_1_1_cpos_retried_push_reaches_its_emsp_back_in_2_1_1_as_the_cpo_sent_it(
    make_hub: MakeHub,
) -> None:
    """The other way: a 2.1.1 CPO's Location fan-out, written for an eMSP on 2.2.1, waits for a retry (503); the
    eMSP moves to 2.1.1. It now speaks the CPO's version: it gets the Location as the CPO sent it, at its 2.1.1
    endpoint, without routing headers, where the 2.2.1 copy could not go (docs/store-and-forward.md)."""
    hub = await make_hub(broadcast_retry_window=30)
    sender = FakePartner(name="CPO 2.1.1", parties=[Party("NL", "CPA", "CPO")], version="2.1.1",
                         modules=dict(MODULES_BOTH))
    await register(hub, sender, "2.1.1")
    receiver, platform = await emsp_refusing_on_2_2_1(hub)
    sent = location_211()
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", json=sent)
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1, what="a first, refused attempt")
    assert receiver.received[0].json()["parking_type"] == "ON_STREET", "written for 2.2.1"
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.1.1")

    await eventually(lambda: len(receiver.received) > tried, within=15, what="the push in 2.1.1")
    got = receiver.received[tried]
    assert (got.method, got.path) == ("PUT", "/ocpi/2.1.1/locations/NL/CPA/LOC1"), got.path
    assert got.json() == sent
    assert not any(h.startswith("OCPI-") for h in got.headers), "a 2.1.1 receiver gets no routing headers"
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 1 and await dead_letters(hub) == []


async def test_a_2_1_1_cpos_retried_push_reaches_its_2_1_1_emsp_back_in_2_3_0_translated(make_hub: MakeHub) -> None:
    """Both parties on 2.1.1: the CPO's Location fan-out, written in 2.1.1 as the CPO sent it, waits for a retry
    (503) while the eMSP upgrades; it comes back registered in 2.3.0. The fan-out kept nothing more (same version),
    so the hub translates the 2.1.1 Location at delivery as the live fan-out does (the owner from the path,
    ``type`` as ``parking_type``, voltage and amperage as ``max_voltage`` and ``max_amperage``): the eMSP gets it
    at its 2.3.0 endpoint in 2.3.0, FROM the hub; no dead letter, and the loss report of the 2.1.1 -> 2.3.0 step in
    the audit (docs/store-and-forward.md, "When the receiver changes version or endpoint")."""
    hub, sender, _, receiver, platform = await _upgrading(make_hub, "CPO")
    receiver.responder = failing(1000)
    sent = location_211()
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", json=sent)
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1, what="a first, refused attempt")
    assert receiver.received[0].json() == sent, "written in 2.1.1, as the CPO sent it"
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.3.0")

    await eventually(lambda: len(receiver.received) > tried, within=15, what="the push in 2.3.0")
    got = receiver.received[tried]
    assert (got.method, got.path) == ("PUT", "/ocpi/2.3.0/receiver/locations/NL/CPA/LOC1"), got.path
    loc = got.json()
    assert (loc["country_code"], loc["party_id"], loc["id"], loc["publish"]) == ("NL", "CPA", "LOC1", True), loc
    assert loc["parking_type"] == "ON_STREET" and "type" not in loc, loc
    [connector] = loc["evses"][0]["connectors"]
    assert (connector["max_voltage"], connector["max_amperage"]) == (220, 16) and "voltage" not in connector, loc
    assert (got.headers["OCPI-from-party-id"], got.headers["OCPI-to-party-id"]) == ("HUB", "EMA"), "a broadcast"
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 1 and await dead_letters(hub) == []
    h = hub.app[HUB_KEY]
    await h.audit.flush()
    found = await h.store.query_audit(AuditQuery(module="locations", limit=100))
    [report] = [r for rec in found if rec.translation and rec.receiver_platform_id == platform["id"]
                for r in rec.translation["reports"] if r["of"] == "redelivery"]
    assert (report["from"], report["to"], report["written_for"], report["basis"]) == (
        "2.1.1", "2.3.0", "2.1.1", "queued"), report


async def test_a_2_1_1_cpos_retried_tariff_delete_reaches_its_2_1_1_emsp_back_in_2_2_1(make_hub: MakeHub) -> None:
    """Both parties on 2.1.1: the CPO's Tariff DELETE, broadcast like its PUT, waits for a retry (503) while the
    eMSP upgrades; it comes back registered in 2.2.1. A DELETE has no body and its path
    ({country_code}/{party_id}/{tariff_id}) is the same in every version: nothing the hub read on arrival is
    needed to send it again, so the eMSP gets it at its 2.2.1 endpoint, FROM the hub, instead of a dead letter that
    would leave it a tariff its CPO deleted (the hub's GET All copy is already gone, so catch-up cannot tell it)."""
    hub, sender, _, receiver, platform = await _upgrading(make_hub, "CPO")
    receiver.responder = failing(1000)
    status, _, body = await sender.call(hub.session, "DELETE", "tariffs", "RECEIVER", "NL/CPA/T2")
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1, what="a first, refused attempt")
    assert (receiver.received[0].method, receiver.received[0].path) == ("DELETE", "/ocpi/2.1.1/tariffs/NL/CPA/T2")
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    deadline = asyncio.get_running_loop().time() + 15
    while len(receiver.received) == tried and not (letters := await dead_letters(hub)):
        assert asyncio.get_running_loop().time() < deadline, "neither delivered nor dead-lettered"
        await asyncio.sleep(0.05)
    assert await dead_letters(hub) == [], letters
    got = receiver.received[tried]
    assert (got.method, got.path, got.body) == ("DELETE", "/ocpi/2.2.1/receiver/tariffs/NL/CPA/T2", b""), got.path
    assert (got.headers["OCPI-from-party-id"], got.headers["OCPI-to-party-id"]) == ("HUB", "EMA"), "a broadcast"


async def test_a_2_1_1_cpos_retried_tariff_put_reaches_its_2_1_1_emsp_back_in_2_2_1_in_2_2_1(make_hub: MakeHub) -> None:
    """Both parties on 2.1.1: the CPO's Tariff fan-out, written in 2.1.1 as the CPO sent it, waits for a retry
    (503) while the eMSP upgrades; it comes back registered in 2.2.1. It gets the Tariff at its 2.2.1 endpoint as a
    2.2.1 eMSP gets that PUT live (the owner from the path as ``country_code`` and ``party_id``, which a 2.1.1
    Tariff lacks), FROM the hub; no dead letter (docs/store-and-forward.md, "When the receiver changes version or
    endpoint")."""
    hub, sender, live, receiver, platform = await _upgrading(make_hub, "CPO", live="2.2.1")
    receiver.responder = failing(1000)
    tariff = {"id": "T1", "currency": "EUR", "tariff_alt_text": [{"language": "en", "text": "2 EUR/hour"}],
              "elements": [{"price_components": [{"type": "TIME", "price": 2.0, "step_size": 300}],
                            "restrictions": {"start_time": "08:00", "end_time": "20:00"}}],
              "last_updated": TS}
    status, _, body = await sender.call(hub.session, "PUT", "tariffs", "RECEIVER", "NL/CPA/T1", json=tariff)
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1 and len(live.received) >= 1, what="a first attempt each")
    assert receiver.received[0].json() == tariff, "written in 2.1.1, as the CPO sent it"
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    await eventually(lambda: len(receiver.received) > tried, within=15, what="the Tariff in 2.2.1")
    got = receiver.received[tried]
    assert (got.method, got.path, got.raw_query) == ("PUT", "/ocpi/2.2.1/receiver/tariffs/NL/CPA/T1", "")
    sent = got.json()
    assert (sent["country_code"], sent["party_id"], sent["id"]) == ("NL", "CPA", "T1"), sent
    assert {k: v for k, v in sent.items() if k not in ("country_code", "party_id")} == tariff, sent
    assert sent == live.received[0].json(), "as a 2.2.1 eMSP gets it live"
    assert (got.headers["OCPI-from-party-id"], got.headers["OCPI-to-party-id"]) == ("HUB", "EMA"), "a broadcast"
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 1 and await dead_letters(hub) == []


async def test_a_2_1_1_emsps_retried_token_put_reaches_its_2_1_1_cpo_back_in_2_2_1_in_2_2_1(make_hub: MakeHub) -> None:
    """Both parties on 2.1.1: the eMSP's Token fan-out, written in 2.1.1 as the eMSP sent it (no owner fields,
    ``auth_id``, a URL without ``type``), waits for a retry (503) while the CPO upgrades; it comes back registered
    in 2.2.1. It gets the Token at its 2.2.1 endpoint as a 2.2.1 CPO gets that PUT live: the owner from the path as
    ``country_code`` and ``party_id``, ``auth_id`` as ``contract_id``, and the ``type`` the eMSP gave in the body
    and, not being 2.2.1's default RFID, in the URL's ``?type=`` (OCPI 2.2.1 mod_tokens; an RFID token's URL has
    none), FROM the hub; no dead letter."""
    hub, sender, live, receiver, platform = await _upgrading(make_hub, "EMSP", live="2.2.1")
    receiver.responder = failing(1000)
    token = {"uid": "AA11", "type": "OTHER", "auth_id": "DE8EMDC0001", "issuer": "eMSP D", "valid": True,
             "whitelist": "ALLOWED", "language": "de", "last_updated": TS}
    rfid = {**token, "uid": "BB22", "type": "RFID"}
    for sent in (token, rfid):
        status, _, body = await sender.call(hub.session, "PUT", "tokens", "RECEIVER", f"DE/EMD/{sent['uid']}",
                                            json=sent)
        assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len({r.path for r in receiver.received}) == 2 and len(live.received) >= 2,
                     what="a first attempt each")
    # one object each, so no order between them (routing/router.py order_group)
    first = {r.path: r for r in receiver.received}
    assert [(r.raw_query, r.json()) for r in (first["/ocpi/2.1.1/tokens/DE/EMD/AA11"],
                                             first["/ocpi/2.1.1/tokens/DE/EMD/BB22"])] == [("", token), ("", rfid)]
    at_live = {r.path.rsplit("/", 1)[1]: r for r in live.received}
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    def in_221() -> dict[str, Received]:
        return {r.path: r for r in receiver.received[tried:]}

    await eventually(lambda: len(in_221()) == 2, within=15, what="both Tokens in 2.2.1")
    got = in_221()["/ocpi/2.2.1/receiver/tokens/DE/EMD/AA11"]
    assert (got.method, got.raw_query) == ("PUT", "type=OTHER")
    assert got.json() == {"country_code": "DE", "party_id": "EMD", "uid": "AA11", "type": "OTHER",
                          "contract_id": "DE8EMDC0001", "issuer": "eMSP D", "valid": True, "whitelist": "ALLOWED",
                          "language": "de", "last_updated": TS}, got.json()
    assert (got.json(), got.raw_query) == (at_live["AA11"].json(), at_live["AA11"].raw_query), "as a 2.2.1 CPO gets it"
    assert (got.headers["OCPI-from-party-id"], got.headers["OCPI-to-party-id"]) == ("HUB", "CPM"), "a broadcast"
    got = in_221()["/ocpi/2.2.1/receiver/tokens/DE/EMD/BB22"]
    assert (got.method, got.raw_query) == ("PUT", ""), "RFID: 2.2.1's default type, none in the URL"
    assert (got.json()["type"], got.json()["contract_id"]) == ("RFID", "DE8EMDC0001"), got.json()
    assert (got.json(), got.raw_query) == (at_live["BB22"].json(), at_live["BB22"].raw_query)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 2 and await dead_letters(hub) == []


ROUTED_BY_HUB = {"OCPI-from-country-code": "NL", "OCPI-from-party-id": "HUB", "OCPI-to-country-code": "DE",
                 "OCPI-to-party-id": "EMA"}


@pytest.mark.parametrize("version", ["2.2.1", "2.3.0"])
async def test_a_2_1_1_cpos_retried_location_patches_reach_its_2_1_1_emsp_back_in_a_newer_version(
    make_hub: MakeHub, version: str,
) -> None:
    """Both parties on 2.1.1: the CPO's Location, EVSE status and Connector PATCHes, without last_updated (OCPI
    2.1.1 does not require it), wait for a retry (503), written in 2.1.1 as the CPO sent them, while the eMSP
    upgrades; it comes back registered in 2.2.1 or 2.3.0 a few seconds later. Each reaches it as a PATCH at its new
    endpoint, in order, as an eMSP of that version gets it live (``type`` as ``parking_type``, ``voltage`` as
    ``max_voltage``), FROM the hub, with the ``last_updated`` that version requires: the time the hub received the
    PATCH, not the time it was delivered, which would make an old status look newer than it is (OCPI 2.2.1
    mod_locations, PATCH; docs/store-and-forward.md). No dead letter; each is in the audit as a redelivery."""
    hub, sender, live, receiver, platform = await _upgrading(make_hub, "CPO", live=version)
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                        json=location_211())
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) == 1 and len(live.received) == 1, what="the Location")
    receiver.responder = failing(1000)
    patches = [("NL/CPA/LOC1", {"type": "PARKING_LOT"}), ("NL/CPA/LOC1/3256", {"status": "CHARGING"}),
               ("NL/CPA/LOC1/3256/1", {"voltage": 230})]
    sent = time.time()
    for tail, patch in patches:
        status, _, body = await sender.call(hub.session, "PATCH", "locations", "RECEIVER", tail, json=patch)
        assert (status, body["status_code"]) == (200, 1000), body
    answered = time.time()
    await eventually(lambda: len(receiver.received) >= 2 and len(live.received) == 4, what="a first attempt")
    assert (receiver.received[1].method, receiver.received[1].path, receiver.received[1].json()) == (
        "PATCH", "/ocpi/2.1.1/locations/NL/CPA/LOC1", {"type": "PARKING_LOT"}), "written in 2.1.1, as sent"
    await a_second_past(answered)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], version)

    await eventually(lambda: len(receiver.received) >= tried + 3, within=15, what=f"the PATCHes in {version}")
    got = receiver.received[tried:]
    base = f"/ocpi/{version}/receiver/locations/NL/CPA/LOC1"
    assert [(r.method, r.path) for r in got] == [("PATCH", base), ("PATCH", f"{base}/3256"),
                                                 ("PATCH", f"{base}/3256/1")], [(r.method, r.path) for r in got]
    assert [unstamped(r.json()) for r in got] == [unstamped(r.json()) for r in live.received[1:]], "as live"
    assert [set(r.json()) for r in got] == [{"parking_type", "last_updated"}, {"status", "last_updated"},
                                            {"max_voltage", "last_updated"}], [r.json() for r in got]
    assert got[1].json()["status"] == "CHARGING"
    for r in got:
        assert received_between(r.json()["last_updated"], sent, answered), (r.json(), sent, answered)
        assert {h: r.headers[h] for h in ROUTED_BY_HUB} == ROUTED_BY_HUB, r.headers
        assert r.headers["X-Request-ID"] and r.headers["X-Correlation-ID"], r.headers
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 3 and await dead_letters(hub) == []
    reports = await redelivery_reports(hub, "locations", platform["id"])
    assert len(reports) == 3 and {(r["from"], r["to"], r["written_for"], r["basis"]) for r in reports} == {
        ("2.1.1", version, "2.1.1", "queued")}, reports
    assert all(("last_updated", "defaulted") in {(loss["field"], loss["rule"]) for loss in r["losses"]}
               for r in reports), reports


async def test_a_2_1_1_evse_status_patch_replayed_for_its_emsp_back_in_2_2_1_keeps_the_time_it_was_received(
    make_hub: MakeHub,
) -> None:
    """Both parties on 2.1.1: the CPO's EVSE status PATCH (no last_updated) outlasts its retry window while the eMSP
    is down and becomes a dead letter; the eMSP comes back registered in 2.2.1 and the operator replays it. It
    reaches the eMSP as a 2.2.1 PATCH stamped with the time the hub received it, not the time of the replay (which
    starts the message's retry window again, docs/store-and-forward.md)."""
    hub, sender, _, receiver, platform = await _upgrading(make_hub, "CPO", window=1.5)
    receiver.responder = failing(1000)
    sent = time.time()
    status, _, body = await sender.call(hub.session, "PATCH", "locations", "RECEIVER", "NL/CPA/LOC1/3256",
                                        json={"status": "CHARGING"})
    assert (status, body["status_code"]) == (200, 1000), body
    answered = time.time()
    await eventually_letters(hub, 1, within=15)
    [letter] = await dead_letters(hub)
    await a_second_past(answered)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")
    status, body = await hub.admin("POST", f"/admin/dead-letters/{letter['id']}/replay")
    assert (status, body["status"]) == (200, "queued"), body

    await eventually(lambda: len(receiver.received) > tried, within=15, what="the replayed PATCH in 2.2.1")
    got = receiver.received[tried]
    assert (got.method, got.path) == ("PATCH", "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1/3256"), got.path
    assert set(got.json()) == {"status", "last_updated"} and got.json()["status"] == "CHARGING", got.json()
    assert received_between(got.json()["last_updated"], sent, answered), (got.json(), sent, answered)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 1 and await dead_letters(hub) == []


async def test_a_2_1_1_emsps_retried_token_patch_reaches_its_2_1_1_cpo_back_in_2_2_1_with_its_type(
    make_hub: MakeHub,
) -> None:
    """Both parties on 2.1.1: the eMSP blocks two tokens it pushed before (an OTHER and an RFID one) with PATCHes
    that carry neither ``type`` nor ``last_updated``; they wait for a retry (503), written in 2.1.1 as sent, while
    the CPO upgrades; it comes back registered in 2.2.1. OCPI 2.2.1 names a token by uid and ``?type=`` (default
    RFID; mod_tokens): the OTHER token's PATCH reaches it with ``type=OTHER``, the type the hub holds for that uid,
    the RFID one's without, both as a 2.2.1 CPO gets them live, stamped with the time the hub received them."""
    hub, sender, live, receiver, platform = await _upgrading(make_hub, "EMSP", live="2.2.1")
    token = {"uid": "AA11", "type": "OTHER", "auth_id": "DE8EMDC0001", "issuer": "eMSP D", "valid": True,
             "whitelist": "ALLOWED", "last_updated": TS}
    for doc in (token, {**token, "uid": "BB22", "type": "RFID"}):
        status, _, body = await sender.call(hub.session, "PUT", "tokens", "RECEIVER", f"DE/EMD/{doc['uid']}",
                                            json=doc)
        assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) == 2 and len(live.received) == 2, what="the Tokens")
    receiver.responder = failing(1000)
    sent = time.time()
    for uid in ("AA11", "BB22"):
        status, _, body = await sender.call(hub.session, "PATCH", "tokens", "RECEIVER", f"DE/EMD/{uid}",
                                            json={"valid": False})
        assert (status, body["status_code"]) == (200, 1000), body
    answered = time.time()
    await eventually(lambda: len({r.path for r in receiver.received[2:]}) == 2 and len(live.received) == 4,
                     what="a first attempt each")
    assert all((r.raw_query, r.json()) == ("", {"valid": False}) for r in receiver.received[2:]), "as sent"
    at_live = {r.path.rsplit("/", 1)[1]: r for r in live.received[2:]}
    await a_second_past(answered)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    def in_221() -> dict[str, Received]:
        return {r.path.rsplit("/", 1)[1]: r for r in receiver.received[tried:]}

    await eventually(lambda: len(in_221()) == 2, within=15, what="both PATCHes in 2.2.1")
    got = in_221()
    assert {uid: (r.method, r.path, r.raw_query) for uid, r in got.items()} == {
        "AA11": ("PATCH", "/ocpi/2.2.1/receiver/tokens/DE/EMD/AA11", "type=OTHER"),
        "BB22": ("PATCH", "/ocpi/2.2.1/receiver/tokens/DE/EMD/BB22", "")}, got
    for uid, r in got.items():
        assert (unstamped(r.json()), r.raw_query) == (unstamped(at_live[uid].json()), at_live[uid].raw_query), \
            "as a 2.2.1 CPO gets it"
        assert set(r.json()) == {"valid", "last_updated"} and r.json()["valid"] is False, r.json()
        assert received_between(r.json()["last_updated"], sent, answered), (r.json(), sent, answered)
        assert (r.headers["OCPI-from-party-id"], r.headers["OCPI-to-party-id"]) == ("HUB", "CPM"), "a broadcast"
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 2 and await dead_letters(hub) == []
    reports = await redelivery_reports(hub, "tokens", platform["id"])
    assert len(reports) == 2 and {(r["from"], r["to"], r["basis"]) for r in reports} == {
        ("2.1.1", "2.2.1", "queued")}, reports


TARIFF_211 = {"id": "T1", "currency": "EUR", "elements": [{"price_components": [
    {"type": "TIME", "price": 2.0, "step_size": 300}]}], "last_updated": TS}


async def _tariff_pushes_waiting(make_hub: MakeHub, version: str, *pushes: tuple[str, dict[str, Any] | None],
                                 ) -> tuple[HubHarness, FakePartner, FakePartner, dict[str, Any], int]:
    """A 2.1.1 CPO, a live eMSP on ``version`` and a 2.1.1 eMSP that is down (503) while the CPO's Tariff
    ``pushes`` (method, body) of NL/CPA/T1 wait for it, written in 2.1.1 as the CPO sent them; it then comes back
    registered in ``version``. Returns how many requests it had received before."""
    hub, sender, live, receiver, platform = await _upgrading(make_hub, "CPO", live=version)
    receiver.responder = failing(1000)
    for method, doc in pushes:
        status, _, body = await sender.call(hub.session, method, "tariffs", "RECEIVER", "NL/CPA/T1", json=doc)
        assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1 and len(live.received) == len(pushes),
                     what="a first attempt, and every push at the live eMSP")
    assert (receiver.received[0].method, receiver.received[0].path) == ("PUT", "/ocpi/2.1.1/tariffs/NL/CPA/T1")
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], version)
    return hub, live, receiver, platform, tried


async def test_a_2_1_1_cpos_retried_tariff_patch_reaches_its_2_1_1_emsp_back_in_2_2_1_as_a_put_of_the_tariff(
    make_hub: MakeHub,
) -> None:
    """Both parties on 2.1.1: the CPO's Tariff PUT and then a PATCH wait for a retry (503), written in 2.1.1 as the
    CPO sent them, while the eMSP upgrades; it comes back registered in 2.2.1, which has no Tariff PATCH. Live, a
    2.2.1 eMSP gets the patched Tariff as a PUT made from the hub's copy; so does the eMSP at delivery: the PUT,
    then a PUT (not a PATCH) of the hub's copy of the Tariff in 2.2.1, exactly as the live 2.2.1 eMSP got it, FROM
    the hub. No dead letter; the audit has both as redeliveries, the PATCH sent as a PUT made from the hub's copy as
    it is at delivery (docs/store-and-forward.md)."""
    hub, live, receiver, platform, tried = await _tariff_pushes_waiting(
        make_hub, "2.2.1", ("PUT", TARIFF_211), ("PATCH", {"currency": "USD"}))

    await eventually(lambda: len(receiver.received) >= tried + 2, within=15, what="the Tariff twice in 2.2.1")
    got = receiver.received[tried:]
    path = "/ocpi/2.2.1/receiver/tariffs/NL/CPA/T1"
    assert [(r.method, r.path) for r in got] == [("PUT", path), ("PUT", path)], [(r.method, r.path) for r in got]
    assert [r.json() for r in got] == [r.json() for r in live.received], "as the live 2.2.1 eMSP got them"
    patched = got[1].json()
    assert (patched["country_code"], patched["party_id"], patched["id"], patched["currency"]) == (
        "NL", "CPA", "T1", "USD"), patched
    assert patched["elements"] == TARIFF_211["elements"] and isinstance(patched["last_updated"], str), patched
    assert all((r.headers["OCPI-from-party-id"], r.headers["OCPI-to-party-id"]) == ("HUB", "EMA") for r in got)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 2 and await dead_letters(hub) == []
    found = await redeliveries(hub, "tariffs", platform["id"])
    assert len(found) == 2 and all(method == "PUT" for method, _ in found), found
    [(_, report)] = [(m, r) for m, r in found if r["basis"] == "kept"]
    assert (report["from"], report["to"], report["written_for"]) == ("2.1.1", "2.2.1", "2.1.1"), report
    assert from_the_hubs_copy(report), report


async def test_a_2_1_1_cpos_retried_tariff_patches_reach_its_emsp_back_in_2_3_0_as_puts_of_the_tariff_now(
    make_hub: MakeHub,
) -> None:
    """As above with a second PATCH queued behind the first, the eMSP back in 2.3.0: each PATCH goes as a PUT of
    the hub's copy as it is at delivery, so the first already holds the later change and the second repeats it
    (idempotent). The eMSP ends with the Tariff as the live 2.3.0 eMSP has it; no dead letter."""
    hub, live, receiver, platform, tried = await _tariff_pushes_waiting(
        make_hub, "2.3.0", ("PUT", TARIFF_211), ("PATCH", {"currency": "USD"}),
        ("PATCH", {"elements": [{"price_components": [{"type": "TIME", "price": 2.5, "step_size": 300}]}]}))

    await eventually(lambda: len(receiver.received) >= tried + 3, within=15, what="the Tariff three times in 2.3.0")
    got = receiver.received[tried:]
    path = "/ocpi/2.3.0/receiver/tariffs/NL/CPA/T1"
    assert [(r.method, r.path) for r in got] == [("PUT", path)] * 3, [(r.method, r.path) for r in got]
    now = live.received[-1].json()
    assert (now["currency"], now["elements"][0]["price_components"][0]["price"]) == ("USD", 2.5), now
    assert got[0].json() == live.received[0].json(), "the PUT as the CPO sent it, in 2.3.0"
    assert got[1].json() == got[2].json() == now, "the Tariff as it is now, as the live 2.3.0 eMSP has it"
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 3 and await dead_letters(hub) == []
    kept = [r for _, r in await redeliveries(hub, "tariffs", platform["id"]) if r["basis"] == "kept"]
    assert len(kept) == 2 and all(from_the_hubs_copy(r) and r["to"] == "2.3.0" for r in kept), kept


async def test_a_2_1_1_cpos_retried_tariff_patch_of_a_tariff_deleted_since_is_dead_lettered_saying_so(
    make_hub: MakeHub,
) -> None:
    """As above, the CPO's PUT, PATCH and DELETE of the Tariff waiting: by delivery the hub holds no copy of it (the
    DELETE, a broadcast too, removed it), so there is nothing whole to send for the PATCH. It is dead-lettered
    (version_changed), the reason saying there is no copy; the PUT before it and the DELETE after it reach the eMSP
    back in 2.2.1, which ends without the Tariff."""
    hub, _, receiver, platform, tried = await _tariff_pushes_waiting(
        make_hub, "2.2.1", ("PUT", TARIFF_211), ("PATCH", {"currency": "USD"}), ("DELETE", None))

    await eventually(lambda: len(receiver.received) >= tried + 2, within=15, what="the PUT and the DELETE")
    path = "/ocpi/2.2.1/receiver/tariffs/NL/CPA/T1"
    got = receiver.received[tried:]
    assert [(r.method, r.path) for r in got] == [("PUT", path), ("DELETE", path)], [(r.method, r.path) for r in got]
    await eventually_letters(hub, 1, within=15)
    [letter] = await dead_letters(hub)
    assert letter["receiver"] == platform["id"], letter
    assert "no Tariff PATCH" in letter["reason"] and "holds no copy of tariff T1 (deleted since?)" in letter["reason"]
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 2


EMAID_TOKEN = {"country_code": "DE", "party_id": "EMC", "uid": "P1", "type": "EMAID", "contract_id": "DE8EMC0001",
               "issuer": "eMSP C", "valid": True, "whitelist": "ALLOWED", "last_updated": TS}


async def _emaid_token_waiting(make_hub: MakeHub, moves_to: str, live: FakePartner | None = None,
                               ) -> tuple[HubHarness, FakePartner, dict[str, Any]]:
    """A 2.3.0 eMSP's EMAID Token fanned out to a CPO on 2.3.0 (offering ``moves_to`` too) that answers 503, and
    to ``live`` when given (registered in its version): the hub, the CPO and its platform, after a first attempt."""
    hub = await make_hub(broadcast_retry_window=30)
    sender = FakePartner(name="eMSP 2.3.0", parties=[Party("DE", "EMC", "EMSP")], version="2.3.0",
                         modules=dict(MODULES_BOTH))
    await register(hub, sender, "2.3.0")
    if live is not None:
        await register(hub, live, live.version)
    receiver = FakePartner(name="CPO moving", parties=[Party("NL", "CPM", "CPO")], version="2.3.0",
                           offered_versions=("2.3.0", moves_to), modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, receiver, "2.3.0")
    receiver.responder = failing(1000)
    status, _, body = await sender.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMC/P1", to=HUB,
                                        json=EMAID_TOKEN, query="type=EMAID")
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1 and (live is None or len(live.received) == 1),
                     what="a first, refused attempt")
    assert (receiver.received[0].path, receiver.received[0].raw_query) == (
        "/ocpi/2.3.0/receiver/tokens/DE/EMC/P1", "type=EMAID")
    return hub, receiver, platform


async def test_a_retried_token_push_reaches_its_cpo_that_moved_from_2_3_0_to_2_2_1_in_2_2_1(
    make_hub: MakeHub,
) -> None:
    """A 2.3.0 eMSP's EMAID Token, fanned out to a CPO on 2.3.0, waits for a retry (503); the CPO moves to 2.2.1.
    Between 2.2.1 and 2.3.0 a push is translated again at delivery (docs/store-and-forward.md, "When the receiver
    changes version or endpoint"): the CPO gets the token in 2.2.1, the TokenType 2.2.1 lacks as OTHER in the body
    and in the URL's ``type``, as a push from a 2.3.0 eMSP to a 2.2.1 CPO always does (docs/versions.md,
    "Tokens"); no dead letter."""
    hub, receiver, platform = await _emaid_token_waiting(make_hub, "2.2.1")
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.2.1")

    await eventually(lambda: len(receiver.received) > tried, within=15, what="the push in 2.2.1")
    got = receiver.received[tried]
    assert (got.path, got.raw_query) == ("/ocpi/2.2.1/receiver/tokens/DE/EMC/P1", "type=OTHER")
    assert got.json() == {**EMAID_TOKEN, "type": "OTHER"}
    assert await dead_letters(hub) == []


async def test_a_retried_token_push_reaches_its_cpo_moved_down_to_2_1_1_as_a_live_2_1_1_cpo_gets_it(
    make_hub: MakeHub,
) -> None:
    """A 2.3.0 eMSP's EMAID Token, fanned out to a CPO on 2.3.0, waits for a retry (503); the CPO moves down to
    2.1.1. The hub writes the push in 2.1.1 from what the eMSP sent, as the live fan-out writes it: the moving CPO
    gets exactly what a CPO that was on 2.1.1 all along got (``auth_id``, the TokenType 2.1.1 lacks as OTHER), at
    its 2.1.1 endpoint, without routing headers; no dead letter (docs/store-and-forward.md)."""
    live = FakePartner(name="CPO 2.1.1", parties=[Party("NL", "CPL", "CPO")], version="2.1.1",
                       modules=dict(MODULES_BOTH))
    hub, receiver, platform = await _emaid_token_waiting(make_hub, "2.1.1", live)
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.1.1")

    await eventually(lambda: len(receiver.received) > tried, within=15, what="the push in 2.1.1")
    got, expected = receiver.received[tried], live.received[0]
    assert (got.method, got.path, got.raw_query) == ("PUT", "/ocpi/2.1.1/tokens/DE/EMC/P1", expected.raw_query)
    assert got.json() == expected.json(), (got.json(), expected.json())
    assert (got.json()["auth_id"], got.json()["type"]) == ("DE8EMC0001", "OTHER"), got.json()
    assert not any(h.startswith("OCPI-") for h in got.headers), "a 2.1.1 receiver gets no routing headers"
    await asyncio.sleep(0.3)
    assert len(receiver.received) == tried + 1 and await dead_letters(hub) == []


async def test_an_unpublished_locations_pushes_waiting_for_an_emsp_moved_down_to_2_1_1_are_dead_letters(
    make_hub: MakeHub,
) -> None:
    """A 2.2.1 CPO's Location with ``publish: false`` and then an EVSE status PATCH of it wait for a 2.2.1 eMSP
    (which reads unpublished Locations); the eMSP moves down to 2.1.1, which has no unpublished Locations. As live,
    where a 2.1.1 eMSP is sent neither, neither is sent: both are dead letters, their reasons saying why, and the
    2.1.1 eMSP connected all along got nothing (docs/versions.md, "Locations")."""
    hub = await make_hub(broadcast_retry_window=30)
    sender = cpo()
    await hub.connect(sender)
    live = FakePartner(name="eMSP 2.1.1", parties=[Party("DE", "EML", "EMSP")], version="2.1.1",
                       modules=dict(MODULES_BOTH))
    await register(hub, live, "2.1.1")
    receiver, platform = await emsp_refusing_on_2_2_1(hub)
    hidden = {**location(), "publish": False, "evses": [
        {"uid": "E1", "status": "AVAILABLE", "last_updated": TS, "connectors": [
            {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
             "max_voltage": 230, "max_amperage": 16, "last_updated": TS}]}]}
    await broadcast(hub.session, sender, hidden)
    status, _, body = await sender.call(hub.session, "PATCH", "locations", "RECEIVER", "NL/CPA/LOC1/E1", to=HUB,
                                        json={"status": "CHARGING", "last_updated": TS})
    assert (status, body["status_code"]) == (200, 1000), body
    await eventually(lambda: len(receiver.received) >= 1, what="a first, refused attempt")
    tried = await receiver.come_back_in(hub.session, platform["versions_url"], "2.1.1")

    await eventually_letters(hub, 2, within=15)
    assert receiver.received[tried:] == [] and live.received == [], "no 2.1.1 party gets an unpublished Location"
    reasons = sorted(letter["reason"] for letter in await dead_letters(hub))
    assert all("2.1.1" in why and "2.2.1" in why and "publish" in why for why in reasons), reasons


async def eventually_letters(hub: HubHarness, count: int, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(await dead_letters(hub)) < count:
        assert loop.time() < deadline, f"timed out waiting for {count} dead letters"
        await asyncio.sleep(0.1)


async def test_refused_and_unreachable_pushes_become_dead_letters_that_can_be_replayed_or_deleted(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub(broadcast_retry_window=1.5)
    sender = cpo()
    refusing, down, healthy = emsp("Refusing eMSP", "EMR"), emsp("Down eMSP", "EMD"), emsp("Healthy eMSP", "EMH")
    ids = {}
    for partner in (sender, refusing, down, healthy):
        ids[partner.name] = (await hub.connect(partner))["id"]
    refusing.responder = failing(1, status=400, ocpi_status=2001)
    await down.stop()
    correlation_id = uuid.uuid4().hex
    doc = location()

    await broadcast(hub.session, sender, doc, correlation_id)

    # permanent: dead at once, after one try
    await eventually(lambda: refusing.received and healthy.received, what="the fan-out")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not (letters := await dead_letters(hub, f"?receiver={ids['Refusing eMSP']}")):
        assert loop.time() < deadline, "no dead letter for the refusing receiver"
        await asyncio.sleep(0.05)
    assert len(refusing.received) == 1
    (refused,) = letters
    assert refused["receiver"] == ids["Refusing eMSP"] and refused["platform"] == "Refusing eMSP"
    assert refused["attempts"] == 1
    assert "400" in refused["reason"] and "2001" in refused["reason"]
    assert refused["request"] == {"method": "PUT", "module": "locations", "interface_role": "RECEIVER",
                                  "path": "NL/CPA/LOC1", "query": "", "to": "DE/EMR",
                                  "body_size": len(json.dumps(doc).encode())}

    # transient but lasting past the retry window: dead after a few tries
    deadline = loop.time() + 10
    while len(letters := await dead_letters(hub)) < 2:
        assert loop.time() < deadline, f"no dead letter for the down receiver: {letters}"
        await asyncio.sleep(0.1)
    unreachable = next(d for d in letters if d["receiver"] == ids["Down eMSP"])
    assert unreachable["attempts"] >= 2
    assert "unreachable" in unreachable["reason"] or "4003" in unreachable["reason"]
    assert unreachable["request"]["to"] == "DE/EMD"
    assert await queue_depth(hub) == 0
    assert len(healthy.received) == 1  # the others' failures never touched it

    # the receiver comes back: the operator replays its dead letter, it gets the push as it was
    await restart_on_same_port(down)
    status, body = await hub.admin("POST", f"/admin/dead-letters/{unreachable['id']}/replay")
    assert (status, body["status"]) == (200, "queued"), body
    await eventually(lambda: down.received, what="the replayed push")
    got = down.received[0]
    assert got.json() == doc and got.path == "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1"
    assert (got.headers["OCPI-to-party-id"], got.headers["OCPI-from-party-id"]) == ("EMD", "HUB")
    assert got.headers["X-Correlation-ID"] == correlation_id
    assert [d["id"] for d in await dead_letters(hub)] == [refused["id"]]

    # the other one is deleted
    status, body = await hub.admin("DELETE", f"/admin/dead-letters/{refused['id']}")
    assert status == 200, body
    assert await dead_letters(hub) == []
    for method, path in (("DELETE", f"/admin/dead-letters/{refused['id']}"),
                         ("POST", f"/admin/dead-letters/{refused['id']}/replay"),
                         ("POST", "/admin/dead-letters/nope/replay")):
        status, body = await hub.admin(method, path)
        assert status == 404, (method, path, body)
    await asyncio.sleep(0.2)
    assert len(refusing.received) == 1 and len(down.received) == 1


async def test_a_receiver_suspended_with_pushes_queued_gets_none_of_them_later(make_hub: MakeHub) -> None:
    """Not CONNECTED: no retries (OCPI: do not queue for offline parties); the pushes are kept as dead letters."""
    hub = await make_hub(broadcast_retry_window=30)
    sender, slow = cpo(), emsp("Slow eMSP", "EMS")
    await hub.connect(sender)
    slow_id = (await hub.connect(slow))["id"]
    gate = asyncio.Event()

    async def stall(request: web.Request, rec: Received) -> web.StreamResponse:
        await gate.wait()
        return await default_responder(request, rec)

    slow.responder = stall
    for version in (1, 2, 3):  # one object: v2 and v3 wait behind v1
        await broadcast(hub.session, sender, location(version=version))
    await eventually(lambda: slow.received, what="v1 in flight")
    status, _ = await hub.admin("POST", f"/admin/platforms/{slow_id}/suspend")
    assert status == 200
    gate.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(await dead_letters(hub)) < 2:
        assert loop.time() < deadline, "queued pushes for a suspended receiver were not dead-lettered"
        await asyncio.sleep(0.05)
    letters = await dead_letters(hub)
    assert {d["attempts"] for d in letters} == {1}
    assert [r.json()["name"] for r in slow.received] == ["v1"]


# -- a hub in its own process ----------------------------------------------------------------------------------

class HubProcess:
    """``ocpi-hub serve`` in its own session, output in files; always stopped by the test that started it."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tmp_path
        base = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        self.env = {**base, "HUB_HOST": "127.0.0.1", "HUB_PORT": str(self.port), "HUB_PUBLIC_URL": self.url,
                    "HUB_SQLITE_PATH": str(tmp_path / "hub.sqlite3"), "HUB_ADMIN_TOKEN": ADMIN_TOKEN,
                    "HUB_LOG_LEVEL": "WARNING", "HUB_ALLOW_PRIVATE_URLS": "true", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        with open(self.dir / f"hub-{self.runs}.log", "wb") as out:
            self.proc = subprocess.Popen([OCPI_HUB, "serve"], env=self.env, cwd=self.dir, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return "\n".join((self.dir / f"hub-{n}.log").read_text(errors="replace")[-3000:]
                         for n in range(1, self.runs + 1))

    async def ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 20
        while True:
            assert self.proc is not None
            assert self.proc.poll() is None, f"hub exited with {self.proc.returncode}:\n{self.log()}"
            try:
                async with session.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"hub did not become healthy:\n{self.log()}"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL this hub's process group (the one it was started in), then reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    async def admin(self, session: aiohttp.ClientSession, method: str, path: str, json: Any = None) -> Any:
        async with session.request(method, self.url + path, json=json,
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            body = await resp.json(content_type=None)
            assert resp.status < 300, (method, path, resp.status, body)
            return body

    async def connect(self, session: aiohttp.ClientSession, partner: FakePartner) -> str:
        if not partner.base_url:
            await partner.start()
        platform = await self.admin(session, "POST", "/admin/platforms", {
            "name": partner.name,
            "roles": [{"country_code": p.country_code, "party_id": p.party_id, "role": p.role}
                      for p in partner.parties],
        })
        await partner.register(session, platform["versions_url"], platform["token_a"])
        return str(platform["id"])


async def cli(hub: HubProcess, *args: str) -> Result:
    """One ``ocpi-hub`` admin command, off the event loop: the partners it may cause traffic to live on it."""
    return await asyncio.to_thread(run_cli, *args, url=hub.url, token=ADMIN_TOKEN)


async def test_dead_letters_list_replay_and_delete_from_the_cli(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, HUB_BROADCAST_RETRY_WINDOW="0.5", HUB_FORWARD_TIMEOUT="2")
    sender, receiver = cpo(), emsp()
    session = aiohttp.ClientSession()
    try:
        hub.start()
        await hub.ready(session)
        await hub.connect(session, sender)
        receiver_id = await hub.connect(session, receiver)
        receiver.responder = failing(2, status=400, ocpi_status=2001)
        await broadcast(session, sender, location("LOC1"))
        await broadcast(session, sender, location("LOC2"))
        await eventually(lambda: len(receiver.received) == 2, what="two refused pushes")

        deadline = time.monotonic() + 5
        while len(listed := (await cli(hub, "dead-letters", "list")).json()) < 2:
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.1)
        assert {d["receiver"] for d in listed} == {receiver_id}
        assert sorted(d["request"]["path"] for d in listed) == ["NL/CPA/LOC1", "NL/CPA/LOC2"]
        assert all(d["attempts"] == 1 and "2001" in d["reason"] for d in listed)
        assert (await cli(hub, "dead-letters", "list", "--receiver", receiver_id)).json() == listed
        unknown = await cli(hub, "dead-letters", "list", "--receiver", "nobody")  # a typo is an error, not []
        assert unknown.code != 0 and "no such platform" in unknown.stderr, unknown
        first = next(d for d in listed if d["request"]["path"] == "NL/CPA/LOC1")
        second = next(d for d in listed if d["request"]["path"] == "NL/CPA/LOC2")

        replayed = (await cli(hub, "dead-letters", "replay", first["id"])).json()
        assert replayed["status"] == "queued"
        await eventually(lambda: len(receiver.received) == 3, what="the replayed push")
        assert receiver.received[-1].path.endswith("/NL/CPA/LOC1")

        assert (await cli(hub, "dead-letters", "delete", second["id"])).json()["status"] == "deleted"
        assert (await cli(hub, "dead-letters", "list")).json() == []
        for action in ("replay", "delete"):
            result = await cli(hub, "dead-letters", action, second["id"])
            assert result.code != 0 and result.stdout == "", result
            assert "404" in result.stderr and "Traceback" not in result.stderr, result.stderr
    finally:
        hub.kill()
        await session.close()
        for partner in (sender, receiver):
            await partner.stop()


# -- kill -9 during fan-out, real Redis with persistence ---------------------------------------------------------

@dataclass
class Delivery:
    name: str
    arrived: float
    done: float


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_every_broadcast_answered_1000_reaches_every_receiver_across_a_kill_9(tmp_path: Path) -> None:
    """Slow receivers keep the fan-out in progress; the hub dies by SIGKILL and starts again on the same Redis
    and SQLite. Deliveries in flight at the kill count only when the receiver finished them before it: the
    others must come again (lease expiry), the queued ones must come at all. At least once, never missing."""
    deliveries: dict[str, list[Delivery]] = {}
    in_flight = [0]  # deliveries arrived and not answered yet: the kill cuts them short

    def slow(name: str) -> Responder:
        async def respond(request: web.Request, rec: Received) -> web.StreamResponse:
            arrived = time.monotonic()
            in_flight[0] += 1
            await asyncio.sleep(0.4)
            in_flight[0] -= 1
            deliveries.setdefault(name, []).append(Delivery(rec.json()["name"], arrived, time.monotonic()))
            return await default_responder(request, rec)

        return respond

    sender = cpo()
    receivers = [emsp(f"eMSP {n}", f"EM{n}") for n in range(5)]
    for partner in receivers:
        partner.responder = slow(partner.name)
    # versions v1..v5 over three objects: LOC1 gets three in a row, which one receiver takes one at a time
    pushes = [("LOC1", 1), ("LOC2", 2), ("LOC1", 3), ("LOC3", 4), ("LOC1", 5)]
    session = aiohttp.ClientSession()
    with scratch_redis(tmp_path) as redis_url:
        hub = HubProcess(tmp_path, HUB_REDIS_URL=redis_url, HUB_FORWARD_TIMEOUT="1")
        try:
            hub.start()
            await hub.ready(session)
            await hub.connect(session, sender)
            for partner in receivers:
                await hub.connect(session, partner)

            for lid, version in pushes:
                await broadcast(session, sender, location(lid, version))
            # On a loaded machine the hub may not have begun a delivery yet: kill it while one is under way.
            deadline = time.monotonic() + 10
            while not in_flight[0]:
                assert time.monotonic() < deadline, "no delivery began within 10 s"
                await asyncio.sleep(0.005)
            hub.kill()
            killed_at = time.monotonic()
            finished_before = sum(1 for ds in deliveries.values() for d in ds if d.done < killed_at)
            assert finished_before < len(pushes) * len(receivers), "the fan-out was over before the kill"

            hub.start()
            await hub.ready(session)

            def missing() -> list[tuple[str, str]]:
                out = []
                for partner in receivers:
                    counted = {d.name for d in deliveries.get(partner.name, [])
                               if d.done < killed_at or d.arrived > killed_at}
                    out += [(partner.name, f"v{v}") for _, v in pushes if f"v{v}" not in counted]
                return out

            deadline = time.monotonic() + 25
            while missing():
                letters = await hub.admin(session, "GET", "/admin/dead-letters")
                assert not letters, f"dead letters on healthy receivers: {letters}"
                assert time.monotonic() < deadline, f"never delivered: {missing()}\n{hub.log()}"
                await asyncio.sleep(0.1)
            # the kill cut deliveries short: those came again after their lease expired
            assert any(d.arrived < killed_at < d.done for ds in deliveries.values() for d in ds)
            # per object, the last push accepted is the last one each receiver got: no stale state left behind
            for partner in receivers:
                loc1 = [d.name for d in deliveries[partner.name] if d.name in ("v1", "v3", "v5")]
                assert loc1[-1] == "v5", (partner.name, loc1)
                assert loc1 == sorted(loc1), (partner.name, loc1)
        finally:
            hub.kill()
            await session.close()
            for partner in (sender, *receivers):
                await partner.stop()
