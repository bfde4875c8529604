"""hub.answer.Answer writes what aiohttp's own web.Response writes, byte for byte (the Date aside), in one step.

Each case sends the same raw request to two routes of one aiohttp server that answer with the same status,
headers and body, one as ``Answer`` and one as ``web.Response``, and compares the bytes on the wire: keep-alive
and close in HTTP/1.1 and 1.0, HEAD, statuses without a body, an empty body, a header aiohttp refuses, and a
client that does not read.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from hub.answer import Answer

BODY = b'{"status_code":1000,"data":{"id":"LOC1"},"timestamp":"2026-12-04T00:00:00Z"}'


BIG = 24 * 1024 * 1024  # more than the kernel's socket buffers on both ends hold
SERVED: web.AppKey[list[str]] = web.AppKey("served", list)


def answer_of(kind: type[web.Response]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        request.app[SERVED].append(request.path_qs)
        status = int(request.query.get("status", "200"))
        body = b"" if "empty" in request.query else BODY
        headers = {"X-Request-ID": "r-1", "OCPI-to-party-id": "CPO"}
        if "bad" in request.query:
            headers["X-Bad"] = "a\r\nInjected: yes"
        if "big" in request.query:
            body = b"x" * BIG
        return kind(body=body, status=status, content_type="application/json", headers=headers)
    return handler


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[str]]]:
    app = web.Application()
    app[SERVED] = []
    app.router.add_route("*", "/answer", answer_of(Answer))
    app.router.add_route("*", "/response", answer_of(web.Response))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield port, app[SERVED]
    await runner.cleanup()


async def exchange(port: int, raw: bytes) -> bytes:
    """Everything the server writes until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One answer of a kept-alive connection: its head and its Content-Length of body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return head + await asyncio.wait_for(reader.readexactly(length), timeout=10)


def without_date(wire: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", wire)


async def both(port: int, request: str) -> tuple[bytes, bytes]:
    """The same request (``{path}`` in it) to both routes: the wire bytes of each answer."""
    got = [without_date(await exchange(port, request.format(path=path).encode())) for path in ("/answer", "/response")]
    return got[0], got[1]


CASES = {
    "HTTP/1.1 close": "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "HTTP/1.0": "GET {path} HTTP/1.0\r\nHost: h\r\n\r\n",
    "HTTP/1.1 error status": "GET {path}?status=502 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "HTTP/1.1 empty body": "GET {path}?empty=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "HEAD": "HEAD {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "204": "DELETE {path}?status=204&empty=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "304": "GET {path}?status=304&empty=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "header with CR LF": "GET {path}?bad=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
}


@pytest.mark.parametrize("request_text", CASES.values(), ids=CASES.keys())
async def test_the_bytes_are_aiohttps_own(server: tuple[int, list[str]], request_text: str) -> None:
    answer, response = await both(server[0], request_text)
    assert answer == response
    # a header aiohttp refuses to write: no answer at all, the connection is closed (aiohttp's own behaviour)
    assert answer.startswith(b"HTTP/1.") if "bad=1" not in request_text else answer == b""


async def test_keep_alive_answers_match_and_the_connection_serves_the_next_request(
        server: tuple[int, list[str]]) -> None:
    async def pipelined(path: str) -> list[bytes]:
        """Two requests in one write on one connection: both answers, in order."""
        reader, writer = await asyncio.open_connection("127.0.0.1", server[0])
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\nGET {path}?status=201 HTTP/1.1\r\nHost: h\r\n\r\n"
                         .encode())
            return [without_date(await read_answer(reader)) for _ in range(2)]
        finally:
            writer.close()

    mine = await pipelined("/answer")
    assert mine == await pipelined("/response")
    assert mine[0].startswith(b"HTTP/1.1 200 OK\r\n") and mine[1].startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"Connection:" not in mine[0]
    assert mine[0].endswith(b"\r\n\r\n" + BODY)


@pytest.mark.parametrize("path", ["/answer", "/response"])
async def test_a_client_that_does_not_read_holds_its_next_request_back(server: tuple[int, list[str]],
                                                                       path: str) -> None:
    """A 24 MiB answer to a client that reads nothing: the connection's next request waits until the client
    reads, as with aiohttp's own writer, so a client cannot pile answers up in the hub's memory."""
    port, served = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path}?big=1 HTTP/1.1\r\nHost: h\r\n\r\nGET {path}?big=2 HTTP/1.1\r\nHost: h\r\n\r\n"
                     .encode())
        await writer.drain()
        await asyncio.sleep(0.5)
        assert served == [f"{path}?big=1"], "the second request waits while the first answer is not read"
        for _ in range(2):
            answer = await read_answer(reader)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n" + b"x" * BIG)
        assert served == [f"{path}?big=1", f"{path}?big=2"]
    finally:
        writer.close()


@pytest.mark.parametrize("kwargs", [
    {"body": BODY, "status": 200, "content_type": "application/json", "headers": {"X-Request-ID": "r-1"}},
    {"body": BODY, "status": 502, "content_type": "application/json", "headers": {}},
    {"body": b"", "status": 404, "content_type": "application/json", "headers": {"Link": "<x>; rel=next"}},
    {"body": bytearray(BODY), "status": 200, "content_type": "application/json", "headers": {}},  # aiohttp's own
])
def test_an_answer_is_built_as_aiohttp_builds_a_response(kwargs: dict[str, object]) -> None:
    ours, theirs = Answer(**kwargs), web.Response(**kwargs)  # type: ignore[arg-type]
    assert (ours.status, ours.reason, dict(ours.headers), ours.body, ours.content_type, ours.keep_alive,
            ours.chunked, ours.compression, ours.prepared) == (
        theirs.status, theirs.reason, dict(theirs.headers), theirs.body, theirs.content_type, theirs.keep_alive,
        theirs.chunked, theirs.compression, theirs.prepared)
    assert vars(ours) == vars(theirs)


def test_what_aiohttp_refuses_an_answer_refuses() -> None:
    for kwargs in ({"headers": {"Content-Type": "text/plain"}, "content_type": "application/json"},
                   {"content_type": "application/json; charset=utf-8"}):
        with pytest.raises(ValueError) as ours:
            Answer(body=BODY, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError) as theirs:
            web.Response(body=BODY, **kwargs)  # type: ignore[arg-type]
        assert str(ours.value) == str(theirs.value)
