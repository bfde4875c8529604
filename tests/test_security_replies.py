"""A receiver cannot make the hub buffer an answer without bound (docs/security.md, "Admission").

A hostile or broken receiver may answer a forwarded request with an enormous body, with or without a
``Content-Length``. The hub reads at most ``HUB_MAX_REPLY_BYTES`` of it and answers the caller 502 / 4000.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.conftest import MakeHub
from tests.partners import Received
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
