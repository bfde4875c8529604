"""Audit records: one per request the hub handles, written in batches off the routing path."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.logs import ThrottledLog
from routing.ocpi.versions import ALL_MODULES
from routing.tasks import PeriodicFlush

log = logging.getLogger("hub.audit")


# Every value the ``module`` and ``outcome`` of a record can take: audit search refuses anything else, so a typo
# is an error instead of an empty answer. A new outcome must be added here.
AUDIT_MODULES = (*ALL_MODULES, "credentials", "versions", "hubclientinfo", "other", "admin")
OUTCOMES = ("ok", "forwarded", "stored", "broadcast", "get_all", "catchup", "rejected", "unauthorized",
            "unknown_receiver", "not_connected", "timeout", "hub_error", "error")


_OUTCOME_OF_CODE = {4000: "hub_error", 4001: "unknown_receiver", 4002: "timeout", 4003: "not_connected"}


def outcome_of(status: int, ocpi_status: int | None) -> str:
    if ocpi_status in _OUTCOME_OF_CODE:
        return _OUTCOME_OF_CODE[ocpi_status]
    if status == 401:
        return "unauthorized"
    if status >= 500:
        return "error"
    if status >= 400:
        return "rejected"
    return "ok"


@dataclass(slots=True)
class AuditRecord:
    id: str
    time: datetime
    request_id: str
    correlation_id: str
    platform_id: str | None  # the authenticated caller's platform
    from_party: str | None  # "CC:PID"
    to_party: str | None  # "CC:PID"
    module: str | None
    interface_role: str | None  # SENDER | RECEIVER
    method: str
    path: str
    outcome: str  # e.g. "forwarded", "hub_error", "rejected", "timeout"
    http_status: int  # what the hub answered the caller
    ocpi_status: int | None  # OCPI status_code the hub answered the caller
    receiver_platform_id: str | None = None
    receiver_http_status: int | None = None
    receiver_ocpi_status: int | None = None
    latency_total_ms: float = 0.0
    latency_receiver_ms: float | None = None
    request_size: int = 0
    response_size: int = 0
    body: dict[str, Any] | None = None  # only when HUB_AUDIT_BODIES is on, redacted
    actor: str | None = None  # admin actions: who ("admin@<address>", "unauthenticated@<address>")
    ocpi_version: str | None = None  # the caller's OCPI version (its platform's)
    receiver_version: str | None = None  # the receiver's, when the hub forwarded
    # Set when the body was translated between versions: {"from", "to", "losses": [{field, rule, detail, step}]}
    # (docs/versions.md, "Loss rules").
    translation: dict[str, Any] | None = None


@dataclass
class AuditQuery:
    """Filters for audit search; results are newest first."""

    since: datetime | None = None
    until: datetime | None = None
    platform_id: str | None = None
    party: str | None = None  # "CC:PID", matches FROM or TO
    module: str | None = None
    outcome: str | None = None
    correlation_id: str | None = None
    request_id: str | None = None
    limit: int = 100
    offset: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class AuditRecordRejected(Exception):
    """A store cannot write these records at all (e.g. text that is not UTF-8), as opposed to being unreachable.

    Stores raise it from ``insert_audit``; the writer then isolates the record at fault instead of retrying.
    """


class AuditWriter(PeriodicFlush):
    """Buffers audit records and writes them in batches, so the routing path never waits on the store.

    ``flush()`` returns once every record added before the call is in the store (or the store failed): flushes
    are serialised, so a caller never overtakes the periodic flush that holds an earlier batch.

    Two kinds of failure, handled apart: a store that is down keeps the buffer (bounded by ``max_buffer``, oldest
    dropped first) and is retried on the next flush; a batch the store *rejects* (``AuditRecordRejected``) is
    split in halves until the record at fault is alone, that record is written again with every text field
    escaped to ASCII and without its body, or dropped when even that fails, and the rest goes on. One bad record
    therefore never stalls the trail behind it.
    """

    def __init__(self, store: Any, *, interval: float = 0.2, max_batch: int = 500, max_buffer: int = 100_000,
                 on_drop: Callable[[int], None] | None = None, on_rejected: Callable[[str], None] | None = None,
                 failure_log: ThrottledLog | None = None) -> None:
        self.store = store
        self.interval = interval
        self.task_name = "audit-writer"
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self.on_drop = on_drop
        self.on_rejected = on_rejected  # "rewritten" or "dropped", once per rejected record
        self.failure_log = failure_log or ThrottledLog(log, lines=1, interval=60.0)
        self._buffer: list[AuditRecord] = []
        self._flushing = asyncio.Lock()

    def add(self, record: AuditRecord) -> None:
        if len(self._buffer) >= self.max_buffer:  # the store is down for long: keep memory bounded
            self._buffer.pop(0)
            if self.on_drop:
                self.on_drop(1)
        self._buffer.append(record)

    @property
    def pending(self) -> int:
        """Records not yet written."""
        return len(self._buffer)

    async def flush(self) -> None:
        async with self._flushing:
            while self._buffer:
                batch, self._buffer = self._buffer[: self.max_batch], self._buffer[self.max_batch :]
                if not await self._write(batch):
                    return

    async def _write(self, batch: list[AuditRecord]) -> bool:
        """Writes ``batch``, isolating rejected records; False (the unwritten rest back in the buffer) on an outage."""
        parts = [batch]
        while parts:
            part = parts.pop(0)
            try:
                await self.store.insert_audit(part)
            except asyncio.CancelledError:
                # stop() cancels the periodic flush: keep the records for the final one (ids make it idempotent)
                self._buffer[:0] = [r for p in (part, *parts) for r in p]
                raise
            except AuditRecordRejected as exc:
                if len(part) > 1:
                    middle = len(part) // 2
                    parts[:0] = [part[:middle], part[middle:]]
                elif not await self._quarantine(part[0], exc):
                    self._buffer[:0] = [r for p in (part, *parts) for r in p]
                    return False
            except Exception:
                self.failure_log.log(logging.WARNING, "outage", "audit write failed; will retry %d records",
                              len(self._buffer) + sum(map(len, (part, *parts))), exc_info=True)
                self._buffer[:0] = [r for p in (part, *parts) for r in p]
                return False
        return True

    async def _quarantine(self, record: AuditRecord, why: AuditRecordRejected) -> bool:
        """The one record a store refused: written again with escaped fields, else dropped; False on an outage."""
        result = "rewritten"
        try:
            await self.store.insert_audit([escaped(record)])
        except AuditRecordRejected:
            result = "dropped"
        except asyncio.CancelledError:
            raise
        except Exception:
            return False  # the store went away meanwhile: the caller keeps the record for the next flush
        self.failure_log.log(logging.WARNING, "rejected", "audit record %s refused by the store (%s): %s",
                      escaped_text(record.id), why, result)
        if self.on_rejected is not None:
            self.on_rejected(result)
        return True


def escaped_text(value: str) -> str:
    """ASCII only: anything else as a backslash escape, so any store and any log can hold it."""
    return value if value.isascii() else value.encode("ascii", "backslashreplace").decode("ascii")


def escaped(record: AuditRecord) -> AuditRecord:
    """A copy every store can write: text fields escaped to ASCII, numbers bounded, no body."""
    copy = dataclasses.replace(record, body=None)
    for f in dataclasses.fields(copy):
        value = getattr(copy, f.name)
        if isinstance(value, str):
            setattr(copy, f.name, escaped_text(value)[:2048])
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            setattr(copy, f.name, 0)
    return copy
