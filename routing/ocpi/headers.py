"""Routing headers and unique message ids (OCPI 2.2.1 Unique message IDs; Routing headers; docs/ocpi-decisions.md)."""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass

from aiohttp import web

from routing.ocpi.errors import InvalidParameters
from routing.ocpi.ids import MessageIds
from routing.ocpi.ids import message_ids as checked_message_ids

TO_CC, TO_PID = "OCPI-to-country-code", "OCPI-to-party-id"
FROM_CC, FROM_PID = "OCPI-from-country-code", "OCPI-from-party-id"
REQUEST_ID, CORRELATION_ID = "X-Request-ID", "X-Correlation-ID"
ROUTING_HEADERS = (TO_CC, TO_PID, FROM_CC, FROM_PID)



def new_id() -> str:
    """A unique id (32 hex digits) for requests and messages.

    From ``random`` (seeded per process from the OS, reseeded after a fork), not from the OS on every call:
    ``uuid4`` costs a system call, several per routed request. Ids need to be unique, not unguessable;
    secrets (tokens, callback ids) come from ``secrets``.
    """
    return random.getrandbits(128).to_bytes(16, "big").hex()  # what f"{...:032x}" gives, in a third of its time


def time_ordered_id() -> str:
    """32 hex digits, unique, that sort by creation time (48 bits of milliseconds, then 80 random bits).

    For ids that end up as keys of an ever-growing index (audit records): new keys land at the right edge of
    the B-tree instead of on a random page. The random part comes from ``random`` (seeded per process, and
    again after a fork): these ids must be unique, not unguessable.
    """
    return ((time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)).to_bytes(16, "big").hex()


def time_of_id(value: str) -> float | None:
    """When a ``time_ordered_id`` was made (seconds since the epoch, to the millisecond); None: not such an id."""
    if len(value) != 32:
        return None
    try:
        return int(value[:12], 16) / 1000
    except ValueError:
        return None


@dataclass(frozen=True)
class Party:
    """A (country_code, party_id) pair as carried by routing headers; upper-cased (CiString)."""

    country_code: str
    party_id: str

    @property
    def key(self) -> str:
        return f"{self.country_code}:{self.party_id}"


@dataclass(frozen=True)
class RoutingHeaders:
    to: Party | None
    from_: Party | None


def _pair(request: web.Request, cc_name: str, pid_name: str, what: str) -> Party | None:
    # getall, not get: the same C lookup, and a repeated header is seen without another pass over the headers
    getall = request.headers.getall
    ccs, pids = getall(cc_name, ()), getall(pid_name, ())
    if not ccs and not pids:
        return None
    if len(ccs) > 1 or len(pids) > 1:
        raise InvalidParameters(repeated(cc_name if len(ccs) > 1 else pid_name))
    cc, pid = ccs[0] if ccs else "", pids[0] if pids else ""
    if not cc or not pid:
        # OCPI: TO and FROM are used as pairs (OCPI 2.2.1 Routing headers)
        raise InvalidParameters(f"{what} routing headers must come as a pair: {cc_name} and {pid_name}")
    party = _party_of(cc, pid)
    if party is None:
        raise InvalidParameters(f"invalid {what} party {cc}/{pid}: country code is 2 letters, party id 3 characters")
    return party


@functools.lru_cache(maxsize=4096)  # per pair as sent: two per routed request; bounded against made-up pairs
def _party_of(cc: str, pid: str) -> Party | None:
    """The pair as a Party, or None when it is not one. Country code: 2 ASCII letters; party id: 3 ASCII letters
    or digits (str methods, where a regular expression match costs several times as much)."""
    if not (len(cc) == 2 and cc.isascii() and cc.isalpha() and len(pid) == 3 and pid.isascii() and pid.isalnum()):
        return None
    return Party(cc.upper(), pid.upper())


def parse_routing(request: web.Request) -> RoutingHeaders:
    return RoutingHeaders(
        to=_pair(request, TO_CC, TO_PID, "OCPI-to"),
        from_=_pair(request, FROM_CC, FROM_PID, "OCPI-from"),
    )


def claimed_from(request: web.Request) -> Party | None:
    """The FROM pair as sent, or None when absent or malformed, without raising.

    Lets every answer, a refusal before authentication or header checks included, be addressed TO = requester.
    """
    try:
        return _pair(request, FROM_CC, FROM_PID, "OCPI-from")
    except InvalidParameters:
        return None


def repeated(name: str) -> str:
    """Why a header that holds one value is refused when sent more than once (RFC 9110 §5.3: only a list may be
    split over several lines). Any repetition, the same value twice included: an intermediary in front of the hub
    may have acted on another line than the hub would (docs/security.md, "Repeated headers")."""
    return f"{name} sent more than once: a header that holds one value must be sent once"


def message_ids(request: web.Request) -> MessageIds:
    """The caller's request and correlation ids, checked by the one id validator (``routing.ocpi.ids``): a missing
    or invalid one is replaced by a new id, and an invalid one is reported for the handler to refuse. A repeated
    one counts as invalid: neither of its values is used."""
    getall = request.headers.getall
    request_ids, correlation_ids = getall(REQUEST_ID, ()), getall(CORRELATION_ID, ())
    if len(request_ids) > 1 or len(correlation_ids) > 1:
        return _without_repeated(request_ids, correlation_ids)
    return checked_message_ids(request_ids[0] if request_ids else None,
                               correlation_ids[0] if correlation_ids else None, new_id)


def _without_repeated(request_ids: list[str] | tuple[()], correlation_ids: list[str] | tuple[()]) -> MessageIds:
    """The ids with a repeated one replaced as if missing, reported as the reason to refuse the request."""
    ids = checked_message_ids(request_ids[0] if len(request_ids) == 1 else None,
                              correlation_ids[0] if len(correlation_ids) == 1 else None, new_id)
    names = [name for name, sent in ((REQUEST_ID, request_ids), (CORRELATION_ID, correlation_ids)) if len(sent) > 1]
    return ids._replace(problem=repeated(" and ".join(names)))


def own_request_ids() -> dict[str, str]:
    """Ids of a request the hub makes on its own (registration calls, still-alive checks): every request carries
    X-Request-ID and X-Correlation-ID (OCPI 2.2.1 Unique message IDs); nothing triggered it, so both are new."""
    request_id = new_id()
    return {REQUEST_ID: request_id, CORRELATION_ID: request_id}


def routing_reply_headers(to: Party | None, from_: Party | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if to is not None:
        headers[TO_CC], headers[TO_PID] = to.country_code, to.party_id
    if from_ is not None:
        headers[FROM_CC], headers[FROM_PID] = from_.country_code, from_.party_id
    return headers
