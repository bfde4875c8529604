"""The bodies the hub builds itself have the shape of the official OCPI 2.2.1 examples (skipped without them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import SHARED, HubHarness, cpo
from tests.partners import ocpi_token

EXAMPLES = SHARED / "ocpi" / "examples" / "2.2.1"
pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"official examples not found at {EXAMPLES}")


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def same_shape(ours: Any, theirs: Any, where: str = "$") -> None:
    """Every field of the example is in ours with the same JSON type; lists compare their first items."""
    assert type(ours) is type(theirs) or (isinstance(ours, int | float) and isinstance(theirs, int | float)), where
    if isinstance(theirs, dict):
        for key, value in theirs.items():
            assert key in ours, f"{where}.{key} missing"
            same_shape(ours[key], value, f"{where}.{key}")
    elif isinstance(theirs, list) and theirs:
        assert ours, f"{where} is empty"
        for item in ours:
            same_shape(item, theirs[0], f"{where}[]")


async def _get(hub: HubHarness, url: str, token: str) -> dict[str, Any]:
    async with hub.session.get(url, headers={"Authorization": ocpi_token(token)}) as resp:
        assert resp.status == 200
        return dict(await resp.json())


def _envelope(doc: dict[str, Any]) -> Any:
    envelope = example("transport_and_format_version_details_example.json")
    same_shape({k: v for k, v in doc.items() if k != "data"}, {k: v for k, v in envelope.items() if k != "data"})
    return doc["data"]


async def test_versions_and_version_details_have_the_example_shape(hub: HubHarness) -> None:
    platform = await hub.onboard(cpo())
    versions = _envelope(await _get(hub, platform["versions_url"], platform["token_a"]))
    same_shape(versions, example("versions_info_example.json"))
    details = _envelope(await _get(hub, versions[0]["url"], platform["token_a"]))
    same_shape(details, example("version_details_example.json"))


async def test_hub_credentials_have_the_example_shape(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    creds = _envelope(await _get(hub, alpha.hub_url("credentials", "SENDER"), alpha.token_c or ""))
    same_shape(creds, example("credentials_example.json"))
    assert [r["role"] for r in creds["roles"]] == ["HUB"]


async def test_hub_built_error_and_broadcast_answers_are_envelopes(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    envelope_shape = {k: v for k, v in example("transport_and_format_version_details_example.json").items()
                      if k != "data"}
    status, _, body = await alpha.call(hub.session, "GET", "locations", "SENDER", "X",
                                       to=type(alpha.party)("DE", "ZZZ", "EMSP"))
    assert status == 404
    same_shape({k: v for k, v in body.items() if k != "data"}, envelope_shape)
    location = example("location_example.json")
    status, _, body = await alpha.call(
        hub.session, "PUT", "locations", "RECEIVER", f"{location['country_code']}/{location['party_id']}/"
        f"{location['id']}", to=type(alpha.party)("NL", "HUB", "HUB"),
        from_=type(alpha.party)(location["country_code"], location["party_id"], "CPO"), json=location,
    )
    assert status in (200, 403), body  # 403 when the example's owner is not the test CPO's party
    same_shape({k: v for k, v in body.items() if k != "data"}, envelope_shape)

