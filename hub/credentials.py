"""Credentials module, hub as credentials receiver: register, update, read, unregister (OCPI 2.2.1 credentials).

Token A (issued by the operator) opens the door once: POST swaps it for Token C, after which A answers 401.
Inbound tokens are stored hashed; the outbound token (the partner's Token B) is needed in clear to call it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from aiohttp import web

from hub.access import Caller, authenticate, reauthenticate
from hub.context import Hub, hub_of
from hub.envelope import ocpi_response
from hub.exchange import reply_headers
from hub.peer import discover_endpoints
from routing.ocpi.errors import MethodNotAllowed, PartyNotAllowed
from routing.ocpi.models import Credentials, CredentialsRole, parse_json, parse_model
from routing.platform import ConnectionStatus, Endpoint, Platform, hash_token, new_token, utcnow

log = logging.getLogger("hub.credentials")

# One registration or update at a time per platform in this process: two POSTs with the same Token A must not
# both answer 200 with a Token C of which only the last one saved works.
_LOCKS = web.AppKey("credentials_locks", dict[str, asyncio.Lock])


def hub_credentials(hub: Hub, token: str) -> dict[str, Any]:
    """OCPI 2.2.1: a hub reports only itself, with role HUB (OCPI 2.2.1 credentials, Credentials object)."""
    s = hub.settings
    return {
        "token": token,
        "url": hub.versions_url,
        "roles": [{
            "role": "HUB",
            "business_details": {"name": s.hub_name},
            "party_id": s.hub_party_id,
            "country_code": s.hub_country_code,
        }],
    }


async def _read_credentials(request: web.Request) -> Credentials:
    return parse_model(Credentials, parse_json(await request.read()), "credentials")


def _check_roles(platform: Platform, creds: Credentials) -> None:
    """A registration may only claim the party pairs (and roles) the operator reserved."""
    reserved = {(p.country_code, p.party_id, p.role) for p in platform.parties}
    claimed = [(r.country_code, r.party_id, r.role) for r in creds.roles]
    refused = [f"{cc}/{pid} ({role})" for cc, pid, role in claimed if (cc, pid, role) not in reserved]
    if refused:
        raise PartyNotAllowed("roles not reserved for this platform by the hub operator: " + ", ".join(refused))


async def _apply(request: web.Request, hub: Hub, caller: Caller, creds: Credentials) -> str:
    """Read the partner's endpoints with its new token, then issue a fresh inbound token.

    The callbacks take seconds: the platform is read again afterwards, so an operator's suspend or remove (or a
    concurrent registration that already used the token) wins instead of being overwritten by a stale copy.
    """
    async with request.app[_LOCKS].setdefault(caller.platform.id, asyncio.Lock()):
        endpoints = await discover_endpoints(hub.session, creds.url, creds.token, hub.settings.registration_timeout,
                                             policy=hub.outbound)
        caller = await reauthenticate(hub, caller)
        return await _save_registration(hub, caller, creds, endpoints)


async def _save_registration(hub: Hub, caller: Caller, creds: Credentials, endpoints: list[Endpoint]) -> str:
    platform = copy.deepcopy(caller.platform)  # the registry's copy changes only once the store has the new state
    token_c = new_token()
    now = utcnow()
    claimed: dict[tuple[str, str, str], CredentialsRole] = {
        (r.country_code, r.party_id, r.role): r for r in creds.roles
    }
    for party in platform.parties:
        role = claimed.get((party.country_code, party.party_id, party.role))
        party.status = ConnectionStatus.CONNECTED if role is not None else ConnectionStatus.PLANNED
        # Only parties the partner claims carry business details; admin resume relies on that.
        party.business_details = role.business_details.model_dump(exclude_none=True) if role is not None else None
        party.last_updated = now
    platform.endpoints = endpoints
    platform.versions_url = creds.url
    platform.version = "2.2.1"
    platform.outbound_token = creds.token
    platform.inbound_token_hash = hash_token(token_c)
    platform.token_a_hash = None  # OCPI: returning Token C invalidates Token A
    platform.status = ConnectionStatus.CONNECTED
    platform.updated_at = platform.last_seen = now
    await hub.registry.save(platform)
    return token_c


async def get_credentials(request: web.Request) -> web.Response:
    hub = hub_of(request)
    caller = await authenticate(request, hub, allow_token_a=True)
    return ocpi_response(hub_credentials(hub, caller.token), headers=reply_headers(request))


async def post_credentials(request: web.Request) -> web.Response:
    hub = hub_of(request)
    caller = await authenticate(request, hub, allow_token_a=True)
    if not caller.is_token_a:
        _count(hub, "register", "refused")
        raise MethodNotAllowed("already registered: use PUT to update credentials")
    creds = await _read_credentials(request)
    _check_roles(caller.platform, creds)
    try:
        token_c = await _apply(request, hub, caller, creds)
    except Exception:
        _count(hub, "register", "failed")
        raise
    _count(hub, "register", "ok")
    log.info("platform %s registered", caller.platform.id)
    return ocpi_response(hub_credentials(hub, token_c), headers=reply_headers(request))


async def put_credentials(request: web.Request) -> web.Response:
    hub = hub_of(request)
    caller = await _registered(request, hub, "update")
    creds = await _read_credentials(request)
    _check_roles(caller.platform, creds)
    try:
        token_c = await _apply(request, hub, caller, creds)
    except Exception:
        _count(hub, "update", "failed")
        raise
    _count(hub, "update", "ok")
    return ocpi_response(hub_credentials(hub, token_c), headers=reply_headers(request))


async def delete_credentials(request: web.Request) -> web.Response:
    """Unregister: both tokens die and the parties are SUSPENDED; the operator may resume with a new Token A."""
    hub = hub_of(request)
    caller = await _registered(request, hub, "unregister")
    platform = copy.deepcopy(caller.platform)
    now = utcnow()
    platform.inbound_token_hash = None
    platform.outbound_token = None
    platform.status = ConnectionStatus.SUSPENDED
    for party in platform.parties:
        party.status, party.last_updated = ConnectionStatus.SUSPENDED, now
    platform.updated_at = now
    await hub.registry.save(platform)
    _count(hub, "unregister", "ok")
    return ocpi_response(headers=reply_headers(request))


async def _registered(request: web.Request, hub: Hub, action: str) -> Caller:
    caller = await authenticate(request, hub, allow_token_a=True)
    if caller.is_token_a:
        _count(hub, action, "refused")
        raise MethodNotAllowed("not registered: POST credentials first")
    return caller


def _count(hub: Hub, action: str, result: str) -> None:
    hub.metrics.registrations.labels(action=action, result=result).inc()


def add_routes(app: web.Application) -> None:
    app[_LOCKS] = {}
    for path in ("/ocpi/2.2.1/credentials", "/ocpi/2.2.1/credentials/"):
        app.router.add_get(path, get_credentials)
        app.router.add_post(path, post_credentials)
        app.router.add_put(path, put_credentials)
        app.router.add_delete(path, delete_credentials)
