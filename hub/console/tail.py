"""The live tail: audit records as they are written, sent as server-sent events.

Read from the store (every process writes its records there), so the tail shows the whole hub's traffic
whichever worker serves it. Bounded: at most ``MAX_STREAMS`` tails per process, at most ``PER_TICK`` records a
second each, and a tail ends with its session (the browser's EventSource then finds itself logged out).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any, Final

from aiohttp import web

from hub.audit import AuditQuery, AuditRecord
from hub.console.render import NO_STORE, OPERATOR, SECURITY_HEADERS, when
from hub.console.session import hub_from
from routing.platform import utcnow

MAX_STREAMS: Final = 8
PER_TICK: Final = 200
TICK: Final = 1.0  # seconds between store reads
LOOKBACK: Final = timedelta(seconds=5)  # records land up to a flush interval late: look back, skip those sent
HEARTBEAT: Final = 15.0
STREAMS = web.AppKey("console_tail_streams", set[asyncio.Task[Any]])


def event(record: AuditRecord) -> dict[str, Any]:
    return {"id": record.id, "time": when(record.time), "outcome": record.outcome, "method": record.method,
            "path": record.path, "from": record.from_party or record.actor or "", "to": record.to_party or "",
            "status": record.http_status, "ocpi_status": record.ocpi_status,
            "latency_ms": round(record.latency_total_ms, 1), "correlation_id": record.correlation_id}


async def tail(request: web.Request) -> web.StreamResponse:
    hub = hub_from(request)
    operator = request[OPERATOR]
    streams: set[asyncio.Task[Any]] = request.app[STREAMS]
    if len(streams) >= MAX_STREAMS:
        return web.Response(status=503, text="too many live tails open", headers={"Retry-After": "5"})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
                                           **NO_STORE, **SECURITY_HEADERS})
    await response.prepare(request)
    task = asyncio.current_task()
    assert task is not None
    streams.add(task)
    since = utcnow()
    last_beat = time.monotonic()
    # ids sent (or already there when the tail opened) within the lookback window: only new records go out
    there = await hub.store.query_audit(AuditQuery(since=since - LOOKBACK, limit=PER_TICK))
    sent = {r.id: last_beat for r in there}
    try:
        await response.write(b"retry: 5000\n\n")
        while time.time() < operator.expires_at:
            records = await hub.store.query_audit(AuditQuery(since=since - LOOKBACK, limit=PER_TICK))
            now = time.monotonic()
            fresh = [r for r in reversed(records) if r.id not in sent]
            for r in fresh:
                sent[r.id] = now
                await response.write(f"event: audit\ndata: {json.dumps(event(r))}\n\n".encode())
            if fresh:
                since = max(since, fresh[-1].time)
            horizon = now - LOOKBACK.total_seconds() * 4
            for key in [k for k, t in sent.items() if t < horizon]:
                del sent[key]
            if now - last_beat >= HEARTBEAT:
                await response.write(b": alive\n\n")
                last_beat = now
            await asyncio.sleep(TICK)
        await response.write(b"event: ended\ndata: session ended\n\n")
    except ConnectionResetError:  # the browser went away
        pass
    finally:
        streams.discard(task)
    return response


async def _stop_streams(app: web.Application) -> None:
    """At shutdown: end open tails at once instead of holding the server's shutdown for its timeout."""
    streams: set[asyncio.Task[Any]] = app[STREAMS]
    for task in list(streams):
        task.cancel()


def add_routes(app: web.Application) -> None:
    app[STREAMS] = set()
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/messages/tail", tail)
