"""Operator actions are audited (docs/security.md, "Operators"): every admin change and failed admin login leaves
an audit record (module ``admin``: who, what, when, on which platform, result) and a JSON log line, searchable
through ``GET /admin/audit`` like OCPI traffic; failed logins cannot flood the audit store."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from hub.admin import FAILED_LOGINS
from hub.admin_audit import FAILED_LOGINS_PER_WINDOW
from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.test_connect import connect, issuing
from tests.test_dead_letters import broadcast, eventually, failing, location


async def admin_records(hub: HubHarness, query: str = "") -> list[dict[str, Any]]:
    status, body = await hub.admin("GET", "/admin/audit?module=admin&limit=1000" + query)
    assert status == 200, body
    return list(body)


async def test_every_operator_action_leaves_an_audit_record_and_a_log_line(
        make_hub: MakeHub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hub.admin")
    hub = await make_hub(broadcast_retry_window=1.0)
    sender, refusing = cpo(), emsp("Refusing eMSP", "EMR")
    sender_id = (await hub.connect(sender))["id"]
    refusing_id = (await hub.connect(refusing))["id"]

    planned = await hub.onboard(cpo("Gamma CPO", "GAM"))
    pid = planned["id"]
    for action in ("suspend", "resume"):
        assert (await hub.admin("POST", f"/admin/platforms/{pid}/{action}"))[0] == 200
    assert (await hub.admin("DELETE", f"/admin/platforms/{pid}"))[0] == 200
    assert (await hub.admin("POST", f"/admin/platforms/{sender_id}/rotate"))[0] == 200
    partner = await issuing(hub, emsp("Delta eMSP", "EMD"))
    status, connected = await connect(hub, partner)
    assert status == 201, connected

    refusing.responder = failing(10, status=400, ocpi_status=2001)
    await broadcast(hub.session, sender, location())
    letters: list[Any] = []

    async def dead() -> None:
        nonlocal letters
        letters = (await hub.admin("GET", f"/admin/dead-letters?receiver={refusing_id}"))[1]

    for _ in range(100):
        await dead()
        if letters:
            break
        await asyncio.sleep(0.1)
    assert letters, "no dead letter to replay"
    assert (await hub.admin("POST", f"/admin/dead-letters/{letters[0]['id']}/replay"))[0] == 200
    await eventually(lambda: len(refusing.received) >= 2, what="the replayed push")
    for _ in range(100):
        await dead()
        if letters:
            break
        await asyncio.sleep(0.1)
    assert (await hub.admin("DELETE", f"/admin/dead-letters/{letters[0]['id']}"))[0] == 200
    assert (await hub.admin("POST", "/admin/platforms/no-such-id/suspend"))[0] == 404

    records = await admin_records(hub)
    done = {(r["method"], r["path"], r["outcome"], r["platform_id"]) for r in records}
    expected = {
        ("POST", "/admin/platforms", "ok", pid),
        ("POST", f"/admin/platforms/{pid}/suspend", "ok", pid),
        ("POST", f"/admin/platforms/{pid}/resume", "ok", pid),
        ("DELETE", f"/admin/platforms/{pid}", "ok", pid),
        ("POST", f"/admin/platforms/{sender_id}/rotate", "ok", sender_id),
        ("POST", "/admin/platforms/connect", "ok", connected["id"]),
        ("POST", "/admin/platforms/no-such-id/suspend", "rejected", "no-such-id"),
    }
    assert expected <= done, sorted(done - expected)
    dead_letter_actions = {(r["method"], r["outcome"]) for r in records
                           if r["path"].startswith("/admin/dead-letters/")}
    assert dead_letter_actions == {("POST", "ok"), ("DELETE", "ok")}
    assert all(r["actor"] == "admin@127.0.0.1" and r["time"] and r["http_status"] for r in records)
    assert not [r for r in records if r["method"] == "GET"]  # reads are not actions

    # Searchable like OCPI traffic: one platform's trail holds its admin actions.
    trail = await admin_records(hub, f"&platform={pid}")
    assert {r["path"] for r in trail} == {"/admin/platforms", f"/admin/platforms/{pid}/suspend",
                                          f"/admin/platforms/{pid}/resume", f"/admin/platforms/{pid}"}
    lines = [r for r in caplog.records if r.name == "hub.admin" and r.getMessage() == "admin action"]
    logged = {(r.__dict__["ocpi"]["method"], r.__dict__["ocpi"]["path"]) for r in lines}
    assert {("POST", f"/admin/platforms/{pid}/suspend"), ("DELETE", f"/admin/platforms/{pid}")} <= logged
    assert all(r.__dict__["ocpi"]["actor"] == "admin@127.0.0.1" for r in lines)


async def test_failed_admin_logins_are_audited_but_cannot_flood_the_audit_store(
        hub: HubHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hub.admin")
    # The summary of a window normally comes after a minute; the test shortens this hub's window instead of
    # waiting (the only internal it touches).
    hub.app[FAILED_LOGINS].window = 1.0
    attempts = FAILED_LOGINS_PER_WINDOW * 5
    for i in range(attempts):
        headers = {"Authorization": f"Bearer guess-{i}"} if i % 2 else {}
        async with hub.session.post(hub.url + "/admin/platforms", json={}, headers=headers) as resp:
            assert resp.status == 401
    records = await admin_records(hub, "&outcome=unauthorized")
    assert len(records) == FAILED_LOGINS_PER_WINDOW  # one by one up to the budget, not one per attempt
    assert all(r["actor"] == "unauthenticated@127.0.0.1" and r["path"] == "/admin/platforms" for r in records)
    for _ in range(50):  # the window ends: the rest are summed up in one record
        records = await admin_records(hub, "&outcome=unauthorized")
        if len(records) > FAILED_LOGINS_PER_WINDOW:
            break
        await asyncio.sleep(0.1)
    summary = [r for r in records if r["method"] == "*"]
    assert len(summary) == 1 and str(attempts - FAILED_LOGINS_PER_WINDOW) in summary[0]["actor"], summary
    assert any(r.getMessage() == "failed admin logins" for r in caplog.records)
    # The right token still works, and its use is not counted as a failure.
    status, _ = await hub.admin("GET", "/admin/platforms")
    assert status == 200
