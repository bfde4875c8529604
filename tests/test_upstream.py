"""The forward client (routing/upstream.py) against real servers on loopback: aiohttp ones where a well-behaved
receiver is enough, raw asyncio servers where the receiver must misbehave byte by byte."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from routing.outbound import PolicyResolver, RefusedAddress
from routing.upstream import MAX_HEAD_BYTES, Upstream, UpstreamError
from tests.conftest import self_signed_certificate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Raw = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def served(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """An aiohttp server on a free loopback port; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_served(handle: Raw) -> AsyncIterator[str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head (and its body when it declares a length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return head + await reader.readexactly(int(line.split(b":")[1]))
    return head


def client(**kwargs: object) -> Upstream:
    return Upstream(DefaultResolver(), **kwargs)  # type: ignore[arg-type]


OK = b'{"status_code":1000}'


async def test_sequential_requests_share_one_kept_alive_connection_and_bodies_headers_arrive_intact() -> None:
    peers: list[object] = []
    seen: list[tuple[str, str, bytes, str | None, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        seen.append((request.method, request.path_qs, await request.read(), request.headers.get("X-Request-ID"),
                     request.headers.get("Content-Length")))
        return web.Response(body=OK, headers={"Link": '<http://x/next>; rel="next"', "X-Total-Count": "7"})

    upstream = client()
    async with served(handler) as base:
        for n in range(5):
            answer = await upstream.request("PUT", f"{base}/ocpi/loc/{n}?a=%2F", {"X-Request-ID": f"r{n}"},
                                            b'{"n":%d}' % n, budget=5, max_body=1000)
            assert (answer.status, answer.body) == (200, OK)
            assert answer.headers["link"] == '<http://x/next>; rel="next"' and answer.headers["x-total-count"] == "7"
        got = await upstream.request("GET", base + "/plain", {}, None, budget=5, max_body=1000)
        assert got.body == OK
    await upstream.close()
    assert len(set(peers)) == 1  # one connection for all six
    assert seen[0] == ("PUT", "/ocpi/loc/0?a=%2F", b'{"n":0}', "r0", "7")
    assert seen[-1] == ("GET", "/plain", b"", None, None)


async def test_a_chunked_answer_is_joined_and_one_delimited_by_the_connection_end_is_read_to_it() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"status_code"', b":1000", b"}"):
            await response.write(part)
        await response.write_eof()
        return response

    upstream = client()
    async with served(chunked) as base:
        assert (await upstream.request("GET", base + "/", {}, None, budget=5, max_body=1000)).body == OK

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK)
        await writer.drain()
        writer.close()

    async with raw_served(until_close) as base:
        assert (await upstream.request("GET", base + "/", {}, None, budget=5, max_body=1000)).body == OK
    await upstream.close()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_over_the_body_cap_is_given_up_and_its_connection_closed(declared: bool) -> None:
    big = b"x" * 5000

    async def handler(request: web.Request) -> web.StreamResponse:
        if declared:
            return web.Response(body=big)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(big), 500):
            await response.write(big[i:i + 500])
        await response.write_eof()
        return response

    upstream = client()
    async with served(handler) as base:
        answer = await upstream.request("GET", base + "/", {}, None, budget=5, max_body=1000)
        assert answer.status == 200 and answer.body is None
        for _ in range(50):
            if upstream.open_connections(base) == 0:
                break
            await asyncio.sleep(0.01)
        assert upstream.open_connections(base) == 0
        assert (await upstream.request("GET", base + "/", {}, None, budget=5, max_body=10_000)).body == big
    await upstream.close()


@pytest.mark.parametrize("lines", [MAX_HEAD_BYTES // 4000 + 3, 1], ids=["many lines", "one line over the cap"])
async def test_a_header_section_over_the_cap_is_an_upstream_error(lines: int) -> None:
    pad = b"a" * (4000 if lines > 1 else MAX_HEAD_BYTES + 10)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Pad: " + pad + b"\r\n" for _ in range(lines))
                     + b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()

    upstream = client()
    async with raw_served(handler) as base:
        with pytest.raises(UpstreamError, match="header section"):
            await upstream.request("GET", base + "/", {}, None, budget=5, max_body=1000)
    await upstream.close()


async def test_a_receiver_that_never_answers_is_a_timeout_within_the_budget() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()

    upstream = client()
    async with raw_served(handler) as base:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await upstream.request("GET", base + "/", {}, None, budget=0.3, max_body=1000)
        assert loop.time() - started < 2
        release.set()
    await upstream.close()


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("PUT", True), ("POST", False), ("PATCH", False)])
async def test_a_kept_alive_connection_the_receiver_closed_is_retried_once_for_idempotent_methods_only(
        method: str, retried: bool) -> None:
    """The first connection answers once, then closes on the next request without a byte: the keep-alive race."""
    connections: list[int] = []
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        first_connection = len(connections) == 1
        try:
            while True:
                requests.append(await read_request(reader))
                if first_connection and len(requests) == 2:
                    writer.close()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(OK), OK))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    upstream = client()
    async with raw_served(handler) as base:
        assert (await upstream.request(method, base + "/a", {}, b"{}", budget=5, max_body=1000)).body == OK
        if retried:
            answer = await upstream.request(method, base + "/b", {}, b"{}", budget=5, max_body=1000)
            assert answer.body == OK
            assert len(connections) == 2 and len(requests) == 3
        else:
            with pytest.raises(UpstreamError, match="without answering"):
                await upstream.request(method, base + "/b", {}, b"{}", budget=5, max_body=1000)
            assert len(connections) == 1 and len(requests) == 2  # sent once: the receiver may have acted on it
    await upstream.close()


async def test_connections_to_one_origin_stay_within_the_limit_and_waiting_requests_get_them() -> None:
    inside, most = 0, 0
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await gate.wait()
        inside -= 1
        return web.Response(body=OK)

    upstream = client(limit_per_origin=2)
    async with served(handler) as base:
        calls = [asyncio.create_task(upstream.request("GET", f"{base}/{n}", {}, None, budget=5, max_body=1000))
                 for n in range(6)]
        for _ in range(100):
            if inside == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert inside == 2 and upstream.open_connections(base) == 2
        gate.set()
        answers = await asyncio.gather(*calls)
        assert [a.body for a in answers] == [OK] * 6
        assert most == 2 and upstream.open_connections(base) <= 2
    await upstream.close()


async def test_the_policy_resolver_refuses_a_loopback_receiver_before_any_connection() -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(body=OK)

    upstream = Upstream(PolicyResolver())
    async with served(handler) as base:
        with pytest.raises(RefusedAddress, match="loopback"):
            await upstream.request("GET", base.replace("127.0.0.1", "localhost") + "/", {}, None, budget=5,
                                   max_body=1000)
        with pytest.raises(RefusedAddress):
            await upstream.request("GET", base + "/", {}, None, budget=5, max_body=1000)
    await upstream.close()
    assert hits == 0


@pytest.mark.parametrize(("headers", "url"), [
    ({"X-Correlation-ID": "a\r\nX-Smuggled: 1"}, "/ok"),
    ({"X-Correlation-ID": "a\nX-Smuggled: 1"}, "/ok"),
    ({"X-Correlation-ID": "a\rb"}, "/ok"),
    ({}, "/with space"),
])
async def test_a_line_break_in_a_header_or_a_space_in_the_target_is_refused_before_anything_is_sent(
        headers: dict[str, str], url: str) -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(body=OK)

    upstream = client()
    async with served(handler) as base:
        with pytest.raises(ValueError):
            await upstream.request("GET", base + url, headers, None, budget=5, max_body=1000)
    await upstream.close()
    assert hits == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x", "ftp://127.0.0.1/x", "http://user@127.0.0.1:1/x",
                                 "http://:80/x"])
async def test_an_unusable_url_is_a_value_error(url: str) -> None:
    upstream = client()
    with pytest.raises(ValueError):
        await upstream.request("GET", url, {}, None, budget=1, max_body=1000)
    await upstream.close()


async def test_an_interim_100_answer_is_skipped_for_the_final_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(OK), OK))
        await writer.drain()

    upstream = client()
    async with raw_served(handler) as base:
        answer = await upstream.request("POST", base + "/", {}, b"{}", budget=5, max_body=1000)
        assert (answer.status, answer.body) == (201, OK)
    await upstream.close()


@pytest.mark.parametrize("garbage", [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
async def test_an_unreadable_answer_is_an_upstream_error(garbage: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(garbage)
        await writer.drain()

    upstream = client()
    async with raw_served(handler) as base:
        with pytest.raises(UpstreamError):
            await upstream.request("GET", base + "/", {}, None, budget=5, max_body=1000)
    await upstream.close()


# -- TLS ------------------------------------------------------------------------------------------------------
async def test_tls_is_verified_a_trusted_certificate_passes_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=OK)

    async with served(handler, server_tls) as base:
        trusting = client(ssl_context=ssl.create_default_context(cafile=str(cert)))
        assert (await trusting.request("GET", base + "/", {}, None, budget=5, max_body=1000)).body == OK
        await trusting.close()
        default = client()
        with pytest.raises(ssl.SSLCertVerificationError):
            await default.request("GET", base + "/", {}, None, budget=5, max_body=1000)
        await default.close()


class CountingResolver(AbstractResolver):
    """The default resolver, counting lookups; refuses while ``refuse`` is set."""

    def __init__(self) -> None:
        self.inner = DefaultResolver()
        self.lookups = 0
        self.refuse = False

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        self.lookups += 1
        await asyncio.sleep(0.05)  # concurrent connects arrive while this one is looking up
        if self.refuse:
            raise RefusedAddress(f"{host} refused for the test")
        return await self.inner.resolve(host, port, family)

    async def close(self) -> None:
        await self.inner.close()


async def test_concurrent_connects_share_one_lookup_kept_for_the_ttl_and_a_refusal_is_not_kept() -> None:
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(body=OK)

    resolver = CountingResolver()
    resolver.refuse = True
    upstream = Upstream(resolver)
    async with served(handler) as base:
        with pytest.raises(RefusedAddress):
            await upstream.request("GET", base + "/", {}, None, budget=5, max_body=1000)
        resolver.refuse = False
        calls = [asyncio.create_task(upstream.request("GET", f"{base}/{n}", {}, None, budget=5, max_body=1000))
                 for n in range(8)]
        await asyncio.sleep(0.2)
        gate.set()
        assert [a.body for a in await asyncio.gather(*calls)] == [OK] * 8
        assert upstream.open_connections(base) == 8
        assert resolver.lookups == 2  # the refused one, then one for eight new connections
    await upstream.close()


async def test_a_request_that_waits_out_its_budget_for_a_connection_leaves_the_bound_intact() -> None:
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await gate.wait()
        return web.Response(body=OK)

    upstream = client(limit_per_origin=1)
    async with served(handler) as base:
        holder = asyncio.create_task(upstream.request("GET", base + "/slow", {}, None, budget=5, max_body=1000))
        for _ in range(100):
            if upstream.open_connections(base) == 1:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):  # waited for the one connection, in vain
            await upstream.request("GET", base + "/fast", {}, None, budget=0.2, max_body=1000)
        gate.set()
        assert (await holder).body == OK
        for _ in range(3):  # the connection came back and is used again: the waiter that gave up took nothing
            assert (await upstream.request("GET", base + "/fast", {}, None, budget=2, max_body=1000)).body == OK
        assert upstream.open_connections(base) == 1
    await upstream.close()


async def test_an_answer_nobody_asked_for_is_never_taken_for_the_next_requests() -> None:
    """A receiver that sends a second answer after the first is out of step with its connection: the connection is
    dropped, and each request gets its own answer on a new one."""
    served_paths: list[str] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await read_request(reader)
                path = head.split(b" ")[1].decode()
                served_paths.append(path)
                body = b'{"status_code":1000,"for":"%s"}' % path.encode()
                extra = b'{"status_code":1000,"for":"forged"}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
                             + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(extra), extra))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    upstream = client()
    async with raw_served(handler) as base:
        for n in range(3):
            answer = await upstream.request("GET", f"{base}/r{n}", {}, None, budget=5, max_body=1000)
            assert answer.body == b'{"status_code":1000,"for":"/r%d"}' % n
    await upstream.close()
    assert served_paths == ["/r0", "/r1", "/r2"]
    assert connections == 3


# -- the header section -------------------------------------------------------------------------------------
ANSWER_WITH_HEADERS = (b"HTTP/1.1 100 Continue\r\nX-Interim: not-this\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\nX-Spaced:   value with trailing space  \r\nX-Empty:\r\n"
                       b"X-Twice: first\r\nx-twice: second\r\nOCPI-to-party-id: EMP\r\nX-Utf8: caf\xc3\xa9\r\n"
                       b"Content-Length: %d\r\n\r\n%b" % (len(OK), OK))


@pytest.mark.parametrize("chunk", [len(ANSWER_WITH_HEADERS), 1, 7], ids=["one write", "byte by byte", "7 bytes"])
async def test_headers_are_read_as_the_parser_delimits_them_whatever_the_chunks(chunk: int) -> None:
    """The final answer's headers only (not the interim one's), names lower-cased, leading whitespace not part of
    the value and trailing kept (as httptools hands them over), the first of a repeated header, UTF-8 values."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):  # twice on one kept-alive connection: the second answer's headers are its own
            await read_request(reader)
            for i in range(0, len(ANSWER_WITH_HEADERS), chunk):
                writer.write(ANSWER_WITH_HEADERS[i:i + chunk])
                await writer.drain()
                if chunk < 10:
                    await asyncio.sleep(0)

    upstream = client()
    async with raw_served(handler) as base:
        for _ in range(2):
            answer = await upstream.request("POST", base + "/", {}, b"{}", budget=5, max_body=1000)
            assert (answer.status, answer.body) == (200, OK)
            assert answer.headers == {"x-spaced": "value with trailing space  ", "x-empty": "", "x-twice": "first",
                                      "ocpi-to-party-id": "EMP", "x-utf8": "café", "content-length": str(len(OK))}
    await upstream.close()


async def test_a_client_told_which_headers_it_reads_keeps_those_and_the_framing_ones_only() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ANSWER_WITH_HEADERS)
        await writer.drain()

    upstream = Upstream(DefaultResolver(), headers=("OCPI-To-Party-ID", "X-Twice", "Link"))
    async with raw_served(handler) as base:
        answer = await upstream.request("POST", base + "/", {}, b"{}", budget=5, max_body=1000)
    assert (answer.status, answer.body) == (200, OK)
    assert answer.headers == {"x-twice": "first", "ocpi-to-party-id": "EMP", "content-length": str(len(OK))}
    await upstream.close()


@pytest.mark.parametrize("kept", [("X-Twice", "X-Spaced"), None], ids=["named headers", "all headers"])
async def test_the_lines_of_a_list_header_are_joined_and_of_any_other_the_first_is_kept(
        kept: tuple[str, ...] | None) -> None:
    """A list-valued header (a Link: RFC 8288 §3) may come in several lines: one list in one value (RFC 9110 §5.3)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ANSWER_WITH_HEADERS.replace(b"X-Empty:\r\n", b"X-Spaced: again\r\n"))
        await writer.drain()

    upstream = Upstream(DefaultResolver(), headers=kept, lists=("x-TWICE",))
    async with raw_served(handler) as base:
        answer = await upstream.request("POST", base + "/", {}, b"{}", budget=5, max_body=1000)
    assert (answer.headers["x-twice"], answer.headers["x-spaced"]) == ("first, second", "value with trailing space  ")
    await upstream.close()
