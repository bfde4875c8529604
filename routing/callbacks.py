"""Hub URLs that stand in for partner URLs: command/charging-profile ``response_url``, the CDR ``Location``
header and pagination ``Link`` headers (docs/ocpi-decisions.md, Callback URLs).

Each is an unguessable id in Redis with a TTL. It records where to forward, who may call it (the party it
was issued to) and the routing headers to use; a callback used by anyone else, or after it expired, is refused.
Only a URL the outbound-URL policy accepts, on a host its platform registered, becomes a callback
(routing/outbound.py): the hub would call it with its own credentials.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson
from redis.asyncio import Redis

from routing import keys
from routing.outbound import OutboundPolicy


@dataclass
class Callback:
    url: str  # the partner URL the hub forwards to
    method: str  # the one method allowed on it: POST (async results) or GET (Location, Link)
    issued_to: str  # "CC:PID" of the only party that may call it
    target_platform: str  # platform that owns ``url``
    to_party: str  # OCPI-to-* when forwarding
    module: str
    interface_role: str
    id: str = ""


@dataclass(frozen=True)
class ResultLifetime:
    """How long a result URL (command or charging-profile ``response_url``) lives: as long as its request can
    still produce a result, and never longer than ``maximum`` (docs/ocpi-decisions.md, Callback URLs)."""

    grace: float = 60.0  # after the CPO's timeout, or after a reservation's expiry_date
    maximum: float = 24 * 3600.0  # whatever timeout or expiry_date a partner names (year 9999 included)
    pending: float = 600.0  # until the CPO's synchronous answer tells its timeout

    def seconds(self, *, timeout: float | None, holds_until: float | None, now: float) -> float:
        """``timeout``: the CPO's answer (CommandResponse/ChargingProfileResponse ``timeout``), None before it
        came; ``holds_until``: the epoch until which the request itself may still produce a result (a
        reservation: its ``expiry_date``, when CANCELED_RESERVATION may come, OCPI 2.2.1 Commands)."""
        life = self.pending if timeout is None else timeout + self.grace
        if holds_until is not None:
            life = max(life, holds_until - now + self.grace)
        return min(life, self.maximum)


class Callbacks:
    def __init__(self, redis: Redis, *, prefix: str, base_url: str, policy: OutboundPolicy | None = None,
                 hosts_of: Callable[[str], frozenset[str]] | None = None,
                 results: ResultLifetime | None = None) -> None:
        self.redis = redis
        self.results = results or ResultLifetime()
        self.prefix = prefix
        self.base_url = base_url.rstrip("/") + "/callbacks"
        self.policy = policy or OutboundPolicy()
        self.hosts_of = hosts_of or (lambda platform_id: frozenset())  # PlatformRegistry.url_hosts

    def url_of(self, callback_id: str) -> str:
        return f"{self.base_url}/{callback_id}"

    async def issue(self, cb: Callback, ttl: float, *, field: str) -> str:
        """Store ``cb`` and return its hub URL; ``InvalidParameters`` (naming ``field``) when the outbound policy
        refuses ``cb.url`` or it is not on a host of ``cb.target_platform``, and then nothing is stored."""
        self.policy.check_handed_over(cb.url, self.hosts_of(cb.target_platform), field)
        cb.id = secrets.token_urlsafe(24)
        await self.redis.set(keys.callback(self.prefix, cb.id), orjson.dumps(asdict(cb)), px=max(int(ttl * 1000), 1))
        return self.url_of(cb.id)

    async def extend(self, callback_id: str, ttl: float) -> None:
        """Re-arm the expiry (it may also shorten it), e.g. once the CPO told its timeout."""
        await self.redis.pexpire(keys.callback(self.prefix, callback_id), max(int(ttl * 1000), 1))

    async def resolve(self, callback_id: str) -> Callback | None:
        raw = await self.redis.get(keys.callback(self.prefix, callback_id))
        return Callback(**orjson.loads(raw)) if raw else None

    def id_of(self, url: str) -> str | None:
        prefix = self.base_url + "/"
        return url[len(prefix):] if url.startswith(prefix) else None
