"""What the hub learns about one request while handling it: ids, reply headers and the audit facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from hub.admission import Ticket


@dataclass(slots=True)
class Exchange:
    request_id: str
    correlation_id: str
    reply_headers: dict[str, str] = field(default_factory=dict)  # on every answer, errors included
    bad_ids: str | None = None  # why the caller's X-Request-ID / X-Correlation-ID was replaced (routing.ocpi.ids)
    module: str | None = None
    interface_role: str | None = None
    platform_id: str | None = None
    from_party: str | None = None
    to_party: str | None = None
    receiver_platform_id: str | None = None
    receiver_http_status: int | None = None
    receiver_ocpi_status: int | None = None
    latency_receiver_ms: float | None = None
    request_size: int = 0
    ocpi_status: int | None = None  # what the hub answered, when it built the answer itself
    outcome: str | None = None
    request_json: Any = None  # the parsed body, kept for the audit only when HUB_AUDIT_BODIES is on
    ocpi_version: str | None = None  # the caller's OCPI version
    receiver_version: str | None = None
    translation: dict[str, Any] | None = None  # the loss report of a translated body (docs/versions.md)
    ticket: Ticket | None = None  # the request's share of the admission rooms, once taken (hub/admission.py)


EXCHANGE = web.RequestKey("exchange", Exchange)


def exchange_of(request: web.Request) -> Exchange | None:
    return request.get(EXCHANGE)


def reply_headers(request: web.Request) -> dict[str, str] | None:
    ex = request.get(EXCHANGE)
    return ex.reply_headers if ex is not None else None
