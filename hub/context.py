"""Everything one hub process holds, built by ``create_app`` and reached from handlers via ``hub_of``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from hub.admission import Admission
from hub.agreements import AgreementKeeper
from hub.audit import AuditWriter
from hub.logs import ThrottledLog
from hub.metrics import Metrics
from hub.ratelimit import RateLimits
from hub.registry import PlatformRegistry
from hub.settings import Settings
from hub.store.protocol import HubStore
from hub.usage import UsageRecorder
from routing.agreements import AgreementBook
from routing.callbacks import Callbacks
from routing.delivery import Delivery
from routing.ocpi.headers import Party
from routing.open_routing import RouteHints
from routing.outbound import OutboundPolicy
from routing.queue import DeliveryQueue
from routing.redis_health import RedisHealth
from routing.roaming import Roaming
from routing.tasks import LoopWatch


@dataclass
class Hub:
    settings: Settings
    store: HubStore
    registry: PlatformRegistry
    redis: Redis
    queue: DeliveryQueue
    delivery: Delivery
    session: aiohttp.ClientSession
    audit: AuditWriter
    metrics: Metrics
    admin_token: str
    callbacks: Callbacks
    hints: RouteHints
    admission: Admission  # requests and body bytes waiting on receivers in this process (503 beyond)
    rate_limits: RateLimits  # requests per second per platform, hub-wide (429 beyond)
    health: RedisHealth  # Redis outages: one state per process (routing/redis_health.py)
    usage: UsageRecorder  # per-day usage of routed sessions and CDRs, written off the routing path (hub/usage.py)
    agreements: AgreementBook  # roaming agreements, in memory on every process (hub/agreements.py)
    agreement_keeper: AgreementKeeper  # how they change: store, this book, the other processes
    roaming: Roaming  # the one place agreements are enforced (routing/roaming.py)
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # which URLs the hub calls (routing/outbound.py)
    on_seen: Callable[[str], None] | None = None  # platform id heard from (still-alive tracking)
    client_log: ThrottledLog | None = None  # refused requests and malformed HTTP: a bounded number of lines
    loops: LoopWatch = field(default_factory=LoopWatch)  # background loops that ended: /healthz 503

    @functools.cached_property
    def party(self) -> Party:
        """The hub's own party: FROM of every answer it gives itself, TO of broadcasts and GET All."""
        return Party(self.settings.hub_country_code, self.settings.hub_party_id)

    @property
    def versions_url(self) -> str:
        return self.settings.public_url.rstrip("/") + "/ocpi/versions"

    @property
    def base_url(self) -> str:
        return self.settings.public_url.rstrip("/") + "/ocpi/2.2.1"

    def version_url(self, version: str) -> str:
        """The hub's version details URL of one OCPI version, the base of that version's endpoints."""
        return f"{self.settings.public_url.rstrip('/')}/ocpi/{version}"


HUB_KEY = web.AppKey("hub", Hub)


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB_KEY]
