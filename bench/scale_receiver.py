"""Many fake OCPI partners in one process, for ``scale.py``: one loopback port each (up to a chosen number of
ports, then shared), each under its own path ``/<key>`` with its own Token B.

A partner ``<key>`` (``hot``, ``r1``, ``r2``, ...) serves ``/<key>/ocpi/versions`` and ``/<key>/ocpi/2.2.1``
(Token B = ``B-<seed>-<key>``, checked) and answers locations GET and PUT under ``/<key>/ocpi/2.2.1/{sender,
receiver}/locations`` at once, like ``receiver.py``. Every partner has its own endpoint URLs, so the hub's caches
keyed by URL or token see one entry per partner, and its connection pools one pool per port.

The ports are bound here (port 0, the OS picks) and written as JSON to PORTS_FILE once all listen.
``GET /stats`` on any port: answered requests per method and how many distinct partners got one;
``POST /reset`` starts the counts again.

Usage: scale_receiver.py PORTS_FILE SEED PORTS
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web
from common import LOOPBACK, envelope, install_uvloop, ocpi_token
from receiver import CLOCK, COUNTS, SWAP, location

SEEN = web.AppKey("seen", set[str])


def base_url(request: web.Request) -> str:
    return f"http://{request.host}/{request.match_info['key']}/ocpi"


def build(seed: str) -> web.Application:
    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == ocpi_token(f"B-{seed}-{request.match_info['key']}")

    async def versions(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.Response(status=401, body=envelope(status_code=2000, message="bad token"))
        doc = envelope([{"version": "2.2.1", "url": f"{base_url(request)}/2.2.1"}])
        return web.Response(body=doc, content_type="application/json")

    async def details(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.Response(status=401, body=envelope(status_code=2000, message="bad token"))
        base = f"{base_url(request)}/2.2.1"
        endpoints = [{"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"}]
        endpoints += [{"identifier": "locations", "role": r, "url": f"{base}/{r.lower()}/locations"}
                      for r in ("SENDER", "RECEIVER")]
        return web.Response(body=envelope({"version": "2.2.1", "endpoints": endpoints}),
                            content_type="application/json")

    async def module(request: web.Request) -> web.Response:
        """Routing headers echoed swapped; a GET gets a small Location (as ``receiver.module``)."""
        if request.can_read_body:
            await request.read()
        counts = request.app[COUNTS]
        counts[request.method] = counts.get(request.method, 0) + 1
        request.app[SEEN].add(request.match_info["key"])
        headers = {dst: request.headers[src] for src, dst in SWAP if src in request.headers}
        head = b'{"status_code":1000,"status_message":"Success","timestamp":"' + CLOCK.now() + b'"'
        if request.method == "GET":
            body = head + b',"data":' + location(request.match_info["tail"].rsplit("/", 1)[-1]) + b"}"
        else:
            body = head + b"}"
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({**request.app[COUNTS], "partners": len(request.app[SEEN])})

    async def reset(request: web.Request) -> web.Response:
        request.app[COUNTS].clear()
        request.app[SEEN].clear()
        return web.Response(text="ok")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app[COUNTS] = {}
    app[SEEN] = set()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_get("/{key}/ocpi/versions", versions)
    app.router.add_get("/{key}/ocpi/2.2.1", details)
    app.router.add_route("*", "/{key}/ocpi/2.2.1/{role}/locations/{tail:.*}", module)
    return app


async def serve(ports_file: Path, seed: str, count: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(build(seed), access_log=None)
    await runner.setup()
    try:
        ports = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sock.listen(1024)
            ports.append(sock.getsockname()[1])
            await web.SockSite(runner, sock).start()
        tmp = ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        tmp.rename(ports_file)  # whole or not at all: the bench polls for it
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    install_uvloop()
    asyncio.run(serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))


if __name__ == "__main__":
    main()
