"""A header that may appear once, sent twice, is refused: never one of its values silently chosen.

RFC 9110 §5.3: a field that is not defined as a list may not be repeated. ``Authorization``, the four routing
headers and ``X-Request-ID`` / ``X-Correlation-ID`` are single values; an intermediary in front of the hub may act
on another of the repeated values than the hub would (header confusion). So any repetition, even of the same
value, is refused (docs/security.md, "Repeated headers"): the routing headers with 400 / 2001, the message ids as
invalid ids are (replaced, then 400 / 2001 on the functional modules), ``Authorization`` with 401.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from multidict import CIMultiDict

from tests.conftest import ADMIN_TOKEN, HubHarness
from tests.partners import FakePartner, ocpi_token
from tests.test_routing_errors import HUB, as_, pair, routing

ROUTING = ["OCPI-to-country-code", "OCPI-to-party-id", "OCPI-from-country-code", "OCPI-from-party-id"]


async def send_pairs(hub: HubHarness, method: str, url: str,
                     headers: CIMultiDict[str]) -> tuple[int, CIMultiDict[str], Any]:
    """A request whose header lines are exactly ``headers``, repeated names included."""
    async with hub.session.request(method, url, headers=headers) as resp:
        raw = await resp.read()
        assert "Traceback" not in raw.decode(errors="replace")
        return resp.status, CIMultiDict(resp.headers), json.loads(raw) if raw else None


def repeated(base: dict[str, str], name: str, second: str) -> CIMultiDict[str]:
    """``base`` with a second ``name`` line carrying ``second``."""
    out = CIMultiDict(base)
    out.add(name, second)
    return out


def other_value(name: str, value: str) -> str:
    """A well-formed value of the same header that names something else."""
    if name.endswith("country-code"):
        return "BE" if value != "BE" else "FR"
    if name.endswith("party-id"):
        return "XYZ"
    return value + "-other"


@pytest.mark.parametrize("same", [False, True], ids=["different-values", "same-value"])
@pytest.mark.parametrize("name", ROUTING)
async def test_a_repeated_routing_header_is_400_2001_and_never_forwarded(
        hub: HubHarness, name: str, same: bool) -> None:
    alpha, beta = await pair(hub)
    sent = as_(alpha, **routing(to=beta.party))
    headers = repeated(sent, name, sent[name] if same else other_value(name, sent[name]))
    status, got, doc = await send_pairs(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert (status, doc["status_code"]) == (400, 2001), doc
    assert name.lower() in doc["status_message"].lower() and "more than once" in doc["status_message"]
    assert got["X-Request-ID"] == sent["X-Request-ID"]  # the envelope of every other bad routing header
    assert (got["OCPI-from-country-code"], got["OCPI-from-party-id"]) == HUB
    assert not beta.received


@pytest.mark.parametrize("same", [False, True], ids=["different-values", "same-value"])
@pytest.mark.parametrize("name", ["X-Request-ID", "X-Correlation-ID"])
async def test_a_repeated_message_id_on_a_routed_request_is_400_2001_under_a_clean_id(
        hub: HubHarness, name: str, same: bool) -> None:
    alpha, beta = await pair(hub)
    sent = as_(alpha, **routing(to=beta.party))
    headers = repeated(sent, name, sent[name] if same else sent[name] + "-other")
    status, got, doc = await send_pairs(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"), headers)
    assert (status, doc["status_code"]) == (400, 2001), doc
    assert name in doc["status_message"] and "more than once" in doc["status_message"]
    # neither value is taken for the caller's: the hub's stand-in, as for an invalid id (a request id generated,
    # a correlation id replaced by the request id)
    assert got[name] not in (sent[name], sent[name] + "-other")
    if name == "X-Request-ID":
        assert re.fullmatch(r"[0-9a-f]{32}", got["X-Request-ID"]), got
    else:
        assert got["X-Correlation-ID"] == got["X-Request-ID"] == sent["X-Request-ID"]
    assert not beta.received


async def test_a_repeated_message_id_on_versions_is_answered_under_the_hubs_own_id(hub: HubHarness) -> None:
    """The configuration modules answer a request whose ids the hub replaced (docs/ocpi-decisions.md)."""
    alpha, _ = await pair(hub)
    headers = repeated({"Authorization": ocpi_token(alpha.token_c or ""), "X-Request-ID": "first"},
                       "X-Request-ID", "second")
    status, got, doc = await send_pairs(hub, "GET", hub.url + "/ocpi/versions", headers)
    assert status == 200, doc
    assert re.fullmatch(r"[0-9a-f]{32}", got["X-Request-ID"]) and got["X-Correlation-ID"] == got["X-Request-ID"]


def _tokens(alpha: FakePartner, beta: FakePartner) -> dict[str, tuple[str, str]]:
    own = ocpi_token(alpha.token_c or "")
    return {"own-then-other": (own, ocpi_token(beta.token_c or "")), "own-twice": (own, own),
            "unknown-then-own": (ocpi_token("nope"), own)}


@pytest.mark.parametrize("case", ["own-then-other", "own-twice", "unknown-then-own"])
async def test_a_repeated_authorization_header_is_401_on_modules_and_versions(hub: HubHarness, case: str) -> None:
    alpha, beta = await pair(hub)
    first, second = _tokens(alpha, beta)[case]
    sent = {**as_(alpha, **routing(to=beta.party)), "Authorization": first}
    status, _, doc = await send_pairs(hub, "GET", alpha.hub_url("locations", "RECEIVER", "NL/CPA/LOC1"),
                                      repeated(sent, "Authorization", second))
    assert (status, doc["status_code"]) == (401, 2000), doc
    assert "Authorization" in doc["status_message"]
    assert not beta.received
    status, _, doc = await send_pairs(hub, "GET", hub.url + "/ocpi/versions",
                                      repeated({"Authorization": first}, "Authorization", second))
    assert (status, doc["status_code"]) == (401, 2000), doc


async def test_a_repeated_authorization_header_is_401_on_the_admin_api(hub: HubHarness) -> None:
    bearer = f"Bearer {ADMIN_TOKEN}"
    for second in (bearer, "Bearer wrong"):
        status, _, doc = await send_pairs(hub, "GET", hub.url + "/admin/platforms",
                                          repeated({"Authorization": bearer}, "Authorization", second))
        assert status == 401, doc
    status, _, _ = await send_pairs(hub, "GET", hub.url + "/admin/platforms", CIMultiDict(Authorization=bearer))
    assert status == 200
