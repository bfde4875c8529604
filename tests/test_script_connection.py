"""The queue's lean script connection (routing/resp.py) against real redis-servers of the tests' own.

What a real client must survive: a flushed script cache, a dropped connection, a Redis that stops answering,
AUTH and SELECT from the URL, a Redis that is not there. Each case goes through the queue API.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError

from routing import keys
from routing.batching import ScriptBatcher, script_runner
from routing.queue import DeliveryQueue, Message
from routing.resp import ScriptConnection
from tests.conftest import free_port, scratch_redis

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

PREFIX = "lean"


def message(group: str = "") -> Message:
    msg = Message(receiver="R", group="", payload=b'{"x":1}', deadline=time.time() + 30)
    msg.group = group or "msg:" + msg.id
    return msg


async def deliver_one(queue: DeliveryQueue) -> None:
    """Enqueue with claim-on-enqueue and ack: the two scripts every routed request runs."""
    msg = message()
    assert await queue.enqueue(msg, claim=True), "an empty group on an idle receiver is leased at once"
    assert await queue.ack(msg)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    with scratch_redis(tmp_path) as url:
        yield url


async def open_queue(url: str, **client_options: float) -> tuple[DeliveryQueue, Redis]:
    client = Redis.from_url(url, **client_options)  # type: ignore[arg-type]
    return DeliveryQueue(client, prefix=PREFIX, max_inflight=1000), client


async def close(queue: DeliveryQueue, client: Redis) -> None:
    await queue.close()
    await client.aclose()


async def test_a_tcp_redis_gets_the_lean_connection_and_fakeredis_keeps_redis_py(server: str) -> None:
    port = int(server.rsplit(":", 1)[1].split("/")[0])
    clients = [Redis.from_url(server), Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0)]
    runners = [script_runner(client) for client in clients]
    try:
        assert all(isinstance(runner, ScriptConnection) for runner in runners), runners
        assert isinstance(script_runner(fakeredis.FakeAsyncRedis()), ScriptBatcher)

        async def provider_credentials() -> tuple[str]:
            return ("",)

        class Provider:
            def get_credentials(self) -> tuple[str]:
                return ("",)

            get_credentials_async = staticmethod(provider_credentials)

        custom = Redis(host="127.0.0.1", port=port, credential_provider=Provider())  # type: ignore[arg-type]
        clients.append(custom)
        assert isinstance(script_runner(custom), ScriptBatcher), "credentials it cannot copy: redis-py"
    finally:
        for runner in runners:
            await runner.close()
        for client in clients:
            await client.aclose()


async def test_scripts_run_on_their_own_connection_and_keep_the_queue_consistent(server: str) -> None:
    queue, client = await open_queue(server)
    try:
        await asyncio.gather(*(deliver_one(queue) for _ in range(200)))
        clients = await client.client_list()
        assert any(c["cmd"] in ("evalsha", "eval") for c in clients), [(c["id"], c["cmd"]) for c in clients]
        stats = await queue.stats()
        assert all(s.depth == 0 and s.inflight == 0 for s in stats), stats
    finally:
        await close(queue, client)


async def test_a_flushed_script_cache_is_refilled_without_the_caller_noticing(server: str) -> None:
    queue, client = await open_queue(server)
    try:
        await deliver_one(queue)
        await client.script_flush()
        await asyncio.gather(*(deliver_one(queue) for _ in range(20)))  # all of them hit NOSCRIPT first
        assert await client.zcard(keys.pending(PREFIX, "R")) == 0
    finally:
        await close(queue, client)


async def test_a_dropped_connection_is_reopened_by_the_next_call(server: str) -> None:
    queue, client = await open_queue(server)
    try:
        await deliver_one(queue)
        assert await client.client_kill_filter(_type="normal", skipme=True) >= 1
        await asyncio.sleep(0.2)  # the close reaches the connection
        await deliver_one(queue)
    finally:
        await close(queue, client)


async def test_a_redis_that_stops_answering_fails_calls_after_the_timeout_then_recovers(server: str) -> None:
    queue, client = await open_queue(server, socket_timeout=0.5)
    admin = Redis.from_url(server)
    try:
        await deliver_one(queue)
        await admin.execute_command("CLIENT", "PAUSE", "2500", "ALL")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await queue.enqueue(message(), claim=True)
        waited = time.monotonic() - started
        assert waited < 2.0, f"the call waited {waited:.1f} s, past its 0.5 s timeout and into the 2.5 s pause"
        await asyncio.sleep(2.6 - waited)  # the pause is over
        await deliver_one(queue)
    finally:
        await admin.aclose()
        await close(queue, client)


async def test_auth_and_database_come_from_the_url(tmp_path: Path) -> None:
    with scratch_redis(tmp_path, password="s3cret") as url:
        queue, client = await open_queue(url.replace("/0", "/3"))
        try:
            msg = message()
            assert await queue.enqueue(msg, claim=True)
            assert await client.exists(keys.message(PREFIX, msg.id)) == 1, "the message is in database 3"
            other = Redis.from_url(url)
            try:
                assert await other.exists(keys.message(PREFIX, msg.id)) == 0, "and not in database 0"
            finally:
                await other.aclose()
            assert await queue.ack(msg)
        finally:
            await close(queue, client)
        queue, client = await open_queue(url.replace("s3cret", "wrong"))
        try:
            with pytest.raises(AuthenticationError):
                await queue.enqueue(message(), claim=True)
        finally:
            await close(queue, client)


async def test_no_redis_listening_fails_the_call_at_once() -> None:
    queue, client = await open_queue(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=2)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await queue.enqueue(message(), claim=True)
        assert time.monotonic() - started < 2
    finally:
        await close(queue, client)


async def test_a_closed_queue_refuses_calls(server: str) -> None:
    queue, client = await open_queue(server)
    await deliver_one(queue)
    await close(queue, client)
    with pytest.raises(ConnectionError):
        await queue.enqueue(message(), claim=True)


async def test_an_idle_connection_is_pinged(server: str) -> None:
    conn = ScriptConnection(port=int(server.rsplit(":", 1)[1].split("/")[0]), idle_ping=0.2, command_timeout=1.0)
    admin = Redis.from_url(server)
    try:
        assert await conn.execute("ECHO", "hello") == b"hello"
        await asyncio.sleep(0.8)
        mine = [c for c in await admin.client_list() if c["cmd"] != "client|list"]
        assert [c["cmd"] for c in mine] == ["ping"], mine
        assert int(mine[0]["idle"]) <= 1
    finally:
        await conn.close()
        await admin.aclose()
