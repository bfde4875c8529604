"""The operator's admin API (docs/architecture.md): onboard platforms, inspect them, suspend, resume and offboard them,
with JSON errors, and never a token or token hash in what it shows."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, HubHarness, cpo, emsp
from tests.partners import FakePartner, Party, ocpi_token

CPO_ROLES = [{"country_code": "NL", "party_id": "CPA", "role": "CPO"}]


async def raw_admin(hub: HubHarness, method: str, path: str, *, authorization: str | None = None,
                    data: bytes | None = None) -> tuple[int, str, Any]:
    """An admin request with full control over the header and body; returns status, content type, JSON."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with hub.session.request(method, hub.url + path, data=data, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


async def ocpi_status(hub: HubHarness, token: str, path: str = "/ocpi/versions") -> int:
    async with hub.session.get(hub.url + path, headers={"Authorization": ocpi_token(token)}) as resp:
        return resp.status


async def route(sender: FakePartner, hub: HubHarness, to: Party) -> tuple[int, Any]:
    status, _, doc = await sender.call(hub.session, "GET", "locations", "SENDER", to=to)
    return status, doc


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- authentication ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Token {ADMIN_TOKEN}", ADMIN_TOKEN, "Bearer "],
                         ids=["missing", "wrong-token", "wrong-scheme", "no-scheme", "empty"])
@pytest.mark.parametrize(("method", "path"), [("GET", "/admin/platforms"), ("POST", "/admin/platforms"),
                                              ("GET", "/admin/platforms/nope"), ("DELETE", "/admin/platforms/nope"),
                                              ("GET", "/admin/queues")])
async def test_admin_api_needs_the_bearer_admin_token(
    hub: HubHarness, authorization: str | None, method: str, path: str
) -> None:
    body = b'{"name": "Alpha", "roles": [{"country_code": "NL", "party_id": "CPA", "role": "CPO"}]}'
    status, content_type, doc = await raw_admin(hub, method, path, authorization=authorization, data=body)
    assert status == 401, doc
    assert content_type == "application/json" and "HUB_ADMIN_TOKEN" in doc["error"]
    _, platforms = await hub.admin("GET", "/admin/platforms")
    assert platforms == [], "a refused request changes nothing"


async def test_admin_token_opens_the_api_with_any_scheme_case(hub: HubHarness) -> None:
    status, _, doc = await raw_admin(hub, "GET", "/admin/platforms", authorization=f"bearer {ADMIN_TOKEN}")
    assert status == 200, doc


# -- onboarding --------------------------------------------------------------------------------------------------

async def test_create_platform_reserves_parties_and_issues_token_a(hub: HubHarness) -> None:
    status, body = await hub.admin("POST", "/admin/platforms", {
        "name": "Alpha CPO", "roles": [{"country_code": "nl", "party_id": "cpa", "role": "cpo"},
                                       {"country_code": "NL", "party_id": "EMA", "role": "EMSP"}]})
    assert status == 201, body
    assert body["id"] and body["token_a"]
    assert body["versions_url"] == f"{hub.url}/ocpi/versions"
    assert body["status"] == "PLANNED" and body["registered"] is False and body["name"] == "Alpha CPO"
    assert [(p["country_code"], p["party_id"], p["role"], p["status"]) for p in body["parties"]] == [
        ("NL", "CPA", "CPO", "PLANNED"), ("NL", "EMA", "EMSP", "PLANNED")]
    assert await ocpi_status(hub, body["token_a"]) == 200, "Token A opens the versions endpoint"


async def test_each_platform_gets_its_own_id_and_token_a(hub: HubHarness) -> None:
    one = await hub.onboard(cpo())
    two = await hub.onboard(emsp())
    assert one["id"] != two["id"] and one["token_a"] != two["token_a"]


@pytest.mark.parametrize(("body", "mentions"), [
    ({"name": "A", "roles": [{"country_code": "NL", "party_id": "CPA", "role": "KING"}]}, "role"),
    ({"name": "A", "roles": [{"country_code": "NL", "party_id": "CPA", "role": "HUB"}]}, "role"),
    ({"name": "A", "roles": [{"country_code": "NLD", "party_id": "CPA", "role": "CPO"}]}, "country_code"),
    ({"name": "A", "roles": [{"country_code": "N1", "party_id": "CPA", "role": "CPO"}]}, "country_code"),
    ({"name": "A", "roles": [{"country_code": "NL", "party_id": "CP", "role": "CPO"}]}, "party_id"),
    ({"name": "A", "roles": [{"country_code": "NL", "party_id": "CPA"}]}, "role"),
    ({"name": "A", "roles": []}, "roles"),
    ({"name": "A"}, "roles"),
    ({"name": "", "roles": CPO_ROLES}, "name"),
    ({"roles": CPO_ROLES}, "name"),
    ({"name": "A", "roles": CPO_ROLES * 2}, "twice"),
    ([{"name": "A", "roles": CPO_ROLES}], ""),
], ids=["unknown-role", "hub-role", "country-3-letters", "country-digit", "party-2-chars", "no-role", "empty-roles",
        "no-roles", "empty-name", "no-name", "duplicate-role", "list-body"])
async def test_create_platform_refuses_invalid_input_with_400(hub: HubHarness, body: Any, mentions: str) -> None:
    status, doc = await hub.admin("POST", "/admin/platforms", body)
    assert status == 400, doc
    assert isinstance(doc, dict) and mentions in doc["error"], doc
    _, platforms = await hub.admin("GET", "/admin/platforms")
    assert platforms == []


@pytest.mark.parametrize("data", [b"", b"not json", b'{"name": "A", "roles": [', b"null"])
async def test_create_platform_refuses_a_body_that_is_not_a_json_object(hub: HubHarness, data: bytes) -> None:
    status, content_type, doc = await raw_admin(hub, "POST", "/admin/platforms", data=data,
                                                authorization=f"Bearer {ADMIN_TOKEN}")
    assert status == 400, doc
    assert content_type == "application/json" and doc["error"]


@pytest.mark.parametrize("pair", [("NL", "CPA"), ("nl", "cpa")])
async def test_a_pair_reserved_by_another_platform_is_409(hub: HubHarness, pair: tuple[str, str]) -> None:
    await hub.onboard(cpo())
    cc, pid = pair
    status, doc = await hub.admin("POST", "/admin/platforms", {
        "name": "Copycat", "roles": [{"country_code": "DE", "party_id": "NEW", "role": "CPO"},
                                     {"country_code": cc, "party_id": pid, "role": "EMSP"}]})
    assert status == 409, doc
    assert "NL:CPA" in doc["error"] or "NL/CPA" in doc["error"], doc
    _, platforms = await hub.admin("GET", "/admin/platforms")
    assert [p["name"] for p in platforms] == ["Alpha CPO"], "nothing of the refused platform is kept"
    status, doc = await hub.admin("POST", "/admin/platforms", {
        "name": "Newcomer", "roles": [{"country_code": "DE", "party_id": "NEW", "role": "CPO"}]})
    assert status == 201, "the refused platform reserved none of its other pairs"


async def test_the_hubs_own_party_cannot_be_reserved(hub: HubHarness) -> None:
    status, doc = await hub.admin("POST", "/admin/platforms", {
        "name": "Impostor", "roles": [{"country_code": "NL", "party_id": "HUB", "role": "CPO"}]})
    assert status == 409, doc
    assert "hub" in doc["error"].lower()


# -- inspection --------------------------------------------------------------------------------------------------

async def test_list_and_show_platforms(hub: HubHarness) -> None:
    alpha = cpo()
    connected = await hub.connect(alpha)
    planned = await hub.onboard(emsp())
    status, platforms = await hub.admin("GET", "/admin/platforms")
    assert status == 200
    assert [(p["id"], p["status"]) for p in platforms] == [(connected["id"], "CONNECTED"), (planned["id"], "PLANNED")]
    assert all("token_a" not in p for p in platforms)
    status, view = await hub.admin("GET", f"/admin/platforms/{connected['id']}")
    assert status == 200
    assert view == platforms[0]
    assert view["partner_versions_url"] == alpha.versions_url
    assert ("locations", "RECEIVER") in {(e["identifier"], e["role"]) for e in view["endpoints"]}


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("POST", "/suspend"), ("POST", "/resume"),
                                                ("DELETE", "")])
async def test_unknown_platform_id_is_404(hub: HubHarness, method: str, suffix: str) -> None:
    status, doc = await hub.admin(method, f"/admin/platforms/no-such-id{suffix}")
    assert status == 404, doc
    assert "no-such-id" in doc["error"]


@pytest.mark.parametrize(("raw_id", "decoded"), [("line%0Abreak", "line\nbreak"), ("%C3%A9t%C3%A9", "été"),
                                                 ("x" * 2000, "x" * 2000)], ids=["newline", "unicode", "long"])
async def test_unknown_platform_id_of_any_shape_is_a_json_404(hub: HubHarness, raw_id: str, decoded: str) -> None:
    status, doc = await hub.admin("GET", f"/admin/platforms/{raw_id}")
    assert status == 404, doc
    assert decoded in doc["error"]


async def test_queues_lists_receivers_as_json(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    platform = await hub.connect(beta)
    assert (await route(alpha, hub, beta.party))[0] == 200
    for _ in range(100):  # the hub answers first and frees the queue slot right after (batched ack)
        status, queues = await hub.admin("GET", "/admin/queues")
        mine = [q for q in queues if q["receiver"] == platform["id"]]
        if not mine or mine[0]["depth"] == 0:
            break
        await asyncio.sleep(0.02)
    assert status == 200 and isinstance(queues, list)
    for q in queues:
        assert {"receiver", "platform", "depth", "inflight", "oldest_age_seconds", "dead_letters"} <= set(q)
        if q["receiver"] == platform["id"]:
            assert q["platform"] == "Beta eMSP" and q["depth"] == 0 and q["inflight"] == 0


# -- suspend, resume, remove -------------------------------------------------------------------------------------

async def test_suspend_blocks_the_platform_and_routing_to_it(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    platform = await hub.connect(alpha)
    await hub.connect(beta)
    status, view = await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend")
    assert status == 200, view
    assert view["status"] == "SUSPENDED" and {p["status"] for p in view["parties"]} == {"SUSPENDED"}
    status, doc = await route(alpha, hub, beta.party)
    assert status == 403 and doc["status_code"] == 2000, doc
    alpha.received.clear()
    status, doc = await route(beta, hub, alpha.party)
    assert status == 503 and doc["status_code"] == 4003, doc
    assert alpha.received == []
    assert beta.received == [], "a suspended platform's request never reaches anyone"


async def test_resume_reconnects_a_registered_platform(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    platform = await hub.connect(alpha)
    await hub.connect(beta)
    await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend")
    status, view = await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume")
    assert status == 200, view
    assert view["status"] == "CONNECTED" and "token_a" not in view
    assert (await route(alpha, hub, beta.party))[0] == 200
    assert (await route(beta, hub, alpha.party))[0] == 200


async def test_resume_keeps_parties_that_never_registered_planned(hub: HubHarness) -> None:
    beta = emsp()
    await hub.connect(beta)
    alpha = await _started(hub, cpo())
    spare = Party("NL", "CPB", "CPO")
    alpha.parties.append(spare)
    platform = await hub.onboard(alpha)
    alpha.parties.remove(spare)
    await alpha.register(hub.session, platform["versions_url"], platform["token_a"])
    await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend")
    status, view = await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume")
    assert status == 200, view
    assert {p["party_id"]: p["status"] for p in view["parties"]} == {"CPA": "CONNECTED", "CPB": "PLANNED"}
    status, doc = await route(beta, hub, spare)
    assert status == 503 and doc["status_code"] == 4003, doc


async def test_resume_of_an_unregistered_platform_replaces_its_token_a(hub: HubHarness) -> None:
    alpha = await _started(hub, cpo())
    platform = await hub.onboard(alpha)
    await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend")
    assert await ocpi_status(hub, platform["token_a"]) == 403
    status, view = await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume")
    assert status == 200, view
    assert view["status"] == "PLANNED" and view["token_a"] != platform["token_a"]
    assert await ocpi_status(hub, platform["token_a"]) == 401
    await alpha.register(hub.session, view["versions_url"], view["token_a"])


async def test_remove_kills_tokens_and_frees_the_pairs(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    platform = await hub.connect(alpha)
    await hub.connect(beta)
    pending = await hub.onboard(FakePartner(name="Gamma", parties=[Party("BE", "GAM", "CPO")]))
    assert alpha.token_c
    for target in (platform, pending):
        status, view = await hub.admin("DELETE", f"/admin/platforms/{target['id']}")
        assert status == 200, view
        assert view["status"] == "REMOVED" and not view["registered"]
    assert await ocpi_status(hub, alpha.token_c) == 401
    assert await ocpi_status(hub, alpha.token_c, "/ocpi/2.2.1/credentials") == 401
    assert await ocpi_status(hub, pending["token_a"]) == 401
    status, doc = await route(beta, hub, alpha.party)
    assert status == 404 and doc["status_code"] == 4001, doc
    _, platforms = await hub.admin("GET", "/admin/platforms")
    assert {p["id"]: p["status"] for p in platforms}[platform["id"]] == "REMOVED"
    # Both pairs can be reserved again, and the new owner receives the traffic.
    newcomer = cpo(name="Alpha CPO reborn")
    await hub.connect(newcomer)
    assert (await route(beta, hub, newcomer.party))[0] == 200
    assert (await hub.admin("POST", "/admin/platforms", {
        "name": "Gamma again", "roles": [{"country_code": "BE", "party_id": "GAM", "role": "CPO"}]}))[0] == 201


async def test_a_removed_platform_can_be_neither_suspended_nor_resumed(hub: HubHarness) -> None:
    platform = await hub.onboard(cpo())
    await hub.admin("DELETE", f"/admin/platforms/{platform['id']}")
    for action in ("suspend", "resume"):
        status, doc = await hub.admin("POST", f"/admin/platforms/{platform['id']}/{action}")
        assert status == 409, doc
        assert "removed" in doc["error"]


async def test_views_never_contain_tokens_or_token_hashes(hub: HubHarness) -> None:
    alpha = cpo()
    platform = await hub.connect(alpha)
    assert alpha.token_c
    secrets_ = {alpha.token_b, alpha.token_c, platform["token_a"],
                sha256(alpha.token_b), sha256(alpha.token_c), sha256(platform["token_a"])}
    views = [
        platform_without_token_a(platform),
        (await hub.admin("GET", "/admin/platforms"))[1],
        (await hub.admin("GET", f"/admin/platforms/{platform['id']}"))[1],
        (await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend"))[1],
        (await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume"))[1],
        (await hub.admin("DELETE", f"/admin/platforms/{platform['id']}"))[1],
    ]
    for view in views:
        text = repr(view)
        assert not [s for s in secrets_ if s in text], view
        assert "hash" not in text and "outbound" not in text and "token_b" not in text, view


def platform_without_token_a(view: dict[str, Any]) -> dict[str, Any]:
    """The create answer shows Token A once, on purpose; everything else in it must be free of secrets."""
    return {k: v for k, v in view.items() if k != "token_a"}


async def test_admin_errors_are_json_on_unknown_admin_routes(hub: HubHarness) -> None:
    status, content_type, doc = await raw_admin(hub, "GET", "/admin/nothing-here",
                                                authorization=f"Bearer {ADMIN_TOKEN}")
    assert status == 404 and content_type == "application/json" and doc["error"], doc


async def _started(hub: HubHarness, partner: FakePartner) -> FakePartner:
    await partner.start()
    hub.partners.append(partner)
    return partner

