"""OCPI errors as one exception family; one middleware turns them into the envelope (hub/envelope.py).

HTTP status of hub errors is our documented choice (OCPI 2.2.1 status_codes, Hub errors):
4001 → 404, 4002 → 504, 4003 → 503, 4000 → 502.
"""

from __future__ import annotations


class OcpiError(Exception):
    """An error the hub answers with an OCPI envelope; never a stack trace."""

    status_code: int = 2000
    http_status: int = 400
    default_message: str = "Generic client error"

    def __init__(self, message: str | None = None, *, http_status: int | None = None,
                 retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        if http_status is not None:
            self.http_status = http_status
        self.retry_after = retry_after  # seconds; answered as a ``Retry-After`` header when set
        super().__init__(self.message)


class ClientError(OcpiError):
    status_code, http_status, default_message = 2000, 400, "Generic client error"


class InvalidParameters(OcpiError):
    status_code, http_status, default_message = 2001, 400, "Invalid or missing parameters"


class InvalidJson(InvalidParameters):
    default_message = "Request body is not valid JSON"


class NotEnoughInformation(OcpiError):
    status_code, http_status, default_message = 2002, 400, "Not enough information"


class Unauthorized(OcpiError):
    """HTTP 401: missing or unknown token, or Token A outside versions/credentials (OCPI 2.2.1 Authorization header)."""

    status_code, http_status, default_message = 2000, 401, "Unauthorized"


class Forbidden(OcpiError):
    """HTTP 403: the caller is known but may not do this (e.g. FROM party not its own)."""

    status_code, http_status, default_message = 2000, 403, "Forbidden"


class NotFound(OcpiError):
    status_code, http_status, default_message = 2000, 404, "Not found"


class MethodNotAllowed(OcpiError):
    """HTTP 405: credentials POST when registered, PUT/DELETE when not (OCPI 2.2.1 credentials, Interfaces)."""

    status_code, http_status, default_message = 2000, 405, "Method not allowed"


class ServerError(OcpiError):
    status_code, http_status, default_message = 3000, 500, "Generic server error"


class UnableToUseClientApi(OcpiError):
    """3001: registration callbacks to the client's versions/details failed."""

    status_code, http_status, default_message = 3001, 400, "Unable to use the client's API"


class UnsupportedVersion(OcpiError):
    status_code, http_status, default_message = 3002, 400, "Unsupported version"


class NoMatchingEndpoints(OcpiError):
    status_code, http_status, default_message = 3003, 400, "No matching endpoints or expected endpoints missing"


class HubError(OcpiError):
    status_code, http_status, default_message = 4000, 502, "Receiver answered something that is not OCPI"


class UnknownReceiver(OcpiError):
    status_code, http_status, default_message = 4001, 404, "Unknown receiver"


class ReceiverTimeout(OcpiError):
    status_code, http_status, default_message = 4002, 504, "Timeout on forwarded request"


class ReceiverNotConnected(OcpiError):
    status_code, http_status, default_message = 4003, 503, "Receiver is not connected"


class PartyNotAllowed(OcpiError):
    """HTTP 403: the authenticated platform speaks for a party it does not host (anti-spoofing)."""

    status_code, http_status, default_message = 2001, 403, "Party not allowed for this platform"


class NoAgreement(OcpiError):
    """HTTP 403: no roaming agreement in force allows FROM and TO to exchange this module (docs/agreements.md); the
    message says why (none, suspended, not yet valid, ended, module not covered). Never forwarded."""

    status_code, http_status, default_message = 2001, 403, "No roaming agreement covers this exchange"


class PlatformSuspended(OcpiError):
    status_code, http_status, default_message = 2000, 403, "Platform is suspended by the hub operator"


class HubUnavailable(OcpiError):
    """HTTP 503 + ``Retry-After``: the hub itself cannot take this request now (Redis down or full, the process or
    the receiver's waiting room at its limit). The receiver is not blamed: 4000 is OCPI 2.2.1's generic hub error.
    See docs/security.md."""

    status_code, http_status, default_message = 4000, 503, "The hub is temporarily unavailable"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)


class RateLimited(OcpiError):
    """HTTP 429 + ``Retry-After``: the calling platform exceeded its request rate (docs/security.md)."""

    status_code, http_status, default_message = 2000, 429, "Too many requests"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)
