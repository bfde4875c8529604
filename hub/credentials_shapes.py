"""The credentials object in each OCPI version: the one the hub hands out, and a partner's read into one form
(docs/versions.md, "Versions and registration").

- 2.1.1: one party, no roles (OCPI 2.1.1 credentials). The hub presents itself; a partner's role is not in the
  message and comes from elsewhere (the operator's reservation or the ``connect`` call).
- 2.2.1: ``roles``; a hub reports only itself, role HUB (OCPI 2.2.1 credentials, Credentials object).
- 2.3.0: ``hub_party_id`` names the hub; ``roles`` lists the parties reachable through it, never HUB (OCPI 2.3.0
  credentials). Unknown role values are skipped, not refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hub.context import Hub
from routing.ocpi.errors import InvalidParameters, PartyNotAllowed
from routing.ocpi.models import Credentials, Credentials211, Credentials230, parse_model
from routing.ocpi.versions import ROLES_211, V211, V221, V230
from routing.platform import ConnectionStatus, Party, Platform, party_key

log = logging.getLogger("hub.credentials")

# Party roles a 2.3.0 connection can route (2.3.0 dropped HUB from Role).
ROLES_230 = ("CPO", "EMSP", "NAP", "NSP", "OTHER", "SCSP")

RoleOf = Callable[[str, str], str]  # (country_code, party_id) -> the role of a 2.1.1 party


def hub_credentials(hub: Hub, token: str, version: str = V221, viewer: Platform | None = None) -> dict[str, Any]:
    """The hub's credentials in ``version``; ``viewer`` (the platform they are for) is left out of 2.3.0 roles."""
    s = hub.settings
    if version == V211:
        return {"token": token, "url": hub.versions_url, "business_details": {"name": s.hub_name},
                "party_id": s.hub_party_id, "country_code": s.hub_country_code}
    if version == V230:
        return {"token": token, "url": hub.versions_url, "hub_party_id": s.hub_country_code + s.hub_party_id,
                "roles": reachable_roles(hub, viewer)}
    return {"token": token, "url": hub.versions_url, "roles": [{
        "role": "HUB", "business_details": {"name": s.hub_name},
        "party_id": s.hub_party_id, "country_code": s.hub_country_code,
    }]}


def reachable_roles(hub: Hub, viewer: Platform | None) -> list[dict[str, Any]]:
    """CONNECTED parties of the other platforms, as they are now; under roaming agreements only those the viewer
    may see, as in ClientInfo (docs/agreements.md). Roles needs one entry at least: with nobody reachable yet,
    the hub lists its own party as OTHER (what ``hub_party_id`` names too)."""
    roles: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for platform in hub.registry.all():
        if platform.removed or (viewer is not None and platform.id == viewer.id):
            continue
        for party in platform.parties:
            if party.status != ConnectionStatus.CONNECTED or party.role not in ROLES_230:
                continue
            if viewer is not None and not hub.roaming.sees(viewer, platform, party):
                continue
            if (party.key, party.role) in seen:
                continue
            seen.add((party.key, party.role))
            roles.append({"role": party.role, "business_details": party.business_details or {"name": platform.name},
                          "party_id": party.party_id, "country_code": party.country_code})
    if not roles:
        s = hub.settings
        roles.append({"role": "OTHER", "business_details": {"name": s.hub_name},
                      "party_id": s.hub_party_id, "country_code": s.hub_country_code})
    return roles


def read_partner_credentials(version: str, data: Any, role_of: RoleOf, what: str = "credentials") -> Credentials:
    """A partner's credentials in ``version`` as the 2.2.1 form the hub works with (``roles``)."""
    if version == V211:
        single = parse_model(Credentials211, data, what)
        role = role_of(single.country_code, single.party_id)
        return Credentials.model_validate({
            "token": single.token, "url": single.url,
            "roles": [{"role": role, "party_id": single.party_id, "country_code": single.country_code,
                       "business_details": single.business_details.model_dump(exclude_none=True)}],
        })
    if version == V230:
        creds = parse_model(Credentials230, data, what)
        known = [r for r in creds.roles if r.role.upper() in ROLES_230]
        skipped = [f"{r.country_code}/{r.party_id} ({r.role})" for r in creds.roles if r.role.upper() not in ROLES_230]
        if skipped:
            log.info("2.3.0 credentials: roles the hub does not route skipped: %s", ", ".join(skipped))
        if not known:
            raise InvalidParameters(f"invalid {what}: no role the hub can route (one of {', '.join(ROLES_230)})")
        return Credentials.model_validate({
            "token": creds.token, "url": creds.url,
            "roles": [{**r.model_dump(exclude_none=True), "role": r.role.upper()} for r in known],
        })
    return parse_model(Credentials, data, what)


def reserved_role(platform: Platform) -> RoleOf:
    """The role of a 2.1.1 party: the one the operator reserved for its pair on this platform."""

    def role_of(country_code: str, party_id: str) -> str:
        key = party_key(country_code, party_id)
        roles = sorted({p.role for p in platform.parties if p.key == key})
        if not roles:
            raise PartyNotAllowed(f"{country_code}/{party_id} is not reserved for this platform by the hub operator")
        if len(roles) > 1:
            raise InvalidParameters(
                f"{country_code}/{party_id} is reserved with several roles ({', '.join(roles)}): an OCPI 2.1.1 "
                "connection carries one party with one role, so each role needs a connection of its own")
        return given_role(roles[0], f"{country_code}/{party_id}")

    return role_of


def parties_211(platform: Platform) -> list[Party]:
    """The party a 2.1.1 connection carries: the one its credentials named. Parties of the platform that the
    credentials left out (a platform that moved to 2.1.1 from a newer version) are no longer connected and carry
    no business details (docs/versions.md, "Versions and registration")."""
    if len(platform.parties) == 1:
        return platform.parties
    return [p for p in platform.parties if p.business_details is not None]


def given_role(role: str, who: str) -> str:
    """A 2.1.1 connection is a CPO or an eMSP: its endpoints are read as one of those sides."""
    if role.upper() not in ROLES_211:
        raise InvalidParameters(f"{who} has role {role}: an OCPI 2.1.1 connection is a CPO or an EMSP")
    return role.upper()
