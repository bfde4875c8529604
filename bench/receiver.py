"""Fake OCPI receiver for the benchmark: answers locations GET and PUT at once, in its own process.

It hosts the CPO and eMSP the load is addressed to, serves versions and version details (Token B) so the
hub can register it, and counts the module requests it answered so the bench can check they arrived.
Module endpoints do not check the token: the bare proxy forwards the load generator's token unchanged.

One process can serve several receivers, one per PORT TOKEN_B pair, each a platform of its own to the hub
(the broadcast fan-out uses ten of them in one process: lighter on two cores than ten processes). With
``--record`` every receiver also notes the arrival time (``time.time()``, the same clock as the sender on this
machine) of each locations PUT whose id starts with ``BC``, served at ``GET /broadcasts``.

Usage: receiver.py [--record] PORT TOKEN_B [PORT TOKEN_B ...]
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from aiohttp import web
from common import LOOPBACK, envelope, install_uvloop, ocpi_token

SWAP = (("OCPI-from-country-code", "OCPI-to-country-code"), ("OCPI-from-party-id", "OCPI-to-party-id"),
        ("OCPI-to-country-code", "OCPI-from-country-code"), ("OCPI-to-party-id", "OCPI-from-party-id"),
        ("X-Request-ID", "X-Request-ID"), ("X-Correlation-ID", "X-Correlation-ID"))
COUNTS = web.AppKey("counts", dict[str, int])
ARRIVALS = web.AppKey("arrivals", dict[str, list[float]])  # broadcast location id -> arrival times
BROADCAST_PREFIX = "BC"


class Clock:
    """The OCPI timestamp, formatted once a second: the receiver should cost as little CPU as possible."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
        return self._text


CLOCK = Clock()


def location(location_id: str) -> bytes:
    return (b'{"country_code":"NL","party_id":"CPR","id":"' + location_id.encode() + b'","publish":true,'
            b'"address":"Stationsplein 1","city":"Utrecht","country":"NLD",'
            b'"coordinates":{"latitude":"52.089","longitude":"5.110"},"time_zone":"Europe/Amsterdam",'
            b'"last_updated":"2024-01-01T00:00:00Z"}')


async def module(request: web.Request) -> web.Response:
    """Echo the routing headers swapped, as a real platform answers; GET returns a small Location."""
    if request.can_read_body:
        await request.read()
    counts = request.app[COUNTS]
    counts[request.method] = counts.get(request.method, 0) + 1
    headers = {dst: request.headers[src] for src, dst in SWAP if src in request.headers}
    head = b'{"status_code":1000,"status_message":"Success","timestamp":"' + CLOCK.now() + b'"'
    if request.method == "GET":
        body = head + b',"data":' + location(request.path.rsplit("/", 1)[-1]) + b"}"
    else:
        body = head + b"}"
    return web.Response(body=body, content_type="application/json", headers=headers)


async def recording(request: web.Request) -> web.Response:
    """``module``, plus the arrival time of every broadcast PUT (a duplicate delivery adds a second time)."""
    response = await module(request)
    location_id = request.match_info["tail"].rsplit("/", 1)[-1]
    if request.method == "PUT" and location_id.startswith(BROADCAST_PREFIX):
        request.app[ARRIVALS].setdefault(location_id, []).append(time.time())
    return response


def build(port: int, token_b: str, record: bool = False) -> web.Application:
    base = f"http://{LOOPBACK}:{port}/ocpi/2.2.1"
    expected = ocpi_token(token_b)

    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == expected

    async def versions(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.Response(status=401, body=envelope(status_code=2000, message="bad token"))
        return web.Response(body=envelope([{"version": "2.2.1", "url": base}]), content_type="application/json")

    async def details(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.Response(status=401, body=envelope(status_code=2000, message="bad token"))
        endpoints = [{"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"}]
        endpoints += [{"identifier": "locations", "role": r, "url": f"{base}/{r.lower()}/locations"}
                      for r in ("SENDER", "RECEIVER")]
        doc = envelope({"version": "2.2.1", "endpoints": endpoints})
        return web.Response(body=doc, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(request.app[COUNTS])

    async def broadcasts(request: web.Request) -> web.Response:
        arrivals = request.app[ARRIVALS]
        return web.json_response({"received": sum(map(len, arrivals.values())), "arrivals": arrivals})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app[COUNTS] = {}
    app[ARRIVALS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/broadcasts", broadcasts)
    app.router.add_get("/ocpi/versions", versions)
    app.router.add_get("/ocpi/2.2.1", details)
    app.router.add_route("*", "/ocpi/2.2.1/{role}/locations/{tail:.*}", recording if record else module)
    return app


async def serve(receivers: list[tuple[int, str]], record: bool) -> None:
    """Every receiver on its own loopback port, until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners = []
    try:
        for port, token_b in receivers:
            runner = web.AppRunner(build(port, token_b, record), access_log=None)
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, LOOPBACK, port, backlog=1024).start()
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main() -> None:
    argv = sys.argv[1:]
    record = "--record" in argv
    argv = [a for a in argv if a != "--record"]
    if not argv or len(argv) % 2:
        sys.exit(__doc__)
    receivers = [(int(argv[i]), argv[i + 1]) for i in range(0, len(argv), 2)]
    install_uvloop()
    asyncio.run(serve(receivers, record))


if __name__ == "__main__":
    main()
