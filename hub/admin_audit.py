"""Audit of operator actions: every admin change and every failed admin login leaves a record and a log line.

Records go through the same writer and store as OCPI traffic (module ``admin``), so ``GET /admin/audit`` and
``ocpi-hub audit --module admin`` find them with the same filters. Failed logins are throttled per process:
the first ``FAILED_LOGINS_PER_WINDOW`` of each window are recorded one by one, the rest are counted and
summed up in one record when the window ends, so guessing at the admin token cannot flood the audit store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from aiohttp import web

from hub.audit import AuditRecord
from hub.context import Hub
from routing.ocpi.headers import time_ordered_id
from routing.platform import utcnow

log = logging.getLogger("hub.admin")

FAILED_LOGINS_PER_WINDOW = 10
FAILED_LOGIN_WINDOW = 60.0  # seconds
MUTATING = frozenset(("POST", "PUT", "PATCH", "DELETE"))
# Set by a handler whose change concerns two parties (a roaming agreement): they become the record's FROM and TO.
AUDIT_PARTIES: Final = web.RequestKey("admin_audit_parties", tuple[str, str])


def client_address(request: web.Request) -> str:
    """The peer address as the hub sees it (behind a proxy: the proxy's, unless it is configured otherwise)."""
    return request.remote or "unknown"


def record_action(hub: Hub, request: web.Request, actor: str, status: int, platform_id: str | None,
                  started: float, outcome: str) -> None:
    """One audit record and one log line for an admin request: who, what, when, on which platform, result."""
    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    request_id = request.headers.get("X-Request-ID") or time_ordered_id()
    from_party, to_party = request.get(AUDIT_PARTIES) or (None, None)
    hub.audit.add(AuditRecord(
        id=time_ordered_id(), time=utcnow(), request_id=request_id[:64], correlation_id=request_id[:64],
        platform_id=platform_id, from_party=from_party, to_party=to_party, module="admin", interface_role=None,
        method=request.method, path=request.path[:512], outcome=outcome, http_status=status, ocpi_status=None,
        latency_total_ms=elapsed_ms, request_size=request.content_length or 0, actor=actor,
    ))
    log.info("admin action", extra={"ocpi": {
        "actor": actor, "method": request.method, "path": request.path[:512], "platform_id": platform_id,
        "parties": [p for p in (from_party, to_party) if p],
        "outcome": outcome, "http_status": status, "latency_ms": elapsed_ms,
    }})


class FailedLogins:
    """Records failed admin logins one by one up to a budget per window, then one summary per window."""

    def __init__(self, hub: Hub, per_window: int = FAILED_LOGINS_PER_WINDOW,
                 window: float = FAILED_LOGIN_WINDOW) -> None:
        self.hub = hub
        self.per_window = per_window
        self.window = window
        self._window_ends = 0.0
        self._recorded = 0
        self._suppressed = 0
        self._summary: asyncio.TimerHandle | None = None

    def failed(self, request: web.Request, started: float, status: int = 401) -> None:
        now = time.monotonic()
        if now >= self._window_ends:
            self._window_ends, self._recorded = now + self.window, 0
        if self._recorded < self.per_window:
            self._recorded += 1
            record_action(self.hub, request, f"unauthenticated@{client_address(request)}", status, None, started,
                          "unauthorized")
            return
        self._suppressed += 1
        if self._summary is None:
            loop = asyncio.get_running_loop()
            self._summary = loop.call_at(loop.time() + (self._window_ends - now), self._summarise)

    def _summarise(self) -> None:
        self._summary = None
        count, self._suppressed = self._suppressed, 0
        if not count:
            return
        self.hub.audit.add(AuditRecord(
            id=time_ordered_id(), time=utcnow(), request_id=time_ordered_id(), correlation_id="", platform_id=None,
            from_party=None, to_party=None, module="admin", interface_role=None, method="*", path="/admin/*",
            outcome="unauthorized", http_status=401, ocpi_status=None,
            actor=f"unauthenticated ({count} more failed admin logins, not recorded one by one)",
        ))
        log.warning("failed admin logins", extra={"ocpi": {
            "outcome": "unauthorized", "suppressed": count, "window_seconds": self.window}})

    def close(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
            self._summarise()
