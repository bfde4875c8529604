"""A receiver cannot make the hub buffer an answer without bound (docs/security.md, "Admission").

A hostile or broken receiver may answer a forwarded request with an enormous body, with or without a
``Content-Length``. The hub reads at most ``HUB_MAX_REPLY_BYTES`` of it and answers the caller 502 / 4000.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from hub.audit import AuditQuery
from hub.context import HUB_KEY
from routing.ocpi.versions import MODULES_211
from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import FakePartner, Party, Received, ocpi_token
from tests.test_dead_letters import location
from tests.test_routing_errors import as_, assert_hub_error, pair, routing, send

LIMIT = 64 * 1024
ENVELOPE_HEAD = b'{"status_code": 1000, "timestamp": "2024-01-01T00:00:00Z", "data": "'


def _huge(declared: bool) -> object:
    """An OCPI envelope of 4 x LIMIT bytes, sent with a Content-Length or chunked (no length)."""
    body = ENVELOPE_HEAD + b"x" * (4 * LIMIT) + b'"}'

    async def respond(request: web.Request, rec: Received) -> web.StreamResponse:
        if declared:
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(body), 8192):
            await resp.write(body[start:start + 8192])
        await resp.write_eof()
        return resp

    return respond


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_larger_than_the_reply_limit_is_502_4000_and_not_relayed(
        make_hub: MakeHub, declared: bool) -> None:
    hub = await make_hub(max_reply_bytes=LIMIT)
    alpha, beta = await pair(hub)
    beta.responder = _huge(declared)
    headers = as_(alpha, **routing(to=beta.party))
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    doc = assert_hub_error(reply, headers, http=502, code=4000, requester=alpha.party)
    assert "larger than the hub accepts" in doc["status_message"]
    assert len(reply[2]) < LIMIT


async def test_an_answer_within_the_reply_limit_is_relayed_whole(make_hub: MakeHub) -> None:
    hub = await make_hub(max_reply_bytes=LIMIT)
    alpha, beta = await pair(hub)
    body = ENVELOPE_HEAD + b"x" * (LIMIT // 2) + b'"}'

    async def chunked(request: web.Request, rec: Received) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    beta.responder = chunked
    headers = as_(alpha, **routing(to=beta.party))
    status, _, raw = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert status == 200 and raw == body


def _nested_location(depth: int) -> bytes:
    """A 2.1.1 answer whose Location carries a field nested ``depth`` levels deep (orjson reads up to
    1024 levels, Python's recursion limit is about 1000, orjson writes at most 254)."""
    return (b'{"status_code": 1000, "timestamp": "2024-01-01T00:00:00Z", "data": {"id": "LOC1", "type": "ON_STREET", '
            b'"address": "a", "city": "c", "postal_code": "1", "country": "NLD", "coordinates": {"latitude": "52.3", '
            b'"longitude": "4.9"}, "last_updated": "2024-01-01T00:00:00Z", "facilities": '
            + b'{"a": ' * depth + b"1" + b"}" * depth + b"}}")


@pytest.mark.parametrize("depth", [300, 900])
async def test_an_answer_nested_too_deep_to_translate_is_502_4000_not_a_500(hub: HubHarness, depth: int) -> None:
    """A 2.1.1 receiver's answer is translated for a 2.2.1 caller; one nested deeper than the hub's JSON limit
    (MAX_JSON_DEPTH) used to fail the translation with a RecursionError or orjson's encoder: 500 / 3000."""
    old = FakePartner(name="CPO 2.1.1", parties=[Party("NL", "CPO", "CPO")], version="2.1.1",
                      modules={m: ("SENDER", "RECEIVER") for m in MODULES_211})
    caller = emsp()
    await hub.connect(old)
    await hub.connect(caller)

    async def deep(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.Response(body=_nested_location(depth), content_type="application/json")

    async def shallow(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.Response(body=_nested_location(3), content_type="application/json")

    old.responder = deep
    status, _, body = await caller.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=old.party)
    assert (status, body["status_code"]) == (502, 4000), body
    assert "deeper" in body["status_message"]
    old.responder = shallow  # the same call, answered within the limit, is translated as usual
    status, _, body = await caller.call(hub.session, "GET", "locations", "SENDER", "LOC1", to=old.party)
    assert (status, body["status_code"]) == (200, 1000), body


async def test_a_partner_answering_without_end_during_registration_is_3001_at_the_reply_limit(
        make_hub: MakeHub) -> None:
    """The calls the hub makes while a partner registers (versions, version details) read at most
    HUB_MAX_REPLY_BYTES too: an answer that never ends used to be buffered until the registration timeout, however
    many bytes came in meanwhile."""
    hub = await make_hub(max_reply_bytes=LIMIT, registration_timeout=10.0)

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"status_code": 1000, "data": "')
        while True:
            await resp.write(b"x" * 65536)

    app = web.Application()
    app.router.add_get("/versions", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        platform = await hub.onboard(FakePartner(name="Endless", parties=[Party("FR", "END", "CPO")]))
        creds = {"token": "endless-token", "url": f"http://127.0.0.1:{runner.addresses[0][1]}/versions",
                 "roles": [{"role": "CPO", "country_code": "FR", "party_id": "END", "business_details": {"name": "E"}}]}
        started = time.monotonic()
        async with hub.session.post(hub.url + "/ocpi/2.2.1/credentials", json=creds,
                                    headers={"Authorization": ocpi_token(platform["token_a"])}) as resp:
            doc = await resp.json()
        assert (resp.status, doc["status_code"]) == (400, 3001), doc
        assert "larger than the hub accepts" in doc["status_message"]
        assert time.monotonic() - started < 5
    finally:
        await runner.cleanup()


async def many_partner(versions: int, endpoints: int) -> tuple[web.AppRunner, str]:
    """A partner listing ``versions`` versions (the first one real) and ``endpoints`` locations endpoints."""
    base = ""

    async def answer(request: web.Request) -> web.Response:
        if request.path == "/versions":
            data: object = [{"version": "2.2.1", "url": f"{base}/details"}] + [
                {"version": f"9.{i}", "url": f"{base}/v/{i}"} for i in range(versions - 1)]
        else:
            data = {"version": "2.2.1", "endpoints": [
                {"identifier": "credentials", "role": "RECEIVER", "url": f"{base}/credentials"}] + [
                {"identifier": "locations", "role": "RECEIVER", "url": f"{base}/locations/{i}"}
                for i in range(endpoints - 1)]}
        return web.json_response({"status_code": 1000, "data": data, "timestamp": "2024-01-01T00:00:00Z"})

    app = web.Application()
    app.router.add_get("/versions", answer)
    app.router.add_get("/details", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner, base


@pytest.mark.parametrize(("versions", "endpoints", "what"), [(1, 20_000, "endpoints"), (20_000, 2, "versions")])
async def test_a_partner_listing_thousands_of_versions_or_endpoints_is_3001_and_nothing_is_kept(
        hub: HubHarness, versions: int, endpoints: int, what: str) -> None:
    """OCPI has a handful of versions and about twenty endpoints per version. Tens of thousands, within the reply
    limit, were all validated, checked against the outbound-URL policy and stored with the platform: a process
    stalled for seconds per registration, and every later save and load of the platform carried them."""
    runner, base = await many_partner(versions, endpoints)
    try:
        platform = await hub.onboard(FakePartner(name="Many", parties=[Party("FR", "MNY", "CPO")]))
        creds = {"token": "many-token", "url": f"{base}/versions", "roles": [
            {"role": "CPO", "country_code": "FR", "party_id": "MNY", "business_details": {"name": "Many"}}]}
        async with hub.session.post(hub.url + "/ocpi/2.2.1/credentials", json=creds,
                                    headers={"Authorization": ocpi_token(platform["token_a"])}) as resp:
            doc = await resp.json()
        assert (resp.status, doc["status_code"]) == (400, 3001), doc
        assert what in doc["status_message"]
        status, view = await hub.admin("GET", f"/admin/platforms/{platform['id']}")
        assert (status, view["status"], view["endpoints"]) == (200, "PLANNED", []), view
    finally:
        await runner.cleanup()


ENVELOPE_1000 = b'{"status_code": 1000, "status_message": "Success", "timestamp": "2024-01-01T00:00:00Z"}'


def _status(status: int) -> object:
    """A well-formed OCPI envelope under any HTTP status the receiver chooses (aiohttp writes what it is given)."""

    async def respond(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.Response(body=ENVELOPE_1000, status=status, content_type="application/json")

    return respond


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
@pytest.mark.parametrize("status", [600, 999])
async def test_a_receiver_status_outside_100_to_599_is_502_4000_and_recorded(
        make_hub: MakeHub, status: int, client: str) -> None:
    """RFC 9110 §15: every valid status code is in 100-599. A receiver answering 999 is broken: its answer is not
    relayed (the caller would get a status line no HTTP client expects), and the audit keeps what it sent."""
    hub = await make_hub(forward_client=client)
    alpha, beta = await pair(hub)
    beta.responder = _status(status)
    headers = as_(alpha, **routing(to=beta.party))
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    doc = assert_hub_error(reply, headers, http=502, code=4000, requester=alpha.party)
    assert f"HTTP status {status}" in doc["status_message"]
    assert len(beta.received) == 1
    hub_state = hub.app[HUB_KEY]
    await hub_state.audit.flush()
    (record,) = await hub_state.store.query_audit(AuditQuery(request_id=headers["X-Request-ID"]))
    assert (record.http_status, record.ocpi_status, record.receiver_http_status) == (502, 4000, status)


async def test_a_receiver_status_of_599_is_valid_and_relayed(hub: HubHarness) -> None:
    """The upper bound of the valid range: a 5xx with an OCPI envelope is the receiver's own error (relayed)."""
    alpha, beta = await pair(hub)
    beta.responder = _status(599)
    headers = as_(alpha, **routing(to=beta.party))
    status, _, raw = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert (status, raw) == (599, ENVELOPE_1000)


async def test_a_push_answered_with_an_invalid_status_is_a_dead_letter_at_once(make_hub: MakeHub) -> None:
    """A broadcast push answered 999 is not a 5xx the receiver may recover from: it is refused for good (dead
    letter after one try, as a malformed answer under a non-5xx status), not retried for the whole window."""
    hub = await make_hub(broadcast_retry_window=30)
    sender, broken = cpo(), emsp("Broken eMSP", "EMB")
    await hub.connect(sender)
    broken_id = (await hub.connect(broken))["id"]
    broken.responder = _status(999)
    status, _, body = await sender.call(hub.session, "PUT", "locations", "RECEIVER", "NL/CPA/LOC1",
                                        to=Party("NL", "HUB", "HUB"), json=location())
    assert (status, body["status_code"]) == (200, 1000), body
    deadline = time.monotonic() + 5
    while not (letters := (await hub.admin("GET", f"/admin/dead-letters?receiver={broken_id}"))[1]):
        assert time.monotonic() < deadline, f"no dead letter; tries so far: {len(broken.received)}"
        await asyncio.sleep(0.05)
    (letter,) = letters
    assert letter["attempts"] == 1 and "4000" in letter["reason"] and "999" in letter["reason"], letter
    assert len(broken.received) == 1
