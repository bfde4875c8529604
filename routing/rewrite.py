"""URL rewriting: partner URLs handed to another party are replaced by hub callback URLs (docs/ocpi-decisions.md,
Callback URLs).

Requests: ``response_url`` in the body of the five commands and of SetChargingProfile, and in the query of
charging-profile GET/DELETE. Responses: the CDR ``Location`` header and the pagination ``Link`` header.

A ``Link`` holds one or more link-values (RFC 8288 §3), in one line or several (joined by the forward clients,
routing/delivery.py ``LIST_HEADERS``). OCPI 2.2.1 transport_and_format (Pagination) defines one relation, the next
page: that link-value is relayed, as ``<hub URL>; rel="next"``, and every other one is dropped. The caller never
sees a receiver URL, and a receiver cannot make the hub issue more than one hub URL per answer.

A URL the outbound-URL policy refuses (routing/outbound.py) is never forwarded: a request carrying one is
refused (400/2001 naming the field), as is one whose ``response_url`` cannot be replaced at all (no string in the
body; empty or repeated in the query: ``check_response_url``, called before the request is routed); a refused
``Link`` makes the answer unusable (502/4000: dropping it would end the caller's crawl early without telling it);
a refused ``Location`` is left out of the accepted answer.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from routing.callbacks import Callback, Callbacks
from routing.delivery import ocpi_status_of
from routing.ocpi.errors import HubError, InvalidParameters
from routing.ocpi.headers import Party
from routing.ocpi.pagination import parse_datetime

# How long result URLs live: routing.callbacks.ResultLifetime (HUB_RESULT_URL_GRACE, HUB_RESULT_URL_MAX_LIFETIME).
LOCATION_TTL = 30 * 24 * 3600.0  # a CDR stays retrievable at its Location for a month
LINK_TTL = 3600.0  # a crawl's next page
# The usual Link, whole: one link-value, rel="next" (OCPI 2.2.1 transport_and_format, Pagination).
_NEXT_ONLY = re.compile(r'<([^>]*)>[ \t]*;[ \t]*rel[ \t]*=[ \t]*(?:"next"|next)', re.IGNORECASE)
# Any Link (RFC 8288 §3): link-value *( "," link-value ), empty list elements allowed (RFC 9110 §5.6.1);
# link-value = "<" URI-Reference ">" *( ";" param ), param = token [ "=" ( token / quoted-string ) ]; an empty
# param (a stray ";") is let through. Each run of whitespace has one place to go and the parameter list is taken
# possessively (*+): a hostile header costs linear time, never backtracking.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(r';[ \t]*(?:([^\s;,=\"<>]+)[ \t]*(?:=[ \t]*(?:(' + _QUOTED + r'|[^\s;,"]+)[ \t]*)?)?)?')
_LINK_VALUE = re.compile(r"[\s,]*<([^>]*)>[ \t]*((?:" + _PARAM.pattern + r")*+)(?:,|\Z)")
log = logging.getLogger("routing.rewrite")


class Rewritten:
    """What a request looked like after rewriting, and the callback to re-arm once the answer is in."""

    def __init__(self, body: bytes, query: str, callback_id: str | None = None,
                 holds_until: float | None = None) -> None:
        self.body = body
        self.query = query
        self.callback_id = callback_id
        self.holds_until = holds_until  # epoch until which the request itself may still produce results


def holds_until(module: str, command: str, json_body: dict[str, Any]) -> float | None:
    """A RESERVE_NOW may produce a result until its ``expiry_date``: the CPO posts CANCELED_RESERVATION to the
    same ``response_url`` when it cancels the reservation (OCPI 2.2.1 Commands, CommandResultType). Every other
    command and charging-profile request is done once its result came, within the CPO's ``timeout``."""
    expiry = json_body.get("expiry_date")
    if module != "commands" or command != "RESERVE_NOW" or not isinstance(expiry, str):
        return None
    try:
        return parse_datetime(expiry, "expiry_date").timestamp()
    except InvalidParameters:  # the CPO judges the command; its URL then lives by the CPO's timeout alone
        return None


def rewrites(module: str, interface_role: str) -> bool:
    """Whether ``rewrite_request`` may change a request of this module and interface (callers skip the call
    otherwise: once per routed request)."""
    return interface_role == "RECEIVER" and module in ("commands", "chargingprofiles")


def _in_body(module: str, method: str) -> bool:
    """Whether a request of ``rewrites`` carries its ``response_url`` in the body (a command, SetChargingProfile);
    otherwise a charging-profile GET or DELETE carries it in the query."""
    return (module == "commands" and method == "POST") or (module == "chargingprofiles" and method == "PUT")


def _query_response_urls(query: str) -> list[str]:
    """Every ``response_url`` of a query as the receiver decodes it: its name may be percent-encoded
    (``response%5Furl``), and would otherwise reach the receiver unreplaced."""
    if "response_url" not in query and "%" not in query:
        return []
    return [value for name, value in parse_qsl(query, keep_blank_values=True) if name == "response_url"]


def check_response_url(module: str, method: str, json_body: Any, query: str) -> None:
    """Refuses (400/2001), before anything is routed or queued, a ``response_url`` the hub could not replace by a
    hub URL: in a body, a value that is no string (a number, an object, ``null``); in the query, an empty one or
    one sent more than once. A string is judged when it is replaced (``rewrite_request``: http(s), length, host).
    A missing one is the receiver's to refuse, as any other required field."""
    if _in_body(module, method):
        if isinstance(json_body, dict) and "response_url" in json_body and not isinstance(
                json_body["response_url"], str):
            raise InvalidParameters("response_url must be a URL (a string), not "
                                    f"{type(json_body['response_url']).__name__}")
        return
    values = _query_response_urls(query)  # a charging-profile GET or DELETE (``rewrites`` let nothing else through)
    if len(values) > 1:
        raise InvalidParameters("response_url (query parameter) sent more than once")
    if values and not values[0]:
        raise InvalidParameters("response_url (query parameter) is empty")


async def rewrite_request(
    callbacks: Callbacks, *, module: str, interface_role: str, method: str, body: bytes, json_body: Any,
    query: str, requester: Party, requester_platform: str, receiver: Party, command: str = "",
) -> Rewritten:
    """Swap the requester's ``response_url`` for a hub URL only the receiver (the CPO) may call. ``command``:
    the CommandType of a command (its path below the module)."""
    if not rewrites(module, interface_role):
        return Rewritten(body, query)

    async def issue(url: str, field: str, until: float | None = None) -> tuple[str, str]:
        cb = Callback(url=url, method="POST", issued_to=receiver.key, target_platform=requester_platform,
                      to_party=requester.key, module=module, interface_role="SENDER")
        ttl = callbacks.results.seconds(timeout=None, holds_until=until, now=time.time())
        hub_url = await callbacks.issue(cb, ttl, field=field)
        return hub_url, cb.id

    in_body = _in_body(module, method)
    if in_body and isinstance(json_body, dict) and isinstance(json_body.get("response_url"), str):
        until = holds_until(module, command, json_body)
        hub_url, cb_id = await issue(json_body["response_url"], "response_url", until)
        return Rewritten(orjson.dumps({**json_body, "response_url": hub_url}), query, cb_id, until)
    if module == "chargingprofiles" and method in ("GET", "DELETE") and _query_response_urls(query):
        pairs = parse_qsl(query, keep_blank_values=True)
        issued: str | None = None
        out: list[tuple[str, str]] = []
        for name, value in pairs:
            if name == "response_url" and value:
                value, issued = await issue(value, "response_url (query parameter)")
            out.append((name, value))
        return Rewritten(body, urlencode(out), issued)
    return Rewritten(body, query)


async def rearm_result_callback(callbacks: Callbacks, rewritten: Rewritten, reply_body: bytes) -> None:
    """CommandResponse / ChargingProfileResponse carry ``timeout`` (seconds): the result may come until then, and
    an ACCEPTED reservation's results until its ``expiry_date``. An answer without ``timeout`` (a 2.1.1 CPO)
    leaves the URL as issued. Results never end a URL's life: an ACCEPTED reservation can still be canceled, and
    a CPO may send a result again whose answer it missed."""
    if rewritten.callback_id is None or ocpi_status_of(reply_body) is None:
        return
    data = orjson.loads(reply_body).get("data")
    if not isinstance(data, dict):
        return
    timeout = data.get("timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout >= 0:
        until = rewritten.holds_until if data.get("result") == "ACCEPTED" else None
        ttl = callbacks.results.seconds(timeout=float(timeout), holds_until=until, now=time.time())
        await callbacks.extend(rewritten.callback_id, ttl)


def next_page(link: str) -> str | None:
    """The URL of the next page a ``Link`` header names, or None when it names none.

    The next page is the first link-value whose ``rel`` (the first one, RFC 8288 §3.3) lists ``next``; failing
    that, the first without ``rel`` (RFC 8288 requires one: OCPI defines no relation but next). Raises
    ``ValueError`` when the header is not a list of link-values, e.g. a URL without ``<...>``."""
    if (usual := _NEXT_ONLY.fullmatch(link.strip())) is not None:
        return usual.group(1)
    without_rel: str | None = None
    pos = 0
    while (value := _LINK_VALUE.match(link, pos)) is not None:
        rel = _rel(value.group(2))
        if rel is None:
            without_rel = value.group(1) if without_rel is None else without_rel
        elif "next" in rel.lower().split():
            return value.group(1)
        pos = value.end()
    if link[pos:].strip(" \t,"):
        raise ValueError("not a list of link-values")
    return without_rel


def _rel(params: str) -> str | None:
    """The first ``rel`` of a link-value's parameters, unquoted (RFC 8288 §3.3: later ones are ignored)."""
    for param in _PARAM.finditer(params):
        if (param.group(1) or "").lower() == "rel":
            value = param.group(2) or ""
            return value[1:-1] if value.startswith('"') else value
    return None


def _relayed_next_page(link: str) -> str | None:
    """``next_page``, with a ``Link`` that is not link-values making the answer unusable: it may well name a next
    page, and leaving it out would end the caller's crawl without telling it."""
    try:
        return next_page(link)
    except ValueError:
        raise HubError("receiver's answer is unusable: its Link header is not a list of link-values "
                       "(RFC 8288 §3)") from None


async def rewrite_response_headers(
    callbacks: Callbacks, headers: dict[str, str], *, module: str, interface_role: str, caller: Party,
    receiver: Party, receiver_platform: str,
) -> dict[str, str]:
    """``Link`` and ``Location`` point at the receiver's server, which the caller cannot call: point them at us.
    Of a ``Link``, only the next page goes on (module docstring)."""
    out = dict(headers)
    link = out.get("Link")
    url = None if link is None else _relayed_next_page(link)
    if url is not None:
        cb = Callback(url=url, method="GET", issued_to=caller.key, target_platform=receiver_platform,
                      to_party=receiver.key, module=module, interface_role=interface_role)
        try:
            out["Link"] = f'<{await callbacks.issue(cb, LINK_TTL, field="Link header")}>; rel="next"'
        except InvalidParameters as exc:
            raise HubError(f"receiver's answer is unusable: {exc.message}") from None
    elif link is not None:  # no next page: the other relations are not OCPI's, and would each need a hub URL
        del out["Link"]
    location = out.get("Location")
    if location:
        cb = Callback(url=location, method="GET", issued_to=caller.key, target_platform=receiver_platform,
                      to_party=receiver.key, module=module, interface_role=interface_role)
        try:
            out["Location"] = await callbacks.issue(cb, LOCATION_TTL, field="Location header")
        except InvalidParameters as exc:  # the receiver accepted the request: its answer stands, minus the URL
            log.warning("platform %s: %s; left out of the answer", receiver_platform, exc.message)
            del out["Location"]
    return out
