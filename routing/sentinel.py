"""A Redis client that follows the primary Sentinel names, and notices when that primary changes.

redis-py does the following: :class:`redis.asyncio.sentinel.Sentinel` asks the Sentinels for the primary's
address whenever one of its connections (pool, pub/sub) connects, and a connection that gets ``READONLY`` from
a demoted primary drops itself. The hub adds two things here:

* :class:`PrimaryPool` remembers the address it was last given, so a failover is *seen*: one log line per hub
  process and the ``on_change`` hook (the ``ocpi_hub_redis_failovers`` counter);
* :func:`locator`: the same question for the queue's lean script connection (routing/resp.py), which is not
  redis-py and asks through this pool before each (re)connect (docs/high-availability.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from routing.redis_url import SentinelTarget

log = logging.getLogger("routing.redis")

Address = tuple[str, int]


class PrimaryPool(SentinelConnectionPool):
    """redis-py's Sentinel pool that remembers the primary it was last told of and reports a change."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.known: Address | None = None  # unlike master_address, kept across reset()
        self.on_change: Callable[[Address, Address], None] | None = None

    async def get_master_address(self) -> Address:
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        found = (str(address[0]), int(address[1]))
        if self.known != found:
            old, self.known = self.known, found
            if old is not None:
                log.warning("Redis primary of %r is now %s:%d (was %s:%d): Sentinel failed over",
                            self.service_name, found[0], found[1], old[0], old[1])
                if self.on_change is not None:
                    self.on_change(old, found)
        return found


def sentinel_client(target: SentinelTarget, *, timeout: float, **options: Any) -> Redis:
    """The client of the primary of ``target.service``: every connect asks the Sentinels first.

    ``timeout`` bounds connecting and every answer, to the Sentinels as to Redis (HUB_REDIS_TIMEOUT): a Sentinel
    that hangs costs one timeout before the next is asked.
    """
    tls = {name: _tls_value(name, value) for name, value in target.tls_options}

    def connection(username: str | None, password: str | None, use_tls: bool, **more: Any) -> dict[str, Any]:
        found = {"username": username, "password": password}
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout, **more,
                **{k: v for k, v in found.items() if v is not None}, **({"ssl": True, **tls} if use_tls else {})}

    sentinel_kwargs = connection(target.sentinel_username, target.sentinel_password, target.sentinel_tls)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    node = connection(target.username, target.password, target.tls, db=target.db, **options)
    client: Redis = sentinel.master_for(target.service, connection_pool_class=PrimaryPool, **node)
    return client


def primary_pool(redis: Redis) -> PrimaryPool | None:
    """The Sentinel pool of ``redis``, or None for a client of one fixed Redis."""
    pool = getattr(redis, "connection_pool", None)
    return pool if isinstance(pool, PrimaryPool) else None


def locator(redis: Redis) -> Callable[[], Awaitable[Address]] | None:
    """How the lean script connection finds the primary of a Sentinel client (None for a fixed Redis)."""
    pool = getattr(redis, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool) and pool.is_master:
        return pool.get_master_address  # type: ignore[no-any-return]
    return None


def _tls_value(name: str, value: str) -> Any:
    if name == "ssl_check_hostname":
        return value.lower() in ("yes", "true", "1")
    return value
