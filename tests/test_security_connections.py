"""Slow clients and connection floods (docs/security.md, "Connections: slow clients and floods").

Raw sockets against a real hub on 127.0.0.1: idle connections, request heads sent a byte at a time and bodies
sent a byte at a time, while a registered partner keeps routing requests through the hub.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.conftest import ADMIN_TOKEN, HubHarness, MakeHub, cpo, emsp

FLOOD = 40  # connections of each kind: idle, slow head, slow body


async def _open(hub: HubHarness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(hub.settings.host, hub.settings.port)


async def _dribble(writer: asyncio.StreamWriter, data: bytes, every: float = 0.1) -> None:
    """Send ``data`` one byte at a time until the hub closes the connection or the bytes run out."""
    with contextlib.suppress(ConnectionError, OSError):
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def _closed_by_hub(reader: asyncio.StreamReader, within: float) -> bool:
    """True once the hub closed the connection (EOF or reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        pass
    return True


async def test_idle_slow_head_and_slow_body_connections_are_closed_while_partners_keep_routing(
        make_hub: MakeHub) -> None:
    hub = await make_hub(request_head_timeout=0.5, request_body_timeout=0.5, keepalive_timeout=1.0,
                         max_connections=50)
    alpha, beta = cpo(), emsp()
    await hub.connect(alpha)
    await hub.connect(beta)

    idle = [await _open(hub) for _ in range(FLOOD)]
    slow_head = [await _open(hub) for _ in range(FLOOD)]
    slow_body = [await _open(hub) for _ in range(FLOOD)]
    head = b"GET /ocpi/versions HTTP/1.1\r\nHost: hub\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    body_head = (f"POST /admin/platforms HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n").encode()
    dribblers = [asyncio.create_task(_dribble(w, head)) for _, w in slow_head]
    for _, w in slow_body:
        w.write(body_head)
    dribblers += [asyncio.create_task(_dribble(w, b"{" + b" " * 498 + b"}")) for _, w in slow_body]
    try:
        # A legitimate partner routes requests through the hub during the flood, on new and reused connections.
        for _ in range(20):
            status, _, body = await beta.call(hub.session, "GET", "locations", "SENDER", "NL/CPA/LOC1",
                                              to=alpha.party)
            assert status == 200, body
            await asyncio.sleep(0.05)
        # Every flood connection is closed by the hub, none lingers until the client gives up.
        closed = await asyncio.gather(*(_closed_by_hub(r, within=10) for r, _ in idle + slow_head + slow_body))
        assert all(closed), f"{closed.count(False)} of {len(closed)} slow connections still open"
        assert not [rec for rec in alpha.received if rec.method != "GET"]  # nothing half-read was forwarded
        status, _, _ = await beta.call(hub.session, "GET", "locations", "SENDER", "NL/CPA/LOC1", to=alpha.party)
        assert status == 200
        status, platforms = await hub.admin("GET", "/admin/platforms")
        assert status == 200 and len(platforms) == 2  # no slow body ever became a platform
    finally:
        for task in dribblers:
            task.cancel()
        await asyncio.gather(*dribblers, return_exceptions=True)
        for _, w in idle + slow_head + slow_body:
            w.close()


async def test_a_request_head_sent_a_byte_at_a_time_is_cut_off_after_the_head_timeout(make_hub: MakeHub) -> None:
    hub = await make_hub(request_head_timeout=0.5, keepalive_timeout=60)
    reader, writer = await _open(hub)
    task = asyncio.create_task(_dribble(writer, b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 1000, every=0.05))
    try:
        # The bytes keep coming, so the keep-alive timer alone would wait a minute: the head deadline does not.
        assert await _closed_by_hub(reader, within=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()


async def test_over_the_connection_cap_a_partner_still_gets_in_and_idle_connections_make_room(
        make_hub: MakeHub) -> None:
    hub = await make_hub(max_connections=10, keepalive_timeout=60, request_head_timeout=60)
    idle = [await _open(hub) for _ in range(30)]
    try:
        for _ in range(5):
            async with hub.session.get(hub.url + "/healthz") as resp:
                assert resp.status == 200
        closed = await asyncio.gather(*(_closed_by_hub(r, within=5) for r, _ in idle[:20]))
        assert all(closed)  # the oldest idle connections were closed to make room, long before any timeout
    finally:
        for _, w in idle:
            w.close()


async def test_when_every_connection_is_busy_a_newcomer_gets_503_with_retry_after(make_hub: MakeHub) -> None:
    hub = await make_hub(max_connections=3, request_body_timeout=60)
    busy = []
    head = (f"POST /admin/platforms HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode()
    try:
        for _ in range(3):
            reader, writer = await _open(hub)
            writer.write(head)  # a request whose body is still coming: busy, not idle
            await writer.drain()
            busy.append((reader, writer))
        await asyncio.sleep(0.2)
        reader, writer = await _open(hub)
        busy.append((reader, writer))
        async with asyncio.timeout(5):
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nRetry-After: 1\r\n" in answer
    finally:
        for _, w in busy:
            w.close()
