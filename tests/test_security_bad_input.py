"""Bad input gets a clear 4xx, never a 500: out-of-range dates, deep JSON, huge offsets, oversized bodies
(docs/security.md, "Body size and malformed input")."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

from routing.ocpi.versions import MODULES_211
from tests.conftest import ADMIN_TOKEN, HubHarness, MakeHub, cpo, emsp
from tests.partners import FakePartner, Party, Received, ocpi_token

HUB = Party("NL", "HUB", "HUB")
CPA = Party("NL", "CPA", "CPO")
OVERFLOWING_DATES = ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00")


def forwarded(partner: FakePartner) -> int:
    """Requests the partner received from other parties (fan-out and ClientInfo pushes come FROM the hub)."""
    return sum(1 for r in partner.received if r.headers.get("OCPI-from-party-id") != "HUB")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


async def test_out_of_range_dates_on_get_all_are_400_2001(hub: HubHarness) -> None:
    partner = emsp()
    await hub.connect(partner)
    for name in ("date_from", "date_to"):
        for value in OVERFLOWING_DATES:
            status, _, body = await partner.call(hub.session, "GET", "locations", "SENDER", to=HUB,
                                                 query=f"{name}={quote(value)}")
            assert (status, body["status_code"]) == (400, 2001), body
            assert name in body["status_message"]
    status, _, body = await partner.call(hub.session, "GET", "locations", "SENDER", to=HUB,
                                         query="date_from=" + quote("2024-01-01T00:00:00+05:00"))
    assert (status, body["status_code"]) == (200, 1000), body


async def test_out_of_range_dates_on_hubclientinfo_are_400_2001(hub: HubHarness) -> None:
    partner = cpo()
    await hub.connect(partner)
    async with hub.session.get(hub.url + "/ocpi/2.2.1/hubclientinfo", params={"date_to": OVERFLOWING_DATES[1]},
                               headers={"Authorization": ocpi_token(partner.token_c or "")}) as resp:
        doc = await resp.json()
        assert (resp.status, doc["status_code"]) == (400, 2001), doc


async def test_overflowing_audit_since_and_until_are_400_with_a_clear_message(hub: HubHarness) -> None:
    for name in ("since", "until"):
        for value in (*OVERFLOWING_DATES, "99999-01-01T00:00:00Z", "yesterday"):
            status, body = await hub.admin("GET", f"/admin/audit?{name}={quote(value)}")
            assert status == 400, body
            assert name in body["error"] and "DateTime" in body["error"]


async def test_huge_offset_on_get_all_is_an_empty_page_not_an_error(hub: HubHarness) -> None:
    partner = emsp()
    await hub.connect(partner)
    status, _, body = await partner.call(hub.session, "GET", "locations", "SENDER", to=HUB,
                                         query="offset=" + "9" * 40)
    assert (status, body["status_code"], body["data"]) == (200, 1000, []), body
    status, _, body = await partner.call(hub.session, "GET", "locations", "SENDER", to=HUB,
                                         query="offset=" + "9" * 5000)
    assert (status, body["status_code"]) == (400, 2001), body


async def test_deeply_nested_json_on_the_admin_api_is_400_not_a_recursion_error(hub: HubHarness) -> None:
    for depth in (40, 5000, 100_000):
        async with hub.session.post(hub.url + "/admin/platforms", data=nested(depth),
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                             "Content-Type": "application/json"}) as resp:
            doc = await resp.json()
            assert resp.status == 400, doc
            assert "JSON" in doc["error"]
    status, body = await hub.admin("GET", "/admin/platforms")
    assert status == 200 and body == []


async def test_deeply_nested_json_on_ocpi_is_400_2001_and_never_forwarded(hub: HubHarness) -> None:
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    await hub.connect(receiver)
    before = forwarded(receiver)
    to = Party("DE", "EMA", "EMSP")
    for depth in (40, 300, 5000):
        for target, tail in ((to, "NL/CPA/LOC1"), (HUB, "NL/CPA/LOC1")):
            doc = b'{"country_code": "NL", "party_id": "CPA", "id": "LOC1", "x": ' + nested(depth) + b"}"
            status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", tail, to=target,
                                                data=doc, headers={"Content-Type": "application/json"})
            assert (status, body["status_code"]) == (400, 2001), body
            assert "JSON" in body["status_message"]
    # A body nested within the limit still goes through, as it is.
    within: Any = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "x": json.loads(nested(20))}
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=to,
                                        json=within)
    assert (status, body["status_code"]) == (200, 1000), body
    assert forwarded(receiver) == before + 1
    assert receiver.received[-1].json() == within


async def test_body_over_the_limit_is_413_envelope_and_never_forwarded(make_hub: MakeHub) -> None:
    hub = await make_hub(max_body_bytes=32 * 1024)
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    await hub.connect(receiver)
    to = Party("DE", "EMA", "EMSP")
    pad = "x" * (32 * 1024)
    status, headers, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=to,
                                              json={"country_code": "NL", "party_id": "CPA", "id": "LOC1", "p": pad})
    assert (status, body["status_code"]) == (413, 2000), body
    assert str(32 * 1024) in body["status_message"] and "timestamp" in body
    assert headers["X-Request-ID"]

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading, too
        for _ in range(64):
            yield b" " * 1024
            await asyncio.sleep(0)

    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=to,
                                        data=chunks())  # type: ignore[arg-type]
    assert (status, body["status_code"]) == (413, 2000), body
    assert forwarded(receiver) == 0
    # Just under the limit: routed as usual.
    doc = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "p": "x" * (31 * 1024)}
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=to, json=doc)
    assert (status, body["status_code"]) == (200, 1000), body
    assert forwarded(receiver) == 1


async def test_body_over_the_limit_on_admin_and_credentials_is_413(make_hub: MakeHub) -> None:
    hub = await make_hub(max_body_bytes=16 * 1024)
    big = b'{"name": "' + b"x" * (17 * 1024) + b'"}'
    async with hub.session.post(hub.url + "/admin/platforms", data=big,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        doc = await resp.json()
        assert resp.status == 413 and "16384" in doc["error"], doc
    platform = await hub.onboard(cpo())
    async with hub.session.post(hub.url + "/ocpi/2.2.1/credentials", data=big,
                                headers={"Authorization": f"Token {platform['token_a']}"}) as resp:
        doc = await resp.json()
        assert (resp.status, doc["status_code"]) == (413, 2000), doc
    status, body = await hub.admin("GET", f"/admin/platforms/{platform['id']}")
    assert (status, body["status"]) == (200, "PLANNED")  # nothing registered


async def test_compressed_bodies_are_limited_after_decoding_and_broken_ones_are_400_2001(hub: HubHarness) -> None:
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    await hub.connect(receiver)
    to = Party("DE", "EMA", "EMSP")
    bomb = gzip.compress(b'{"id": "' + b"0" * (16 * 1024 * 1024) + b'"}', 1)  # 16 MiB in about 70 KiB
    for payload, expected in ((bomb, (413, 2000)), (b"not gzip at all", (400, 2001))):
        status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=to,
                                            data=payload, headers={"Content-Encoding": "gzip"})
        assert (status, body["status_code"]) == expected, body
    assert forwarded(receiver) == 0
    doc = {"country_code": "NL", "party_id": "CPA", "id": "LOC1"}
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1", to=to,
                                        data=gzip.compress(json.dumps(doc).encode()),
                                        headers={"Content-Encoding": "gzip"})
    assert (status, body["status_code"]) == (200, 1000), body
    assert receiver.received[-1].json() == doc


async def test_a_token_whose_type_is_not_a_string_is_400_2001_and_neither_stored_nor_forwarded(hub: HubHarness) -> None:
    sender, receiver = emsp(), cpo()
    await hub.connect(sender)
    await hub.connect(receiver)
    token = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "contract_id": "DE-EMA-1", "issuer": "Beta",
             "valid": True, "whitelist": "ALLOWED", "last_updated": "2024-05-01T10:00:00Z"}
    for bad_type in ([None], {"a": 1}, 7):
        for to in (HUB, Party("NL", "CPA", "CPO")):
            status, _, body = await sender.call(hub.session, "PUT", "tokens", "RECEIVER", "DE/EMA/TOK1", to=to,
                                                json={**token, "type": bad_type})
            assert (status, body["status_code"]) == (400, 2001), body
            assert "type" in body["status_message"]
    await asyncio.sleep(0.2)  # a fan-out would have been delivered by now
    assert forwarded(receiver) == 0 and receiver.received == []
    status, _, body = await receiver.call(hub.session, "GET", "tokens", "SENDER", to=HUB)
    assert (status, body["data"]) == (200, []), body


async def deep_partner(deep_at: str) -> tuple[web.AppRunner, str]:
    """A partner whose answer at ``deep_at`` (versions, details or credentials) is JSON nested 100 000 levels deep;
    its other answers are valid, so each call of a registration can be the one that gets it."""
    base = ""

    async def answer(request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1]
        if name == deep_at:
            return web.Response(body=b'{"status_code": 1000, "data": ' + nested(100_000) + b"}",
                                content_type="application/json")
        data: Any = {
            "versions": [{"version": "2.2.1", "url": f"{base}/details"}],
            "details": {"version": "2.2.1", "endpoints": [
                {"identifier": "credentials", "role": "RECEIVER", "url": f"{base}/credentials"},
                {"identifier": "locations", "role": "RECEIVER", "url": f"{base}/locations"}]},
        }.get(name)
        return web.json_response({"status_code": 1000, "data": data, "timestamp": "2024-01-01T00:00:00Z"})

    app = web.Application()
    app.router.add_route("*", "/{name}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner, base


async def test_a_partner_answering_deeply_nested_json_during_registration_is_3001_not_a_500(hub: HubHarness) -> None:
    """OCPI 2.2.1 credentials: the hub's calls to a registering client's API that fail are 3001; a RecursionError
    in the JSON parser was a 500 / 3000 and a traceback, caused by any partner holding a Token A."""
    for i, deep_at in enumerate(("versions", "details")):
        runner, base = await deep_partner(deep_at)
        try:
            platform = await hub.onboard(FakePartner(name=f"Deep {i}", parties=[Party("FR", f"DP{i}", "CPO")]))
            creds = {"token": "deep-partner-token", "url": f"{base}/versions", "roles": [
                {"role": "CPO", "country_code": "FR", "party_id": f"DP{i}", "business_details": {"name": "Deep"}}]}
            async with hub.session.post(hub.url + "/ocpi/2.2.1/credentials", json=creds,
                                        headers={"Authorization": ocpi_token(platform["token_a"])}) as resp:
                doc = await resp.json()
                assert (resp.status, doc["status_code"]) == (400, 3001), doc
                assert "JSON" in doc["status_message"]
        finally:
            await runner.cleanup()
    # The hub registering with a partner (admin connect): its versions, details and credentials answers.
    for deep_at in ("versions", "details", "credentials"):
        runner, base = await deep_partner(deep_at)
        try:
            status, body = await hub.admin("POST", "/admin/platforms/connect",
                                           {"name": "Deep", "versions_url": f"{base}/versions", "token_a": "t"})
            assert status == 502 and "OCPI 3001" in body["error"] and "JSON" in body["error"], body
        finally:
            await runner.cleanup()


async def test_objects_of_the_wrong_shape_crossing_ocpi_versions_are_refused_or_dropped_never_a_500(
        hub: HubHarness) -> None:
    """Bodies are translated between OCPI versions (docs/versions.md); the translators read OCPI shapes, and a
    body or answer of another shape (a list for a Session, a number for a token) used to raise AttributeError or
    TypeError in them: 500 / 3000. A request is now refused (400 / 2001, nothing forwarded), an answer's object
    left out and reported, as for any value the target version cannot hold."""
    old = FakePartner(name="CPO 2.1.1", parties=[Party("NL", "OLD", "CPO")], version="2.1.1",
                      modules={m: ("SENDER", "RECEIVER") for m in MODULES_211})
    ema = emsp()
    await hub.connect(old)
    await hub.connect(ema)
    lu = "2024-01-01T00:00:00Z"
    # A 2.1.1 CPO's pushes, read as 2.2.1 before anything is routed.
    for method, module, tail, body in (
            ("PUT", "sessions", "NL/OLD/S1", []), ("PUT", "sessions", "NL/OLD/S1", 1), ("POST", "cdrs", "", "x"),
            ("PUT", "tariffs", "NL/OLD/T1", {"id": "T1", "currency": "EUR", "elements": 5, "last_updated": lu})):
        status, _, doc = await old.call(hub.session, method, module, "RECEIVER", tail, json=body)
        assert (status, doc["status_code"]) == (400, 2001), (module, body, doc)
        assert "not a well-formed OCPI 2.1.1" in doc["status_message"]
    # A 2.2.1 eMSP's command to the 2.1.1 CPO, written in 2.1.1 before it is forwarded.
    for body in (1, {"response_url": f"{ema.base_url}/cb", "token": 5, "location_id": "LOC1"}):
        status, _, doc = await ema.call(hub.session, "POST", "commands", "RECEIVER", "START_SESSION", to=old.party,
                                        json=body)
        assert (status, doc["status_code"]) == (400, 2001), (body, doc)
    await asyncio.sleep(0.2)
    assert forwarded(old) == 0 and forwarded(ema) == 0

    # The 2.1.1 CPO's answer to a 2.2.1 pull: what is no Session is left out of the page.
    async def junk(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.json_response({"status_code": 1000, "timestamp": lu, "data": [1, "x", []]})

    old.responder = junk
    status, _, doc = await ema.call(hub.session, "GET", "sessions", "SENDER", to=old.party)
    assert (status, doc["status_code"], doc["data"]) == (200, 1000, []), doc


async def test_a_broadcast_push_whose_last_updated_is_no_string_is_400_2001_and_neither_stored_nor_sent(
        hub: HubHarness) -> None:
    """OCPI 2.2.1 types: last_updated is a DateTime, a string. A number or an object was taken as "no
    last_updated" (the time of receipt) and the push stored and fanned out, while the string "x" was refused."""
    sender, receiver = cpo(), emsp()
    await hub.connect(sender)
    await hub.connect(receiver)
    location = {"country_code": "NL", "party_id": "CPA", "id": "LOC1"}
    evse = {"uid": "EVSE1", "status": "AVAILABLE", "connectors": []}
    for bad in (5, ["2024-01-01T00:00:00Z"], {"at": "2024-01-01T00:00:00Z"}, True, "x"):
        # A whole Location, a PATCH of one the hub never saw, an EVSE of one: each is refused alike.
        for method, tail, obj in (("PUT", "NL/CPA/LOC1", location), ("PATCH", "NL/CPA/LOC1", location),
                                  ("PUT", "NL/CPA/LOC1/EVSE1", evse)):
            status, _, body = await sender.call(hub.session, method, "locations", "RECEIVER", tail, to=HUB,
                                                json={**obj, "last_updated": bad})
            assert (status, body["status_code"]) == (400, 2001), (method, tail, bad, body)
            assert "last_updated" in body["status_message"]
    await asyncio.sleep(0.2)  # a fan-out would have been delivered by now
    assert [r for r in receiver.received if "/locations" in r.path] == []
    status, _, body = await receiver.call(hub.session, "GET", "locations", "SENDER", to=HUB)
    assert (status, body["data"]) == (200, []), body
