"""A first walk through the hub: onboard two partners, register both, route one PUT between them."""

from __future__ import annotations

from tests.conftest import HubHarness, cpo, emsp


async def test_registered_cpo_pushes_a_location_to_an_emsp(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    location = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "last_updated": "2024-01-01T00:00:00Z",
                "x-unknown": {"kept": True}}
    status, _, body = await alpha.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                             to=beta.party, json=location)
    assert status == 200, body
    assert body["status_code"] == 1000
    got = beta.received[-1]
    assert got.method == "PUT"
    assert got.path == "/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1"
    assert got.json() == location
