"""Routing decisions for functional-module requests: who receives a request, and in which order group.

Pure functions over an ``InboundRequest`` and the platform directory: no HTTP, no Redis, so every rule
here is testable on its own (OCPI 2.2.1 Message Routing; docs/ocpi-decisions.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from routing.ocpi.errors import (
    InvalidParameters,
    PartyNotAllowed,
    ReceiverNotConnected,
    UnknownReceiver,
)
from routing.ocpi.headers import Party, RoutingHeaders
from routing.ocpi.versions import V211, V221, has_module
from routing.platform import ConnectionStatus, Platform
from routing.platform import Party as PlatformParty

# Modules whose RECEIVER interface holds Client Owned Objects at {country_code}/{party_id}/{id} (OCPI 2.2.1 Client
# Owned Objects).
CLIENT_OWNED = frozenset({"locations", "sessions", "tariffs", "tokens"})
# Field that carries the object id in the body, by path depth (3 = the object, 4 = EVSE, 5 = Connector).
_ID_FIELD: dict[str, dict[int, str]] = {
    "locations": {3: "id", 4: "uid", 5: "id"},
    "sessions": {3: "id"},
    "tariffs": {3: "id"},
    "tokens": {3: "uid"},
}
PUSH_METHODS = frozenset({"PUT", "PATCH", "POST"})
# Methods OCPI 2.2.1 defines per module and interface role (OCPI 2.2.1 module interfaces); anything else is refused
# with 405
# rather than forwarded: no receiver implements it, and a hub must not invent semantics (e.g. DELETE a Location).
ALLOWED_METHODS: dict[tuple[str, str], frozenset[str]] = {
    ("locations", "SENDER"): frozenset({"GET"}),
    ("locations", "RECEIVER"): frozenset({"GET", "PUT", "PATCH"}),
    ("sessions", "SENDER"): frozenset({"GET", "PUT"}),
    ("sessions", "RECEIVER"): frozenset({"GET", "PUT", "PATCH"}),
    ("cdrs", "SENDER"): frozenset({"GET"}),
    ("cdrs", "RECEIVER"): frozenset({"GET", "POST"}),
    ("tariffs", "SENDER"): frozenset({"GET"}),
    ("tariffs", "RECEIVER"): frozenset({"GET", "PUT", "DELETE"}),
    ("tokens", "SENDER"): frozenset({"GET", "POST"}),
    ("tokens", "RECEIVER"): frozenset({"GET", "PUT", "PATCH"}),
    ("commands", "SENDER"): frozenset({"POST"}),
    ("commands", "RECEIVER"): frozenset({"POST"}),
    ("chargingprofiles", "SENDER"): frozenset({"POST", "PUT"}),
    ("chargingprofiles", "RECEIVER"): frozenset({"GET", "PUT", "DELETE"}),
    # OCPI 2.3.0 only: Bookings 1.1, Payments (terminals, financial advice confirmations), Invoice Reconciliation.
    ("bookings", "SENDER"): frozenset({"GET", "POST", "PATCH"}),
    ("bookings", "RECEIVER"): frozenset({"GET", "PUT", "PATCH"}),
    ("payments", "SENDER"): frozenset({"GET", "POST", "PUT", "PATCH"}),
    ("payments", "RECEIVER"): frozenset({"GET", "POST"}),
    ("invoicereconciliation", "SENDER"): frozenset({"GET"}),
    ("invoicereconciliation", "RECEIVER"): frozenset({"GET", "POST", "PUT", "DELETE"}),
}


def path_segments(tail: str) -> list[str]:
    """The decoded segments of a path tail as sent; split before decoding, so an id holding an encoded '/' stays
    one segment."""
    return [unquote(s) for s in tail.split("/") if s] if tail else []


class Directory(Protocol):
    def by_party(self, country_code: str, party_id: str) -> tuple[Platform, PlatformParty] | None: ...


@dataclass
class InboundRequest:
    """A functional-module request as the edge parsed it."""

    platform: Platform  # the authenticated caller
    module: str
    interface_role: str  # role of the hub endpoint that was called: SENDER | RECEIVER
    method: str
    tail: str  # path below the module base as sent (percent-encoded), no leading or trailing slash
    query: str  # query string as sent (percent-encoded)
    routing: RoutingHeaders
    body: bytes
    json_body: Any = None
    _segments: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def segments(self) -> list[str]:
        """Decoded path segments (``path_segments``), split once per request."""
        if self._segments is None:
            self._segments = path_segments(self.tail)
        return self._segments


@dataclass
class Route:
    receiver: Platform
    to: Party
    group: str | None  # ordering key within the receiver; None: no ordering needed


# OCPI 2.1.1 mod_tariffs, eMSP interface: PATCH too; 2.2 removed it (docs/versions.md, "Tariffs").
_ALLOWED_211 = {**ALLOWED_METHODS, ("tariffs", "RECEIVER"): frozenset({"GET", "PUT", "PATCH", "DELETE"})}


def allowed_methods(module: str, interface_role: str, version: str = V221) -> frozenset[str]:
    return (_ALLOWED_211 if version == V211 else ALLOWED_METHODS).get((module, interface_role), frozenset())


def check_sender(req: InboundRequest) -> Party:
    """The FROM pair must be one of the caller's own parties (anti-spoofing, docs/ocpi-decisions.md)."""
    sender = req.routing.from_
    if sender is None:
        raise InvalidParameters("OCPI-from-country-code and OCPI-from-party-id are required on functional modules")
    if req.platform.party(sender.country_code, sender.party_id) is None:
        raise PartyNotAllowed(f"party {sender.country_code}/{sender.party_id} is not hosted by this platform")
    return sender


def check_client_owned(req: InboundRequest, sender: Party) -> None:
    """Client Owned Object paths carry the owner, which must be FROM and match the body (OCPI 2.2.1 Client Owned
    Objects)."""
    if req.module == "cdrs" and req.interface_role == "RECEIVER" and req.method == "POST":
        _check_body_owner(req.json_body, sender, "CDR", required=False)
        return
    if req.interface_role != "RECEIVER" or req.module not in CLIENT_OWNED:
        return
    segs = req.segments
    if len(segs) < 3:
        raise InvalidParameters(
            f"{req.module} RECEIVER paths are {{country_code}}/{{party_id}}/{{id}}; got '/{req.tail}'"
        )
    path_party = Party(segs[0].upper(), segs[1].upper())
    if path_party != sender:
        raise InvalidParameters(
            f"path party {path_party.country_code}/{path_party.party_id} does not match "
            f"FROM party {sender.country_code}/{sender.party_id}"
        )
    if req.method not in PUSH_METHODS:
        return
    if not isinstance(req.json_body, dict):
        raise InvalidParameters(f"{req.method} {req.module} needs a JSON object body")
    if req.module == "tokens" and not isinstance(req.json_body.get("type", ""), str):
        # The type is part of a token's key (GET All copy, open-routing hint): refused before anything is kept.
        raise InvalidParameters("token type must be a string (OCPI TokenType)")
    depth = len(segs)
    top_level_put = req.method == "PUT" and depth == 3
    _check_body_owner(req.json_body, path_party, req.module, required=top_level_put)
    id_field = _ID_FIELD[req.module].get(depth)
    if id_field is None:
        raise InvalidParameters(f"{req.module} path '/{req.tail}' is too deep")
    body_id = req.json_body.get(id_field)
    if body_id is None:
        if top_level_put:
            raise InvalidParameters(f"PUT {req.module} body lacks '{id_field}'")
        return
    if str(body_id) != segs[-1]:
        raise InvalidParameters(f"body {id_field} '{body_id}' does not match the path id '{segs[-1]}'")


def _check_body_owner(body: Any, owner: Party, what: str, *, required: bool) -> None:
    if not isinstance(body, dict):
        raise InvalidParameters(f"{what} body must be a JSON object")
    cc, pid = body.get("country_code"), body.get("party_id")
    if cc is None and pid is None and not required:
        return
    if not isinstance(cc, str) or not isinstance(pid, str):
        raise InvalidParameters(f"{what} body needs country_code and party_id")
    if Party(cc.upper(), pid.upper()) != owner:
        raise InvalidParameters(
            f"{what} body party {cc}/{pid} does not match {owner.country_code}/{owner.party_id}"
        )


def order_group(req: InboundRequest, to: Party, sender: Party) -> str | None:
    """Messages about one object (module + owner + id) keep their acceptance order (docs/architecture.md)."""
    segs = req.segments
    if req.module in CLIENT_OWNED and req.interface_role == "RECEIVER" and len(segs) >= 3:
        return f"{req.module}:{segs[0].upper()}:{segs[1].upper()}:{segs[2]}"
    if req.module == "sessions" and req.interface_role == "SENDER" and len(segs) >= 2:
        return f"sessions:{to.key}:{segs[0]}"  # charging_preferences of a session owned by the TO CPO
    if req.module == "chargingprofiles" and segs:
        cpo = to if req.interface_role == "RECEIVER" else sender
        return f"chargingprofiles:{cpo.key}:{segs[0]}"
    return None


_REACHABLE = (ConnectionStatus.CONNECTED,)
_REACHABLE_LATER = (ConnectionStatus.CONNECTED, ConnectionStatus.OFFLINE)


def direct_route(req: InboundRequest, directory: Directory, sender: Party,
                 waits: Callable[[Platform], bool] | None = None) -> Route:
    """Find the receiver of a request addressed to one party (OCPI 2.2.1 Message Routing steps 2–3).

    ``waits``: whether the hub keeps this request for a receiver that is OFFLINE (store-and-forward,
    docs/store-and-forward.md); otherwise only CONNECTED receivers are routed to."""
    to = req.routing.to
    assert to is not None
    found = directory.by_party(to.country_code, to.party_id)
    if found is None:
        raise UnknownReceiver(f"party {to.country_code}/{to.party_id} is not known to this hub")
    receiver, party = found  # the directory knows no party of a removed platform: those are 4001
    reachable = _REACHABLE_LATER if waits is not None and waits(receiver) else _REACHABLE
    for status in (receiver.status, party.status):
        if status not in reachable:
            raise ReceiverNotConnected(f"party {to.country_code}/{to.party_id} is {status.value}")
    version = receiver.version or V221
    if not has_module(version, req.module):  # never sent to it (docs/versions.md)
        raise UnknownReceiver(f"party {to.country_code}/{to.party_id} speaks OCPI {version}, which has no "
                              f"{req.module} module")
    if receiver.endpoint_url(req.module, req.interface_role) is None:
        raise UnknownReceiver(
            f"party {to.country_code}/{to.party_id} does not offer the {req.module} {req.interface_role} interface"
        )
    return Route(receiver=receiver, to=to, group=order_group(req, to, sender))
