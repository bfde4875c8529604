"""HUB_AUDIT_BODIES: request bodies kept in the audit only when asked for, with personal data masked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hub.audit import AuditQuery
from hub.context import HUB_KEY
from tests.conftest import HubHarness, cpo, emsp, hub_settings, start_hub, stop_hub

TOKEN = {"country_code": "DE", "party_id": "EMA", "uid": "04A1B2C3", "type": "RFID", "contract_id": "DE-EMA-C1",
         "issuer": "Beta", "valid": True, "whitelist": "ALLOWED", "last_updated": "2024-01-01T00:00:00Z"}


@pytest.fixture(params=[True, False], ids=["bodies", "no-bodies"])
async def hub_with(request: pytest.FixtureRequest) -> AsyncIterator[tuple[HubHarness, bool]]:
    h = await start_hub(hub_settings(audit_bodies=request.param))
    try:
        yield h, bool(request.param)
    finally:
        await stop_hub(h)


async def test_audit_keeps_redacted_bodies_only_when_configured(hub_with: tuple[HubHarness, bool]) -> None:
    hub, bodies = hub_with
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    status, _, _ = await beta.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/04A1B2C3", to=alpha.party,
                                   json=TOKEN, headers={"X-Correlation-ID": "corr-body"})
    assert status == 200
    state = hub.app[HUB_KEY]
    await state.audit.flush()
    [record] = await state.store.query_audit(AuditQuery(correlation_id="corr-body"))
    if not bodies:
        assert record.body is None
        return
    assert record.body is not None
    stored = record.body["request"]
    assert stored["uid"] == "***" and stored["contract_id"] == "***"
    assert stored["issuer"] == "Beta" and stored["last_updated"] == TOKEN["last_updated"]
    assert "04A1B2C3" not in str(record.body) and "DE-EMA-C1" not in str(record.body)
