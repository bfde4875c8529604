"""URL rewriting: partner URLs handed to another party are replaced by hub callback URLs (digest §3.9).

Requests: ``response_url`` in the body of the five commands and of SetChargingProfile, and in the query of
charging-profile GET/DELETE. Responses: the CDR ``Location`` header and every pagination ``Link`` header.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from hub.ocpi.headers import Party
from routing.callbacks import Callback, Callbacks
from routing.delivery import ocpi_status_of

# Until the CPO's synchronous answer tells its timeout; then re-armed to timeout + margin.
PENDING_RESULT_TTL = 600.0
RESULT_MARGIN = 60.0
LOCATION_TTL = 30 * 24 * 3600.0  # a CDR stays retrievable at its Location for a month
LINK_TTL = 3600.0  # a crawl's next page
_LINK = re.compile(r"<([^>]*)>(.*)")


class Rewritten:
    """What a request looked like after rewriting, and the callback to re-arm once the answer is in."""

    def __init__(self, body: bytes, query: str, callback_id: str | None = None) -> None:
        self.body = body
        self.query = query
        self.callback_id = callback_id


async def rewrite_request(
    callbacks: Callbacks, *, module: str, interface_role: str, method: str, body: bytes, json_body: Any,
    query: str, requester: Party, requester_platform: str, receiver: Party,
) -> Rewritten:
    """Swap the requester's ``response_url`` for a hub URL only the receiver (the CPO) may call."""
    if interface_role != "RECEIVER" or module not in ("commands", "chargingprofiles"):
        return Rewritten(body, query)

    async def issue(url: str) -> tuple[str, str]:
        cb = Callback(url=url, method="POST", issued_to=receiver.key, target_platform=requester_platform,
                      to_party=requester.key, module=module, interface_role="SENDER")
        hub_url = await callbacks.issue(cb, PENDING_RESULT_TTL)
        return hub_url, cb.id

    in_body = (module == "commands" and method == "POST") or (module == "chargingprofiles" and method == "PUT")
    if in_body and isinstance(json_body, dict) and isinstance(json_body.get("response_url"), str):
        hub_url, cb_id = await issue(json_body["response_url"])
        return Rewritten(orjson.dumps({**json_body, "response_url": hub_url}), query, cb_id)
    if module == "chargingprofiles" and method in ("GET", "DELETE") and "response_url" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        issued: str | None = None
        out: list[tuple[str, str]] = []
        for name, value in pairs:
            if name == "response_url" and value:
                value, issued = await issue(value)
            out.append((name, value))
        return Rewritten(body, urlencode(out), issued)
    return Rewritten(body, query)


async def rearm_result_callback(callbacks: Callbacks, callback_id: str | None, reply_body: bytes) -> None:
    """CommandResponse / ChargingProfileResponse carry ``timeout`` (seconds): the result may come until then."""
    if callback_id is None:
        return
    if ocpi_status_of(reply_body) is None:
        return
    data = orjson.loads(reply_body).get("data")
    timeout = data.get("timeout") if isinstance(data, dict) else None
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout >= 0:
        await callbacks.extend(callback_id, float(timeout) + RESULT_MARGIN)


async def rewrite_response_headers(
    callbacks: Callbacks, headers: dict[str, str], *, module: str, interface_role: str, caller: Party,
    receiver: Party, receiver_platform: str,
) -> dict[str, str]:
    """``Link`` and ``Location`` point at the receiver's server, which the caller cannot call: point them at us."""
    out = dict(headers)
    link = out.get("Link")
    if link:
        match = _LINK.match(link.strip())
        if match:
            cb = Callback(url=match.group(1), method="GET", issued_to=caller.key, target_platform=receiver_platform,
                          to_party=receiver.key, module=module, interface_role=interface_role)
            out["Link"] = f"<{await callbacks.issue(cb, LINK_TTL)}>{match.group(2)}"
    location = out.get("Location")
    if location:
        cb = Callback(url=location, method="GET", issued_to=caller.key, target_platform=receiver_platform,
                      to_party=receiver.key, module=module, interface_role=interface_role)
        out["Location"] = await callbacks.issue(cb, LOCATION_TTL)
    return out
