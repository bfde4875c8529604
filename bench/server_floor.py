"""What the HTTP server layer alone costs per request: aiohttp's web server against a bare httptools protocol.

Both answer the routed GET's request (the same headers wrk sends in ``run.py``) with a fixed OCPI envelope of the
size the bench receiver returns, on uvloop, one process each, and nothing else: no routing, no upstream. The
difference is the per-request cost the hub pays for aiohttp's server machinery (request objects, routing table,
middleware chain, response preparation) over the minimum any Python HTTP/1.1 server on this loop pays (parse,
one write). docs/architecture.md, "Cost of a routed request", uses it to size what replacing the server could give.

The aiohttp side is set up as the hub's is: an ``Application`` with one middleware and the routed request's
dynamic route; its handler builds a ``web.Response`` with an id header, as ``hub.modules.relay`` does. A third
server, ``aiohttp-server``, is aiohttp's low-level ``web.Server`` calling that handler directly (no router, no
``Application``, no middleware): the difference between the first two is what bypassing the application layer
for routed requests could save; the rest sits in aiohttp's request handler and response writing.

Usage: python bench/server_floor.py [--rounds 3] [--duration 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import loadgen
from common import LOOPBACK, Child, cpu_seconds, envelope, free_port, install_uvloop, python_argv, wait_http

BODY = envelope({"country_code": "NL", "party_id": "CPO", "id": "LOC1", "publish": True,
                 "address": "Stationsplein 1", "city": "Utrecht", "country": "NLD",
                 "coordinates": {"latitude": "52.089", "longitude": "5.110"}, "time_zone": "Europe/Amsterdam",
                 "last_updated": "2024-01-01T00:00:00Z"})
PATH = "/ocpi/2.2.1/sender/locations/NL/CPO/LOC1"
HEADERS = ("Authorization: Token dG9rZW4=", "X-Request-ID: 8f0a7d0c", "X-Correlation-ID: 2b6e1f43",
           "OCPI-from-country-code: NL", "OCPI-from-party-id: MSP", "OCPI-to-country-code: NL",
           "OCPI-to-party-id: CPO")


def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    @web.middleware
    async def observe(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        return await handler(request)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json",
                            headers={"X-Request-ID": request.headers.get("X-Request-ID", "")})

    app = web.Application(middlewares=[observe])
    app.router.add_route("*", "/ocpi/2.2.1/sender/{module}/{tail:.*}", handle)
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None, backlog=1024)


def serve_aiohttp_server(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.Response:
        return web.Response(body=BODY, content_type="application/json",
                            headers={"X-Request-ID": request.headers.get("X-Request-ID", "")})

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handle), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, port, backlog=1024).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_httptools(port: int) -> None:
    import httptools

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)
            self.headers: dict[str, str] = {}

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_begin(self) -> None:
            self.headers = {}

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

        def on_message_complete(self) -> None:
            rid = self.headers.get("x-request-id", "")
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-ID: %b\r\n"
                                 b"Content-Length: %d\r\n\r\n%b" % (rid.encode(), len(BODY), BODY))

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, LOOPBACK, port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


SERVERS: dict[str, Callable[[int], None]] = {
    "aiohttp": serve_aiohttp, "aiohttp-server": serve_aiohttp_server, "httptools": serve_httptools}


async def measure(kind: str, duration: float, tmp: Path, wrk: str) -> tuple[float, float]:
    """(req/s, server CPU µs per request) of one server under wrk -t1 -c32."""
    port = free_port()
    child = Child(kind, python_argv("server_floor.py", "--serve", kind, str(port)), tmp)
    await child.start()
    try:
        await wait_http(f"http://{LOOPBACK}:{port}{PATH}", 30, child)

        def load(seconds: float) -> subprocess.CompletedProcess[str]:
            return subprocess.run([wrk, "-t1", "-c32", f"-d{seconds:.0f}s", *(a for h in HEADERS for a in ("-H", h)),
                                   f"http://{LOOPBACK}:{port}{PATH}"], capture_output=True, text=True, check=True)

        await asyncio.to_thread(load, 2)  # warm-up
        before, started = cpu_seconds(child.pid), time.monotonic()
        out = await asyncio.to_thread(load, duration)
        cpu, wall = cpu_seconds(child.pid) - before, time.monotonic() - started
        requests = int(next(ln for ln in out.stdout.splitlines() if "requests in" in ln).split()[0])
        return requests / wall, cpu / requests * 1e6
    finally:
        await child.stop()


async def run(rounds: int, duration: float) -> None:
    wrk = loadgen.ensure_wrk()
    if wrk is None:
        raise SystemExit("server_floor.py needs wrk (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="server-floor-"))
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in SERVERS}
    for n in range(rounds):
        for kind in results:  # interleaved: a noisy spell hits both
            rps, us = await measure(kind, duration, tmp, wrk)
            results[kind].append((rps, us))
            print(f"round {n + 1}/{rounds} {kind}: {rps:.0f} req/s, {us:.1f} µs CPU per request", flush=True)
    print("\nserver         | req/s (median) | CPU µs per request (median)")
    for kind, rows in results.items():
        rps, us = statistics.median(r for r, _ in rows), statistics.median(u for _, u in rows)
        print(f"{kind:14} | {rps:14.0f} | {us:.1f}")


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        install_uvloop()
        SERVERS[sys.argv[2]](int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=6.0, help="seconds measured per server and round")
    a = p.parse_args()
    asyncio.run(run(a.rounds, a.duration))


if __name__ == "__main__":
    main()
