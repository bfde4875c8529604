"""Registration in every OCPI version the hub speaks, both directions (docs/versions.md, "Versions and
registration"): the versions list and the three version details documents; partners registering with the hub in
2.1.1 (one party, role from the operator's reservation, endpoints without roles, raw token), 2.2.1 and 2.3.0
(``hub_party_id``, reachable parties, unknown fields); the hub connecting to 2.1.1 and 2.3.0 partners; a
credentials PUT moving a platform to another version; no ClientInfo pushes to 2.1.1; the per-version gauge."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.app import LIVENESS_KEY
from hub.context import HUB_KEY
from hub.credentials_shapes import read_partner_credentials
from routing.ocpi.errors import InvalidParameters, PartyNotAllowed
from routing.ocpi.models import VersionDetails211
from routing.ocpi.versions import MODULES_211, MODULES_221, MODULES_230
from tests.conftest import HubHarness, cpo, emsp
from tests.partners import ALL_MODULES, FakePartner, Party, ocpi_token, token_header
from tests.test_audit import records
from tests.test_cli import Served, cli, serve
from tests.test_clientinfo import client_infos, eventually, listener, pushes
from tests.test_registration import assert_envelope, assert_still_planned, ocpi, platform_of, started

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "ocpi" / "examples"
MODULES_BOTH = {m: ("SENDER", "RECEIVER") for m in ALL_MODULES}


def partner(version: str, role: str = "CPO", pid: str = "CPA", cc: str = "NL", **more: Any) -> FakePartner:
    more.setdefault("modules", dict(MODULES_BOTH))
    return FakePartner(name=f"{role} {pid} {version}", parties=[Party(cc, pid, role)], version=version, **more)


async def register(hub: HubHarness, p: FakePartner, version: str | None = None) -> tuple[dict[str, Any], Any]:
    """Onboard and start ``p``, register it (in ``version`` or the newest common one): its platform and the hub's
    answer."""
    await started(hub, p)
    platform = await hub.onboard(p)
    doc = await p.register(hub.session, platform["versions_url"], platform["token_a"], version)
    return platform, doc


def endpoint_roles(view: dict[str, Any]) -> dict[str, set[str]]:
    roles: dict[str, set[str]] = {}
    for e in view["endpoints"]:
        roles.setdefault(e["identifier"], set()).add(e["role"])
    return roles


# -- versions and version details ---------------------------------------------------------------------------------

async def test_versions_list_the_three_versions_with_token_a_and_with_a_registered_token(hub: HubHarness) -> None:
    platform = await hub.onboard(cpo())
    ema = emsp()
    await register(hub, ema)
    expected = [{"version": v, "url": f"{hub.url}/ocpi/{v}"} for v in ("2.3.0", "2.2.1", "2.1.1")]
    for token in (platform["token_a"], ema.token_c or ""):
        for authorization in (ocpi_token(token), f"Token {token}"):
            status, _, doc = await ocpi(hub, "GET", "/ocpi/versions", authorization)
            assert status == 200 and doc["data"] == expected, doc
            for v in ("2.3.0", "2.2.1", "2.1.1"):
                status, _, doc = await ocpi(hub, "GET", f"/ocpi/{v}", authorization)
                assert status == 200 and doc["data"]["version"] == v, doc


async def test_version_details_2_1_1_have_no_roles_and_one_url_per_module(hub: HubHarness) -> None:
    platform = await hub.onboard(cpo())
    _, _, doc = await ocpi(hub, "GET", "/ocpi/2.1.1", f"Token {platform['token_a']}")
    details = VersionDetails211.model_validate(doc["data"])
    assert all("role" not in e for e in doc["data"]["endpoints"]), doc
    urls = {e.identifier: e.url for e in details.endpoints}
    assert len(urls) == len(details.endpoints) == 1 + len(MODULES_211)
    assert urls == {"credentials": f"{hub.url}/ocpi/2.1.1/credentials",
                    **{m: f"{hub.url}/ocpi/2.1.1/{m}" for m in MODULES_211}}


@pytest.mark.parametrize(("version", "modules"), [("2.2.1", MODULES_221), ("2.3.0", MODULES_230)])
async def test_version_details_2_2_1_and_2_3_0_list_every_module_of_the_version_in_both_roles(
        hub: HubHarness, version: str, modules: tuple[str, ...]) -> None:
    platform = await hub.onboard(cpo())
    _, _, doc = await ocpi(hub, "GET", f"/ocpi/{version}", ocpi_token(platform["token_a"]))
    base = f"{hub.url}/ocpi/{version}"
    by_key = {(e["identifier"], e["role"]): e["url"] for e in doc["data"]["endpoints"]}
    assert len(by_key) == len(doc["data"]["endpoints"])
    expected = {("credentials", "SENDER"): f"{base}/credentials", ("hubclientinfo", "SENDER"): f"{base}/hubclientinfo"}
    for module in modules:
        expected[(module, "SENDER")] = f"{base}/sender/{module}"
        expected[(module, "RECEIVER")] = f"{base}/receiver/{module}"
    assert by_key == expected
    assert ("bookings", "SENDER") in by_key if version == "2.3.0" else ("bookings", "SENDER") not in by_key


# -- a partner registers with the hub -------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.1.1", "2.2.1", "2.3.0"])
async def test_registration_in_each_version_stores_and_shows_the_version(hub: HubHarness, version: str) -> None:
    p = partner(version)
    platform, doc = await register(hub, p)
    assert_envelope(doc, 1000)
    view = await platform_of(hub, platform["id"])
    assert view["version"] == version and view["status"] == "CONNECTED", view
    assert [x["status"] for x in view["parties"]] == ["CONNECTED"]
    assert view["parties"][0]["business_details"] == {"name": f"{p.name} CPA"}
    status, listed = await hub.admin("GET", "/admin/platforms")
    assert status == 200 and [x["version"] for x in listed if x["id"] == platform["id"]] == [version]
    # The hub read the partner's versions and details of that version, with its token encoded as that version does.
    assert [c.path for c in p.config_calls] == ["/ocpi/versions", f"/ocpi/{version}"]
    assert {c.headers["Authorization"] for c in p.config_calls} == {token_header(p.token_b, version)}
    # The registered token works in that version's credentials GET, in that version's shape.
    status, _, got = await ocpi(hub, "GET", f"/ocpi/{version}/credentials", token_header(p.token_c or "", version))
    assert status == 200 and got["data"]["token"] == p.token_c
    assert ("roles" not in got["data"]) == (version == "2.1.1"), got


async def test_2_1_1_registration_answers_single_party_credentials_of_the_hub(hub: HubHarness) -> None:
    p = partner("2.1.1")
    _, doc = await register(hub, p)
    settings = hub.settings
    assert doc["data"] == {"token": p.token_c, "url": f"{hub.url}/ocpi/versions",
                           "business_details": {"name": settings.hub_name},
                           "party_id": settings.hub_party_id, "country_code": settings.hub_country_code}


@pytest.mark.parametrize(("role", "senders", "receivers"), [
    ("CPO", {"locations", "sessions", "cdrs", "tariffs"}, {"tokens", "commands"}),
    ("EMSP", {"tokens", "commands"}, {"locations", "sessions", "cdrs", "tariffs"}),
])
async def test_2_1_1_endpoints_are_stored_with_the_roles_the_reserved_party_role_gives_them(
        hub: HubHarness, role: str, senders: set[str], receivers: set[str]) -> None:
    p = partner("2.1.1", role=role, pid="ONE")
    platform, _ = await register(hub, p)
    view = await platform_of(hub, platform["id"])
    assert view["parties"][0]["role"] == role
    roles = endpoint_roles(view)
    assert roles.pop("credentials") == {"SENDER"}
    assert roles == {**{m: {"SENDER"} for m in senders}, **{m: {"RECEIVER"} for m in receivers}}
    urls = {e["identifier"]: e["url"] for e in view["endpoints"]}
    assert urls["locations"] == f"{p.base_url}/ocpi/2.1.1/locations"


async def test_2_1_1_registration_of_a_pair_reserved_with_two_roles_is_refused_with_2001(hub: HubHarness) -> None:
    p = await started(hub, partner("2.1.1"))
    status, platform = await hub.admin("POST", "/admin/platforms", {"name": p.name, "roles": [
        {"country_code": "NL", "party_id": "CPA", "role": "CPO"},
        {"country_code": "NL", "party_id": "CPA", "role": "EMSP"}]})
    assert status == 201, platform
    status, _, doc = await ocpi(hub, "POST", "/ocpi/2.1.1/credentials", f"Token {platform['token_a']}",
                                json=p.credentials())
    assert status == 400, doc
    assert_envelope(doc, 2001)
    assert "several roles" in doc["status_message"] and "CPO" in doc["status_message"]
    assert p.config_calls == [], "refused before calling the partner"
    await assert_still_planned(hub, p, platform)


async def test_2_1_1_registration_of_an_unreserved_pair_is_refused(hub: HubHarness) -> None:
    p = await started(hub, partner("2.1.1"))
    platform = await hub.onboard(p)
    body = {**p.credentials(), "party_id": "XYZ"}
    status, _, doc = await ocpi(hub, "POST", "/ocpi/2.1.1/credentials", f"Token {platform['token_a']}", json=body)
    assert status == 403, doc
    assert_envelope(doc, 2001)
    await assert_still_planned(hub, p, platform)


async def test_2_3_0_hub_credentials_name_the_hub_and_list_reachable_parties_never_hub(hub: HubHarness) -> None:
    first = partner("2.3.0")
    _, doc = await register(hub, first)
    s = hub.settings
    assert doc["data"]["hub_party_id"] == s.hub_country_code + s.hub_party_id
    # Nobody reachable yet: the hub lists its own party (never the role HUB, which 2.3.0 lacks).
    assert doc["data"]["roles"] == [{"role": "OTHER", "business_details": {"name": s.hub_name},
                                     "party_id": s.hub_party_id, "country_code": s.hub_country_code}]
    ema = emsp()
    await register(hub, ema)
    planned = await hub.onboard(cpo(name="Not yet", pid="NYT"))  # PLANNED: not reachable
    assert planned["status"] == "PLANNED"
    status, _, got = await ocpi(hub, "GET", "/ocpi/2.3.0/credentials", ocpi_token(first.token_c or ""))
    assert status == 200, got
    assert got["data"]["roles"] == [{"role": "EMSP", "party_id": "EMA", "country_code": "DE",
                                     "business_details": {"name": "Beta eMSP EMA"}}]
    assert all(r["role"] != "HUB" for r in got["data"]["roles"])
    # A 2.2.1 platform still sees only the hub, as HUB.
    status, _, got = await ocpi(hub, "GET", "/ocpi/2.2.1/credentials", ocpi_token(ema.token_c or ""))
    assert [r["role"] for r in got["data"]["roles"]] == ["HUB"] and "hub_party_id" not in got["data"]


async def test_2_3_0_registration_accepts_unknown_fields_and_skips_unknown_roles(hub: HubHarness) -> None:
    p = await started(hub, partner("2.3.0", hub_party_id="NLXHB"))
    platform = await hub.onboard(p)
    body = p.credentials()
    assert body["hub_party_id"] == "NLXHB"
    body["extension_field"] = {"anything": [1, 2]}
    body["roles"][0]["business_details"]["brand_colour"] = "green"
    body["roles"].append({"role": "PTP", "party_id": "PAY", "country_code": "NL", "business_details": {"name": "T"}})
    status, _, doc = await ocpi(hub, "POST", "/ocpi/2.3.0/credentials", ocpi_token(platform["token_a"]), json=body)
    assert status == 200, doc
    view = await platform_of(hub, platform["id"])
    assert view["version"] == "2.3.0"
    assert [(x["party_id"], x["role"], x["status"]) for x in view["parties"]] == [("CPA", "CPO", "CONNECTED")]


async def test_a_partner_may_register_in_an_older_version_than_the_newest_common_one(hub: HubHarness) -> None:
    p = partner("2.3.0", offered_versions=("2.3.0", "2.2.1"))
    platform, _ = await register(hub, p, "2.2.1")
    view = await platform_of(hub, platform["id"])
    assert view["version"] == "2.2.1"
    assert {e["url"] for e in view["endpoints"]} >= {f"{p.base_url}/ocpi/2.2.1/sender/locations"}


@pytest.mark.parametrize(("called", "offered"), [("2.3.0", ("2.2.1",)), ("2.1.1", ("2.2.1", "2.3.0")),
                                                 ("2.2.1", ("2.0", "2.1"))])
async def test_registration_is_3002_when_the_partner_does_not_offer_the_called_version(
        hub: HubHarness, called: str, offered: tuple[str, ...]) -> None:
    p = await started(hub, partner(called, offered_versions=offered))
    platform = await hub.onboard(p)
    status, _, doc = await ocpi(hub, "POST", f"/ocpi/{called}/credentials",
                                token_header(platform["token_a"], called), json=p.credentials(version=called))
    assert status == 400, doc
    assert_envelope(doc, 3002)
    assert called in doc["status_message"]
    await assert_still_planned(hub, p, platform)


async def test_credentials_put_moves_a_platform_from_2_2_1_to_2_3_0(hub: HubHarness) -> None:
    p = partner("2.3.0", offered_versions=("2.3.0", "2.2.1"))
    platform, _ = await register(hub, p, "2.2.1")
    old_token = p.token_c
    status, doc = await p.update(hub.session, platform["versions_url"], "2.3.0")
    assert status == 200, doc
    assert doc["data"]["hub_party_id"] and all(r["role"] != "HUB" for r in doc["data"]["roles"])
    view = await platform_of(hub, platform["id"])
    assert view["version"] == "2.3.0" and view["status"] == "CONNECTED"
    assert f"{p.base_url}/ocpi/2.3.0/sender/locations" in {e["url"] for e in view["endpoints"]}
    assert not any("/ocpi/2.2.1/" in e["url"] for e in view["endpoints"]), "endpoints re-read in 2.3.0"
    status, _, _ = await ocpi(hub, "GET", "/ocpi/versions", ocpi_token(old_token or ""))
    assert status == 401, "the PUT rotated the partner's token"
    status, _, _ = await ocpi(hub, "GET", "/ocpi/2.3.0/credentials", ocpi_token(p.token_c or ""))
    assert status == 200


async def test_a_platform_that_moves_to_2_1_1_speaks_as_the_one_party_its_credentials_carry(
        hub: HubHarness) -> None:
    # Two parties in 2.2.1, the eMSP onboarded first; the 2.1.1 credentials carry the CPO only, so the eMSP is
    # left PLANNED (docs/versions.md, "Versions and registration").
    p = FakePartner(name="two parties", parties=[Party("NL", "EMX", "EMSP"), Party("NL", "CPA", "CPO")],
                    version="2.2.1", offered_versions=("2.2.1", "2.1.1"), modules=dict(MODULES_BOTH))
    platform, _ = await register(hub, p, "2.2.1")
    p.parties.reverse()  # its 2.1.1 credentials name its first party: the CPO
    p.version = "2.1.1"
    status, doc = await p.update(hub.session, platform["versions_url"], "2.1.1")
    assert status == 200, doc
    view = await platform_of(hub, platform["id"])
    assert {(x["party_id"], x["status"]) for x in view["parties"]} == {("CPA", "CONNECTED"), ("EMX", "PLANNED")}
    # OCPI 2.1.1 CPO interface: the CPO pulls the tokens from the hub and pushes its locations to it.
    status, _, doc = await p.call(hub.session, "GET", "tokens", "SENDER")
    assert status == 200 and doc["status_code"] == 1000, doc
    status, _, doc = await p.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                  json={"id": "LOC1", "type": "ON_STREET", "address": "Main 1", "city": "Gent",
                                        "postal_code": "9000", "country": "BEL",
                                        "coordinates": {"latitude": "51.047599", "longitude": "3.729944"},
                                        "last_updated": "2026-12-01T10:00:00Z"})
    assert status == 200 and doc["status_code"] == 1000, doc
    # The operator's token rotation reads its endpoints again as the CPO's, not as the PLANNED eMSP's.
    status, rotated = await hub.admin("POST", f"/admin/platforms/{platform['id']}/rotate")
    assert status == 200, rotated
    assert endpoint_roles(rotated)["locations"] == {"SENDER"} and endpoint_roles(rotated)["tokens"] == {"RECEIVER"}


async def test_the_audit_carries_the_callers_version_and_the_credentials_module_of_every_version(
        hub: HubHarness) -> None:
    p = partner("2.1.1")
    platform, _ = await register(hub, p)
    status, _, _ = await ocpi(hub, "GET", "/ocpi/2.1.1", f"Token {p.token_c}")
    assert status == 200
    found = await records(hub, platform_id=platform["id"])
    found.sort(key=lambda r: r.time)
    [post] = [r for r in found if (r.method, r.path) == ("POST", "/ocpi/2.1.1/credentials")]
    assert (post.module, post.ocpi_version) == ("credentials", "2.1.1")
    details = [r for r in found if (r.method, r.path) == ("GET", "/ocpi/2.1.1")]
    # Read with Token A during registration (no version yet), then with the registered token.
    assert [(r.module, r.ocpi_version) for r in details] == [("versions", None), ("versions", "2.1.1")]


# -- the hub connects to a partner --------------------------------------------------------------------------------

async def issuing(hub: HubHarness, p: FakePartner) -> FakePartner:
    p.token_a = "A-" + secrets.token_hex(8)
    return await started(hub, p)


async def test_connect_to_a_2_1_1_partner_needs_a_role_and_speaks_2_1_1_with_the_raw_token(hub: HubHarness) -> None:
    p = await issuing(hub, partner("2.1.1", role="EMSP", pid="EMO", cc="DE"))
    token_a = p.token_a
    body = {"name": p.name, "versions_url": p.versions_url, "token_a": token_a}
    status, doc = await hub.admin("POST", "/admin/platforms/connect", body)
    assert status == 400 and "2.1.1" in doc["error"] and "role" in doc["error"], doc
    assert p.credentials_calls == [], "nothing was sent without the role"
    status, view = await hub.admin("POST", "/admin/platforms/connect", {**body, "role": "emsp"})
    assert status == 201, view
    assert view["version"] == "2.1.1" and view["status"] == "CONNECTED"
    assert [(x["country_code"], x["party_id"], x["role"]) for x in view["parties"]] == [("DE", "EMO", "EMSP")]
    assert endpoint_roles(view)["tokens"] == {"SENDER"} and endpoint_roles(view)["locations"] == {"RECEIVER"}
    [post] = p.credentials_calls
    assert post.path == "/ocpi/2.1.1/credentials" and post.headers["Authorization"] == f"Token {token_a}"
    assert p.hub_credentials is not None and set(p.hub_credentials) == {
        "token", "url", "business_details", "party_id", "country_code"}
    # Every later call the hub makes to it carries the raw token: the still-alive ping for one.
    p.config_calls.clear()
    assert await hub.app[LIVENESS_KEY].check(hub.app[HUB_KEY].registry.get(view["id"])) is True  # type: ignore[arg-type]
    assert [c.headers["Authorization"] for c in p.config_calls] == [f"Token {p.token_b}"]


async def test_connect_to_a_2_3_0_partner_sends_hub_party_id_and_no_hub_role(hub: HubHarness) -> None:
    ema = emsp()
    await register(hub, ema)
    p = await issuing(hub, partner("2.3.0", offered_versions=("2.2.1", "2.3.0")))
    token_a = p.token_a or ""
    status, view = await hub.admin("POST", "/admin/platforms/connect",
                                   {"name": p.name, "versions_url": p.versions_url, "token_a": token_a})
    assert status == 201, view
    assert view["version"] == "2.3.0", "the newest common version"
    sent = p.hub_credentials
    assert sent is not None and sent["hub_party_id"] == hub.settings.hub_country_code + hub.settings.hub_party_id
    assert [(r["party_id"], r["role"]) for r in sent["roles"]] == [("EMA", "EMSP")]
    [post] = p.credentials_calls
    assert post.path == "/ocpi/2.3.0/credentials" and post.headers["Authorization"] == ocpi_token(token_a)


# -- hubclientinfo ------------------------------------------------------------------------------------------------

async def test_a_2_1_1_platform_never_receives_client_info_pushes_while_a_2_2_1_one_does(hub: HubHarness) -> None:
    lis = listener()
    await register(hub, lis)
    modules = dict(MODULES_BOTH)
    modules["hubclientinfo"] = ("RECEIVER",)
    old = partner("2.1.1", role="EMSP", pid="OLD", cc="DE", modules=modules)  # even if it advertised one
    platform, _ = await register(hub, old)
    assert "hubclientinfo" not in endpoint_roles(await platform_of(hub, platform["id"]))
    newcomer = emsp(name="Later eMSP", pid="LAT")
    await register(hub, newcomer)
    await eventually(lambda: any(r.path.endswith("/DE/LAT") for r in pushes(lis)), "push of the newcomer")
    assert any(r.path.endswith("/DE/OLD") for r in pushes(lis)), "the 2.1.1 party is announced to others"
    await asyncio.sleep(0.3)
    assert [r for r in old.received if "hubclientinfo" in r.path] == []
    # Its party is listed by the hub's SENDER interface, in 2.2.1 and in 2.3.0.
    status, _, doc = await client_infos(hub, lis)
    assert status == 200 and ("DE", "OLD", "EMSP") in {(x["country_code"], x["party_id"], x["role"])
                                                       for x in doc["data"]}
    status, _, doc = await client_infos(hub, lis, url=f"{hub.url}/ocpi/2.3.0/hubclientinfo")
    assert status == 200 and any(x["party_id"] == "OLD" for x in doc["data"]), doc


# -- metrics ------------------------------------------------------------------------------------------------------

async def test_the_platforms_by_version_gauge_counts_registered_platforms(hub: HubHarness) -> None:
    await register(hub, partner("2.1.1"))
    await register(hub, partner("2.3.0", role="EMSP", pid="EMB", cc="DE"))
    await register(hub, emsp(pid="EMC"))
    await hub.onboard(cpo(name="Planned", pid="PLN"))

    async def gauge() -> dict[str, float]:
        async with hub.session.get(hub.url + "/metrics") as resp:
            text = await resp.text()
        return {s.labels["version"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "ocpi_hub_platforms_by_version"}

    expected = {"2.1.1": 1.0, "2.2.1": 1.0, "2.3.0": 1.0}
    for _ in range(150):  # refreshed every 5 s
        if await gauge() == expected:
            break
        await asyncio.sleep(0.1)
    assert await gauge() == expected


# -- parsing the credentials objects of each version ------------------------------------------------------------------

OWN_211 = {"token": "abc-123", "url": "https://cpo.example/ocpi/versions", "party_id": "exa", "country_code": "nl",
           "business_details": {"name": "Example Operator", "website": "https://cpo.example"}}


def test_2_1_1_credentials_take_their_role_from_elsewhere() -> None:
    creds = read_partner_credentials("2.1.1", OWN_211, lambda cc, pid: "CPO" if (cc, pid) == ("NL", "EXA") else "")
    assert [(r.country_code, r.party_id, r.role, r.business_details.name) for r in creds.roles] == [
        ("NL", "EXA", "CPO", "Example Operator")]

    def refuse(cc: str, pid: str) -> str:
        raise PartyNotAllowed(f"{cc}/{pid}")

    with pytest.raises(PartyNotAllowed):
        read_partner_credentials("2.1.1", OWN_211, refuse)
    with pytest.raises(InvalidParameters):
        read_partner_credentials("2.1.1", {**OWN_211, "business_details": None}, lambda cc, pid: "CPO")


def test_2_3_0_credentials_need_one_routable_role() -> None:
    base = {"token": "t", "url": "https://x.example/v", "hub_party_id": "NLHUB",
            "roles": [{"role": "PTP", "party_id": "PAY", "country_code": "NL", "business_details": {"name": "P"}}]}
    with pytest.raises(InvalidParameters, match="no role the hub can route"):
        read_partner_credentials("2.3.0", base, lambda cc, pid: "")
    with pytest.raises(InvalidParameters):
        read_partner_credentials("2.3.0", {**base, "hub_party_id": "TOOLONG"}, lambda cc, pid: "")


def official(version: str, name: str) -> Any:
    path = EXAMPLES / version / name
    if not path.is_file():
        pytest.skip(f"official OCPI {version} examples not found beside the repository")
    return json.loads(path.read_text())


def test_official_2_1_1_examples_parse() -> None:
    creds = read_partner_credentials("2.1.1", official("2.1.1", "credentials_example.json"), lambda cc, pid: "CPO")
    assert (creds.roles[0].country_code, creds.roles[0].party_id) == ("NL", "EXA")
    details = VersionDetails211.model_validate(official("2.1.1", "version_details_example.json"))
    assert {e.identifier for e in details.endpoints} == {"credentials", "locations"}


@pytest.mark.parametrize("name", ["credentials_example.json", "credentials_example2.json",
                                  "credentials_example3.json", "credentials_example4.json"])
def test_official_2_3_0_credentials_examples_parse(name: str) -> None:
    data = official("2.3.0", name)
    creds = read_partner_credentials("2.3.0", data, lambda cc, pid: "")
    assert [r.role for r in creds.roles] == [r["role"] for r in data["roles"]]


# -- CLI ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve(tmp_path_factory.mktemp("versions"))
    try:
        yield served
    finally:
        served.stop()


async def test_cli_connect_with_role_registers_a_2_1_1_partner(hub_process: Served) -> None:
    p = partner("2.1.1", pid="CLO")
    p.token_a = "A-" + secrets.token_hex(8)
    await p.start()
    try:
        args = ("platforms", "connect", "--name", p.name, "--versions-url", p.versions_url, "--token-a", p.token_a)
        refused = await asyncio.to_thread(cli, *args, url=hub_process.url)
        assert refused.code != 0 and "400" in refused.stderr and "role" in refused.stderr, refused
        done = await asyncio.to_thread(cli, *args, "--role", "cpo", url=hub_process.url)
        view = done.json()
        assert view["version"] == "2.1.1" and view["parties"][0]["role"] == "CPO", view
        shown = (await asyncio.to_thread(cli, "platforms", "show", view["id"], url=hub_process.url)).json()
        assert shown["version"] == "2.1.1"
    finally:
        await p.stop()
