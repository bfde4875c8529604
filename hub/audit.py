"""Audit records: one per request the hub handles, written in batches off the routing path."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.ocpi.models import MODULES
from hub.tasks import stop_task

log = logging.getLogger("hub.audit")


# Every value the ``module`` and ``outcome`` of a record can take: audit search refuses anything else, so a typo
# is an error instead of an empty answer. A new outcome must be added here.
AUDIT_MODULES = (*MODULES, "credentials", "versions", "hubclientinfo", "other", "admin")
OUTCOMES = ("ok", "forwarded", "broadcast", "get_all", "rejected", "unauthorized", "unknown_receiver",
            "not_connected", "timeout", "hub_error", "error")


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


class AuditWriter:
    """Buffers audit records and writes them in batches, so the routing path never waits on the store.

    ``flush()`` returns once every record added before the call is in the store (or the store failed): flushes
    are serialised, so a caller never overtakes the periodic flush that holds an earlier batch.
    """

    def __init__(self, store: Any, *, interval: float = 0.2, max_batch: int = 500, max_buffer: int = 100_000,
                 on_drop: Any = None) -> None:
        self.store = store
        self.interval = interval
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self.on_drop = on_drop
        self._buffer: list[AuditRecord] = []
        self._task: asyncio.Task[None] | None = None
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

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        async with self._flushing:
            while self._buffer:
                batch, self._buffer = self._buffer[: self.max_batch], self._buffer[self.max_batch :]
                try:
                    await self.store.insert_audit(batch)
                except asyncio.CancelledError:
                    # stop() cancels the periodic flush: keep the batch for the final one (ids make it idempotent)
                    self._buffer[:0] = batch
                    raise
                except Exception:
                    log.warning("audit write failed; will retry %d records", len(batch), exc_info=True)
                    self._buffer[:0] = batch
                    return

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
