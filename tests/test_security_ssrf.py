"""The outbound-URL policy (docs/security.md, "Outbound URLs (SSRF)") and forwarding fidelity.

The hub calls only http(s) URLs, never private, loopback or link-local addresses (written in the URL or resolved
from its host name at connect time) unless HUB_ALLOW_PRIVATE_URLS, and a URL a partner hands over in traffic only
on a host that partner registered. Every fake partner runs on 127.0.0.1, so most tests here run with private
URLs allowed and check the scheme and host rules; the address rules are checked on a hub restarted with them on,
which meets the loopback URLs its partners registered before.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from hub.__main__ import main as cli_main
from hub.context import HUB_KEY
from routing.outbound import OutboundPolicy, PolicyResolver, RefusedAddress
from tests.conftest import (
    ADMIN_TOKEN,
    HubHarness,
    MakeHub,
    cleanup_prefix,
    cpo,
    emsp,
    hub_settings,
    start_hub,
    stop_hub,
)
from tests.partners import FakePartner, Received, envelope, ocpi_token
from tests.test_versions_routing import location_211

TS = "2026-01-01T00:00:00Z"
TOKEN = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID", "contract_id": "DE-EMA-C1",
         "issuer": "Beta", "valid": True, "whitelist": "ALLOWED", "last_updated": TS}
ELSEWHERE = "203.0.113.5"  # TEST-NET-3: a public-looking host no test partner registered; never called


async def start_session(ema: FakePartner, cpa: FakePartner, hub: HubHarness, response_url: Any
                        ) -> tuple[int, Any]:
    status, _, body = await ema.call(hub.session, "POST", "commands", "RECEIVER", "START_SESSION", to=cpa.party,
                                     json={"response_url": response_url, "token": TOKEN, "location_id": "LOC1"})
    return status, body


def assert_refused(status: int, body: Any, *fragments: str) -> None:
    assert status == 400, body
    assert body["status_code"] == 2001, body
    for fragment in fragments:
        assert fragment in body["status_message"], body


# -- item 15: forwarding fidelity --------------------------------------------------------------------------------

async def test_get_list_and_cdr_post_reach_an_endpoint_advertised_with_a_trailing_slash_exactly(
        hub: HubHarness) -> None:
    cpa, ema = cpo(), emsp()
    cpa.trailing_slash = ema.trailing_slash = True
    await hub.connect(cpa)
    await hub.connect(ema)

    status, _, body = await ema.call(hub.session, "GET", "locations", "SENDER", to=cpa.party, query="limit=10")
    assert status == 200 and body["status_code"] == 1000, body
    cdr = {"country_code": "NL", "party_id": "CPA", "id": "CDR1", "last_updated": TS}
    status, _, body = await cpa.call(hub.session, "POST", "cdrs", "RECEIVER", to=ema.party, json=cdr)
    assert status == 200 and body["status_code"] == 1000, body
    status, _, body = await ema.call(hub.session, "GET", "locations", "SENDER", "NL/CPA/LOC1", to=cpa.party)
    assert status == 200 and body["status_code"] == 1000, body

    assert [(r.raw_path, r.raw_query) for r in cpa.received] == [
        ("/ocpi/2.2.1/sender/locations/", "limit=10"), ("/ocpi/2.2.1/sender/locations/NL/CPA/LOC1", "")]
    assert [r.raw_path for r in ema.received] == ["/ocpi/2.2.1/receiver/cdrs/"]


async def test_an_endpoint_advertised_without_a_trailing_slash_gets_none_added(hub: HubHarness) -> None:
    cpa, ema = cpo(), emsp()
    await hub.connect(cpa)
    await hub.connect(ema)
    status, _, _ = await ema.call(hub.session, "GET", "locations", "SENDER", to=cpa.party)
    assert status == 200
    status, _, _ = await ema.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=cpa.party)
    assert status == 200
    assert [r.raw_path for r in cpa.received] == ["/ocpi/2.2.1/sender/locations", "/ocpi/2.2.1/sender/locations/LOC1"]


async def test_the_strict_fake_partner_redirects_the_other_slash_form_so_a_stripped_slash_would_fail() -> None:
    """The suite's fake partners answer like FastAPI: the hub's old habit of stripping the slash would be caught."""
    partner = cpo()
    partner.trailing_slash = True
    await partner.start()
    try:
        async with aiohttp.ClientSession() as session:
            auth = {"Authorization": ocpi_token(partner.token_b)}
            async with session.get(partner.base_url + "/ocpi/2.2.1/sender/locations", headers=auth,
                                   allow_redirects=False) as resp:
                assert resp.status == 307
                assert resp.headers["Location"] == partner.base_url + "/ocpi/2.2.1/sender/locations/"
            async with session.get(partner.base_url + "/ocpi/2.2.1/sender/locations//NL", headers=auth) as resp:
                assert resp.status == 404
            async with session.get(partner.base_url + "/ocpi/2.2.1/sender/locations/", headers=auth) as resp:
                assert resp.status == 200
    finally:
        await partner.stop()


# -- item 4: URLs handed over in traffic ---------------------------------------------------------------------------

async def test_a_response_url_on_a_host_the_sender_never_registered_is_refused_and_never_forwarded(
        hub: HubHarness) -> None:
    cpa, ema = cpo(), emsp()
    await hub.connect(cpa)
    await hub.connect(ema)

    status, body = await start_session(ema, cpa, hub, f"http://{ELSEWHERE}/results/1")
    assert_refused(status, body, "response_url", ELSEWHERE, "registered")
    query = urlencode({"duration": 900, "response_url": f"http://{ELSEWHERE}/cp/1"})
    status, _, body = await ema.call(hub.session, "GET", "chargingprofiles", "RECEIVER", "S1", to=cpa.party,
                                     query=query)
    assert_refused(status, body, "response_url (query parameter)", ELSEWHERE)
    assert cpa.received == []

    status, body = await start_session(ema, cpa, hub, f"{ema.base_url}/results/1")  # its own host: fine
    assert status == 200 and body["status_code"] == 1000, body
    assert len(cpa.received) == 1


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://127.0.0.1/results", "http and https"),
    ("file:///etc/passwd", "http and https"),
    ("/results/1", "http and https"),
    ("http://user:secret@127.0.0.1/results", "user name or password"),
    ("http://127.0.0.1:99999/results", "not a valid URL"),
    ("http://127.0.0.1/" + "r" * 2100, "longer than 2048"),
], ids=["ftp", "file", "relative", "credentials", "bad-port", "too-long"])
async def test_a_response_url_that_is_not_plain_http_is_refused_naming_the_field(
        hub: HubHarness, url: str, why: str) -> None:
    cpa, ema = cpo(), emsp()
    await hub.connect(cpa)
    await hub.connect(ema)
    status, body = await start_session(ema, cpa, hub, url)
    assert_refused(status, body, "response_url", why)
    assert cpa.received == []


NOT_STRINGS = [123, None, True, {"url": "http://127.0.0.1/results/1"}, ["http://127.0.0.1/results/1"]]
NOT_STRING_IDS = ["number", "null", "bool", "object", "list"]
PROFILE = {"charging_rate_unit": "W", "charging_profile_period": [{"start_period": 0, "limit": 11000.0}]}


def with_response_url(version: str, module: str, value: Any) -> tuple[str, str, str, bytes]:
    """(method, tail, module, body bytes) of a StartSession or SetChargingProfile whose response_url is ``value``
    (sent as JSON as given: ``None`` is ``null``)."""
    if module == "chargingprofiles":
        return "PUT", "S1", module, json.dumps({"charging_profile": PROFILE, "response_url": value}).encode()
    token = ({"uid": "TOK1", "type": "RFID", "auth_id": "DE-EMA-C1", "issuer": "Beta", "valid": True,
              "whitelist": "ALLOWED", "last_updated": TS} if version == "2.1.1" else TOKEN)
    body = {"response_url": value, "token": token, "location_id": "LOC1"}
    return "POST", "START_SESSION", module, json.dumps(body).encode()


@pytest.mark.parametrize("value", NOT_STRINGS, ids=NOT_STRING_IDS)
@pytest.mark.parametrize(("version", "module"), [("2.2.1", "commands"), ("2.2.1", "chargingprofiles"),
                                                 ("2.3.0", "commands"), ("2.3.0", "chargingprofiles"),
                                                 ("2.1.1", "commands")])
async def test_a_response_url_that_is_no_string_is_400_2001_and_nothing_is_sent(
        hub: HubHarness, version: str, module: str, value: Any) -> None:
    """The hub replaces every response_url by a hub URL (docs/ocpi-decisions.md, Callback URLs): one it cannot
    replace (not a URL string) used to reach the CPO as sent."""
    cpa, ema = cpo(), emsp()
    cpa.version = ema.version = version
    await hub.connect(cpa)
    await hub.connect(ema)
    if version == "2.1.1":  # the hub learns where LOC1 is: a 2.1.1 command is routed by its location_id
        status, _, doc = await cpa.call(hub.session, "PUT", "locations", "SENDER", "NL/CPA/LOC1",
                                        json=location_211())
        assert status == 200, doc
        cpa.received.clear()
    method, tail, module, body = with_response_url(version, module, value)
    status, _, doc = await ema.call(hub.session, method, module, "RECEIVER", tail,
                                    to=None if version == "2.1.1" else cpa.party, data=body,
                                    headers={"Content-Type": "application/json"})
    assert_refused(status, doc, "response_url")
    assert cpa.received == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("query", ["duration=900&response_url=", "response_url",
                                   "response_url=http://127.0.0.1/a&response_url=http://127.0.0.1/b"],
                         ids=["empty", "no-value", "repeated"])
async def test_a_response_url_query_parameter_that_is_empty_or_repeated_is_400_2001(
        hub: HubHarness, method: str, query: str) -> None:
    """OCPI 2.2.1 mod_charging_profiles: GET and DELETE carry one response_url in the query; an empty one was
    forwarded as sent, and of two only the last hub URL was re-armed when the CPO told its timeout."""
    cpa, ema = cpo(), emsp()
    await hub.connect(cpa)
    await hub.connect(ema)
    status, _, doc = await ema.call(hub.session, method, "chargingprofiles", "RECEIVER", "S1", to=cpa.party,
                                    query=query)
    assert_refused(status, doc, "response_url (query parameter)")
    assert cpa.received == []


@pytest.mark.parametrize("name", ["response%5Furl", "response%5furl", "%72esponse_url"])
async def test_a_percent_encoded_response_url_query_name_is_replaced_by_a_hub_url_too(
        hub: HubHarness, name: str) -> None:
    """The CPO decodes the query: a response_url whose name is percent-encoded is the same parameter, and used to
    reach it as the eMSP's own URL (the CPO would post the result past the hub)."""
    cpa, ema = cpo(), emsp()
    await hub.connect(cpa)
    await hub.connect(ema)
    original = f"{ema.base_url}/results/1"
    status, _, raw = await ema.call_raw(hub.session, "GET", "chargingprofiles", "RECEIVER", "S1", to=cpa.party,
                                        query=f"duration=900&{name}={quote(original, safe='')}", encoded=True)
    assert status == 200, raw
    (rec,) = cpa.received
    sent = parse_qs(rec.raw_query)
    assert sent["duration"] == ["900"] and len(sent["response_url"]) == 1, rec.query
    assert sent["response_url"][0].startswith(hub.url + "/ocpi/2.2.1/callbacks/"), rec.query
    assert ema.base_url not in rec.query


async def test_the_operators_allowed_hosts_admit_another_host_until_cleared_then_the_callback_is_refused(
        hub: HubHarness) -> None:
    cpa, ema = cpo(), emsp()
    await hub.connect(cpa)
    ema_platform = await hub.connect(ema)

    status, view = await hub.admin("PUT", f"/admin/platforms/{ema_platform['id']}/allowed-hosts",
                                   {"allowed_hosts": [ELSEWHERE, "Results.EMSP.example"]})
    assert status == 200, view
    assert view["allowed_hosts"] == [ELSEWHERE, "results.emsp.example"]
    status, body = await start_session(ema, cpa, hub, "https://results.emsp.example/cb/1")
    assert status == 200 and body["status_code"] == 1000, body
    status, body = await start_session(ema, cpa, hub, f"http://{ELSEWHERE}/cb/2")
    assert status == 200 and body["status_code"] == 1000, body
    hub_url = cpa.received[-1].json()["response_url"]

    status, view = await hub.admin("PUT", f"/admin/platforms/{ema_platform['id']}/allowed-hosts",
                                   {"allowed_hosts": []})
    assert status == 200 and view["allowed_hosts"] == [], view
    # The CPO posts its result to the hub URL: checked again at call time, the host is no longer the eMSP's.
    async with hub.session.post(hub_url, json={"result": "ACCEPTED"}, headers={
            "Authorization": ocpi_token(cpa.token_c or ""), "OCPI-from-country-code": "NL",
            "OCPI-from-party-id": "CPA"}) as resp:
        doc = await resp.json()
        assert (resp.status, doc["status_code"]) == (503, 4003), doc
        assert ELSEWHERE in doc["status_message"]


@pytest.mark.parametrize("host", ["http://x.example", "x.example:443", "*.example", "a/b", ""])
async def test_allowed_hosts_take_host_names_or_addresses_only(hub: HubHarness, host: str) -> None:
    platform = await hub.onboard(emsp())
    status, body = await hub.admin("PUT", f"/admin/platforms/{platform['id']}/allowed-hosts",
                                   {"allowed_hosts": [host]})
    assert status == 400 and "allowed_hosts" in str(body), body
    status, body = await hub.admin("POST", "/admin/platforms", {
        "name": "X", "roles": [{"country_code": "DE", "party_id": "XYZ", "role": "EMSP"}], "allowed_hosts": [host]})
    assert status == 400, body


async def test_allowed_hosts_are_set_and_shown_by_the_cli(hub: HubHarness, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HUB_URL", hub.url)
    monkeypatch.setenv("HUB_ADMIN_TOKEN", ADMIN_TOKEN)
    code = await asyncio.to_thread(cli_main, ["platforms", "add", "--name", "Beta", "--role", "DE:EMA:EMSP",
                                              "--allowed-host", "cb.emsp.example"])
    assert code == 0
    added = capsys.readouterr().out
    platform_id = json.loads(added)["id"]
    assert await asyncio.to_thread(cli_main, ["platforms", "allowed-hosts", platform_id, "a.example",
                                              "192.0.2.1"]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(cli_main, ["platforms", "show", platform_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["allowed_hosts"] == ["192.0.2.1", "a.example"]


async def test_a_link_to_a_host_the_receiver_never_registered_is_502_and_a_location_is_left_out(
        hub: HubHarness) -> None:
    cpa, ema = cpo(), emsp()

    async def answer(request: web.Request, rec: Received) -> web.StreamResponse:
        header = ({"Link": f'<http://{ELSEWHERE}/ocpi/locations?offset=10>; rel="next"'} if rec.method == "GET"
                  else {"Location": f"http://{ELSEWHERE}/ocpi/cdrs/CDR1"})
        return web.json_response(envelope([] if rec.method == "GET" else None), headers=header)

    cpa.responder = ema.responder = answer
    await hub.connect(cpa)
    await hub.connect(ema)
    status, _, body = await ema.call(hub.session, "GET", "locations", "SENDER", to=cpa.party)
    assert (status, body["status_code"]) == (502, 4000), body
    assert "Link header" in body["status_message"] and ELSEWHERE in body["status_message"]

    cdr = {"country_code": "NL", "party_id": "CPA", "id": "CDR1", "last_updated": TS}
    status, headers, body = await cpa.call(hub.session, "POST", "cdrs", "RECEIVER", to=ema.party, json=cdr)
    assert (status, body["status_code"]) == (200, 1000), body  # accepted by the eMSP: that answer stands
    assert "Location" not in headers


async def test_a_link_on_the_receivers_own_host_still_becomes_a_hub_url(hub: HubHarness) -> None:
    cpa, ema = cpo(), emsp()

    async def answer(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response(envelope([]), headers={
            "Link": f'<{cpa.base_url}/ocpi/2.2.1/sender/locations?offset=10>; rel="next"'})

    cpa.responder = answer
    await hub.connect(cpa)
    await hub.connect(ema)
    status, headers, _ = await ema.call(hub.session, "GET", "locations", "SENDER", to=cpa.party)
    assert status == 200 and headers["Link"].startswith(f"<{hub.url}/ocpi/2.2.1/callbacks/"), headers


# -- item 4: URLs given at registration ----------------------------------------------------------------------------

async def register_raw(hub: HubHarness, partner: FakePartner) -> tuple[int, Any]:
    """Onboard and POST the partner's credentials; the hub's answer, whatever it is."""
    await partner.start()
    hub.partners.append(partner)
    platform = await hub.onboard(partner)
    async with hub.session.post(f"{hub.url}/ocpi/2.2.1/credentials", json=partner.credentials(),
                                headers={"Authorization": ocpi_token(platform["token_a"])}) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/ocpi/locations", "not a url", "http://127.0.0.1:99999/x"],
                         ids=["not-http", "relative", "port-out-of-range"])
async def test_an_endpoint_url_nobody_may_call_fails_the_registration_naming_it(hub: HubHarness, url: str) -> None:
    ema = emsp()
    ema.endpoint_urls[("locations", "RECEIVER")] = url
    status, body = await register_raw(hub, ema)
    assert_refused(status, body, "endpoint locations RECEIVER")
    assert ema.token_c is None


async def test_private_and_loopback_urls_are_refused_when_not_allowed(make_hub: MakeHub) -> None:
    hub = await make_hub(allow_private_urls=False)
    ema = emsp()
    status, body = await register_raw(hub, ema)
    assert_refused(status, body, "credentials url", "loopback address 127.0.0.1")
    assert ema.config_calls == [], "the hub must not call a refused URL"

    status, body = await hub.admin("POST", "/admin/platforms/connect", {
        "name": "Gamma", "versions_url": "http://169.254.169.254/latest/meta-data", "token_a": "x"})
    assert status == 400 and "link-local" in str(body), body


async def test_after_private_urls_are_turned_off_stored_loopback_and_localhost_urls_are_never_called(
        backend: str | None, tmp_path: Any) -> None:
    """A hub restarted without HUB_ALLOW_PRIVATE_URLS meets what its partners registered before: an endpoint on a
    loopback address, one on a host name that resolves to loopback (checked at connect time), a response_url."""
    first = hub_settings(redis_url=backend, sqlite_path=str(tmp_path / "hub.sqlite3"))
    cpa, ema = cpo(), emsp()
    await cpa.start()
    await ema.start()
    port = ema.base_url.rsplit(":", 1)[1]
    ema.endpoint_urls[("sessions", "RECEIVER")] = f"http://localhost:{port}/ocpi/2.2.1/receiver/sessions"
    h = await start_hub(first)
    try:
        await h.connect(cpa)
        await h.connect(ema)
    finally:
        await stop_hub(h)
    h = await start_hub(first.model_copy(update={"allow_private_urls": False}))
    try:
        status, _, body = await cpa.call(h.session, "GET", "sessions", "RECEIVER", "NL/CPA/S1", to=ema.party)
        assert (status, body["status_code"]) == (503, 4003), body
        assert "resolves only to refused addresses" in body["status_message"], body
        status, _, body = await cpa.call(h.session, "GET", "locations", "RECEIVER", "NL/CPA/LOC1", to=ema.party)
        assert (status, body["status_code"]) == (503, 4003), body
        assert "loopback address 127.0.0.1" in body["status_message"], body
        status, body = await start_session(ema, cpa, h, f"{ema.base_url}/results/1")
        assert_refused(status, body, "response_url", "loopback")
        assert ema.received == [] and cpa.received == []
    finally:
        await stop_hub(h)
        await cpa.stop()
        await ema.stop()
        if backend:
            cleanup_prefix(first.key_prefix)


# -- the policy itself --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "refused"), [
    ("https://partner.example/ocpi/versions", None),
    ("http://8.8.8.8/ocpi", None),
    ("http://[2001:4860:4860::8888]/ocpi", None),
    ("http://127.0.0.1/", "loopback"),
    ("http://127.8.9.10:6379/", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://224.0.0.251/", "multicast"),
    ("http://100.64.0.1/", "non-public"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00::1]/", "private"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[2002:a00:1::]/", "private"),  # 6to4 of 10.0.0.1
    ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64 of 127.0.0.1
])
def test_addresses_written_in_a_url_are_judged_by_what_they_reach(url: str, refused: str | None) -> None:
    why = OutboundPolicy(allow_private=False).refusal(url)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why
    assert OutboundPolicy(allow_private=True).refusal(url) is None


class _FixedResolver(AbstractResolver):
    """Answers fixed addresses: a DNS server cannot run here, and rebinding needs a name whose answer we choose."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
                for a in self.addresses]

    async def close(self) -> None:
        return None


async def test_a_host_name_is_judged_by_the_addresses_it_resolves_to_at_connect_time() -> None:
    rebinding = PolicyResolver(_FixedResolver(["127.0.0.1", "::ffff:10.0.0.1"]))
    with pytest.raises(RefusedAddress, match="refused addresses"):
        await rebinding.resolve("partner.example", 443)
    mixed = PolicyResolver(_FixedResolver(["10.0.0.1", "93.184.215.14"]))
    assert [r["host"] for r in await mixed.resolve("partner.example", 443)] == ["93.184.215.14"]


async def test_the_hubs_client_session_refuses_a_name_that_resolves_to_loopback(make_hub: MakeHub) -> None:
    """End to end through the shared ClientSession: the resolver sits on its connector."""
    hub = await make_hub(allow_private_urls=False)
    session = hub.app[HUB_KEY].session
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        async with session.get("http://localhost:9/"):
            pass
    assert isinstance(caught.value.os_error, RefusedAddress)


async def test_a_partner_cannot_register_the_hubs_own_urls_as_its_endpoints(hub: HubHarness) -> None:
    """Its requests would be forwarded to the hub itself, again and again until their deadline."""
    ema = emsp()
    ema.endpoint_urls[("locations", "RECEIVER")] = f"{hub.url}/ocpi/2.2.1/receiver/locations"
    status, body = await register_raw(hub, ema)
    assert_refused(status, body, "endpoint locations RECEIVER", "the hub's own public URL")


async def test_a_versions_url_whose_name_resolves_to_loopback_fails_the_registration_uncalled(
        make_hub: MakeHub) -> None:
    hub = await make_hub(allow_private_urls=False)
    ema = emsp()
    await ema.start()
    hub.partners.append(ema)
    platform = await hub.onboard(ema)
    port = ema.base_url.rsplit(":", 1)[1]
    creds = ema.credentials(url=f"http://localhost:{port}/ocpi/versions")
    async with hub.session.post(f"{hub.url}/ocpi/2.2.1/credentials", json=creds,
                                headers={"Authorization": ocpi_token(platform["token_a"])}) as resp:
        status, body = resp.status, await resp.json()
    assert_refused(status, body, "localhost resolves only to refused addresses")
    assert ema.config_calls == []
