"""A revoked token is refused at once, even right after it was used (docs/security.md, "Authentication").

Every process remembers the Authorization headers that authenticated, so a repeat skips Base64 and SHA-256
(hub/registry.py, ``cached_caller``). These tests use a token until it is surely remembered, revoke it the ways an
operator or a partner can, and expect the very next request with it to be refused: on the worker that made the
change and on another worker that used the token through its own memory.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import (
    REDIS_URL,
    HubHarness,
    cleanup_prefix,
    cpo,
    emsp,
    hub_settings,
    real_redis_available,
    start_hub,
    stop_hub,
)
from tests.partners import FakePartner, Party, ocpi_token

USES = 3  # the first use looks the token up in full; the others are served from what the process remembers


async def routed(hub: HubHarness, sender: FakePartner, to: Party, authorization: str | None = None) -> int:
    """A routed GET to ``hub`` (whichever worker registered the sender), with its own token unless told."""
    path = urlsplit(sender.hub_url("locations", "SENDER")).path
    headers = {"Authorization": authorization or ocpi_token(sender.token_c or ""),
               "X-Request-ID": uuid.uuid4().hex, "X-Correlation-ID": uuid.uuid4().hex,
               "OCPI-from-country-code": sender.party.country_code, "OCPI-from-party-id": sender.party.party_id,
               "OCPI-to-country-code": to.country_code, "OCPI-to-party-id": to.party_id}
    async with hub.session.get(hub.url + path, headers=headers) as resp:
        return resp.status


async def used(hub: HubHarness, sender: FakePartner, to: Party, *authorizations: str) -> None:
    for authorization in authorizations:
        for _ in range(USES):
            assert await routed(hub, sender, to, authorization) == 200


def both_forms(token: str | None) -> tuple[str, str]:
    """Base64 and raw: remembered apart, refused alike."""
    return ocpi_token(token or ""), f"Token {token}"


async def pair_in_use(hub: HubHarness) -> tuple[FakePartner, FakePartner, dict[str, Any]]:
    """Two connected platforms; the first one's token used (both forms) until it is surely remembered."""
    alpha, beta = cpo(), emsp()
    platform = await hub.connect(alpha)
    await hub.connect(beta)
    await used(hub, alpha, beta.party, *both_forms(alpha.token_c))
    return alpha, beta, platform


async def test_a_token_replaced_by_credentials_put_is_refused_at_once(hub: HubHarness) -> None:
    alpha, beta, platform = await pair_in_use(hub)
    old = both_forms(alpha.token_c)
    status, doc = await alpha.update(hub.session, platform["versions_url"])
    assert status == 200, doc
    for authorization in old:
        assert await routed(hub, alpha, beta.party, authorization) == 401
    assert await routed(hub, alpha, beta.party) == 200, "the new token works"


async def test_a_removed_platform_is_refused_at_once(hub: HubHarness) -> None:
    alpha, beta, platform = await pair_in_use(hub)
    status, body = await hub.admin("DELETE", f"/admin/platforms/{platform['id']}")
    assert status == 200, body
    assert await routed(hub, alpha, beta.party) == 401


async def test_a_suspended_platform_is_refused_at_once_and_resumed_at_once(hub: HubHarness) -> None:
    alpha, beta, platform = await pair_in_use(hub)
    status, body = await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend")
    assert status == 200, body
    assert await routed(hub, alpha, beta.party) == 403
    status, body = await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume")
    assert status == 200, body
    assert await routed(hub, alpha, beta.party) == 200


async def test_token_a_is_refused_once_registration_used_it(hub: HubHarness) -> None:
    alpha = cpo()
    await alpha.start()
    hub.partners.append(alpha)
    platform = await hub.onboard(alpha)
    token_a = ocpi_token(platform["token_a"])
    for _ in range(USES):
        async with hub.session.get(hub.url + "/ocpi/versions", headers={"Authorization": token_a}) as resp:
            assert resp.status == 200
    await alpha.register(hub.session, platform["versions_url"], platform["token_a"])
    async with hub.session.get(hub.url + "/ocpi/versions", headers={"Authorization": token_a}) as resp:
        assert resp.status == 401


@pytest.mark.skipif(not real_redis_available(), reason="no Redis at 127.0.0.1:6379")
async def test_a_token_revoked_through_one_worker_is_refused_by_another_that_remembered_it(tmp_path: Path) -> None:
    prefix = "test-token-cache-" + uuid.uuid4().hex[:8]
    common = {"redis_url": REDIS_URL, "key_prefix": prefix, "sqlite_path": str(tmp_path / "hub.sqlite3")}
    front = await start_hub(hub_settings(**common))
    other = await start_hub(hub_settings(**common))
    try:
        alpha, beta = cpo(), emsp()
        platform = await front.connect(alpha)
        await front.connect(beta)
        authorization = ocpi_token(alpha.token_c or "")
        await used(other, alpha, beta.party, authorization)
        status, doc = await alpha.update(front.session, platform["versions_url"])  # rotation through `front`
        assert status == 200, doc
        assert await routed(other, alpha, beta.party, authorization) == 401
        assert await routed(other, alpha, beta.party) == 200
        await used(other, alpha, beta.party, ocpi_token(alpha.token_c or ""))
        status, body = await front.admin("DELETE", f"/admin/platforms/{platform['id']}")
        assert status == 200, body
        assert await routed(other, alpha, beta.party) == 401
    finally:
        await stop_hub(front)
        await stop_hub(other)
        cleanup_prefix(prefix)
