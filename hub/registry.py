"""In-memory view of platforms, kept in step with the store, so routing never waits on the database.

Every change goes through ``save()``: it raises the platform's ``revision``, writes the store, updates this
process's view, then sends a notice on Redis so the other hub processes reload that platform (``PlatformFeed``)
and waits until every hub process confirmed it applied the change (bounded wait). Only then does ``on_saved``
queue the ClientInfo pushes the change causes, and only then does ``save()`` return: what the admin API or a
registration just answered holds on every worker at once, and a push is not claimed by a worker that has not
heard of its receiver yet. A periodic full reload covers a lost notice.

The wait is bounded, so a slow worker can still be behind. Messages therefore carry the receiver's revision
(``ForwardRequest.receiver_revision``): a delivering process whose view is older, or that sees the receiver as
not CONNECTED, calls ``refresh()`` (a store read, on that rare path only) before judging or calling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.asyncio import Redis

from hub.store.protocol import Store
from routing.agreements import Policy
from routing.outbound import registered_hosts
from routing.platform import PER_PLATFORM_CACHE, Party, Platform, hash_token

if TYPE_CHECKING:
    from routing.redis_health import RedisHealth

log = logging.getLogger("hub.registry")

# Authorization headers remembered (hub/access.py); all forgotten when full. Sized like the other per-platform caches
# (routing/platform.py): 10,000 callers outgrew the former 4,096 and every request was looked up in full.
MAX_CACHED_CALLERS = PER_PLATFORM_CACHE
LOAD_BATCH = 500  # platforms read and unsealed per store call when the view is brought in step

SavedHook = Callable[["Platform | None", Platform], Awaitable[None]]
ChangeHook = Callable[[str], Awaitable[None]]


class Reloadable(Protocol):
    """What a change feed keeps current: the platform registry, or the roaming agreements (hub/agreements.py)."""

    async def reload(self, item_id: str) -> None: ...

    async def load(self) -> None: ...


class PlatformRegistry:
    def __init__(self, store: Store, *, unknown_token_ttl: float = 0.0, unknown_token_max: int = 10_000,
                 on_unknown_token: Callable[[str], None] | None = None) -> None:
        self.store = store
        # Token hashes the store did not know either, with the (monotonic) time until which they are refused
        # without asking it again: a flood of made-up tokens costs one store read per distinct token per TTL,
        # in bounded memory. Insertion order is expiry order (one TTL), so the oldest go first.
        self._unknown: dict[str, float] = {}
        self._unknown_ttl = unknown_token_ttl
        self._unknown_max = unknown_token_max
        self.on_unknown_token = on_unknown_token  # "store" (looked up) or "cache" (refused from memory)
        self._by_id: dict[str, Platform] = {}
        self._by_token: dict[str, str] = {}
        self._by_party: dict[str, str] = {}
        # Platforms that override the hub-wide roaming policy (docs/agreements.md): read on every routed request,
        # so empty (the usual case) is the fast path of routing/roaming.py.
        self.policy_overrides: dict[str, Policy] = {}
        self._hosts: dict[str, frozenset[str]] = {}  # per platform, computed on first use after a change
        self.on_change: ChangeHook | None = None
        self.on_saved: SavedHook | None = None  # (state before, state after) in this process
        # Local writes are numbered, so a store read that started before one cannot undo it in this view.
        self._seq = 0
        self._touched: dict[str, int] = {}
        self._reads: dict[str, asyncio.Future[None]] = {}  # refresh() store reads in flight, one per platform
        # Authorization headers that authenticated, with what they resolved to (platform, Token A?, token, its
        # hash): a repeat skips Base64 and SHA-256 (hub/access.py). Emptied by every change of this view
        # (_reindex), and each hit is checked against the platform's current token hash: a revoked token is
        # never served from here.
        self._callers: dict[str, tuple[Platform, bool, str, str]] = {}

    async def load(self) -> None:
        """Brings the view in step with the store: only platforms whose revision differs are read (and their tokens
        unsealed), a batch at a time. A full read of 10,000 platforms held the event loop for about 0.4 s, every
        ``full_reload_every`` seconds in every process."""
        started = self._seq
        revisions = await self.store.platform_revisions()
        current = self._by_id
        stale = [pid for pid, revision in revisions.items()
                 if (known := current.get(pid)) is None or known.revision != revision]
        read: dict[str, Platform] = {}
        for start in range(0, len(stale), LOAD_BATCH):  # the loop serves requests between batches
            read.update((p.id, p) for p in await self.store.get_platforms(stale[start:start + LOAD_BATCH]))
        fresh: dict[str, Platform] = {}
        for pid in revisions:  # the store's order, oldest first
            platform = read.get(pid) or current.get(pid)
            if platform is not None:
                fresh[pid] = platform
        for platform_id, seq in self._touched.items():
            if seq > started:  # written here while the store was read: this view is the newer one
                newer = self._by_id.get(platform_id)
                if newer is None:
                    fresh.pop(platform_id, None)
                else:
                    fresh[platform_id] = newer
        self._touched = {k: v for k, v in self._touched.items() if v > started}
        if read or fresh.keys() != self._by_id.keys() or any(fresh[k] is not self._by_id[k] for k in fresh):
            self._by_id = fresh
            self._reindex()

    def _reindex(self) -> None:
        self._by_token, self._by_party, self.policy_overrides = {}, {}, {}
        for platform in self._by_id.values():
            self._index(platform)
        self._forget_derived()

    def _replace(self, old: Platform | None, new: Platform | None) -> None:
        """One platform changed (saved here, or reloaded on a notice): its entries replaced, not every platform's
        walked again (36 ms per change with 10,000 platforms)."""
        if old is not None:
            self._unindex(old)
        if new is not None:
            self._index(new)
        self._forget_derived()

    def _index(self, p: Platform) -> None:
        if p.inbound_token_hash:
            self._by_token[p.inbound_token_hash] = p.id
        if p.token_a_hash:
            self._by_token[p.token_a_hash] = p.id
        if not p.removed:
            if p.roaming_policy is not None:
                self.policy_overrides[p.id] = p.roaming_policy
            for party in p.parties:
                self._by_party[party.key] = p.id

    def _unindex(self, p: Platform) -> None:
        """Only the entries that are still this platform's: a party or token may have moved to another since."""
        for token_hash in (p.inbound_token_hash, p.token_a_hash):
            if token_hash and self._by_token.get(token_hash) == p.id:
                del self._by_token[token_hash]
        for party in p.parties:
            if self._by_party.get(party.key) == p.id:
                del self._by_party[party.key]
        self.policy_overrides.pop(p.id, None)

    def _forget_derived(self) -> None:
        self._unknown.clear()  # a change this process heard of may have issued one of them
        self._hosts = {}
        self._callers = {}

    def _touch(self, platform_id: str) -> None:
        self._seq += 1
        self._touched[platform_id] = self._seq

    def _put(self, platform: Platform) -> None:
        self._touch(platform.id)
        old = self._by_id.get(platform.id)
        self._by_id[platform.id] = platform
        self._replace(old, platform)

    async def save(self, platform: Platform) -> None:
        old = self._by_id.get(platform.id)
        # Above every revision this process has seen, and a microsecond clock reading: two processes saving one
        # platform at once rarely end up with the same number (comparisons need only "older than").
        platform.revision = max(platform.revision + 1, (old.revision + 1) if old else 1, time.time_ns() // 1000)
        await self.store.save_platform(platform)
        self._put(platform)
        # Every process first, pushes second: a push queued before the other workers reloaded the platform
        # could be claimed by one that still sees it PLANNED (dead-lettered) or holds its old Token B.
        if self.on_change is not None:
            try:
                await self.on_change(platform.id)
            except Exception:  # the periodic reload repairs a lost notice; deliveries check revisions
                log.warning("could not announce change of platform %s", platform.id, exc_info=True)
        if self.on_saved is not None:
            try:
                await self.on_saved(old, platform)
            except Exception:  # a missed ClientInfo push is repaired by the partner's pull; never fail the save
                log.warning("after-save hook failed for platform %s", platform.id, exc_info=True)

    async def reload(self, platform_id: str) -> None:
        """Apply a change another process announced."""
        await self._read(platform_id)

    async def _read(self, platform_id: str) -> None:
        started = self._seq
        platform = await self.store.get_platform(platform_id)
        if self._touched.get(platform_id, 0) > started:
            return  # this process wrote or read a newer state while the store answered
        self._touch(platform_id)
        if platform is None:
            self._replace(self._by_id.pop(platform_id, None), None)
        else:
            old = self._by_id.get(platform.id)
            self._by_id[platform.id] = platform
            self._replace(old, platform)

    async def refresh(self, platform_id: str, revision: int = 0) -> Platform | None:
        """This platform as the store has it now, applied to this view; for rare paths only (see module doc).

        Concurrent callers share one store read. A caller that needs ``revision`` and joined a read that
        started before that revision was written reads once more.
        """
        for _ in range(2):
            read = self._reads.get(platform_id)
            if read is None or read.done():
                read = self._reads[platform_id] = asyncio.ensure_future(self._read(platform_id))
                read.add_done_callback(functools.partial(self._forget_read, platform_id))
            await asyncio.shield(read)
            current = self._by_id.get(platform_id)
            if current is None or current.revision >= revision:
                return current
        return self._by_id.get(platform_id)

    def _forget_read(self, platform_id: str, read: asyncio.Future[None]) -> None:
        if self._reads.get(platform_id) is read:
            del self._reads[platform_id]
        if not read.cancelled():
            read.exception()  # retrieved here too: a failed read is reported to its callers, not logged twice

    def get(self, platform_id: str) -> Platform | None:
        return self._by_id.get(platform_id)

    def url_hosts(self, platform_id: str) -> frozenset[str]:
        """The hosts a platform may hand over URLs on (routing/outbound.py), cached until a platform changes."""
        hosts = self._hosts.get(platform_id)
        if hosts is None:
            platform = self._by_id.get(platform_id)
            hosts = registered_hosts(platform) if platform is not None else frozenset()
            self._hosts[platform_id] = hosts
        return hosts

    def all(self) -> list[Platform]:
        return sorted(self._by_id.values(), key=lambda p: p.created_at)

    async def by_token(self, candidates: list[str]) -> tuple[Platform, bool] | None:
        """The platform a presented token belongs to, and whether it is a pending Token A."""
        for token in candidates:
            token_hash = hash_token(token)
            platform_id = self._by_token.get(token_hash)
            platform = self._by_id.get(platform_id) if platform_id else None
            if platform is None:
                if self._known_unknown(token_hash):
                    continue
                # Another process may have issued it a moment ago: ask the store before refusing.
                platform = await self.store.find_platform_by_token_hash(token_hash)
                if platform is not None:
                    self._put(platform)
                else:
                    self._remember_unknown(token_hash)
            if platform is None:
                continue
            if platform.inbound_token_hash == token_hash:
                return platform, False
            if platform.token_a_hash == token_hash:
                return platform, True
        return None

    def cached_caller(self, header: str) -> tuple[Platform, bool, str] | None:
        """What ``header`` authenticated as last time (platform, Token A?, token), if nothing changed since."""
        hit = self._callers.get(header)
        if hit is None:
            return None
        platform, is_token_a, token, token_hash = hit
        if self._by_id.get(platform.id) is not platform or token_hash != (
                platform.token_a_hash if is_token_a else platform.inbound_token_hash):
            del self._callers[header]  # changed in place: looked up in full again
            return None
        return platform, is_token_a, token

    def remember_caller(self, header: str, platform: Platform, is_token_a: bool, token: str) -> None:
        """Keep what ``header`` authenticated as, for ``cached_caller``; at most ``MAX_CACHED_CALLERS``."""
        if len(self._callers) >= MAX_CACHED_CALLERS:
            self._callers = {}
        self._callers[header] = (platform, is_token_a, token, hash_token(token))

    def _known_unknown(self, token_hash: str) -> bool:
        until = self._unknown.get(token_hash)
        known = until is not None and until > time.monotonic()
        if self.on_unknown_token is not None:
            self.on_unknown_token("cache" if known else "store")
        return known

    def _remember_unknown(self, token_hash: str) -> None:
        if self._unknown_ttl <= 0 or self._unknown_max <= 0:
            return
        now = time.monotonic()
        unknown = self._unknown
        unknown.pop(token_hash, None)
        while unknown and (len(unknown) >= self._unknown_max or next(iter(unknown.values())) <= now):
            del unknown[next(iter(unknown))]
        unknown[token_hash] = now + self._unknown_ttl

    def by_party(self, country_code: str, party_id: str) -> tuple[Platform, Party] | None:
        cc, pid = country_code.upper(), party_id.upper()
        platform_id = self._by_party.get(f"{cc}:{pid}")  # party_key, upper-cased once for both lookups
        platform = self._by_id.get(platform_id) if platform_id else None
        if platform is None:
            return None
        party = platform.party(cc, pid)
        return (platform, party) if party is not None else None


@dataclass
class _Acks:
    expected: int | None = None  # subscribers that received the notice, this process included
    count: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, n: int = 1) -> None:
        self.count += n
        self._check()

    def expect(self, n: int) -> None:
        self.expected = n
        self._check()

    def _check(self) -> None:
        if self.expected is not None and self.count >= self.expected:
            self.done.set()


@dataclass(frozen=True)
class _Topic:
    target: Reloadable
    item: str  # the key naming what changed in a notice: "platform", "agreement"


class PlatformFeed:
    """Platform changes between hub processes over one Redis pub/sub channel.

    Messages (JSON): ``{"platform": id, "change": cid}`` — reload ``id``, then answer ``{"ack": cid}``. The
    announcing process waits until as many acks arrived as PUBLISH reported subscribers (itself included), or
    ``ack_timeout``. A plain platform id (older processes) is reloaded without an ack.

    Roaming agreements ride on the same subscription, on their own channel (``also``, hub/agreements.py): one
    pub/sub connection per process, one outage and one recovery for both.
    """

    def __init__(self, registry: Reloadable, redis: Redis, channel: str, *, ack_timeout: float = 2.0,
                 full_reload_every: float = 15.0) -> None:
        self.registry = registry
        self.redis = redis
        self.channel = channel
        self.ack_timeout = ack_timeout
        self.full_reload_every = full_reload_every
        self.health: RedisHealth | None = None  # set by the app: a Redis outage is logged once there
        self._topics: dict[str, _Topic] = {channel: _Topic(registry, "platform")}
        self._pending: dict[str, _Acks] = {}
        self._pubsub: Any = None

    def also(self, target: Reloadable, channel: str, item: str) -> Callable[[str], Awaitable[None]]:
        """Carry changes of another kind (``item``) on ``channel``; returns the announce of that kind. Call
        before ``open``."""
        self._topics[channel] = _Topic(target, item)
        return functools.partial(self._announce, channel)

    async def open(self) -> None:
        """Subscribe; call before the registry's first load so no change slips in between."""
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(*self._topics)

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def announce(self, platform_id: str) -> None:
        await self._announce(self.channel, platform_id)

    async def _announce(self, channel: str, item_id: str) -> None:
        topic = self._topics[channel]
        change = uuid.uuid4().hex
        acks = self._pending[change] = _Acks()
        try:
            receivers = int(await self.redis.publish(channel, orjson.dumps({topic.item: item_id, "change": change})))
            acks.expect(receivers)
            try:
                await asyncio.wait_for(acks.done.wait(), self.ack_timeout)
            except TimeoutError:
                log.warning("only %d of %d hub processes confirmed the change of %s %s within %.1fs",
                            acks.count, receivers, topic.item, item_id, self.ack_timeout)
        finally:
            self._pending.pop(change, None)

    async def run(self) -> None:
        """Apply changes announced by any process (this one included); reload everything now and then."""
        if self._pubsub is None:
            await self.open()
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.full_reload_every
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    await self._handle(message["channel"], message["data"])
                if loop.time() >= next_full:
                    next_full = loop.time() + self.full_reload_every
                    for topic in self._topics.values():
                        await topic.target.load()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.health is None or not self.health.failed(exc):
                    log.warning("platform change feed failed; retrying", exc_info=True)
                next_full = loop.time()  # notices may have been lost meanwhile: reload all once back
                await asyncio.sleep(1)

    async def _handle(self, channel: Any, data: Any) -> None:
        topic = self._topics.get(channel.decode() if isinstance(channel, bytes) else str(channel))
        if topic is None:
            return
        raw = data if isinstance(data, bytes | str) else str(data)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):  # a plain platform id
            await topic.target.reload(raw.decode() if isinstance(raw, bytes) else raw)
            return
        if "ack" in doc:
            acks = self._pending.get(str(doc["ack"]))
            if acks is not None:
                acks.add()
            return
        item_id, change = str(doc.get(topic.item, "")), str(doc.get("change", ""))
        if not item_id:
            return
        own = self._pending.get(change)
        if own is not None:  # our own notice: this view already has the change
            own.add()
            return
        await topic.target.reload(item_id)
        if change:
            await self.redis.publish(channel, orjson.dumps({"ack": change}))
