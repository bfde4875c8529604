"""Per-platform rate limits: a token bucket per platform, decided in memory, enforced hub-wide.

One platform at saturation must not slow the others down, so each platform gets ``rps`` requests per second on
average and up to ``burst`` at once (its own override on the platform record, else ``HUB_RATE_LIMIT_RPS`` /
``HUB_RATE_LIMIT_BURST``); beyond that it is answered 429 + ``Retry-After`` at once (``RateLimited``).

The configured rate is the platform's total over every hub process (``--workers``, replicas). Asking Redis on
every request would cost a round trip on the routed path, so each process decides alone from its own bucket, and
every ``HUB_RATE_LIMIT_SYNC_INTERVAL`` seconds it adds what it admitted to a shared per-platform counter in Redis
(``routing.keys.rate_used``) and reads what the others admitted meanwhile, which it takes out of its own bucket.
Every bucket refills at the full rate and pays for every process's requests, so each one tracks the hub-wide
bucket, one interval late. Accuracy (docs/security.md): the long-run rate is the configured one; within one
interval the other N-1 processes can admit at most what their buckets held, so a burst can overshoot by at most
(N-1) x (burst + rps x interval), and that overshoot is then owed (buckets go negative) and paid back.

Why not the ``limits`` library: its in-memory strategies cost 7-17 us per hit here against 0.3 us for this bucket
(the routed path's whole budget for this issue is a few per cent of ~400 us), it has no token bucket, and its
shared storages need a Redis round trip per request. Measurement in docs/security.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from routing import keys
from routing.batching import ScriptRunner, script_runner
from routing.ocpi.errors import RateLimited
from routing.platform import Platform, RateLimit
from routing.redis_health import RedisHealth

log = logging.getLogger("hub.ratelimit")

MAX_HELD = 1024  # refusals one process holds back at once; beyond, they are answered at once
SHARED_COUNTER_TTL = 86_400  # seconds; a hub gone for a day leaves no counter behind
IDLE_FORGET = 300.0  # seconds: a bucket this long unused is full again; it is dropped and made anew when needed

# The exchange as one script (atomic, as the MULTI it replaces): KEYS[1] the shared counter, KEYS[2] when each
# platform's count last changed (server time, microseconds); ARGV[1] the TTL, ARGV[2] the caller's last exchange
# (the time this script answered it, 0 for none), then (platform id, admitted) pairs. It answers the time now, then
# (platform id, total) for the platforms whose count changed since the caller's last exchange: every interval in
# every process, busy or idle, so its cost must follow the platforms that sent something, not every platform any
# process admitted in a day (HGETALL of that was 4 % of a process's CPU with 10,000 partners). A caller never seen,
# or back after longer than TOUCHED_HORIZON, gets every count.
_EXCHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
local horizon = now - %d
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%%.0f', horizon))
local since = tonumber(ARGV[2])
local out = {string.format('%%.0f', now)}
if since <= horizon then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do out[#out + 1] = all[i] end
  return out
end
local changed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf')  -- after the caller's last
for i = 1, #changed do
  local total = redis.call('HGET', KEYS[1], changed[i])
  if total then
    out[#out + 1] = changed[i]
    out[#out + 1] = total
  end
end
return out
"""
TOUCHED_HORIZON = 60  # seconds a change of a count is remembered for callers that exchange incrementally
_EXCHANGE_SCRIPT = _EXCHANGE % (TOUCHED_HORIZON * 1_000_000)
FORGET_EVERY = 10.0  # seconds between walks over every bucket for idle ones


class _Bucket:
    __slots__ = ("limit", "stamp", "tokens", "used")

    def __init__(self, limit: RateLimit, now: float, tokens: float) -> None:
        self.limit = limit
        self.tokens = tokens
        self.stamp = now
        self.used = 0  # admitted here since the last exchange


class RateLimits:
    """The buckets of one process, and their exchange with the other processes through Redis."""

    def __init__(self, default: RateLimit, *, redis: Redis | None = None, prefix: str = "ocpi-hub",
                 interval: float = 0.25, hold: float = 0.0, on_limited: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, health: RedisHealth | None = None) -> None:
        self.default = default
        self.health = health  # a Redis outage is logged once there, not every interval here
        self.redis = redis
        self.key = keys.rate_used(prefix)
        self.touched_key = keys.rate_touched(prefix)
        self.interval = interval
        self.hold_max = hold
        self.on_limited = on_limited  # metrics: platform id of a refused request
        self._held = 0
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._seen: dict[str, int] = {}  # platform id -> shared total at the last exchange
        self._since = 0  # Redis time (µs) of this process's last exchange: it asks only for changes since
        self._active: list[str] = []  # platforms whose bucket admitted since the last exchange
        self._forgot = 0.0
        self._script = redis.register_script(_EXCHANGE_SCRIPT) if redis is not None else None
        self._runner: ScriptRunner | None = None  # opened with the first exchange, closed by close()

    async def close(self) -> None:
        """Close the script connection the exchange opened (the Redis client is the caller's)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.close()

    def limit_of(self, platform: Platform) -> RateLimit:
        return platform.rate_limit or self.default

    def check(self, platform: Platform) -> None:
        """Count one request of ``platform``; ``RateLimited`` (429) when its bucket is empty."""
        limit = platform.rate_limit or self.default
        now = self.clock()
        bucket = self._buckets.get(platform.id)
        if bucket is None:
            bucket = self._buckets[platform.id] = _Bucket(limit, now, float(limit.burst))
        elif bucket.limit is not limit:
            bucket.limit = limit  # the operator changed it: the new rate holds from now on
        tokens = bucket.tokens + (now - bucket.stamp) * limit.rps
        if tokens > limit.burst:
            tokens = limit.burst
        bucket.stamp = now
        if tokens < 1.0:
            bucket.tokens = tokens
            if self.on_limited is not None:
                self.on_limited(platform.id)
            raise RateLimited(
                f"more than {limit.rps:g} requests per second (burst {limit.burst}) from this platform",
                retry_after=(1.0 - tokens) / limit.rps,
            )
        bucket.tokens = tokens - 1.0
        if not bucket.used:  # the exchange reports the buckets listed here, not a walk over every bucket
            self._active.append(platform.id)
        bucket.used += 1

    async def hold(self, refusal: RateLimited) -> None:
        """Hold a 429 back for the ``Retry-After`` it announces (at most ``HUB_RATE_LIMIT_HOLD`` seconds).

        A refusal still costs the hub a request's handling; a flooder that ignores ``Retry-After`` and resends at
        once on every connection would keep the event loop busy with 429s, and the other platforms' requests wait
        behind them. Held, each of its connections sends at most one request per hold: sleeping costs no CPU. At
        most ``MAX_HELD`` at once per process (then answered at once), and the request's body is not read yet.
        Each hold is drawn between half and all of that time: held refusals released together would bring the
        flooder's connections back together, and its bucket would admit a whole burst at once to the receiver it
        shares with the others (the quiet platform's p99 went from 32 to 80 ms that way).
        """
        if self.hold_max <= 0 or self._held >= MAX_HELD:
            return
        self._held += 1
        try:
            full = min(self.hold_max, max(1.0, math.ceil(refusal.retry_after or 1.0)))
            await asyncio.sleep(full * (0.5 + random.random() / 2))
        finally:
            self._held -= 1

    # -- across processes -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Exchange counts every interval until cancelled; a failed exchange is retried with the next one."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.exchange()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = "rate-limit exchange with Redis failed; deciding locally until it works"
                if self.health is not None:
                    self.health.report(exc, log, message)
                else:
                    log.warning(message, exc_info=True)

    async def exchange(self) -> int:
        """Report what this process admitted; take what the others admitted out of this process's buckets.

        Returns how many platforms' totals came back: those whose count changed since this process's last
        exchange (every platform's on the first one).
        """
        if self.redis is None:
            return 0
        active, self._active = self._active, []
        reported: dict[str, int] = {}
        for pid in active:
            bucket = self._buckets.get(pid)
            if bucket is not None and bucket.used:
                reported[pid] = bucket.used
                bucket.used = 0
        assert self._script is not None
        if self._runner is None:
            self._runner = script_runner(self.redis)
        try:
            flat: list[Any] = await self._runner.submit(
                self._script, (self.key, self.touched_key),
                (SHARED_COUNTER_TTL, self._since, *(x for item in reported.items() for x in item)))
        except BaseException:
            for pid, count in reported.items():  # not counted: report it with the next exchange
                if (bucket := self._buckets.get(pid)) is not None:
                    if not bucket.used:
                        self._active.append(pid)
                    bucket.used += count
            raise
        self._since = int(flat[0])
        now = self.clock()
        for raw_pid, raw_total in zip(flat[1::2], flat[2::2], strict=True):
            pid = raw_pid.decode() if isinstance(raw_pid, bytes) else str(raw_pid)
            total = int(raw_total)
            before = self._seen.get(pid)
            self._seen[pid] = total
            if before is None or total < before:  # first sight, or the counter expired: nothing to compare with
                continue
            others = total - before - reported.get(pid, 0)
            if others <= 0:
                continue
            bucket = self._buckets.get(pid)
            if bucket is None:  # another process serves this platform: this one starts from what is left
                bucket = self._buckets[pid] = _Bucket(self.default, now, float(self.default.burst))
            bucket.tokens -= others
        if now - self._forgot >= FORGET_EVERY:
            self._forgot = now
            self._forget_idle(now)
        return len(flat) // 2

    def _forget_idle(self, now: float) -> None:
        for pid in [pid for pid, b in self._buckets.items() if not b.used and now - b.stamp > IDLE_FORGET
                    and b.tokens + (now - b.stamp) * b.limit.rps >= b.limit.burst]:
            del self._buckets[pid]

    def tokens(self, platform: Platform) -> float:
        """What ``platform`` may still send at once in this process (tests, diagnostics)."""
        bucket = self._buckets.get(platform.id)
        limit = self.limit_of(platform)
        if bucket is None:
            return float(limit.burst)
        return min(float(limit.burst), bucket.tokens + (self.clock() - bucket.stamp) * limit.rps)
