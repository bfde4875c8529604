"""Script calls whose answer waits until replicas have them: ``WAIT`` behind the batch that carried them.

Redis replicates asynchronously: a primary that dies right after answering a write can take that write with it
when Sentinel promotes a replica. A message the hub answers 1000 for (a broadcast, one accepted for later
delivery) must survive that, so with ``HUB_REDIS_WAIT_REPLICAS`` = n its enqueue is answered only once
``WAIT n <ms>`` says n replicas have it (docs/high-availability.md).

``WAIT`` counts the writes of the connection it is sent on, so the runners (routing/resp.py,
routing/batching.py) put it at the end of the very write or pipeline that carried the calls; a caller's future
(``outer``) settles from the call's own answer (``inner``) and that WAIT's. Fewer replicas than asked is an
error reply of its own kind, ``NOREPLICAS``, which routing/redis_health.py counts as Redis refusing writes (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError, ResponseError

# (caller's future, replicas, WAIT timeout in ms): what a replicated call carries besides its own future
Sync = tuple["asyncio.Future[Any]", int, int]


def not_replicated(acks: int, replicas: int, timeout_ms: int) -> ResponseError:
    return ResponseError(f"NOREPLICAS {acks} of {replicas} replicas acknowledged the write within {timeout_ms} ms")


def copy_outcome(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """``target`` ends as ``source`` did (result, exception or cancellation), unless it has ended already."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


def link(inner: asyncio.Future[Any], outer: asyncio.Future[Any]) -> None:
    """A call that failed fails its caller at once; one that succeeded waits for :func:`settle`."""

    def done(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            copy_outcome(future, outer)

    inner.add_done_callback(done)


def wait_command(calls: Sequence[tuple[asyncio.Future[Any], Sync]]) -> tuple[Any, ...]:
    """The WAIT that covers ``calls``: the most replicas and the longest timeout any of them asked for."""
    return ("WAIT", max(sync[1] for _, sync in calls), max(sync[2] for _, sync in calls))


def settle(calls: Sequence[tuple[asyncio.Future[Any], Sync]], wait: asyncio.Future[Any]) -> None:
    """When ``wait`` (the WAIT's answer) is in, answer each caller whose call succeeded. A call not answered yet
    was sent again (NOSCRIPT) in a later write: that write's WAIT settles it."""

    def done(future: asyncio.Future[Any]) -> None:
        failed: BaseException | None = (ConnectionError("the replication check was cancelled") if future.cancelled()
                                        else future.exception())  # retrieved even when no caller is left to tell
        for inner, (outer, replicas, timeout_ms) in calls:
            if outer.done() or not inner.done() or inner.cancelled() or inner.exception() is not None:
                continue
            if failed is not None:
                outer.set_exception(failed)
            elif (acks := int(future.result())) < replicas:
                outer.set_exception(not_replicated(acks, replicas, timeout_ms))
            else:
                outer.set_result(inner.result())

    wait.add_done_callback(done)
