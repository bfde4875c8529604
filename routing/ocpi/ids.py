"""The one validator of ids a caller sends: X-Request-ID / X-Correlation-ID and the id segments of a URL path.

OCPI 2.2.1 ids are strings of printable ASCII (CiString / string, transport_and_format §4.1, types §16); the hub
never needs anything else, and anything else is how a caller breaks what it touches next: a non-UTF-8 header byte
(aiohttp hands it over as a lone surrogate) cannot be stored, logged as JSON or sent on; a dot segment or an
encoded '/' in a path id changes the path's meaning at a receiver that normalises or decodes it. So every id is
checked here, once, and the edge decides what a failure means (see docs/security.md, "Ids and paths"):

- message ids: a replacement is generated, so the request's audit record, log line and answer carry a clean id;
  functional modules then refuse the request (400/2001, after authentication), the configuration modules
  (versions, credentials) answer it.
- path ids: refused with 400/2001 before anything is forwarded or stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import unquote

from routing.ocpi.errors import InvalidParameters

MAX_ID_LENGTH = 255
# Still-encoded '.', '/' or '\' after one decoding: a receiver that decodes twice would see a dot segment or a
# separator.
_ENCODED_AGAIN = re.compile(r"%(?:2e|2f|5c)", re.IGNORECASE)
_DOT_SEGMENTS = frozenset((".", ".."))


def is_printable_id(value: str) -> bool:
    """Printable ASCII (space to '~'), 1 to 255 characters."""
    return 0 < len(value) <= MAX_ID_LENGTH and value.isascii() and value.isprintable()


class MessageIds(NamedTuple):  # a tuple: built on every request, and cheaper than a frozen dataclass
    request_id: str
    correlation_id: str
    problem: str | None = None  # why a caller's id was replaced; None when both were used as sent


def message_ids(request_id: str | None, correlation_id: str | None, new_id: Callable[[], str]) -> MessageIds:
    """The caller's ids when valid; in place of a missing or invalid one (never the raw value), a new id for the
    request id and the request id for the correlation id (as OCPI 2.2.1 transport_and_format §4.1 has a request
    start its correlation). A missing id is repaired silently, an invalid one is reported in ``problem``.
    """
    problem = None
    if not request_id:
        request_id = new_id()
    elif not is_printable_id(request_id):
        problem, request_id = "X-Request-ID", new_id()
    if not correlation_id:
        correlation_id = request_id
    elif not is_printable_id(correlation_id):  # as if missing: the request id stands in
        problem, correlation_id = ("X-Request-ID and X-Correlation-ID" if problem else "X-Correlation-ID"), request_id
    if problem is not None:
        problem = f"{problem} must be 1 to {MAX_ID_LENGTH} printable ASCII characters"
    return MessageIds(request_id, correlation_id, problem)


def check_path_tail(tail: str) -> None:
    """Refuses a raw (percent-encoded) path tail whose id segments a receiver could read as another path.

    Refused, raw or percent-encoded: the dot segments '.' and '..' (also with ';' parameters), '/' and '\\' inside an
    id, empty ids, control and non-ASCII characters, an id longer than 255 characters, and '%2e', '%2f', '%5c' still
    encoded after one decoding.
    """
    if (not tail or ("%" not in tail and "." not in tail and "\\" not in tail and "//" not in tail
            and len(tail) <= MAX_ID_LENGTH and tail.isascii() and tail.isprintable())):
        return  # the common case (the routed path pays for it): nothing encoded, no dot, nothing to decode
    for segment in tail.split("/"):
        if "%" not in segment:
            check_path_id(segment)
            continue
        check_path_id(unquote(segment, errors="replace"))
        if _ENCODED_AGAIN.search(unquote(segment)) is not None:
            raise InvalidParameters("double-encoded '.', '/' or '\\' in a path id is refused")


def check_path_id(value: str) -> None:
    """One decoded path segment: an id. ``..;x`` counts as a dot segment (some servers drop ';' parameters)."""
    if value == "":
        raise InvalidParameters("an empty id ('//') in the path is refused")
    if value.partition(";")[0] in _DOT_SEGMENTS:
        raise InvalidParameters("'.' and '..' are not valid ids (dot segments, raw or encoded, are refused)")
    if not is_printable_id(value):
        raise InvalidParameters(f"ids in the path must be 1 to {MAX_ID_LENGTH} printable ASCII characters")
    if "/" in value or "\\" in value:
        raise InvalidParameters("an encoded '/' or '\\' inside a path id is refused")
