"""The OCPI response envelope and the one middleware that maps every error onto it (OCPI 2.2.1 Response format)."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import hdrs, web

from hub.exchange import exchange_of, reply_headers
from routing.ocpi.errors import InvalidParameters, OcpiError

log = logging.getLogger("hub.errors")

JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Maps an unexpected exception onto the OcpiError it stands for, or None (a bug: 500/3000 and a traceback). The
# app sets it: Redis outages become HubUnavailable (routing/redis_health.py). Asked only when a handler failed,
# so it costs the request path nothing.
ErrorTranslator = Callable[[Exception], OcpiError | None]
TRANSLATE_ERROR: web.AppKey[ErrorTranslator] = web.AppKey("translate_error")


def ocpi_timestamp(when: datetime | None = None) -> str:
    """OCPI DateTime: UTC, no offset, 'Z' designator (OCPI 2.2.1 types)."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(data: Any = None, status_code: int = 1000, message: str | None = "Success") -> bytes:
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = data
    body["status_code"] = status_code
    if message:
        body["status_message"] = message
    body["timestamp"] = ocpi_timestamp()
    return orjson.dumps(body)


def ocpi_response(
    data: Any = None,
    *,
    status: int = 200,
    status_code: int = 1000,
    message: str | None = "Success",
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=envelope(data, status_code, message), status=status, content_type=JSON, headers=headers
    )


def printable_message(message: str) -> str:
    """An error message may quote what the client sent; bytes that are not UTF-8 arrive as lone surrogates
    (aiohttp decodes headers with ``surrogateescape``), which no JSON encoder takes: they are shown escaped."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(err: OcpiError, headers: dict[str, str] | None = None) -> web.Response:
    if err.retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(max(1, math.ceil(err.retry_after)))}
    return ocpi_response(status=err.http_status, status_code=err.status_code, message=printable_message(err.message),
                         headers=headers)


def _note_status(request: web.Request, code: int) -> None:
    ex = exchange_of(request)
    if ex is not None:
        ex.ocpi_status = code


def _is_ocpi_path(path: str) -> bool:
    return path.startswith("/ocpi")


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Every failure becomes a clear answer: an OCPI envelope on /ocpi, a JSON error elsewhere. The hub's one
    middleware (hub/observe.py) calls it with what a handler raised; a redirect is raised again."""
    try:
        try:
            raise exc
        except web.RequestPayloadError as payload_error:  # a body aiohttp could not decode (broken gzip, bad chunks)
            detail = " ".join(str(payload_error).split()).removeprefix("400, message: ")[:200]
            raise InvalidParameters(f"request body could not be read: {detail}") from None
        except (OcpiError, web.HTTPException):
            raise
        except Exception as other:
            translate = request.app.get(TRANSLATE_ERROR)
            err = translate(other) if translate is not None else None
            if err is None:
                raise
            raise err from other
    except OcpiError as err:
        _note_status(request, err.status_code)
        headers = reply_headers(request)
        if _is_ocpi_path(request.path):
            return error_response(err, headers)
        extra = {"Retry-After": str(max(1, math.ceil(err.retry_after)))} if err.retry_after is not None else None
        return web.json_response({"error": printable_message(err.message)}, status=err.http_status, headers=extra)
    except web.HTTPException as http:
        if http.status < 400:
            raise
        _note_status(request, 2000 if http.status < 500 else 3000)
        message = http.reason
        if isinstance(http, web.HTTPRequestEntityTooLarge):  # aiohttp stopped reading at HUB_MAX_BODY_BYTES
            message = f"request body larger than {request.client_max_size} bytes"
        if _is_ocpi_path(request.path):
            headers = reply_headers(request)
            if (allow := http.headers.get(hdrs.ALLOW)) is not None:  # a 405 lists the methods (RFC 9110 §15.5.6)
                headers = {**(headers or {}), hdrs.ALLOW: allow}
            return ocpi_response(
                status=http.status, status_code=2000 if http.status < 500 else 3000, message=message,
                headers=headers,
            )
        return web.json_response({"error": message}, status=http.status)
    except ConnectionResetError:
        # The client is gone (or was cut off for sending too slowly, hub/connections.py): no one reads an answer.
        _note_status(request, 2000)
        return web.Response(status=400)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        _note_status(request, 3000)
        if _is_ocpi_path(request.path):
            return ocpi_response(status=500, status_code=3000, message="Internal hub error",
                                 headers=reply_headers(request))
        return web.json_response({"error": "internal error"}, status=500)
