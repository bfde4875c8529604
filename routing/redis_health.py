"""Redis outages are the hub's own errors: noticed once, logged once, answered 503, recovered from by itself.

Every process shares one Redis (queues, wake-ups, callbacks, locks). When it is down (connection refused), frozen
(no answer within ``HUB_REDIS_TIMEOUT``) or refusing writes (``OOM`` at ``maxmemory`` with ``noeviction``,
``READONLY`` replica, ``MISCONF`` failed persistence), nothing the hub accepts could be kept, so the hub must say
so: 503 with OCPI 4000 and ``Retry-After`` (:class:`routing.ocpi.errors.HubUnavailable`), never a 500 with a traceback
per request and never a 4002 that blames the receiver.

:class:`RedisHealth` is the one place that decides whether an exception is such an outage. The error middleware
asks it (only on the rare path, when a handler failed), the background loops ask it before logging, and it keeps
the state: one warning when an outage starts, one line when it ends, a gauge and a counter for Prometheus. While
Redis is out a probe writes a short-lived key every ``probe_every`` seconds; its first success ends the outage.
A write, not a PING: a Redis at ``maxmemory`` still answers PING but refuses the hub's writes.

No library covers this: redis-py retries single commands, but has no notion of a shared outage state, and the
queue's lean script connection (``routing/resp.py``) is not redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from routing.ocpi.errors import HubUnavailable

log = logging.getLogger("routing.redis")

# Error replies of a Redis that is up but will not take writes now: redis-py's classes for some of them, the
# first word of the reply for the rest (and for the lean script connection, which keeps replies as they came).
_REFUSING_TYPES = (OutOfMemoryError, ReadOnlyError, MasterDownError, ClusterDownError, TryAgainError)
_REFUSING = frozenset({"OOM", "READONLY", "MISCONF", "LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS",
                       "CLUSTERDOWN", "TRYAGAIN", "NOTBUSY"})

UNREACHABLE, REFUSING_WRITES = "unreachable", "refusing_writes"


def outage_kind(exc: BaseException) -> str | None:
    """``unreachable``, ``refusing_writes``, or None when ``exc`` is not a Redis outage (a bug, a bad argument)."""
    if isinstance(exc, ConnectionError | TimeoutError):  # redis-py's; BusyLoadingError is a ConnectionError
        return UNREACHABLE
    if isinstance(exc, _REFUSING_TYPES):
        return REFUSING_WRITES
    if isinstance(exc, ResponseError):
        word = str(exc).split(" ", 1)[0].upper()
        return REFUSING_WRITES if word in _REFUSING else None
    return None


class RedisHealth:
    """Outage state of this process's Redis (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        probe_key: str,
        *,
        timeout: float = 1.0,
        probe_every: float = 0.5,
        on_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.redis = redis
        self.probe_key = probe_key
        self.timeout = timeout
        self.probe_every = probe_every
        self.on_change = on_change  # (up, kind of outage): gauge and counter
        self.up = True
        self.kind = ""
        self.since = 0.0
        self.ended = float("-inf")  # when the last outage ended
        self.last_error = ""
        self._probe: asyncio.Task[None] | None = None

    @property
    def retry_after(self) -> float:
        """What a refused caller is told: long enough not to hammer a recovering hub, short enough to matter."""
        return max(1.0, min(30.0, (time.monotonic() - self.since) / 2)) if not self.up else 1.0

    def failed(self, exc: BaseException) -> bool:
        """Record ``exc`` if it is a Redis outage (the first one of an outage is logged); True if it was."""
        kind = outage_kind(exc)
        if kind is None:
            return False
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.up:
            self.up, self.kind, self.since = False, kind, time.monotonic()
            log.warning("Redis outage (%s): %s; answering 503 until it is back", kind, self.last_error)
            if self.on_change is not None:
                self.on_change(False, kind)
            self._start_probe()
        return True

    def unavailable(self, exc: BaseException) -> HubUnavailable | None:
        """The 503 to answer for ``exc``, or None when it is no Redis outage (error middleware's hook)."""
        if not self.failed(exc):
            return None
        what = "cannot store requests" if self.kind == REFUSING_WRITES else "cannot reach its queue store"
        return HubUnavailable(f"The hub is temporarily unavailable: it {what}", retry_after=self.retry_after)

    def report(self, exc: BaseException, logger: logging.Logger, message: str, *args: Any) -> None:
        """For background loops: an outage is recorded (logged once by this object), anything else logged here."""
        if not self.failed(exc):
            logger.warning(message, *args, exc_info=exc)

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe from (tests, shutdown)
                self._probe = asyncio.get_running_loop().create_task(self._run_probe(), name="redis-probe")

    async def _run_probe(self) -> None:
        while not self.up:
            await asyncio.sleep(self.probe_every)
            await self.probe()

    async def probe(self) -> bool:
        """One write to Redis; its success ends an outage. True when Redis took it."""
        try:
            await asyncio.wait_for(self.redis.set(self.probe_key, b"1", px=10_000), timeout=self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.up:
                self.failed(exc if outage_kind(exc) else ConnectionError(str(exc)))
            else:
                kind = outage_kind(exc) or UNREACHABLE
                if kind != self.kind:  # e.g. back up but full: still the same outage (its end line names it)
                    self.kind = kind
                    log.debug("Redis outage goes on (%s): %s: %s", kind, type(exc).__name__, exc)
            return False
        self.recovered()
        return True

    def recently_out(self, within: float) -> bool:
        """True when Redis is out now or an outage ended less than ``within`` seconds ago."""
        return not self.up or time.monotonic() - self.ended < within

    def recovered(self) -> None:
        if self.up:
            return
        self.up, self.ended = True, time.monotonic()
        log.info("Redis is back after %.1f s of outage (%s); last error: %s",
                 time.monotonic() - self.since, self.kind, self.last_error)
        if self.on_change is not None:
            self.on_change(True, self.kind)

    async def close(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
