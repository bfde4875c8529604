"""Usage insights: what routed sessions and CDRs add up to, per day and partner pair, written off the routing path.

When a receiver accepts a Session PUT or a CDR POST, the routing path calls :meth:`UsageRecorder.note`: one
dictionary update in memory. A background task adds the day's increments to the store every few seconds
(``add_usage``: counts, kWh and cost are summed per day, FROM party, TO party, module and currency), so the
console's Insights page reads small per-day aggregates instead of scanning the audit trail.

Energy and cost are read from the body as it went to the routing core (OCPI 2.2.1 for 2.2.1 and 2.1.1 senders,
2.3.0 for 2.3.0 senders): ``total_energy`` (CDR) or ``kwh`` (Session), and ``total_cost`` either as a number
(OCPI 2.1.1) or a Price object: its ``excl_vat`` (2.2.1) or ``before_taxes`` (2.3.0), the amount before taxes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from hub.logs import ThrottledLog
from routing.tasks import PeriodicFlush

log = logging.getLogger("hub.usage")

# (module, method, interface role) of the routed messages that count: a Session PUT creates (or replaces) one
# session at the eMSP; a CDR POST is one charge record.
USAGE_EVENTS = frozenset((("sessions", "PUT", "RECEIVER"), ("cdrs", "POST", "RECEIVER")))
MAX_KEYS = 100_000  # distinct (day, pair, module, currency) keys held while the store is down


@dataclass(frozen=True, slots=True)
class UsageKey:
    day: str  # YYYY-MM-DD, UTC
    from_party: str  # "CC:PID" of the sender (CPO)
    to_party: str  # "CC:PID" of the receiver (eMSP)
    module: str  # sessions | cdrs
    currency: str  # ISO 4217 code as sent; "" when the message named none


@dataclass(slots=True)
class UsageRow:
    """One day's totals of one partner pair, module and currency."""

    day: str
    from_party: str
    to_party: str
    module: str
    currency: str
    count: int = 0
    kwh: float = 0.0
    cost: float = 0.0

    @property
    def key(self) -> UsageKey:
        return UsageKey(self.day, self.from_party, self.to_party, self.module, self.currency)


class UsageStore(Protocol):
    async def add_usage(self, rows: list[UsageRow]) -> None: ...


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def _cost(value: Any) -> float:
    """A number (OCPI 2.1.1) or a Price: the amount excluding VAT, ``excl_vat`` in 2.2.1, ``before_taxes`` in
    2.3.0 (OCPI 2.3.0 types, Price)."""
    if isinstance(value, dict):
        return _number(value["excl_vat"] if "excl_vat" in value else value.get("before_taxes"))
    return _number(value)


def measure(body: Any) -> tuple[float, float, str]:
    """kWh, cost and currency of a Session or CDR body; zeros for what it lacks or holds in a wrong type."""
    if not isinstance(body, dict):
        return 0.0, 0.0, ""
    kwh = _number(body["total_energy"] if "total_energy" in body else body.get("kwh"))
    currency = body.get("currency")
    currency = currency.upper()[:3] if isinstance(currency, str) and currency.isascii() else ""
    return kwh, _cost(body.get("total_cost")), currency


class UsageRecorder(PeriodicFlush):
    """Aggregates usage increments in memory and adds them to the store in one batch per interval."""

    def __init__(self, store: UsageStore, *, interval: float = 2.0, failure_log: ThrottledLog | None = None) -> None:
        self.store = store
        self.interval = interval
        self.task_name = "usage-writer"
        self._pending: dict[UsageKey, UsageRow] = {}
        self._flushing = asyncio.Lock()
        self.failure_log = failure_log or ThrottledLog(log, lines=1, interval=60.0)
        self.dropped = 0

    def note(self, module: str, body: Any, from_party: str, to_party: str, day: date) -> None:
        """Count one accepted Session PUT or CDR POST (the caller checked ``USAGE_EVENTS``)."""
        kwh, cost, currency = measure(body)
        key = UsageKey(day.isoformat(), from_party, to_party, module, currency)
        row = self._pending.get(key)
        if row is None:
            if len(self._pending) >= MAX_KEYS:  # the store has been down for long: keep memory bounded
                self.dropped += 1
                return
            row = self._pending[key] = UsageRow(key.day, key.from_party, key.to_party, key.module, key.currency)
        row.count += 1
        row.kwh += kwh
        row.cost += cost

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Adds what was noted so far to the store; on failure the increments stay for the next flush."""
        async with self._flushing:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self.store.add_usage(list(batch.values()))
            except asyncio.CancelledError:
                self._merge(batch)
                raise
            except Exception:
                self._merge(batch)
                self.failure_log.log(logging.WARNING, "outage", "usage write failed; will retry %d rows",
                                     len(batch), exc_info=True)

    def _merge(self, batch: dict[UsageKey, UsageRow]) -> None:
        for key, row in batch.items():
            mine = self._pending.get(key)
            if mine is None:
                self._pending[key] = row
            else:
                mine.count += row.count
                mine.kwh += row.kwh
                mine.cost += row.cost
