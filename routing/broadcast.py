"""Broadcast push (TO = the hub): who receives it, and how a failed fan-out delivery is retried (OCPI 2.2.1 Broadcast
Push)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from routing.ocpi.errors import InvalidParameters
from routing.ocpi.versions import V211, V221
from routing.platform import ConnectionStatus, Platform
from routing.platform import Party as PlatformParty

# Modules whose data is meant for everyone; sessions and CDRs are party-specific (and personal data).
BROADCAST_MODULES = frozenset({"locations", "tariffs", "tokens"})
BROADCAST_METHODS = frozenset({"PUT", "PATCH", "POST"})
# DELETEs broadcast from OCPI 2.1.1 only: a CPO's Tariff DELETE (2.1.1 mod_tariffs, eMSP interface) must reach every
# party its PUT reached, and a 2.1.1 party names no receiver (no routing headers). A 2.2.1 or 2.3.0 CPO DELETEs at
# each receiver itself (docs/ocpi-decisions.md).
BROADCAST_DELETES_211 = frozenset({"tariffs"})
# "Opposite role": CPO data goes to eMSPs, NSPs, NAPs and OTHER; eMSP and OTHER data goes to CPOs.
AUDIENCE = {
    "CPO": frozenset({"EMSP", "NSP", "NAP", "OTHER"}),
    "EMSP": frozenset({"CPO"}),
    "OTHER": frozenset({"CPO"}),
}


# Who owns each module's data (OCPI 2.2.1 module interfaces): the role a party holding several roles broadcasts it as.
DATA_OWNER = {"locations": "CPO", "tariffs": "CPO", "tokens": "EMSP"}


@dataclass(frozen=True)
class Recipient:
    platform: Platform
    party: PlatformParty


def check_broadcast(module: str, interface_role: str, method: str, version: str = V221) -> None:
    """A push the hub may fan out; DELETE only as ``BROADCAST_DELETES_211`` allows."""
    if method == "GET":
        raise InvalidParameters("GET is never broadcast: address one party, or use TO = hub on a SENDER "
                                "interface for GET All")
    if method == "DELETE" and version == V211 and module in BROADCAST_DELETES_211 and interface_role == "RECEIVER":
        return
    if method not in BROADCAST_METHODS:
        raise InvalidParameters(f"{method} cannot be broadcast; only POST, PUT and PATCH can")
    if interface_role != "RECEIVER" or module not in BROADCAST_MODULES:
        raise InvalidParameters(f"{module} {interface_role} pushes cannot be broadcast; broadcast is for "
                                "locations, tariffs and tokens RECEIVER pushes")


# Path segments below the module of a broadcast push: {country_code}/{party_id}/{id}, and for Locations down to an
# EVSE ({evse_uid}) and a Connector ({connector_id}) (OCPI 2.2.1 mod_locations, mod_tariffs, mod_tokens Receiver
# interfaces; 2.1.1 the same).
_PATH_DEPTH = {"locations": (3, 5), "tariffs": (3, 3), "tokens": (3, 3)}


def check_broadcast_path(module: str, segs: list[str]) -> None:
    """A broadcast push names one object the hub keeps a copy of and every receiver gets: a path below it (or above)
    names none, and would be fanned out as the sender wrote it."""
    low, high = _PATH_DEPTH.get(module, (3, 3))
    if not low <= len(segs) <= high:
        shape = "{country_code}/{party_id}/{id}" + ("[/{evse_uid}[/{connector_id}]]" if module == "locations" else "")
        raise InvalidParameters(f"a {module} push names one object: {shape}; got {len(segs)} path segments")


def broadcast_role(roles: Iterable[str], module: str) -> str:
    """The role the sender broadcasts as: one pair may hold several (e.g. CPO and EMSP under NL/ABC), and its
    Tokens are eMSP data, its Locations CPO data, whichever role its platform listed first."""
    held = set(roles)
    for role in (DATA_OWNER.get(module, ""), "CPO", "EMSP", "OTHER"):
        if role in held:
            return role
    raise InvalidParameters(f"a party with role {', '.join(sorted(held))} cannot broadcast")


def recipients(platforms: Iterable[Platform], sender_platform: Platform, sender_role: str,
               module: str, admits: Callable[[Platform, PlatformParty], bool] | None = None) -> list[Recipient]:
    """CONNECTED parties of the opposite role whose platform offers the module's RECEIVER interface, and, with
    ``admits`` (roaming agreements, routing/roaming.py), that the sender may reach.

    Never the sender's own platform: it has the data already. One delivery per party (country code and party
    id), even when the party holds several roles of the audience (e.g. EMSP and NSP).
    """
    audience = AUDIENCE.get(sender_role)
    if audience is None:
        raise InvalidParameters(f"a party with role {sender_role} cannot broadcast")
    out = []
    for platform in platforms:
        if platform.id == sender_platform.id or platform.removed or platform.status != ConnectionStatus.CONNECTED:
            continue
        if platform.endpoint_url(module, "RECEIVER") is None:
            continue
        seen: set[str] = set()
        for party in platform.parties:
            if party.role in audience and party.status == ConnectionStatus.CONNECTED and party.key not in seen \
                    and (admits is None or admits(platform, party)):
                seen.add(party.key)
                out.append(Recipient(platform, party))
    return out
