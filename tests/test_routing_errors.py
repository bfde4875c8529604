"""Every way a functional-module request can fail at the hub, end to end over HTTP (docs/ocpi-decisions.md–3.11, §4).

Whatever went wrong, the caller gets an OCPI envelope (status_code, status_message, timestamp) with the documented
HTTP status, its own X-Request-ID and X-Correlation-ID, and routing headers TO = requester, FROM = hub — never
HTML or a stack trace. A request refused by the hub never reaches a receiver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import HubHarness, MakeHub, cpo, emsp
from tests.partners import FakePartner, Party, Received, ocpi_token
from tests.rawhttp import raw_request

HUB = ("NL", "HUB")
LOCATION = {"country_code": "NL", "party_id": "CPA", "id": "LOC1", "last_updated": "2024-01-01T00:00:00Z"}
TOKEN = {"country_code": "DE", "party_id": "EMA", "uid": "TOK1", "type": "RFID", "last_updated": "2024-01-01T00:00:00Z"}


async def send(
    hub: HubHarness, method: str, url: str, headers: dict[str, str], data: bytes | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    """A request exactly as given: no header added, none removed."""
    async with hub.session.request(method, url, headers=headers, data=data) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


def ids() -> dict[str, str]:
    return {"X-Request-ID": "req-" + uuid.uuid4().hex, "X-Correlation-ID": "corr-" + uuid.uuid4().hex}


def routing(to: Party | None = None, from_: Party | None = None) -> dict[str, str]:
    h = {}
    if to is not None:
        h["OCPI-to-country-code"], h["OCPI-to-party-id"] = to.country_code, to.party_id
    if from_ is not None:
        h["OCPI-from-country-code"], h["OCPI-from-party-id"] = from_.country_code, from_.party_id
    return h


def assert_hub_error(
    reply: tuple[int, CIMultiDict[str], bytes],
    sent: dict[str, str],
    *,
    http: int,
    code: int,
    requester: Party | None,
) -> dict[str, Any]:
    """The hub's own error answer: OCPI envelope, the caller's ids, TO = requester, FROM = hub."""
    status, headers, raw = reply
    text = raw.decode(errors="replace")
    assert status == http, text
    assert headers.get("Content-Type", "").startswith("application/json"), text
    assert "<html" not in text.lower() and "Traceback" not in text
    doc = json.loads(raw)
    assert doc["status_code"] == code, doc
    assert isinstance(doc["status_message"], str) and doc["status_message"], doc
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["timestamp"]), doc
    assert headers.get("X-Request-ID") == sent["X-Request-ID"]
    assert headers.get("X-Correlation-ID") == sent["X-Correlation-ID"]
    assert (headers.get("OCPI-from-country-code"), headers.get("OCPI-from-party-id")) == HUB
    if requester is None:
        assert "OCPI-to-country-code" not in headers and "OCPI-to-party-id" not in headers
    else:
        assert (headers.get("OCPI-to-country-code"), headers.get("OCPI-to-party-id")) == (
            requester.country_code, requester.party_id)
    return dict(doc)


async def pair(hub: HubHarness, **emsp_modules: tuple[str, ...]) -> tuple[FakePartner, FakePartner]:
    alpha = cpo()
    beta = emsp(modules=emsp_modules or None)
    await hub.connect(alpha)
    await hub.connect(beta)
    return alpha, beta


def as_(partner: FakePartner, **extra: str) -> dict[str, str]:
    """Headers of a well-formed request from ``partner`` (Token C, ids, FROM = its party)."""
    return {"Authorization": ocpi_token(partner.token_c or ""), **ids(), **routing(from_=partner.party), **extra}


# -- authentication: HTTP 401 ------------------------------------------------------------------------------------


UNKNOWN_TOKEN_B64 = "Token " + base64.b64encode(b"nope").decode()


@pytest.mark.parametrize("authorization", [None, "", "Token ", "Bearer abc", UNKNOWN_TOKEN_B64, "Token nope"],
                         ids=["missing", "empty", "no-token", "bearer", "unknown-base64", "unknown-raw"])
async def test_a_request_without_a_known_token_is_401(hub: HubHarness, authorization: str | None) -> None:
    alpha, beta = await pair(hub)
    headers = {**ids(), **routing(to=beta.party, from_=alpha.party)}
    if authorization is not None:
        headers["Authorization"] = authorization
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert_hub_error(reply, headers, http=401, code=2000, requester=alpha.party)
    assert not beta.received


async def test_token_a_does_not_open_functional_modules(hub: HubHarness) -> None:
    """Token A works on versions and credentials only (OCPI 2.2.1 Authorization header): refused before registration,
    dead after."""
    alpha = cpo()
    registered = await hub.connect(alpha)
    beta = emsp()
    await hub.connect(beta)
    waiting = cpo("Waiting CPO", "CPW")
    pending = await hub.onboard(waiting)
    for token, caller in ((pending["token_a"], waiting), (registered["token_a"], alpha)):
        headers = {"Authorization": ocpi_token(token), **ids(), **routing(to=beta.party, from_=caller.party)}
        reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", f"NL/{caller.party.party_id}/LOC1"),
                           headers)
        assert_hub_error(reply, headers, http=401, code=2000, requester=caller.party)
    # versions still takes the pending Token A: the 401 above is about the module, not a mistyped token
    async with hub.session.get(hub.url + "/ocpi/versions",
                               headers={"Authorization": ocpi_token(pending["token_a"])}) as resp:
        assert resp.status == 200
    assert not beta.received


async def test_a_suspended_caller_is_refused(hub: HubHarness) -> None:
    alpha, beta = await pair(hub)
    platforms = {p["name"]: p["id"] for p in (await hub.admin("GET", "/admin/platforms"))[1]}
    assert (await hub.admin("POST", f"/admin/platforms/{platforms[alpha.name]}/suspend"))[0] == 200
    headers = as_(alpha, **routing(to=beta.party))
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    doc = assert_hub_error(reply, headers, http=403, code=2000, requester=alpha.party)
    assert "suspend" in doc["status_message"].lower()
    assert not beta.received


# -- anti-spoofing and routing headers: HTTP 403 / 400 with 2xxx -------------------------------------------------


@pytest.mark.parametrize("claimed", [Party("DE", "EMA", "EMSP"), Party("XX", "ZZZ", "CPO")],
                         ids=["another-platforms-party", "unknown-party"])
async def test_a_from_pair_the_platform_does_not_host_is_403(hub: HubHarness, claimed: Party) -> None:
    alpha, beta = await pair(hub)
    headers = {**as_(alpha), **routing(to=beta.party, from_=claimed)}
    reply = await send(hub, "GET", alpha.hub_url("tokens", "SENDER"), headers)
    assert_hub_error(reply, headers, http=403, code=2001, requester=claimed)
    assert not beta.received


@pytest.mark.parametrize("present", [
    {"OCPI-to-country-code": "DE"},
    {"OCPI-to-party-id": "EMA"},
    {"OCPI-to-country-code": "DE", "OCPI-to-party-id": ""},
    {"OCPI-to-country-code": "DEU", "OCPI-to-party-id": "EMA"},
    {"OCPI-to-country-code": "DE", "OCPI-to-party-id": "EMAX"},
    {"OCPI-to-country-code": "D1", "OCPI-to-party-id": "EMA"},
    {"OCPI-to-country-code": "DE", "OCPI-to-party-id": "EM-"},
    {"OCPI-to-country-code": "DÉ", "OCPI-to-party-id": "EMA"},
    {"OCPI-to-country-code": "DE", "OCPI-to-party-id": "EM²"},
], ids=["to-country-only", "to-party-only", "to-party-empty", "to-country-too-long", "to-party-too-long",
        "to-country-digit", "to-party-punctuation", "to-country-not-ascii", "to-party-not-ascii"])
async def test_a_broken_to_pair_is_400_2001(hub: HubHarness, present: dict[str, str]) -> None:
    alpha, beta = await pair(hub)
    headers = {**as_(alpha), **present}
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert_hub_error(reply, headers, http=400, code=2001, requester=alpha.party)
    assert not beta.received


@pytest.mark.parametrize("present", [
    {}, {"OCPI-from-country-code": "NL"}, {"OCPI-from-party-id": "CPA"},
], ids=["no-from", "from-country-only", "from-party-only"])
async def test_a_missing_or_half_from_pair_is_400_2001(hub: HubHarness, present: dict[str, str]) -> None:
    alpha, beta = await pair(hub)
    headers = {"Authorization": ocpi_token(alpha.token_c or ""), **ids(), **routing(to=beta.party), **present}
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert_hub_error(reply, headers, http=400, code=2001, requester=None)
    assert not beta.received


# Client Owned Objects: path party = FROM, body party = path party, body id = path id (OCPI 2.2.1 Client Owned
# Objects; docs/ocpi-decisions.md).
OWNERSHIP = [
    ("cpo", "PUT", "locations", "DE/EMA/LOC1", {**LOCATION, "country_code": "DE", "party_id": "EMA"}),
    ("cpo", "GET", "locations", "NL/CPB/LOC1", None),
    ("cpo", "PATCH", "sessions", "NL/CPB/S1", {"kwh": 1, "last_updated": "2024-01-01T00:00:00Z"}),
    ("emsp", "PUT", "tokens", "NL/CPA/TOK1", {**TOKEN, "country_code": "NL", "party_id": "CPA"}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1", {**LOCATION, "party_id": "CPB"}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1", {**LOCATION, "country_code": "BE"}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1", {k: v for k, v in LOCATION.items() if k != "party_id"}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1", {**LOCATION, "id": "LOC2"}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1", {k: v for k, v in LOCATION.items() if k != "id"}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1/EVSE1", {"uid": "EVSE2", "status": "AVAILABLE"}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1/EVSE1/1", {"id": "2"}),
    ("cpo", "PATCH", "locations", "NL/CPA/LOC1/EVSE1", {"uid": "EVSE2", "status": "CHARGING"}),
    ("cpo", "PUT", "sessions", "NL/CPA/S1", {"country_code": "NL", "party_id": "CPA", "id": "S2"}),
    ("cpo", "PUT", "tariffs", "NL/CPA/T1", {"country_code": "NL", "party_id": "CPB", "id": "T1"}),
    ("emsp", "PUT", "tokens", "DE/EMA/TOK1", {**TOKEN, "uid": "TOK2"}),
    ("emsp", "PATCH", "tokens", "DE/EMA/TOK1", {"party_id": "EMB", "valid": False}),
    ("cpo", "POST", "cdrs", "", {"country_code": "NL", "party_id": "CPB", "id": "CDR1"}),
    ("cpo", "PUT", "locations", "NL/CPA", {**LOCATION}),
    ("cpo", "PUT", "locations", "NL/CPA/LOC1", [LOCATION]),
]


@pytest.mark.parametrize(("who", "method", "module", "tail", "body"), OWNERSHIP, ids=[
    "path-party-not-from", "get-path-party-not-from", "patch-path-party-not-from", "token-path-party-not-from",
    "body-party-id-not-path", "body-country-not-path", "body-party-missing", "body-id-not-path", "body-id-missing",
    "evse-uid-not-path", "connector-id-not-path", "patch-evse-uid-not-path", "session-id-not-path",
    "tariff-party-not-path", "token-uid-not-path", "patch-token-party-not-path", "cdr-party-not-from",
    "path-without-id", "body-not-an-object",
])
async def test_a_client_owned_object_that_does_not_match_path_and_from_is_400_2001(
    hub: HubHarness, who: str, method: str, module: str, tail: str, body: Any
) -> None:
    alpha, beta = await pair(hub)
    caller, receiver = (alpha, beta) if who == "cpo" else (beta, alpha)
    headers = as_(caller, **routing(to=receiver.party), **({"Content-Type": "application/json"} if body else {}))
    data = json.dumps(body).encode() if body is not None else None
    reply = await send(hub, method, caller.hub_url(module, "RECEIVER", tail), headers, data)
    assert_hub_error(reply, headers, http=400, code=2001, requester=caller.party)
    assert not receiver.received


@pytest.mark.parametrize("body", [b"{not json", b'{"id": "LOC1",}', b"\xff\xfe", b"<xml/>"],
                         ids=["broken", "trailing-comma", "not-utf8", "xml"])
async def test_invalid_json_is_400_2001_and_never_forwarded(hub: HubHarness, body: bytes) -> None:
    alpha, beta = await pair(hub)
    headers = as_(alpha, **routing(to=beta.party), **{"Content-Type": "application/json"})
    reply = await send(hub, "PUT", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers, body)
    assert_hub_error(reply, headers, http=400, code=2001, requester=alpha.party)
    reply = await send(hub, "POST", alpha.hub_url("tokens", "SENDER", "TOK1/authorize"), headers, body)
    assert_hub_error(reply, headers, http=400, code=2001, requester=alpha.party)
    await asyncio.sleep(0.05)
    assert not beta.received


# -- the receiver: 4001 / 4003 / 4002 / 4000 ---------------------------------------------------------------------


async def test_an_unknown_receiver_is_404_4001(hub: HubHarness) -> None:
    alpha, beta = await pair(hub)
    headers = as_(alpha, **routing(to=Party("XX", "ZZZ", "EMSP")))
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert_hub_error(reply, headers, http=404, code=4001, requester=alpha.party)
    assert not beta.received


@pytest.mark.parametrize("missing", ["module", "role"])
async def test_a_receiver_without_that_module_interface_is_404_4001(hub: HubHarness, missing: str) -> None:
    """Current choice (routing/router.py): the party exists, but cannot be reached for this module and role."""
    modules = {"locations": ("SENDER",)} if missing == "role" else {"tariffs": ("SENDER", "RECEIVER")}
    alpha, beta = await pair(hub, **modules)
    headers = as_(alpha, **routing(to=beta.party), **{"Content-Type": "application/json"})
    reply = await send(hub, "PUT", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers,
                       json.dumps(LOCATION).encode())
    doc = assert_hub_error(reply, headers, http=404, code=4001, requester=alpha.party)
    assert "locations RECEIVER" in doc["status_message"]
    assert not beta.received


async def test_a_receiver_that_has_not_registered_yet_is_503_4003(hub: HubHarness) -> None:
    alpha = cpo()
    await hub.connect(alpha)
    planned = emsp()
    await hub.onboard(planned)  # PLANNED: onboarded, never registered
    headers = as_(alpha, **routing(to=planned.party))
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    doc = assert_hub_error(reply, headers, http=503, code=4003, requester=alpha.party)
    assert "PLANNED" in doc["status_message"]


async def test_a_suspended_receiver_is_503_4003_and_reachable_again_after_resume(hub: HubHarness) -> None:
    alpha, beta = await pair(hub)
    platforms = {p["name"]: p["id"] for p in (await hub.admin("GET", "/admin/platforms"))[1]}
    assert (await hub.admin("POST", f"/admin/platforms/{platforms[beta.name]}/suspend"))[0] == 200
    headers = as_(alpha, **routing(to=beta.party))
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    doc = assert_hub_error(reply, headers, http=503, code=4003, requester=alpha.party)
    assert "SUSPENDED" in doc["status_message"]
    assert not beta.received
    assert (await hub.admin("POST", f"/admin/platforms/{platforms[beta.name]}/resume"))[0] == 200
    status, _, _ = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), as_(
        alpha, **routing(to=beta.party)))
    assert status == 200
    assert len(beta.received) == 1


async def test_a_receiver_that_is_down_is_503_4003(hub: HubHarness) -> None:
    alpha, beta = await pair(hub)
    await beta.stop()
    headers = as_(alpha, **routing(to=beta.party))
    started = time.monotonic()
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert_hub_error(reply, headers, http=503, code=4003, requester=alpha.party)
    assert time.monotonic() - started < 1.5  # a refused connection is not waited out like a timeout


async def test_a_receiver_slower_than_the_forward_timeout_is_504_4002(make_hub: MakeHub) -> None:
    hub = await make_hub(forward_timeout=0.5)
    alpha, beta = await pair(hub)

    async def slow(request: web.Request, rec: Received) -> web.StreamResponse:
        await asyncio.sleep(1.6)
        return web.json_response({"status_code": 1000, "timestamp": "2024-01-01T00:00:00Z"})

    beta.responder = slow
    headers = as_(alpha, **routing(to=beta.party))
    started = time.monotonic()
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    elapsed = time.monotonic() - started
    assert_hub_error(reply, headers, http=504, code=4002, requester=alpha.party)
    assert 0.4 < elapsed < 1.5  # answered at the hub's 0.5 s timeout, not after the receiver's 1.6 s
    assert len(beta.received) == 1  # it was forwarded (4002 = forwarded, no answer in time), once: no retry
    await asyncio.sleep(1.3)
    assert len(beta.received) == 1


def _answer(status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> Any:
    async def respond(request: web.Request, rec: Received) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers={"Content-Type": content_type, **(headers or {})})

    return respond


NOT_OCPI = [
    (200, b"<html><body>It works!</body></html>", "text/html"),
    (502, b"<html><head><title>502 Bad Gateway</title></head></html>", "text/html"),
    (200, b"OK", "text/plain"),
    (200, b'{"data": {"id": "LOC1"}}', "application/json"),
    (200, b'{"status_code": "1000", "timestamp": "2024-01-01T00:00:00Z"}', "application/json"),
    (200, b'{"status_code": true}', "application/json"),
    (200, b'[{"status_code": 1000}]', "application/json"),
    (200, b"", "application/json"),
    (204, b"", "application/json"),
    (302, b"", "text/html"),
]


@pytest.mark.parametrize(("status", "body", "content_type"), NOT_OCPI, ids=[
    "html-200", "html-502", "plain-text", "json-without-status-code", "status-code-string", "status-code-bool",
    "json-array", "empty-200", "no-content-204", "redirect"])
async def test_a_receiver_answer_that_is_not_ocpi_is_502_4000(
    hub: HubHarness, status: int, body: bytes, content_type: str
) -> None:
    alpha, beta = await pair(hub)
    beta.responder = _answer(status, body, content_type, {"Location": beta.base_url + "/elsewhere"})
    headers = as_(alpha, **routing(to=beta.party))
    reply = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert_hub_error(reply, headers, http=502, code=4000, requester=alpha.party)
    assert len(beta.received) == 1  # a redirect is not followed


# -- paths and methods the hub does not serve ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ocpi/2.2.1/receiver/parking/NL/CPA/1", "/ocpi/2.2.1/sender/hubclientinfo2",
                                  "/ocpi/2.2.1/emsp/locations", "/ocpi/2.2.1/nowhere", "/ocpi/9.9/receiver/locations"],
                         ids=["unknown-module", "unknown-module-sender", "unknown-role", "unknown-path",
                              "unknown-version"])
async def test_an_unknown_module_path_is_an_ocpi_404(hub: HubHarness, path: str) -> None:
    alpha, beta = await pair(hub)
    headers = as_(alpha, **routing(to=beta.party))
    status, resp_headers, raw = await send(hub, "GET", hub.url + path, headers)
    assert status == 404, raw
    doc = json.loads(raw)
    assert 2000 <= doc["status_code"] < 3000 and doc["status_message"] and doc["timestamp"]
    assert resp_headers["X-Request-ID"] == headers["X-Request-ID"]
    assert resp_headers["X-Correlation-ID"] == headers["X-Correlation-ID"]
    assert not beta.received


WRONG_METHODS = [
    ("DELETE", "locations", "RECEIVER", "NL/CPA/LOC1"),
    ("POST", "locations", "RECEIVER", "NL/CPA/LOC1"),
    ("PUT", "locations", "SENDER", "LOC1"),
    ("DELETE", "sessions", "RECEIVER", "NL/CPA/S1"),
    ("PATCH", "cdrs", "RECEIVER", "CDR1"),
    ("DELETE", "tokens", "RECEIVER", "DE/EMA/TOK1"),
    ("PATCH", "tokens", "SENDER", "TOK1/authorize"),
    ("GET", "commands", "RECEIVER", "START_SESSION"),
    ("PATCH", "chargingprofiles", "RECEIVER", "S1"),
    ("OPTIONS", "tariffs", "RECEIVER", "NL/CPA/T1"),
]


@pytest.mark.parametrize(("method", "module", "role", "tail"), WRONG_METHODS,
                         ids=[f"{m}-{mod}-{r}".lower() for m, mod, r, _ in WRONG_METHODS])
async def test_a_method_ocpi_does_not_define_for_the_interface_is_405_and_not_forwarded(
    hub: HubHarness, method: str, module: str, role: str, tail: str
) -> None:
    alpha, beta = await pair(hub)
    headers = as_(alpha, **routing(to=beta.party))
    reply = await send(hub, method, alpha.hub_url(module, role, tail), headers)
    doc = assert_hub_error(reply, headers, http=405, code=2000, requester=alpha.party)
    assert method in doc["status_message"]
    assert "GET" in reply[1].get("Allow", "") or "POST" in reply[1].get("Allow", "")
    assert not beta.received


NOT_OCPI_METHODS = ["CONNECT", "TRACE", "OPTIONS"]


@pytest.mark.parametrize("method", NOT_OCPI_METHODS)
@pytest.mark.parametrize(("path", "allowed"), [
    ("/ocpi/2.2.1/receiver/locations/NL/CPA/LOC1", {"GET", "PUT", "PATCH"}),
    ("/ocpi/2.1.1/locations/NL/CPA/LOC1", {"GET", "PUT", "PATCH"}),
    ("/ocpi/versions", {"GET", "HEAD"}),
    ("/ocpi/2.2.1", {"GET", "HEAD"}),
    ("/ocpi/2.2.1/credentials", {"GET", "HEAD", "POST", "PUT", "DELETE"}),
], ids=["module-2.2.1", "module-2.1.1", "versions", "version-details", "credentials"])
async def test_a_method_ocpi_never_uses_on_an_ocpi_path_is_an_ocpi_405_with_allow(
        hub: HubHarness, method: str, path: str, allowed: set[str]) -> None:
    """CONNECT, TRACE and OPTIONS are no OCPI methods: on an OCPI path they get the envelope of every other
    method the path does not take (RFC 9110 §15.5.6: a 405 lists the methods in Allow). aiohttp reads a CONNECT
    target as an authority (its request path is empty), which used to make it a plain-JSON 404."""
    cpa, ema = cpo(), emsp()
    cpa.version = "2.1.1" if "2.1.1" in path else "2.2.1"
    await hub.connect(cpa)
    await hub.connect(ema)
    token = cpa.token_c if cpa.version == "2.2.1" else None
    authorization = ocpi_token(token) if token else f"Token {cpa.token_c}"
    sent = {"Authorization": authorization, **ids(), **routing(to=ema.party, from_=cpa.party)}
    status, headers, doc = await raw_request(hub.settings.host, hub.settings.port, method, path, dict(sent))
    assert status == 405, doc
    assert doc is not None and doc["status_code"] == 2000 and doc["status_message"], doc
    assert {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()} == allowed, headers
    assert headers["X-Request-ID"] == sent["X-Request-ID"]
    assert not ema.received and not [r for r in cpa.received if r.method == method]


async def test_the_receivers_own_errors_are_relayed_not_replaced(hub: HubHarness) -> None:
    """2xxx/3xxx answers of the receiver reach the caller unchanged (OCPI 2.2.1 Message Routing step 5), unlike hub
    errors."""
    alpha, beta = await pair(hub)
    body = b'{"status_code": 3001, "status_message": "eMSP backend down", "timestamp": "2024-01-01T00:00:00Z"}'
    beta.responder = _answer(503, body, "application/json")
    headers = as_(alpha, **routing(to=beta.party))
    status, resp_headers, raw = await send(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"),
                                           headers)
    assert (status, raw) == (503, body)
    assert resp_headers["X-Request-ID"] == headers["X-Request-ID"]
    # the receiver did not send routing headers: the answer is still addressed TO = requester, FROM = receiver
    assert (resp_headers["OCPI-to-country-code"], resp_headers["OCPI-to-party-id"]) == ("NL", "CPA")
    assert (resp_headers["OCPI-from-country-code"], resp_headers["OCPI-from-party-id"]) == ("DE", "EMA")


def test_routing_pairs_are_checked_on_every_request() -> None:
    """Pairs are checked once and kept (routing.ocpi.headers._party_of): a refused pair is refused every time."""
    from aiohttp.test_utils import make_mocked_request

    from routing.ocpi.errors import InvalidParameters
    from routing.ocpi.headers import Party, parse_routing

    def routing_of(cc: str, pid: str) -> object:
        request = make_mocked_request("GET", "/", headers={"OCPI-to-country-code": cc, "OCPI-to-party-id": pid,
                                                           "OCPI-from-country-code": "NL", "OCPI-from-party-id": "CPA"})
        return parse_routing(request)

    for _ in range(2):
        with pytest.raises(InvalidParameters):
            routing_of("DE", "EM-")
        assert routing_of("de", "ema").to == Party("DE", "EMA")  # type: ignore[attr-defined]
