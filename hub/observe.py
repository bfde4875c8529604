"""One audit record, one metrics sample and one structured log line per OCPI request the hub handles."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from hub.audit import AuditRecord
from hub.context import hub_of
from hub.exchange import EXCHANGE, Exchange
from hub.ocpi.envelope import Handler
from hub.ocpi.headers import CORRELATION_ID, REQUEST_ID, message_ids, new_id
from hub.platform import utcnow

log = logging.getLogger("hub.requests")

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


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/ocpi"):
        return await handler(request)
    started = time.perf_counter()
    request_id, correlation_id = message_ids(request)
    ex = Exchange(request_id, correlation_id, {REQUEST_ID: request_id, CORRELATION_ID: correlation_id})
    request[EXCHANGE] = ex
    response = await handler(request)
    elapsed = time.perf_counter() - started
    record(request, ex, response, elapsed)
    return response


def record(request: web.Request, ex: Exchange, response: web.StreamResponse, elapsed: float) -> None:
    hub = hub_of(request)
    ocpi_status = ex.ocpi_status if ex.ocpi_status is not None else (ex.receiver_ocpi_status or 1000)
    outcome = ex.outcome or outcome_of(response.status, ocpi_status)
    module = ex.module or _config_module(request.path)
    role = ex.interface_role or ""
    hub.metrics.requests.labels(module=module, interface_role=role, method=request.method, outcome=outcome).inc()
    hub.metrics.request_latency.labels(module=module).observe(elapsed)
    if ex.latency_receiver_ms is not None and ex.to_party:
        hub.metrics.receiver_latency.labels(module=module, receiver=ex.to_party).observe(ex.latency_receiver_ms / 1000)
    hub.audit.add(AuditRecord(
        id=new_id(),
        time=utcnow(),
        request_id=ex.request_id,
        correlation_id=ex.correlation_id,
        platform_id=ex.platform_id,
        from_party=ex.from_party,
        to_party=ex.to_party,
        module=module,
        interface_role=role or None,
        method=request.method,
        path=request.path,
        outcome=outcome,
        http_status=response.status,
        ocpi_status=ocpi_status,
        receiver_platform_id=ex.receiver_platform_id,
        receiver_http_status=ex.receiver_http_status,
        receiver_ocpi_status=ex.receiver_ocpi_status,
        latency_total_ms=round(elapsed * 1000, 3),
        latency_receiver_ms=ex.latency_receiver_ms,
        request_size=ex.request_size,
        response_size=_body_size(response),
    ))
    if log.isEnabledFor(logging.INFO):
        log.info("request", extra={"ocpi": {
            "correlation_id": ex.correlation_id, "request_id": ex.request_id, "from": ex.from_party,
            "to": ex.to_party, "module": module, "method": request.method, "outcome": outcome,
            "http_status": response.status, "latency_ms": round(elapsed * 1000, 3),
        }})


def _config_module(path: str) -> str:
    return "credentials" if path.startswith("/ocpi/2.2.1/credentials") else "versions"


def _body_size(response: web.StreamResponse) -> int:
    if isinstance(response, web.Response) and isinstance(response.body, bytes | bytearray):
        return len(response.body)
    return 0
