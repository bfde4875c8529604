"""The OCPI versions the hub speaks, and what each of them has.

Dependency-free facts the HTTP service and the routing core both need: which modules a version defines, which
version two platforms share, and how a version encodes the ``Authorization`` header.
"""

from __future__ import annotations

V211 = "2.1.1"
V221 = "2.2.1"
V230 = "2.3.0"
SUPPORTED = (V230, V221, V211)  # newest first: a partner registers at the newest version both sides support

# Functional modules per version (OCPI 2.1.1 version_information_endpoint; 2.2.1 and 2.3.0 ModuleID).
# 2.3.0 adds Bookings (identifier printed "Booking", URLs "bookings": the hub accepts both spellings from
# partners and advertises "bookings"), Payments and Invoice Reconciliation; 2.1.1 lacks chargingprofiles.
MODULES_211 = ("cdrs", "commands", "locations", "sessions", "tariffs", "tokens")
MODULES_221 = ("cdrs", "chargingprofiles", "commands", "locations", "sessions", "tariffs", "tokens")
MODULES_230_ONLY = ("bookings", "invoicereconciliation", "payments")
MODULES_230 = (*MODULES_221, *MODULES_230_ONLY)
MODULES = {V211: MODULES_211, V221: MODULES_221, V230: MODULES_230}
# Configuration modules the hub serves besides credentials: hubclientinfo exists from 2.2 on.
HAS_HUBCLIENTINFO = frozenset({V221, V230})
ALL_MODULES = MODULES_230  # every functional module the hub routes, in any version


def modules_of(version: str) -> tuple[str, ...]:
    return MODULES.get(version, MODULES_221)


_MODULE_SETS = {v: frozenset(m) for v, m in MODULES.items()}
_MODULE_SET_221 = _MODULE_SETS[V221]


def has_module(version: str, module: str) -> bool:
    """As ``module in modules_of(version)``; asked twice per routed request, so one set lookup."""
    return module in _MODULE_SETS.get(version, _MODULE_SET_221)


def newest_common(offered: list[str] | tuple[str, ...]) -> str | None:
    """The newest version in ``offered`` that the hub speaks too (unknown values, e.g. "2.2", are skipped)."""
    for version in SUPPORTED:
        if version in offered:
            return version
    return None


def order(version: str) -> int:
    """2.1.1 < 2.2.1 < 2.3.0; a version the hub does not speak sorts first."""
    return SUPPORTED[::-1].index(version) if version in SUPPORTED else -1


def token_encoding(version: str) -> str:
    """OCPI 2.1.1 sends the raw token after ``Token ``; 2.2 and later Base64-encode it."""
    return "raw" if version == V211 else "base64"


def has_routing_headers(version: str) -> bool:
    """2.1.1 knows neither the ``OCPI-to-*``/``OCPI-from-*`` headers nor ``X-Request-ID``/``X-Correlation-ID``."""
    return version != V211


# OCPI 2.1.1 endpoints carry no interface role: which side an endpoint is follows from the role of the party
# that offers it (OCPI 2.1.1 modules, "CPO interface" / "eMSP interface"; 2.2.1 names the same interfaces SENDER
# and RECEIVER). A CPO's locations are what a 2.2.1 CPO offers as SENDER; its tokens and commands are what it
# receives. An eMSP is the mirror image, except commands: the eMSP's side is where results come back (SENDER).
_ROLE_211: dict[str, dict[str, str]] = {
    "CPO": {"locations": "SENDER", "sessions": "SENDER", "cdrs": "SENDER", "tariffs": "SENDER",
            "tokens": "RECEIVER", "commands": "RECEIVER"},
    "EMSP": {"locations": "RECEIVER", "sessions": "RECEIVER", "cdrs": "RECEIVER", "tariffs": "RECEIVER",
             "tokens": "SENDER", "commands": "SENDER"},
}
ROLES_211 = tuple(_ROLE_211)  # the party roles a 2.1.1 connection can have


def interface_role_211(module: str, party_role: str) -> str | None:
    """The 2.2.1 interface role of an endpoint a 2.1.1 party with ``party_role`` offers; credentials: SENDER (as
    2.2.1 advises); None for a module 2.1.1 lacks or a party role 2.1.1 cannot carry."""
    if module == "credentials":
        return "SENDER"
    return _ROLE_211.get(party_role, {}).get(module)
