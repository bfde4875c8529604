"""hub.dispatch: every request sees what aiohttp's Application._handle would give it, on the hub's own server
(HubRunner), through HTTP: the route's match information and application, one pass of the middleware, and
aiohttp's own handling of 404, 405, sub-applications and ``Expect: 100-continue``; on CPython 3.11 each request
runs in its connection's task (``inline_request_tasks``) and still finishes when its caller goes away."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from hub.connections import HubRunner
from hub.dispatch import request_handler
from hub.settings import Settings

SEEN: web.AppKey[list[str]] = web.AppKey("seen", list)
NAME: web.AppKey[str] = web.AppKey("name", str)
ROOT: web.AppKey[str] = web.AppKey("root", str)  # set on the root application only: seen through config_dict
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def recording(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.config_dict[SEEN].append(request.path)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return web.json_response({"error": exc.status}, status=exc.status)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"id": request.match_info.get("id"), "app": request.app[NAME],
                              "root": request.config_dict[ROOT], "body": body.decode()})


async def which_task(request: web.Request) -> web.Response:
    child = asyncio.create_task(asyncio.sleep(0))  # any other task is still an ordinary Task
    await child
    return web.json_response({"task": id(asyncio.current_task()), "child_is_a_task": isinstance(child, asyncio.Task)})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    request.config_dict[SEEN].append("slow done")
    return web.json_response({})


def build() -> web.Application:
    app = web.Application(middlewares=[recording])
    app[SEEN], app[NAME], app[ROOT] = [], "root", "yes"
    app.router.add_route("*", "/ocpi/thing/{id}", echo)
    app.router.add_get("/only-get", echo)
    app.router.add_get("/task", which_task)
    app.router.add_get("/slow", slow)
    sub = web.Application()
    sub[NAME] = "sub"
    sub.router.add_get("/page/{id}", echo)
    app.add_subapp("/sub", sub)
    return app


@pytest.fixture
async def hub_server() -> AsyncIterator[tuple[str, web.Application]]:
    app = build()
    runner = HubRunner(app, Settings())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", app
    await runner.cleanup()


async def test_a_route_of_the_application_gets_its_match_and_one_pass_of_the_middleware(
        hub_server: tuple[str, web.Application]) -> None:
    url, app = hub_server
    async with aiohttp.ClientSession() as http, http.put(f"{url}/ocpi/thing/A%20B", data=b"x") as resp:
        assert resp.status == 200
        assert await resp.json() == {"id": "A B", "app": "root", "root": "yes", "body": "x"}
    assert app[SEEN] == ["/ocpi/thing/A B"]


async def test_404_405_and_sub_applications_are_aiohttps_own(hub_server: tuple[str, web.Application]) -> None:
    url, app = hub_server
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/nowhere") as resp:
            assert resp.status == 404 and await resp.json() == {"error": 404}
        async with http.post(f"{url}/only-get") as resp:
            assert resp.status == 405 and await resp.json() == {"error": 405}
        async with http.get(f"{url}/sub/page/7") as resp:
            assert resp.status == 200
            assert await resp.json() == {"id": "7", "app": "sub", "root": "yes", "body": ""}
    assert app[SEEN] == ["/nowhere", "/only-get", "/sub/page/7"]


async def test_expect_100_continue_is_answered_before_the_body_is_sent(hub_server: tuple[str, web.Application]) -> None:
    url, _ = hub_server
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"PUT /ocpi/thing/1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b'"body": "body"}')


def test_an_application_with_another_middleware_chain_keeps_aiohttps_handler() -> None:
    two = web.Application(middlewares=[recording, recording])
    assert request_handler(two) == two._handle
    none = web.Application()
    assert request_handler(none) == none._handle


async def test_requests_of_one_connection_run_in_its_task(hub_server: tuple[str, web.Application]) -> None:
    url, _ = hub_server
    seen = []
    for _ in range(2):  # a fresh session each time: a second connection
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            for _ in range(3):
                async with http.get(f"{url}/task") as resp:
                    assert resp.status == 200
                    seen.append(await resp.json())
    assert all(answer["child_is_a_task"] for answer in seen)
    tasks = [answer["task"] for answer in seen]
    if sys.version_info < (3, 12):  # inline_request_tasks: the connection's own task, one per connection
        assert len(set(tasks[:3])) == 1 and len(set(tasks[3:])) == 1 and tasks[0] != tasks[3]
    else:  # aiohttp's own eager task per request
        assert len(set(tasks)) == 6


async def test_a_request_whose_caller_went_away_still_completes(hub_server: tuple[str, web.Application]) -> None:
    """As with aiohttp's task per request: losing the connection does not cancel the handler."""
    url, app = hub_server
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()  # before the answer
    for _ in range(50):
        if "slow done" in app[SEEN]:
            break
        await asyncio.sleep(0.05)
    assert "slow done" in app[SEEN]
