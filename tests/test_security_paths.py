"""Path safety: an id a receiver could read as another path is refused with 400/2001 and never forwarded.

``/sender/locations/%2e%2e/%2e%2e/credentials`` would reach a receiver that normalises paths as its own
credentials endpoint, called with the hub's token. Dot segments (raw or encoded), '/' and '\\' inside an id,
control characters and doubly encoded separators are refused on every functional module and the callbacks path.
Requests go out as raw bytes over a socket, so no client library normalises them first.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.conftest import HubHarness, cpo, emsp
from tests.partners import FakePartner
from tests.rawhttp import raw_request as send_raw


async def raw_request(hub: HubHarness, method: str, target: str, headers: dict[str, str | bytes],
                      body: bytes = b"") -> tuple[int, dict[str, Any]]:
    status, _, doc = await send_raw(hub.settings.host, hub.settings.port, method, target, headers, body)
    return status, doc if isinstance(doc, dict) else {}


def partner_headers(partner: FakePartner, to: FakePartner) -> dict[str, str | bytes]:
    token = base64.b64encode((partner.token_c or "").encode()).decode()
    return {"Authorization": f"Token {token}", "X-Request-ID": "req-1", "X-Correlation-ID": "corr-1",
            "OCPI-from-country-code": partner.party.country_code, "OCPI-from-party-id": partner.party.party_id,
            "OCPI-to-country-code": to.party.country_code, "OCPI-to-party-id": to.party.party_id}


async def connected(hub: HubHarness) -> tuple[FakePartner, FakePartner]:
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)
    return alpha, beta


UNSAFE_SENDER_TAILS = [
    "%2e%2e/%2e%2e/credentials",  # the example of the issue
    "%2E%2e/%2e%2E/credentials",
    "../../credentials",
    "LOC1/..",
    "./LOC1",
    "LOC1/%2E",
    "..%3B/credentials",  # '..;' — servers that drop ';' parameters read it as '..'
    "LOC%2F..%2Fcredentials",  # an encoded '/' inside one id
    "LOC%2f1",
    "LOC%5C..%5Ccredentials",  # an encoded '\'
    "LOC\\1",
    "LOC%00",  # control characters
    "LOC%0D%0AX-Injected:%201",
    "%252e%252e/%252e%252e/credentials",  # '..' once more encoded: a receiver that decodes twice
    "LOC%252F1",
    "LOC%C3%A9",  # not ASCII
    "LOC%FF",  # not even UTF-8
    "LOC1//EVSE1",  # an empty id
    "X" * 256,  # longer than any OCPI id
]


async def test_dot_segments_and_encoded_separators_in_ids_are_refused_and_never_forwarded(hub: HubHarness) -> None:
    alpha, beta = await connected(hub)
    for module in ("locations", "tariffs", "sessions", "cdrs"):
        for tail in UNSAFE_SENDER_TAILS:
            status, doc = await raw_request(hub, "GET", f"/ocpi/2.2.1/sender/{module}/{tail}",
                                            partner_headers(beta, alpha))
            assert (status, doc.get("status_code")) == (400, 2001), (module, tail, doc)
    assert not alpha.received and not beta.received


@pytest.mark.parametrize("tail", ["NL/CPA/%2e%2e", "NL/CPA/..", "NL/CPA/LOC%2F1", "NL/%2e/LOC1", "NL/CPA/LOC1/%2e%2e"])
async def test_unsafe_ids_in_client_owned_pushes_are_refused_and_nothing_is_stored(hub: HubHarness, tail: str) -> None:
    """Direct to a receiver, and as a broadcast to the hub (which would keep it for GET All)."""
    alpha, beta = await connected(hub)
    location = {"country_code": "NL", "party_id": "CPA", "id": tail.rsplit("/", 1)[-1],
                "last_updated": "2024-01-01T00:00:00Z"}
    headers = {**partner_headers(alpha, beta), "Content-Type": "application/json"}
    status, doc = await raw_request(hub, "PUT", f"/ocpi/2.2.1/receiver/locations/{tail}", headers,
                                    json.dumps(location).encode())
    assert (status, doc.get("status_code")) == (400, 2001), doc
    assert not beta.received
    # Nor broadcast to the hub and kept for GET All.
    hub_to = {**headers, "OCPI-to-country-code": hub.settings.country_code, "OCPI-to-party-id": hub.settings.party_id}
    status, doc = await raw_request(hub, "PUT", f"/ocpi/2.2.1/receiver/locations/{tail}", hub_to,
                                    json.dumps(location).encode())
    assert (status, doc.get("status_code")) == (400, 2001), doc
    get_all = {**partner_headers(beta, alpha), "OCPI-to-country-code": hub.settings.country_code,
               "OCPI-to-party-id": hub.settings.party_id}
    status, doc = await raw_request(hub, "GET", "/ocpi/2.2.1/sender/locations", get_all)
    assert (status, doc.get("data")) == (200, []), doc
    assert not beta.received


async def test_safe_ids_with_dots_and_encoded_characters_are_still_forwarded_byte_for_byte(hub: HubHarness) -> None:
    """Only whole dot segments and separators are refused: 'LOC.1', '...' or an encoded '?' are ordinary ids."""
    alpha, beta = await connected(hub)
    for tail in ("LOC.1", "...", "LOC%3F1", "LOC%252A", "LOC1/EVSE.1/1"):
        status, doc = await raw_request(hub, "GET", f"/ocpi/2.2.1/sender/locations/{tail}",
                                        partner_headers(beta, alpha))
        assert status == 200, (tail, doc)
        assert alpha.received[-1].raw_path == f"/ocpi/2.2.1/sender/locations/{tail}"


async def test_unsafe_callback_ids_are_refused(hub: HubHarness) -> None:
    alpha, beta = await connected(hub)
    for cb_id in ("%2e%2e", "..%3B", "abc%5C..", "abc%00", "%252e%252e"):
        status, doc = await raw_request(hub, "GET", f"/ocpi/2.2.1/callbacks/{cb_id}", partner_headers(beta, alpha))
        assert (status, doc.get("status_code")) == (400, 2001), (cb_id, doc)
    assert not alpha.received
