"""The storage interface: platforms (with parties, tokens, endpoints), roaming agreements, the audit log, objects kept
for GET All and routed Sessions and CDRs kept for catch-up.

Two implementations honour it: MongoDB (production, scale-out) and SQLite (embedded default).
Both pass the same contract suite in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from hub.audit import AuditQuery, AuditRecord
from hub.sealing import Sealer
from hub.usage import UsageRow
from routing.agreements import Agreement
from routing.platform import Platform


class PartyConflict(Exception):
    """A party pair (country_code, party_id) is already reserved by another, not removed, platform."""

    def __init__(self, party: str, platform_id: str | None = None) -> None:
        owner = f" by platform {platform_id}" if platform_id else ""
        super().__init__(f"party {party} is already reserved{owner}")
        self.party = party
        self.platform_id = platform_id


class Store(Protocol):
    """Platforms and audit; the full store also implements ObjectStore and RouteHints (see HubStore)."""

    sealer: Sealer  # seals outbound tokens; its hint keys hash personal route-hint keys

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the store cannot be reached (used by /readyz)."""

    async def save_platform(self, platform: Platform) -> None:
        """Insert or replace the whole platform; reserve its party pairs atomically.

        Raises PartyConflict when a pair is reserved by another platform that is not removed.
        A removed platform holds no reservations.
        """

    async def get_platform(self, platform_id: str) -> Platform | None: ...

    async def platform_revisions(self) -> dict[str, int]:
        """Every platform's id and revision, removed ones included, oldest first: what a process compares its view
        with, without reading (and opening the sealed tokens of) every platform."""

    async def get_platforms(self, platform_ids: Sequence[str]) -> list[Platform]:
        """The platforms of these ids that exist, in no particular order."""

    async def find_platform_by_token_hash(self, token_hash: str) -> Platform | None:
        """The platform whose inbound token hash or pending Token A hash equals ``token_hash``."""

    async def reseal_secrets(self) -> int:
        """Seal every stored outbound token with the first secret key (clear ones of older versions included);
        returns how many platforms changed. Run at every start: that completes a key rotation."""

    async def insert_audit(self, records: Sequence[AuditRecord]) -> None: ...

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]: ...

    async def purge_audit(self, older_than: datetime) -> int:
        """Delete audit records older than the cut-off; returns how many went."""


@dataclass
class StoredObject:
    """An object pushed to the hub itself (broadcast, TO = hub), kept to answer GET All (OCPI 2.2.1 Broadcast Push;
    GET All via Hub)."""

    module: str  # locations | tariffs | tokens
    country_code: str  # owner
    party_id: str
    object_id: str  # opaque per module (tokens: "<uid>|<type>")
    last_updated: datetime  # the object's own last_updated, never changed by the hub
    data: dict[str, Any]  # the object as the owner pushed it, merged with later PATCHes
    # The OCPI version ``data`` is written in (its owner's): GET All translates it for other versions.
    ocpi_version: str = "2.2.1"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # stable page order


class ObjectStore(Protocol):
    async def save_object(self, obj: StoredObject) -> None:
        """Insert or replace by (module, country_code, party_id, object_id); keeps the first created_at.

        country_code and party_id are stored upper-case; data must be a JSON object (stored as JSON text).
        """

    async def get_object(
        self, module: str, country_code: str, party_id: str, object_id: str
    ) -> StoredObject | None: ...

    async def delete_object(self, module: str, country_code: str, party_id: str, object_id: str) -> bool:
        """Drop one stored object; False when there was none."""

    async def list_objects(
        self,
        module: str,
        *,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
        owners: Collection[tuple[str, str]] | None = None,
    ) -> tuple[list[StoredObject], int]:
        """A page ordered by created_at then key (stable while crawling), and the total matching the dates.

        date_from is inclusive, date_to exclusive, both on last_updated (OCPI 2.2.1 Pagination). limit <= 0 gives an
        empty page with the total; a negative offset counts as 0. ``owners``: only objects of these upper-case
        (country_code, party_id) pairs, page and total alike (roaming agreements, docs/agreements.md); an empty
        collection matches nothing, None everything.
        """


    async def purge_objects(self, module: str, last_updated_before: datetime) -> int:
        """Drop the module's objects whose last_updated is before the cut-off (retention of personal data)."""


class RouteHints(Protocol):
    async def add_route_hint(self, kind: str, key: str, party: str) -> None:
        """Remember that ``party`` ("CC:PID") owns ``key`` of ``kind`` (token, location, session, ...).

        Idempotent: adding it again only marks it seen now. Keys are case-sensitive; callers normalise.
        """

    async def add_route_hints(self, hints: Sequence[tuple[str, str, str]]) -> None:
        """``add_route_hint`` for a batch of (kind, key, party), in one write: how the hub writes them, behind
        the routing path."""

    async def find_route_hint(self, kind: str, key: str) -> list[str]:
        """Every party known to own ``key`` of ``kind``, most recently seen first."""

    async def purge_route_hints(self, seen_before: datetime) -> int:
        """Drop hints last seen before the cut-off; returns how many went."""


class UsageStore(Protocol):
    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add each row's count, kWh and cost to the stored totals of its (day, from, to, module, currency),
        creating them at zero first: increments, so every hub process adds its own."""

    async def query_usage(self, since: str | None = None, until: str | None = None) -> list[UsageRow]:
        """Stored totals with ``since <= day <= until`` (``YYYY-MM-DD``, both inclusive), ordered by day, from party,
        to party, module and currency."""


class AgreementStore(Protocol):
    """Roaming agreements (routing/agreements.py), kept whole; the hub reads them all into memory."""

    async def save_agreement(self, agreement: Agreement) -> None:
        """Insert or replace by id."""

    async def save_agreements(self, agreements: Sequence[Agreement]) -> None:
        """Insert or replace several at once: all of them or, when the store fails part-way, none."""

    async def get_agreement(self, agreement_id: str) -> Agreement | None: ...

    async def list_agreements(self) -> list[Agreement]:
        """All agreements, oldest first (created_at, then id)."""

    async def delete_agreement(self, agreement_id: str) -> bool:
        """False when there was none."""


@dataclass
class RoutedObject:
    """A Session or CDR the hub routed to one party, kept for that party's catch-up (docs/catchup.md).

    Stores keep ``data`` sealed (hub/sealing.py: it holds personal data such as token uids); every other field is
    in clear, as the index of what to serve to whom and until when.
    """

    module: str  # sessions | cdrs
    country_code: str  # owner (the CPO that sent it)
    party_id: str
    object_id: str  # the Session's or CDR's id
    receiver: str  # "CC:PID" of the party it was addressed to: the only one it is served to
    sender: str  # "CC:PID" of the party that sent it (FROM)
    receiver_platform_id: str
    ocpi_version: str  # the version ``data`` is written in (its sender's)
    last_updated: datetime  # the object's own, for date_from/date_to
    expires_at: datetime  # never served after this; purged once past it
    data: dict[str, Any]
    kept_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # first kept: stable page order


class RoutedStore(Protocol):
    """Sessions and CDRs the hub routed, kept for ``HUB_CATCHUP_DAYS`` so their receiver can fetch them again.

    The key is (module, receiver, country_code, party_id, object_id): what one CPO sent to two parties is kept
    for each. Nothing past its ``expires_at`` is ever returned, whether or not it has been purged yet.
    """

    async def keep_routed(self, obj: RoutedObject) -> None:
        """Insert or replace by key; keeps the first ``kept_at``. Party keys and the owner are stored upper-case."""

    async def get_routed(self, module: str, receiver: str, country_code: str, party_id: str,
                         object_id: str) -> RoutedObject | None:
        """The kept, unexpired record of that key, or None (a Session PATCH's periods across the 2.1.1 boundary
        are translated against it: docs/versions.md, "Sessions")."""

    async def change_routed(self, module: str, receiver: str, country_code: str, party_id: str, object_id: str,
                            change: Callable[[RoutedObject], RoutedObject | None]) -> bool:
        """Replace a kept, unexpired record by ``change(record)`` as one atomic read-modify-write (a Session
        PATCH merged into what was kept), never losing another writer's change; ``change`` may run more than once
        and returns None to leave the record as it is. False when there was no such record or nothing changed."""

    async def list_routed(
        self,
        module: str,
        receiver: str,
        *,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
        owners: Collection[tuple[str, str]] | None = None,
    ) -> tuple[list[RoutedObject], int]:
        """A page of the unexpired records addressed to ``receiver``, ordered by kept_at then key, and the total.

        Dates, offset, limit and ``owners`` as ``ObjectStore.list_objects`` (date_from inclusive, date_to exclusive,
        on last_updated)."""

    async def purge_routed(self, expired_before: datetime) -> int:
        """Drop records whose expires_at is before the cut-off; returns how many went."""

    async def reseal_routed(self) -> int:
        """Seal with the first secret key every record sealed under an older one; returns how many changed. Run
        at every start, with ``reseal_secrets``: that completes a key rotation."""


class HubStore(Store, ObjectStore, RouteHints, UsageStore, AgreementStore, RoutedStore, Protocol):
    """Everything the hub keeps durably; both implementations provide all of it."""
