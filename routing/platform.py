"""Platforms (one OCPI connection each) and the parties they host: the hub's core domain records."""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from routing.agreements import Policy


class ConnectionStatus(StrEnum):
    """OCPI ConnectionStatus (hubclientinfo), used for platforms and their parties."""

    CONNECTED = "CONNECTED"
    OFFLINE = "OFFLINE"
    PLANNED = "PLANNED"
    SUSPENDED = "SUSPENDED"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    """A credentials token: printable, no whitespace, at most 64 characters (OCPI string(64))."""
    return secrets.token_urlsafe(32)


# Caches keyed by something each platform has one or a few of (a token, an endpoint URL) are sized for 10,000
# platforms: a hub with more platforms than entries would miss on every request (docs/architecture.md, "Scale").
PER_PLATFORM_CACHE = 1 << 15
PER_ENDPOINT_CACHE = 1 << 17  # a dozen endpoint URLs per platform


@functools.lru_cache(maxsize=PER_PLATFORM_CACHE)  # every request hashes its token
def hash_token(token: str) -> str:
    """Inbound tokens are stored as SHA-256 hashes so a leaked store does not leak access."""
    return hashlib.sha256(token.encode()).hexdigest()


def party_key(country_code: str, party_id: str) -> str:
    """Routing key of a party; CiString values are compared upper-cased (OCPI 2.2.1 terminology)."""
    return f"{country_code.upper()}:{party_id.upper()}"


@dataclass
class Party:
    country_code: str
    party_id: str
    role: str
    status: ConnectionStatus = ConnectionStatus.PLANNED
    business_details: dict[str, Any] | None = None
    last_updated: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        self.country_code = self.country_code.upper()
        self.party_id = self.party_id.upper()
        self.role = self.role.upper()

    @property
    def key(self) -> str:
        return party_key(self.country_code, self.party_id)


@dataclass
class Endpoint:
    identifier: str
    role: str  # InterfaceRole: SENDER | RECEIVER
    url: str


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A platform's request rate, hub-wide: ``rps`` on average, up to ``burst`` at once (docs/security.md)."""

    rps: float
    burst: int


@dataclass
class Platform:
    """One OCPI connection: a token pair, a versions URL, and the parties it hosts."""

    id: str
    name: str
    status: ConnectionStatus = ConnectionStatus.PLANNED
    parties: list[Party] = field(default_factory=list)
    token_a_hash: str | None = None  # pending Token A issued by the hub (hub = credentials receiver)
    inbound_token_hash: str | None = None  # what the platform presents to the hub (Token C, or B if hub initiated)
    outbound_token: str | None = None  # what the hub presents to the platform (Token B, or C if hub initiated)
    versions_url: str | None = None
    version: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    # Hosts besides its versions and endpoint hosts on which the platform may hand over URLs (response_url, Link,
    # Location): set by the operator (docs/security.md, "Outbound URLs").
    allowed_hosts: list[str] = field(default_factory=list)
    removed: bool = False
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    last_seen: datetime | None = None
    # Raised by every save (hub/registry.py): a message made for revision N tells a process whose view is
    # older that it must read this platform from the store before judging or calling it.
    revision: int = 0
    rate_limit: RateLimit | None = None  # None: the hub-wide default (HUB_RATE_LIMIT_RPS / _BURST)
    # None: the hub-wide HUB_ROAMING_POLICY; else this platform's own (docs/agreements.md, "Policy").
    roaming_policy: Policy | None = None
    # Modules whose messages to this platform the hub accepts for later delivery (docs/store-and-forward.md).
    store_forward: frozenset[str] = frozenset()

    @property
    def registered(self) -> bool:
        return self.inbound_token_hash is not None

    def endpoint_url(self, module: str, role: str) -> str | None:
        for ep in self.endpoints:
            if ep.identifier == module and ep.role == role:
                return ep.url
        return None

    def party(self, country_code: str, party_id: str) -> Party | None:
        # Compared field by field (a Party holds them upper-cased): no key string built per party, on every
        # routed request.
        cc, pid = country_code.upper(), party_id.upper()
        for p in self.parties:
            if p.party_id == pid and p.country_code == cc:
                return p
        return None
