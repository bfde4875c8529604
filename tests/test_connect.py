"""The hub as credentials sender (OCPI 2.2.1 credentials, Registration "The hub registers with a party"): the operator
hands the hub a
partner's Token A and versions URL (``POST /admin/platforms/connect`` or ``ocpi-hub platforms connect``), and
rotates any platform's tokens with a credentials PUT (``POST /admin/platforms/{id}/rotate`` or
``ocpi-hub platforms rotate``)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HubHarness, cpo, emsp, free_port
from tests.partners import FakePartner, ocpi_token
from tests.test_cli import Served, cli, serve


async def issuing(hub: HubHarness, partner: FakePartner) -> FakePartner:
    """Start a partner that issued a Token A for the hub; the harness stops it after the test."""
    partner.token_a = "A-" + secrets.token_hex(8)
    await partner.start()
    hub.partners.append(partner)
    return partner


async def connect(hub: HubHarness, partner: FakePartner, token_a: str | None = None,
                  versions_url: str | None = None) -> tuple[int, Any]:
    return await hub.admin("POST", "/admin/platforms/connect", {
        "name": partner.name, "versions_url": versions_url or partner.versions_url,
        "token_a": token_a or partner.token_a})


async def hub_versions(hub: HubHarness, token: str) -> int:
    async with hub.session.get(f"{hub.url}/ocpi/versions", headers={"Authorization": ocpi_token(token)}) as resp:
        return resp.status


async def platforms_named(hub: HubHarness, name: str) -> list[dict[str, Any]]:
    status, listed = await hub.admin("GET", "/admin/platforms")
    assert status == 200
    return [p for p in listed if p["name"] == name]


async def assert_routes_both_ways(hub: HubHarness, partner: FakePartner, other: FakePartner) -> None:
    """``other`` reaches ``partner`` (the hub presents the partner's token) and back (partner uses its hub token)."""
    before = len(partner.received)
    status, _, doc = await other.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=partner.party)
    assert status == 200, doc
    [rec] = partner.received[before:]
    assert rec.headers["Authorization"] == ocpi_token(partner.token_b), "the hub calls with the partner's token"
    before = len(other.received)
    status, _, doc = await partner.call(hub.session, "GET", "tokens", "SENDER", "TOK1", to=other.party)
    assert status == 200, doc
    [rec] = other.received[before:]
    assert rec.headers["OCPI-from-party-id"] == partner.party.party_id


# -- hub-initiated registration ----------------------------------------------------------------------------------

async def test_connect_registers_the_hub_with_a_partner(hub: HubHarness) -> None:
    partner = await issuing(hub, cpo(name="Receiving CPO", pid="RCV"))
    token_a = partner.token_a
    beta = emsp()
    await hub.connect(beta)
    status, view = await connect(hub, partner)
    assert status == 201, view
    assert view["status"] == "CONNECTED" and view["registered"], view
    assert [(p["country_code"], p["party_id"], p["role"], p["status"]) for p in view["parties"]] == [
        ("NL", "RCV", "CPO", "CONNECTED")]
    assert view["partner_versions_url"] == partner.versions_url
    assert "token_a" not in view and token_a not in str(view)
    # The hub POSTed its credentials with Token A: Token B, its versions URL, its HUB role only.
    [post] = partner.credentials_calls
    assert post.method == "POST" and post.headers["Authorization"] == ocpi_token(token_a or "")
    body = post.json()
    token_b = body["token"]
    assert body["url"] == f"{hub.url}/ocpi/versions"
    assert [(r["role"], r["country_code"], r["party_id"]) for r in body["roles"]] == [("HUB", "NL", "HUB")]
    assert body["roles"][0]["business_details"]["name"]
    # Before answering, the partner read the hub's versions and details with Token B.
    assert [(url.rsplit("/", 1)[-1], token, code) for url, token, code in partner.hub_callbacks] == [
        ("versions", token_b, 200), ("2.2.1", token_b, 200)]
    assert partner.token_c == token_b and partner.token_a is None
    await assert_routes_both_ways(hub, partner, beta)
    assert await hub_versions(hub, token_a or "") == 401, "Token A is the partner's, never the hub's"


async def test_connected_platform_is_announced_and_listed(hub: HubHarness) -> None:
    partner = await issuing(hub, cpo(name="Receiving CPO", pid="RCV"))
    beta = emsp()
    await hub.connect(beta)
    status, view = await connect(hub, partner)
    assert status == 201, view
    async with hub.session.get(f"{hub.url}/ocpi/2.2.1/hubclientinfo",
                               headers={"Authorization": ocpi_token(beta.token_c or "")}) as resp:
        doc = await resp.json()
    assert {(x["country_code"], x["party_id"], x["status"]) for x in doc["data"]} == {("NL", "RCV", "CONNECTED")}
    shown = await platforms_named(hub, partner.name)
    assert [p["id"] for p in shown] == [view["id"]]


async def test_wrong_token_a_is_a_clear_502_and_nothing_usable_is_left(hub: HubHarness) -> None:
    partner = await issuing(hub, cpo(name="Receiving CPO", pid="RCV"))
    beta = emsp()
    await hub.connect(beta)
    status, doc = await connect(hub, partner, token_a="not-the-token")
    assert status == 502, doc
    assert set(doc) == {"error"} and "401" in doc["error"] and partner.versions_url in doc["error"], doc
    assert partner.credentials_calls == []
    assert all(p["status"] == "REMOVED" for p in await platforms_named(hub, partner.name))
    status, _, reply = await beta.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=partner.party)
    assert status == 404 and reply["status_code"] == 4001, reply


async def test_partner_down_is_a_clear_502(hub: HubHarness) -> None:
    down = f"http://127.0.0.1:{free_port()}/ocpi/versions"
    status, doc = await hub.admin("POST", "/admin/platforms/connect",
                                  {"name": "Down CPO", "versions_url": down, "token_a": "A-whatever"})
    assert status == 502, doc
    assert down in doc["error"], doc
    assert all(p["status"] == "REMOVED" for p in await platforms_named(hub, "Down CPO"))


async def test_partner_refusing_the_credentials_post_leaves_token_b_dead(hub: HubHarness) -> None:
    partner = await issuing(hub, cpo(name="Receiving CPO", pid="RCV"))

    async def cannot_read(versions_url: str, token: str) -> bool:
        return False

    partner._read_sender = cannot_read  # type: ignore[method-assign]
    status, doc = await connect(hub, partner)
    assert status == 502, doc
    assert "3001" in doc["error"] or "400" in doc["error"], doc
    [post] = partner.credentials_calls
    assert await hub_versions(hub, post.json()["token"]) == 401, "the Token B the hub sent opens nothing"
    assert all(p["status"] == "REMOVED" for p in await platforms_named(hub, partner.name))


async def test_partner_claiming_a_pair_of_another_platform_is_409(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    twin = await issuing(hub, cpo(name="Twin CPO", pid="CPA"))
    status, doc = await connect(hub, twin)
    assert status == 409, doc
    assert "NL" in doc["error"] and "CPA" in doc["error"], doc
    assert all(p["status"] == "REMOVED" for p in await platforms_named(hub, "Twin CPO"))
    post, delete = twin.credentials_calls
    assert (post.method, delete.method) == ("POST", "DELETE"), "the partner's registration of the hub is undone"
    assert twin.token_c is None, "the partner no longer holds a token for the hub"
    assert await hub_versions(hub, post.json()["token"]) == 401
    assert await hub_versions(hub, alpha.token_c or "") == 200


@pytest.mark.parametrize("body", [{}, {"name": "X", "versions_url": "http://x"}, {"name": "", "versions_url": "u",
                                                                                  "token_a": "t"}])
async def test_connect_with_missing_fields_is_400(hub: HubHarness, body: dict[str, str]) -> None:
    status, doc = await hub.admin("POST", "/admin/platforms/connect", body)
    assert status == 400 and "error" in doc, doc


# -- rotation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("registered_by", ["hub", "partner"])
async def test_rotate_replaces_both_tokens(hub: HubHarness, registered_by: str) -> None:
    beta = emsp()
    await hub.connect(beta)
    if registered_by == "hub":
        partner = await issuing(hub, cpo(name="Receiving CPO", pid="RCV"))
        status, view = await connect(hub, partner)
        assert status == 201, view
    else:
        partner = cpo(name="Registering CPO", pid="REG")
        view = await hub.connect(partner)
    old_inbound, old_outbound = partner.token_c or "", partner.token_b
    calls = len(partner.credentials_calls)
    status, rotated = await hub.admin("POST", f"/admin/platforms/{view['id']}/rotate")
    assert status == 200, rotated
    assert rotated["status"] == "CONNECTED"
    [put] = partner.credentials_calls[calls:]
    assert put.method == "PUT" and put.headers["Authorization"] == ocpi_token(old_outbound)
    new_inbound = put.json()["token"]
    assert new_inbound not in (old_inbound, old_outbound) and partner.token_c == new_inbound
    assert partner.hub_callbacks[-2:] == [(f"{hub.url}/ocpi/versions", new_inbound, 200),
                                          (f"{hub.url}/ocpi/2.2.1", new_inbound, 200)]
    assert partner.token_b != old_outbound
    assert await hub_versions(hub, old_inbound) == 401, "the old inbound token is dead"
    assert await hub_versions(hub, new_inbound) == 200
    status, _, doc = await partner.call(hub.session, "GET", "tokens", "SENDER", "TOK1", to=beta.party,
                                        headers={"Authorization": ocpi_token(old_inbound)})
    assert status == 401, doc
    await assert_routes_both_ways(hub, partner, beta)  # with the new tokens in both directions


async def test_rotate_failure_is_502_and_keeps_the_old_tokens(hub: HubHarness) -> None:
    beta = emsp()
    await hub.connect(beta)
    partner = cpo(name="Registering CPO", pid="REG")
    view = await hub.connect(partner)

    async def cannot_read(versions_url: str, token: str) -> bool:
        return False

    partner._read_sender = cannot_read  # type: ignore[method-assign]
    status, doc = await hub.admin("POST", f"/admin/platforms/{view['id']}/rotate")
    assert status == 502, doc
    [put] = partner.credentials_calls
    assert await hub_versions(hub, put.json()["token"]) == 401, "the offered new token was withdrawn"
    assert await hub_versions(hub, partner.token_c or "") == 200
    await assert_routes_both_ways(hub, partner, beta)


async def test_rotate_keeps_the_new_tokens_once_the_partner_switched(hub: HubHarness) -> None:
    """The partner accepted the PUT but its versions fail right after: it uses the new tokens only, so must we."""
    beta = emsp()
    await hub.connect(beta)
    partner = cpo(name="Registering CPO", pid="REG")
    view = await hub.connect(partner)
    read_sender = partner._read_sender

    async def then_fail(versions_url: str, token: str) -> bool:
        ok = await read_sender(versions_url, token)
        partner.versions_status = 503
        return ok

    partner._read_sender = then_fail  # type: ignore[method-assign]
    status, rotated = await hub.admin("POST", f"/admin/platforms/{view['id']}/rotate")
    partner.versions_status = 200
    assert status == 200, rotated
    assert await hub_versions(hub, partner.token_c or "") == 200
    await assert_routes_both_ways(hub, partner, beta)


async def test_rotate_of_an_unregistered_or_unknown_platform_is_refused(hub: HubHarness) -> None:
    planned = await hub.onboard(cpo())
    status, doc = await hub.admin("POST", f"/admin/platforms/{planned['id']}/rotate")
    assert status == 409, doc
    status, doc = await hub.admin("POST", "/admin/platforms/no-such-id/rotate")
    assert status == 404, doc


# -- CLI ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve(tmp_path_factory.mktemp("connect"))
    try:
        yield served
    finally:
        served.stop()


async def test_cli_connect_and_rotate(hub_process: Served, tmp_path: Path) -> None:
    partner = cpo(name="CLI CPO", pid="CLI")
    partner.token_a = "A-" + secrets.token_hex(8)
    await partner.start()
    try:
        # The partner answers the subprocess hub from this event loop: run the CLI off it.
        result = await asyncio.to_thread(cli, "platforms", "connect", "--name", partner.name, "--versions-url",
                                         partner.versions_url, "--token-a", partner.token_a, url=hub_process.url)
        view = result.json()
        assert view["status"] == "CONNECTED" and view["parties"][0]["party_id"] == "CLI", view
        token_b = partner.token_c
        result = await asyncio.to_thread(cli, "platforms", "rotate", view["id"], url=hub_process.url)
        assert result.json()["id"] == view["id"]
        assert [c.method for c in partner.credentials_calls] == ["POST", "PUT"]
        assert partner.token_c != token_b
        failed = await asyncio.to_thread(cli, "platforms", "connect", "--name", "Nobody", "--versions-url",
                                         f"http://127.0.0.1:{free_port()}/ocpi/versions", "--token-a", "A-x",
                                         url=hub_process.url)
        assert failed.code != 0 and "502" in failed.stderr and "Traceback" not in failed.stderr, failed
        assert failed.stdout == ""
    finally:
        await partner.stop()
