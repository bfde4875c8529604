"""The bench's load generators send the request ids they are asked for (``bench/loadgen.py``, ``run``'s
``request_ids``).

``sequential`` ids (a run token and a counter) keep the audit's SQLite indexes appending at their right edge;
``random`` ids are version 4 UUIDs, as platforms send them, and land anywhere in those indexes. Both load
generators are run against a small aiohttp server that records the headers it gets: wrk (skipped where it is not
installed) and the Python fallback.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.conftest import BENCH

# bench/ is a folder of scripts that import each other by name, not a package: on the path for this import only
sys.path.insert(0, str(BENCH))
try:
    import loadgen
finally:
    sys.path.remove(str(BENCH))

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LOADGENS = [pytest.param(shutil.which("wrk"), id="wrk",
                         marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")),
            pytest.param(None, id="python")]


@pytest.fixture
async def recorder(aiohttp_server: object) -> AsyncIterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.headers.get("X-Request-ID", ""), request.headers.get("X-Correlation-ID", "")))
        return web.Response(body=b'{"status_code":1000,"timestamp":"2026-01-01T00:00:00Z"}',
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    server = await aiohttp_server(app)  # type: ignore[operator]
    yield f"http://{server.host}:{server.port}", seen


LOAD = loadgen.Load("GET", "/ocpi/2.2.1/sender/locations", "Token dG9rZW4=", from_=("DE", "EMA"), to=("NL", "CPR"))


@pytest.mark.parametrize("wrk", LOADGENS)
async def test_random_ids_are_a_fresh_uuid4_each(recorder: tuple[str, list[tuple[str, str]]],
                                                 wrk: str | None) -> None:
    url, seen = recorder
    result = await loadgen.run(LOAD, url, wrk=wrk, connections=2, threads=1, duration=1, request_ids="random")
    assert result.requests > 10 and result.errors == 0
    ids = [i for pair in seen for i in pair]
    assert all(UUID4.match(i) for i in ids), ids[:4]
    assert len(set(ids)) == len(ids)  # request and correlation ids alike, none repeated


@pytest.mark.parametrize("wrk", LOADGENS)
async def test_sequential_ids_share_the_run_token(recorder: tuple[str, list[tuple[str, str]]],
                                                  wrk: str | None) -> None:
    url, seen = recorder
    await loadgen.run(LOAD, url, wrk=wrk, connections=2, threads=1, duration=1, request_ids="sequential")
    request_ids = [r for r, _ in seen]
    assert len(set(request_ids)) == len(request_ids) > 10
    assert len({r.rsplit("-", 1)[0] for r in request_ids}) == 1  # one prefix (the run token), then a counter
    assert not any(UUID4.match(r) for r in request_ids)
