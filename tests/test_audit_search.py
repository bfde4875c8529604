"""Audit search through the admin API and the CLI: filters, newest first, pagination, one message's trail."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import ADMIN_TOKEN, HubHarness, cpo, emsp


async def _search(hub: HubHarness, **params: Any) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, body = await hub.admin("GET", f"/admin/audit?{query}")
    assert status == 200, body
    return list(body)


async def _traffic(hub: HubHarness) -> tuple[Any, Any, str]:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    correlation = "corr-audit-1"
    status, _, _ = await alpha.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=beta.party,
                                    headers={"X-Correlation-ID": correlation})
    assert status == 200
    status, _, _ = await alpha.call(hub.session, "GET", "locations", "SENDER", "LOC1",
                                    to=type(beta.party)("DE", "XXX", "EMSP"))
    assert status == 404
    return alpha, beta, correlation


async def test_audit_search_by_correlation_id_finds_the_one_message(hub: HubHarness) -> None:
    _, _, correlation = await _traffic(hub)
    rows = await _search(hub, correlation_id=correlation)
    assert len(rows) == 1
    row = rows[0]
    assert row["from_party"] == "NL:CPA" and row["to_party"] == "DE:EMA"
    assert row["module"] == "locations" and row["outcome"] == "forwarded" and row["http_status"] == 200


async def test_audit_search_filters_by_party_module_outcome_and_time(hub: HubHarness) -> None:
    await _traffic(hub)
    unknown = await _search(hub, outcome="unknown_receiver")
    assert [r["to_party"] for r in unknown] == ["DE:XXX"]
    by_party = await _search(hub, party="DE:EMA", module="locations")
    assert by_party and all("DE:EMA" in (r["from_party"], r["to_party"]) for r in by_party)
    assert all(r["module"] == "locations" for r in by_party)
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await _search(hub, since=future) == []
    everything = await _search(hub, until=future)
    times = [r["time"] for r in everything]
    assert times == sorted(times, reverse=True), "newest first"
    assert await _search(hub, limit=1, offset=1) == everything[1:2]


async def test_audit_search_rejects_bad_filters(hub: HubHarness) -> None:
    status, body = await hub.admin("GET", "/admin/audit?since=yesterday")
    assert status == 400 and "since" in body["error"]
    status, body = await hub.admin("GET", "/admin/audit?party=nonsense")
    assert status == 400
    status, _ = await hub.admin("GET", "/admin/audit?limit=-1")
    assert status == 400


async def test_cli_audit_prints_the_trail_of_one_message(hub: HubHarness) -> None:
    _, _, correlation = await _traffic(hub)
    env = {**os.environ, "HUB_URL": hub.url, "HUB_ADMIN_TOKEN": ADMIN_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "audit", "--correlation-id", correlation, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    rows = json.loads(out)
    assert [r["correlation_id"] for r in rows] == [correlation]
