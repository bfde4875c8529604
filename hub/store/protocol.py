"""The storage interface: platforms (with parties, tokens, endpoints) and the audit log.

Two implementations honour it: MongoDB (production, scale-out) and SQLite (embedded default).
Both pass the same contract suite in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from hub.audit import AuditQuery, AuditRecord
from hub.platform import Platform


class PartyConflict(Exception):
    """A party pair (country_code, party_id) is already reserved by another, not removed, platform."""

    def __init__(self, party: str, platform_id: str | None = None) -> None:
        owner = f" by platform {platform_id}" if platform_id else ""
        super().__init__(f"party {party} is already reserved{owner}")
        self.party = party
        self.platform_id = platform_id


class Store(Protocol):
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

    async def list_platforms(self) -> list[Platform]:
        """All platforms, removed ones included, oldest first."""

    async def find_platform_by_token_hash(self, token_hash: str) -> Platform | None:
        """The platform whose inbound token hash or pending Token A hash equals ``token_hash``."""

    async def insert_audit(self, records: Sequence[AuditRecord]) -> None: ...

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]: ...

    async def purge_audit(self, older_than: datetime) -> int:
        """Delete audit records older than the cut-off; returns how many went."""
