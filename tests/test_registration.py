"""Versions and credentials seen from outside: a partner registers with the hub (Token A → B → C), updates its
credentials and unregisters, and every refusal carries the HTTP status and OCPI code the spec asks for (OCPI 2.2.1
Authorization header,
§4, §5, §6)."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import pytest
from multidict import CIMultiDict

from tests.conftest import HubHarness, cpo, emsp, free_port
from tests.partners import ALL_MODULES, FakePartner, Party, ocpi_token

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def ocpi(
    hub: HubHarness, method: str, url: str, authorization: str | None = None, *,
    json: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None,
) -> tuple[int, CIMultiDict[str], Any]:
    """One request to the hub's OCPI surface; ``url`` may be a path below the hub's public URL."""
    h = dict(headers or {})
    if authorization is not None:
        h["Authorization"] = authorization
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    target = url if url.startswith("http") else hub.url + url
    async with hub.session.request(method, target, json=json, data=data, headers=h) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None)


async def post_credentials(hub: HubHarness, token: str, body: Any) -> tuple[int, Any]:
    status, _, doc = await ocpi(hub, "POST", "/ocpi/2.2.1/credentials", ocpi_token(token), json=body)
    return status, doc


async def started(hub: HubHarness, partner: FakePartner) -> FakePartner:
    """Start a partner's server; the harness stops it after the test."""
    await partner.start()
    hub.partners.append(partner)
    return partner


async def platform_of(hub: HubHarness, platform_id: str) -> dict[str, Any]:
    status, view = await hub.admin("GET", f"/admin/platforms/{platform_id}")
    assert status == 200, view
    return dict(view)


def assert_envelope(doc: Any, status_code: int) -> None:
    assert isinstance(doc, dict), doc
    assert doc["status_code"] == status_code, doc
    assert TIMESTAMP.match(doc["timestamp"]), doc


async def assert_still_planned(hub: HubHarness, partner: FakePartner, platform: dict[str, Any]) -> None:
    """A refused registration changes nothing: PLANNED, and the same Token A still registers the partner."""
    view = await platform_of(hub, platform["id"])
    assert view["status"] == "PLANNED" and not view["registered"]
    assert {p["status"] for p in view["parties"]} == {"PLANNED"}
    status, _, doc = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(platform["token_a"]))
    assert status == 200, doc


# -- versions and version details --------------------------------------------------------------------------------

async def test_versions_accept_token_a_base64_encoded_or_raw(hub: HubHarness) -> None:
    platform = await hub.onboard(cpo())
    token_a = platform["token_a"]
    spec_style = "Token " + base64.b64encode((token_a + "\n").encode()).decode()  # the spec's examples add "\n"
    for authorization in (ocpi_token(token_a), f"Token {token_a}", spec_style):
        status, _, doc = await ocpi(hub, "GET", "/ocpi/versions", authorization)
        assert status == 200, (authorization, doc)
        assert_envelope(doc, 1000)
        assert doc["data"] == [{"version": v, "url": f"{hub.url}/ocpi/{v}"} for v in ("2.3.0", "2.2.1", "2.1.1")]
        status, _, doc = await ocpi(hub, "GET", "/ocpi/2.2.1", authorization)
        assert status == 200, (authorization, doc)
        assert doc["data"]["version"] == "2.2.1"


@pytest.mark.parametrize("authorization", [None, "", "Token", "Bearer abc", "Token unknown-token",
                                           ocpi_token("unknown-token")])
async def test_versions_refuse_a_missing_or_unknown_token_with_401(hub: HubHarness, authorization: str | None) -> None:
    await hub.onboard(cpo())
    for path in ("/ocpi/versions", "/ocpi/2.2.1", "/ocpi/2.2.1/credentials"):
        status, _, doc = await ocpi(hub, "GET", path, authorization)
        assert status == 401, (path, doc)
        assert_envelope(doc, 2000)


async def test_version_details_list_credentials_and_every_module_as_sender_and_receiver(hub: HubHarness) -> None:
    platform = await hub.onboard(cpo())
    _, _, doc = await ocpi(hub, "GET", "/ocpi/2.2.1", ocpi_token(platform["token_a"]))
    endpoints = doc["data"]["endpoints"]
    by_key = {(e["identifier"], e["role"]): e["url"] for e in endpoints}
    assert len(by_key) == len(endpoints), "an identifier/role pair is listed twice"
    assert by_key[("credentials", "SENDER")] == f"{hub.url}/ocpi/2.2.1/credentials"
    for module in ALL_MODULES:
        sender, receiver = by_key[(module, "SENDER")], by_key[(module, "RECEIVER")]
        assert sender != receiver, module
    urls = [e["url"] for e in endpoints]
    assert len(set(urls)) == len(urls), "every interface needs its own base URL"
    assert all(url.startswith(hub.url + "/ocpi/2.2.1/") for url in urls)


async def test_every_answer_is_an_envelope_that_echoes_request_and_correlation_ids(hub: HubHarness) -> None:
    platform = await hub.onboard(cpo())
    good = ocpi_token(platform["token_a"])
    cases = [("GET", "/ocpi/versions", good, 200), ("GET", "/ocpi/2.2.1", good, 200),
             ("GET", "/ocpi/2.2.1/credentials", good, 200), ("GET", "/ocpi/versions", None, 401),
             ("GET", "/ocpi/2.2.1/locations", None, 404), ("PUT", "/ocpi/2.2.1/credentials", good, 405),
             ("GET", "/ocpi/2.2.1/sender/locations", good, 401)]
    for i, (method, path, authorization, expected) in enumerate(cases):
        ids = {"X-Request-ID": f"req-{i}", "X-Correlation-ID": f"corr-{i}"}
        status, headers, doc = await ocpi(hub, method, path, authorization, headers=ids)
        assert status == expected, (method, path, doc)
        assert_envelope(doc, 1000 if expected == 200 else 2000)
        assert headers["X-Request-ID"] == f"req-{i}", (method, path)
        assert headers["X-Correlation-ID"] == f"corr-{i}", (method, path)
        assert headers["Content-Type"].startswith("application/json")


async def test_answers_carry_ids_even_when_the_caller_sent_none(hub: HubHarness) -> None:
    status, headers, _ = await ocpi(hub, "GET", "/ocpi/versions")
    assert status == 401
    assert headers.get("X-Request-ID") and headers.get("X-Correlation-ID")


# -- registration ------------------------------------------------------------------------------------------------

async def test_registration_returns_token_c_and_credentials_with_only_the_hub_role(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    status, doc = await post_credentials(hub, platform["token_a"], alpha.credentials())
    assert status == 200, doc
    assert_envelope(doc, 1000)
    creds = doc["data"]
    assert creds["token"] not in (platform["token_a"], alpha.token_b)
    assert re.fullmatch(r"[\x21-\x7e]{1,64}", creds["token"])
    assert creds["url"] == f"{hub.url}/ocpi/versions"
    assert [(r["role"], r["country_code"], r["party_id"]) for r in creds["roles"]] == [("HUB", "NL", "HUB")]
    assert creds["roles"][0]["business_details"]["name"]
    view = await platform_of(hub, platform["id"])
    assert view["status"] == "CONNECTED" and view["registered"]
    assert view["partner_versions_url"] == alpha.versions_url and view["version"] == "2.2.1"
    assert [(p["party_id"], p["status"]) for p in view["parties"]] == [("CPA", "CONNECTED")]
    assert view["parties"][0]["business_details"] == {"name": "Alpha CPO CPA"}


async def test_registration_reads_partner_versions_and_details_with_token_b(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    assert [c.path for c in alpha.config_calls] == ["/ocpi/versions", "/ocpi/2.2.1"]
    for call in alpha.config_calls:
        assert call.method == "GET"
        assert call.headers["Authorization"] == "Token " + base64.b64encode(alpha.token_b.encode()).decode()


async def test_token_a_dies_when_token_c_is_issued(hub: HubHarness) -> None:
    alpha = cpo()
    platform = await hub.connect(alpha)
    token_a = ocpi_token(platform["token_a"])
    for method, path in (("GET", "/ocpi/versions"), ("GET", "/ocpi/2.2.1"), ("GET", "/ocpi/2.2.1/credentials"),
                         ("POST", "/ocpi/2.2.1/credentials")):
        status, _, doc = await ocpi(hub, method, path, token_a, json=alpha.credentials() if method == "POST" else None)
        assert status == 401, (method, path, doc)


async def test_token_c_opens_versions_credentials_and_functional_modules(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    assert alpha.token_c
    token_c = ocpi_token(alpha.token_c)
    for path in ("/ocpi/versions", "/ocpi/2.2.1"):
        status, _, doc = await ocpi(hub, "GET", path, token_c)
        assert status == 200, (path, doc)
    status, _, doc = await ocpi(hub, "GET", "/ocpi/2.2.1/credentials", token_c)
    assert status == 200, doc
    assert doc["data"]["token"] == alpha.token_c
    assert [r["role"] for r in doc["data"]["roles"]] == ["HUB"]
    # Past authentication: the hub answers about the (unknown) receiver, not about the token.
    status, _, doc = await alpha.call(hub.session, "GET", "locations", "SENDER", to=emsp().party)
    assert status == 404 and doc["status_code"] == 4001, doc


async def test_token_a_on_a_functional_module_is_401(hub: HubHarness) -> None:
    beta = emsp()
    await hub.connect(beta)
    platform = await hub.onboard(cpo())
    alpha = cpo()
    alpha.token_c = platform["token_a"]
    alpha.hub_endpoints = beta.hub_endpoints
    status, _, doc = await alpha.call(hub.session, "GET", "locations", "SENDER", to=beta.party)
    assert status == 401, doc
    assert_envelope(doc, 2000)
    assert beta.received == []


async def test_post_credentials_by_a_registered_platform_is_405(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    assert alpha.token_c
    status, doc = await post_credentials(hub, alpha.token_c, alpha.credentials())
    assert status == 405, doc
    assert_envelope(doc, 2000)
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(alpha.token_c))
    assert status == 200, "a refused POST leaves Token C valid"


async def test_put_and_delete_credentials_by_an_unregistered_platform_are_405(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    token_a = ocpi_token(platform["token_a"])
    status, _, doc = await ocpi(hub, "PUT", "/ocpi/2.2.1/credentials", token_a, json=alpha.credentials())
    assert status == 405, doc
    status, _, doc = await ocpi(hub, "DELETE", "/ocpi/2.2.1/credentials", token_a)
    assert status == 405, doc
    assert_envelope(doc, 2000)
    assert alpha.config_calls == []
    await assert_still_planned(hub, alpha, platform)


async def test_registration_fails_with_3001_when_partner_versions_answer_500(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    alpha.versions_status = 500
    platform = await hub.onboard(alpha)
    status, doc = await post_credentials(hub, platform["token_a"], alpha.credentials())
    assert status >= 400, doc
    assert_envelope(doc, 3001)
    await assert_still_planned(hub, alpha, platform)
    alpha.versions_status = 200  # the partner fixed its side: the same Token A still works
    await alpha.register(hub.session, platform["versions_url"], platform["token_a"])
    assert (await platform_of(hub, platform["id"]))["status"] == "CONNECTED"


async def test_registration_fails_with_3001_when_partner_is_unreachable(hub: HubHarness) -> None:
    alpha = cpo()
    platform = await hub.onboard(alpha)
    body = alpha.credentials(url=f"http://127.0.0.1:{free_port()}/ocpi/versions")
    status, doc = await post_credentials(hub, platform["token_a"], body)
    assert status >= 400, doc
    assert_envelope(doc, 3001)
    await assert_still_planned(hub, alpha, platform)


async def test_registration_fails_with_3001_when_partner_refuses_token_b(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    status, doc = await post_credentials(hub, platform["token_a"], alpha.credentials(token="not-the-partners-b"))
    assert status >= 400, doc
    assert_envelope(doc, 3001)
    await assert_still_planned(hub, alpha, platform)


async def test_registration_fails_with_3003_without_a_credentials_endpoint(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    alpha.offer_credentials = False
    platform = await hub.onboard(alpha)
    status, doc = await post_credentials(hub, platform["token_a"], alpha.credentials())
    assert status >= 400, doc
    assert_envelope(doc, 3003)
    await assert_still_planned(hub, alpha, platform)


async def test_registration_fails_with_3003_without_any_functional_module(hub: HubHarness) -> None:
    alpha = await started(hub, cpo(modules={"hubclientinfo": ("RECEIVER",)}))
    platform = await hub.onboard(alpha)
    status, doc = await post_credentials(hub, platform["token_a"], alpha.credentials())
    assert status >= 400, doc
    assert_envelope(doc, 3003)
    await assert_still_planned(hub, alpha, platform)


async def test_registration_fails_with_3002_when_partner_offers_no_2_2_1(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    alpha.offered_versions = ("2.1.1", "2.3.0")
    platform = await hub.onboard(alpha)
    status, doc = await post_credentials(hub, platform["token_a"], alpha.credentials())
    assert status >= 400, doc
    assert_envelope(doc, 3002)
    await assert_still_planned(hub, alpha, platform)


@pytest.mark.parametrize("claimed", [("NL", "CPB", "CPO"), ("NL", "CPA", "EMSP"), ("DE", "CPA", "CPO")],
                         ids=["other-party", "other-role", "other-country"])
async def test_registration_claiming_unreserved_roles_is_refused(hub: HubHarness, claimed: tuple[str, ...]) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    body = alpha.credentials()
    cc, pid, role = claimed
    body["roles"].append({"role": role, "country_code": cc, "party_id": pid, "business_details": {"name": "X"}})
    status, doc = await post_credentials(hub, platform["token_a"], body)
    assert status == 403, doc
    assert_envelope(doc, 2001)
    assert f"{cc}/{pid}" in doc["status_message"]
    assert alpha.config_calls == [], "the hub refuses before calling the partner"
    await assert_still_planned(hub, alpha, platform)


async def test_registration_of_some_reserved_parties_leaves_the_others_planned(hub: HubHarness) -> None:
    beta = emsp()
    await hub.connect(beta)
    alpha = await started(hub, cpo())
    alpha.parties.append(Party("NL", "CPB", "CPO"))
    platform = await hub.onboard(alpha)
    alpha.parties.pop()  # registers only NL/CPA
    await alpha.register(hub.session, platform["versions_url"], platform["token_a"])
    view = await platform_of(hub, platform["id"])
    assert {p["party_id"]: p["status"] for p in view["parties"]} == {"CPA": "CONNECTED", "CPB": "PLANNED"}
    status, _, doc = await beta.call(hub.session, "GET", "locations", "SENDER", to=alpha.party)
    assert status == 200, doc
    status, _, doc = await beta.call(hub.session, "GET", "locations", "SENDER",
                                     to=Party("NL", "CPB", "CPO"))
    assert status == 503 and doc["status_code"] == 4003, doc


async def test_registration_body_that_is_not_json_is_400_2001(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    status, _, doc = await ocpi(hub, "POST", "/ocpi/2.2.1/credentials", ocpi_token(platform["token_a"]),
                                data=b'{"token": "B", "url": ')
    assert status == 400, doc
    assert_envelope(doc, 2001)
    await assert_still_planned(hub, alpha, platform)


@pytest.mark.parametrize("change", [
    {"token": None}, {"url": None}, {"roles": None}, {"roles": []}, {"token": "has space"}, {"token": "x" * 65},
    {"roles": [{"role": "CPO", "country_code": "NL", "party_id": "CPA"}]},
    {"roles": [{"role": "KING", "country_code": "NL", "party_id": "CPA", "business_details": {"name": "x"}}]},
], ids=["no-token", "no-url", "no-roles", "empty-roles", "token-with-space", "token-too-long",
        "no-business-details", "unknown-role"])
async def test_registration_with_missing_or_invalid_fields_is_400_2001(hub: HubHarness, change: dict[str, Any]) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    body = alpha.credentials()
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    status, doc = await post_credentials(hub, platform["token_a"], body)
    assert status == 400, doc
    assert_envelope(doc, 2001)
    await assert_still_planned(hub, alpha, platform)


async def test_registration_body_that_is_a_json_list_is_400_2001(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    status, doc = await post_credentials(hub, platform["token_a"], [alpha.credentials()])
    assert status == 400, doc
    assert_envelope(doc, 2001)


# -- update (PUT) and unregister (DELETE) ------------------------------------------------------------------------

async def test_put_credentials_rotates_both_tokens_and_rereads_endpoints(hub: HubHarness) -> None:
    alpha = cpo()
    platform = await hub.connect(alpha)
    old_c = alpha.token_c
    assert old_c
    alpha.token_b = "B2-rotated"
    alpha.modules = {"locations": ("SENDER",), "commands": ("RECEIVER",)}
    alpha.config_calls.clear()
    status, _, doc = await ocpi(hub, "PUT", "/ocpi/2.2.1/credentials", ocpi_token(old_c), json=alpha.credentials())
    assert status == 200, doc
    assert_envelope(doc, 1000)
    new_c = doc["data"]["token"]
    assert new_c != old_c
    assert [r["role"] for r in doc["data"]["roles"]] == ["HUB"]
    assert [c.path for c in alpha.config_calls] == ["/ocpi/versions", "/ocpi/2.2.1"]
    assert all(c.headers["Authorization"] == ocpi_token("B2-rotated") for c in alpha.config_calls)
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(old_c))
    assert status == 401, "the old Token C dies"
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(new_c))
    assert status == 200
    view = await platform_of(hub, platform["id"])
    assert view["status"] == "CONNECTED"
    assert sorted((e["identifier"], e["role"]) for e in view["endpoints"]) == [
        ("commands", "RECEIVER"), ("credentials", "SENDER"), ("locations", "SENDER")]


async def test_hub_calls_the_partner_with_the_rotated_token_b(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    beta.token_b = "B2-rotated"
    assert beta.token_c
    status, _, doc = await ocpi(hub, "PUT", "/ocpi/2.2.1/credentials", ocpi_token(beta.token_c),
                                json=beta.credentials())
    assert status == 200, doc
    beta.token_c = doc["data"]["token"]
    status, _, doc = await alpha.call(hub.session, "GET", "tokens", "SENDER", to=beta.party)
    assert status == 200, doc
    assert beta.received[-1].headers["Authorization"] == ocpi_token("B2-rotated")


async def test_failed_put_keeps_the_current_credentials(hub: HubHarness) -> None:
    alpha = cpo()
    platform = await hub.connect(alpha)
    assert alpha.token_c
    before = await platform_of(hub, platform["id"])
    alpha.versions_status = 503
    status, _, doc = await ocpi(hub, "PUT", "/ocpi/2.2.1/credentials", ocpi_token(alpha.token_c),
                                json=alpha.credentials(token="B2-never-used"))
    assert status >= 400, doc
    assert_envelope(doc, 3001)
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(alpha.token_c))
    assert status == 200, "Token C stays valid after a failed update"
    after = await platform_of(hub, platform["id"])
    assert after["status"] == "CONNECTED" and after["endpoints"] == before["endpoints"]


async def test_put_claiming_unreserved_roles_is_refused(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    assert alpha.token_c
    body = alpha.credentials()
    body["roles"][0]["party_id"] = "ZZZ"
    status, _, doc = await ocpi(hub, "PUT", "/ocpi/2.2.1/credentials", ocpi_token(alpha.token_c), json=body)
    assert status == 403, doc
    assert_envelope(doc, 2001)
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(alpha.token_c))
    assert status == 200


async def test_put_that_drops_a_party_disconnects_it_for_good(hub: HubHarness) -> None:
    beta = emsp()
    await hub.connect(beta)
    spare = Party("NL", "CPB", "CPO")
    alpha = cpo()
    alpha.parties.append(spare)
    platform = await hub.connect(alpha)
    assert alpha.token_c
    alpha.parties.remove(spare)
    status, _, doc = await ocpi(hub, "PUT", "/ocpi/2.2.1/credentials", ocpi_token(alpha.token_c),
                                json=alpha.credentials())
    assert status == 200, doc
    view = await platform_of(hub, platform["id"])
    assert {p["party_id"]: p["status"] for p in view["parties"]} == {"CPA": "CONNECTED", "CPB": "PLANNED"}
    # An operator's suspend and resume does not bring the dropped party back.
    await hub.admin("POST", f"/admin/platforms/{platform['id']}/suspend")
    status, view = await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume")
    assert {p["party_id"]: p["status"] for p in view["parties"]} == {"CPA": "CONNECTED", "CPB": "PLANNED"}
    status, _, doc = await beta.call(hub.session, "GET", "locations", "SENDER", to=spare)
    assert status == 503 and doc["status_code"] == 4003, doc


async def test_delete_credentials_unregisters_the_platform(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    platform = await hub.connect(alpha)
    await hub.connect(beta)
    assert alpha.token_c
    status, _, doc = await ocpi(hub, "DELETE", "/ocpi/2.2.1/credentials", ocpi_token(alpha.token_c))
    assert status == 200, doc
    assert_envelope(doc, 1000)
    for method, path in (("GET", "/ocpi/versions"), ("GET", "/ocpi/2.2.1/credentials"),
                         ("DELETE", "/ocpi/2.2.1/credentials")):
        status, _, doc = await ocpi(hub, method, path, ocpi_token(alpha.token_c))
        assert status == 401, (method, path, doc)
    view = await platform_of(hub, platform["id"])
    assert view["status"] == "SUSPENDED" and not view["registered"]
    assert {p["status"] for p in view["parties"]} == {"SUSPENDED"}
    alpha.received.clear()
    status, _, doc = await beta.call(hub.session, "GET", "locations", "SENDER", to=alpha.party)
    assert status == 503 and doc["status_code"] == 4003, doc
    assert alpha.received == [], "the hub stops calling an unregistered platform"


async def test_resume_after_unregister_issues_a_token_a_that_registers_again(hub: HubHarness) -> None:
    alpha, beta = cpo(), emsp()
    platform = await hub.connect(alpha)
    await hub.connect(beta)
    assert alpha.token_c
    await ocpi(hub, "DELETE", "/ocpi/2.2.1/credentials", ocpi_token(alpha.token_c))
    status, view = await hub.admin("POST", f"/admin/platforms/{platform['id']}/resume")
    assert status == 200, view
    assert view["status"] == "PLANNED" and view["token_a"] not in ("", platform["token_a"])
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(platform["token_a"]))
    assert status == 401, "the first Token A stays dead"
    alpha.token_b = "B-second-life"
    await alpha.register(hub.session, view["versions_url"], view["token_a"])
    assert (await platform_of(hub, platform["id"]))["status"] == "CONNECTED"
    status, _, doc = await beta.call(hub.session, "GET", "locations", "SENDER", to=alpha.party)
    assert status == 200, doc
    assert alpha.received[-1].headers["Authorization"] == ocpi_token("B-second-life")


# -- the operator acts while a registration is in flight -----------------------------------------------------------

async def _register_slowly(hub: HubHarness, partner: FakePartner, platform: dict[str, Any]) -> asyncio.Task[Any]:
    partner.versions_delay = 0.5
    task = asyncio.create_task(post_credentials(hub, platform["token_a"], partner.credentials()))
    for _ in range(100):  # until the hub is waiting on the partner's versions endpoint
        if partner.config_calls:
            break
        await asyncio.sleep(0.01)
    assert partner.config_calls, "the hub never called the partner"
    return task


@pytest.mark.parametrize(("method", "action", "refused", "final"), [
    ("DELETE", "", 401, "REMOVED"),
    ("POST", "/suspend", 403, "SUSPENDED"),
])
async def test_an_operator_action_during_a_registration_wins(
        hub: HubHarness, method: str, action: str, refused: int, final: str) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    task = await _register_slowly(hub, alpha, platform)
    status, _ = await hub.admin(method, f"/admin/platforms/{platform['id']}{action}")
    assert status == 200
    status, doc = await task
    assert status == refused, doc
    view = await platform_of(hub, platform["id"])
    assert view["status"] == final and not view["registered"]


async def test_concurrent_registrations_with_one_token_a_issue_one_working_token_c(hub: HubHarness) -> None:
    alpha = await started(hub, cpo())
    platform = await hub.onboard(alpha)
    alpha.versions_delay = 0.2
    answers = await asyncio.gather(*(post_credentials(hub, platform["token_a"], alpha.credentials())
                                     for _ in range(2)))
    winners = [doc["data"]["token"] for status, doc in answers if status == 200]
    assert len(winners) == 1, answers
    assert sorted(status for status, _ in answers) == [200, 401], answers
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(winners[0]))
    assert status == 200, "the one Token C handed out works"
