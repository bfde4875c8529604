"""The reference: a bare aiohttp pass-through proxy, one process, one shared ClientSession.

It does what any HTTP proxy must (read the request, forward method/path/headers/body upstream, relay the
answer) and nothing the hub adds (auth, routing, queueing, audit). Its req/s is the ceiling the hub's
Python/aiohttp stack could reach on this machine; the bench reports hub / bare.

Usage: bare_proxy.py PORT UPSTREAM_BASE_URL
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from common import LOOPBACK, install_uvloop

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length"})
SESSION = web.AppKey("session", aiohttp.ClientSession)


def build(upstream: str) -> web.Application:
    upstream = upstream.rstrip("/")

    async def proxy(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with request.app[SESSION].request(request.method, upstream + request.path_qs, headers=headers,
                                                data=body or None, allow_redirects=False) as resp:
            payload = await resp.read()
            relayed = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=resp.status, body=payload, headers=relayed)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # Same client settings as the hub's delivery session, so both pay the same client-side costs.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=64, ttl_dns_cache=300, enable_cleanup_closed=True)
        app[SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             skip_auto_headers=("User-Agent",),
                                             timeout=aiohttp.ClientTimeout(total=5))
        yield
        await app[SESSION].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    install_uvloop()
    web.run_app(build(upstream), host=LOOPBACK, port=port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
