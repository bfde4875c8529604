"""One audit record, one metrics sample and one structured log line per OCPI request the hub handles."""

from __future__ import annotations

import dataclasses
import logging
import time

from aiohttp import hdrs, web
from yarl import URL

from hub.admin import admin_guard
from hub.audit import AuditRecord, outcome_of
from hub.context import Hub, hub_of
from hub.envelope import Handler, error_answer
from hub.exchange import EXCHANGE, Exchange
from hub.redact import redact, redact_path
from routing.ocpi.headers import CORRELATION_ID, REQUEST_ID, message_ids, time_ordered_id
from routing.ocpi.versions import ALL_MODULES, SUPPORTED
from routing.platform import utcnow

log = logging.getLogger("hub.requests")

# Module label values: the OCPI modules plus the configuration modules; anything else a caller typed in a URL
# is "other", so a scan of random paths cannot grow the metrics without bound.
_MODULE_LABELS = frozenset((*ALL_MODULES, "credentials", "versions", "hubclientinfo"))


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The hub's one middleware (each layer costs every request a coroutine): OCPI requests get their ids, an
    Exchange, their errors answered as OCPI envelopes (hub/envelope.py) and one audit record, metrics sample and
    log line; /admin requests the admin guard (hub/admin.py); every other path has its errors answered."""
    if not request.path.startswith("/ocpi"):
        if request.method == hdrs.METH_CONNECT and request.raw_path.startswith("/ocpi"):
            return await _connect_on_ocpi(request)
        try:
            if request.path.startswith("/admin"):
                return await admin_guard(request, handler)
            return await handler(request)
        except Exception as exc:
            return error_answer(request, exc)
    started = time.perf_counter()
    ids = message_ids(request)
    request_id, correlation_id = ids.request_id, ids.correlation_id
    ex = Exchange(request_id, correlation_id, {REQUEST_ID: request_id, CORRELATION_ID: correlation_id},
                  bad_ids=ids.problem)
    request[EXCHANGE] = ex
    try:
        try:
            response = await handler(request)
        except Exception as exc:
            response = error_answer(request, exc)
    except web.HTTPException as exc:  # redirects (every 4xx/5xx was answered above)
        record(request, ex, exc, time.perf_counter() - started)
        raise
    except Exception:  # not expected past error_answer; still one record per request
        record(request, ex, web.Response(status=500), time.perf_counter() - started)
        raise
    record(request, ex, response, time.perf_counter() - started)
    return response


async def _connect_on_ocpi(request: web.Request) -> web.StreamResponse:
    """A CONNECT whose target is an OCPI path: aiohttp reads a CONNECT target as an authority (RFC 9112 §3.2.3), so
    its request path is empty and no route matches. Handled again with the target as its path, it is answered as
    any other method the path does not take: an OCPI 405 with Allow, after the same checks (docs/security.md)."""
    as_path = request.clone(rel_url=URL(request.raw_path, encoded=True))
    if not as_path.path.startswith("/ocpi"):  # never handled again as it is: no second trip through here
        return error_answer(request, web.HTTPNotFound())
    return await request.app._handle(as_path)


def record(request: web.Request, ex: Exchange, response: web.StreamResponse, elapsed: float) -> None:
    hub = hub_of(request)
    ocpi_status = ex.ocpi_status if ex.ocpi_status is not None else (ex.receiver_ocpi_status or 1000)
    outcome = ex.outcome or outcome_of(response.status, ocpi_status)
    module = ex.module or _config_module(request.path)
    label = module if module in _MODULE_LABELS else "other"
    role = ex.interface_role or ""
    hub.metrics.count_request(label, role, request.method, outcome, elapsed)
    if ex.latency_receiver_ms is not None and ex.receiver_platform_id:
        # receiver = platform id, as on the queue gauges: opaque, bounded, and the admin API's key
        hub.metrics.observe_receiver(label, ex.receiver_platform_id, ex.latency_receiver_ms / 1000)
    if ex.platform_id is not None or not 400 <= response.status < 500:
        # A caller the hub could not identify and refused (401, unknown URL, ...) leaves no audit record: that
        # would let anyone grow the store at will. The metric above counts it; the log below is throttled.
        _audit(hub, request, ex, response, outcome, module, role, elapsed, ocpi_status)
    if 400 <= response.status < 500 and hub.client_log is not None:
        hub.client_log.log(logging.INFO, outcome, "request", extra={"ocpi": {
            "correlation_id": ex.correlation_id, "request_id": ex.request_id, "from": ex.from_party,
            "to": ex.to_party, "module": module, "method": request.method, "outcome": outcome,
            "http_status": response.status, "latency_ms": round(elapsed * 1000, 3), "platform_id": ex.platform_id,
        }})
    elif log.isEnabledFor(logging.INFO):
        log.info("request", extra={"ocpi": {
            "correlation_id": ex.correlation_id, "request_id": ex.request_id, "from": ex.from_party,
            "to": ex.to_party, "module": module, "method": request.method, "outcome": outcome,
            "http_status": response.status, "latency_ms": round(elapsed * 1000, 3),
        }})


def _audit(hub: Hub, request: web.Request, ex: Exchange, response: web.StreamResponse, outcome: str,
           module: str, role: str, elapsed: float, ocpi_status: int) -> None:
    # Positional, in AuditRecord's field order (checked below): one per request, and keyword arguments cost
    # a 26-field dataclass several times the call itself.
    hub.audit.add(AuditRecord(
        time_ordered_id(), utcnow(), ex.request_id, ex.correlation_id, ex.platform_id, ex.from_party, ex.to_party,
        module, role or None, request.method, redact_path(request.path), outcome, response.status, ocpi_status,
        ex.receiver_platform_id, ex.receiver_http_status, ex.receiver_ocpi_status, _ms(elapsed),
        ex.latency_receiver_ms, ex.request_size or request.content_length or 0, _body_size(response),
        {"request": redact(ex.request_json)} if ex.request_json is not None else None, None, ex.ocpi_version,
        ex.receiver_version, ex.translation,
    ))


_POSITIONAL = ("id", "time", "request_id", "correlation_id", "platform_id", "from_party", "to_party", "module",
               "interface_role", "method", "path", "outcome", "http_status", "ocpi_status", "receiver_platform_id",
               "receiver_http_status", "receiver_ocpi_status", "latency_total_ms", "latency_receiver_ms",
               "request_size", "response_size", "body", "actor", "ocpi_version", "receiver_version", "translation")
if tuple(f.name for f in dataclasses.fields(AuditRecord)) != _POSITIONAL:  # a new field must be placed in _audit
    raise ImportError("hub.observe._audit builds AuditRecord positionally: update it to the record's fields")


_VERSION_PATHS = frozenset(("/ocpi/versions", *(f"/ocpi/{v}" for v in SUPPORTED)))


def _config_module(path: str) -> str:
    """The configuration module of a path, in any version the hub speaks."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "ocpi" and parts[2] in SUPPORTED:
        if parts[3] == "credentials":
            return "credentials"
        if parts[3] == "hubclientinfo":
            return "hubclientinfo"
    if path.rstrip("/") in _VERSION_PATHS:
        return "versions"
    return "other"


def _body_size(response: web.StreamResponse) -> int:
    # not isinstance(): web.Response is a MutableMapping, so that goes through the ABC machinery on every request
    body = getattr(response, "body", None)  # a StreamResponse (streamed, e.g. a GET All page) has none
    return len(body) if type(body) is bytes or isinstance(body, bytes | bytearray) else 0


def _ms(seconds: float) -> float:
    """Milliseconds to 3 decimals, as round(x, 3) gives them without its decimal conversion (once per request)."""
    return round(seconds * 1_000_000) / 1000
