"""Credentials module, hub as credentials receiver: register, update, read, unregister (OCPI 2.1.1, 2.2.1 and
2.3.0 credentials).

Token A (issued by the operator) opens the door once: POST swaps it for Token C, after which A answers 401.
Inbound tokens are stored hashed; the outbound token (the partner's Token B) is needed in clear to call it.
The version of a registration is the version of the credentials endpoint called: POST registers in it, PUT moves
the platform to it (docs/versions.md, "Versions and registration").
"""

from __future__ import annotations

import asyncio
import copy
import logging

from aiohttp import web

from hub.access import Caller, authenticate, reauthenticate
from hub.context import Hub, hub_of
from hub.credentials_shapes import hub_credentials, read_partner_credentials, reserved_role
from hub.envelope import ocpi_response
from hub.exchange import exchange_of, reply_headers
from hub.peer import Discovered, discover_endpoints
from routing.ocpi.errors import MethodNotAllowed, PartyNotAllowed
from routing.ocpi.models import Credentials, CredentialsRole, parse_json
from routing.ocpi.versions import SUPPORTED, V211
from routing.platform import ConnectionStatus, Platform, hash_token, new_token, utcnow

log = logging.getLogger("hub.credentials")

# One registration or update at a time per platform in this process: two POSTs with the same Token A must not
# both answer 200 with a Token C of which only the last one saved works.
_LOCKS = web.AppKey("credentials_locks", dict[str, asyncio.Lock])


def _version(request: web.Request) -> str:
    """The OCPI version whose credentials endpoint was called (the routes exist for SUPPORTED only)."""
    return request.path.split("/")[2]


async def _read_credentials(request: web.Request, caller: Caller, version: str) -> Credentials:
    return read_partner_credentials(version, parse_json(await request.read()), reserved_role(caller.platform))


def _check_roles(platform: Platform, creds: Credentials) -> None:
    """A registration may only claim the party pairs (and roles) the operator reserved."""
    reserved = {(p.country_code, p.party_id, p.role) for p in platform.parties}
    claimed = [(r.country_code, r.party_id, r.role) for r in creds.roles]
    refused = [f"{cc}/{pid} ({role})" for cc, pid, role in claimed if (cc, pid, role) not in reserved]
    if refused:
        raise PartyNotAllowed("roles not reserved for this platform by the hub operator: " + ", ".join(refused))


async def _apply(request: web.Request, hub: Hub, caller: Caller, creds: Credentials, version: str) -> Caller:
    """Read the partner's endpoints in ``version`` with its new token, then issue a fresh inbound token.

    The callbacks take seconds: the platform is read again afterwards, so an operator's suspend or remove (or a
    concurrent registration that already used the token) wins instead of being overwritten by a stale copy.
    Returns the caller with its new token and the platform as saved.
    """
    async with request.app[_LOCKS].setdefault(caller.platform.id, asyncio.Lock()):
        found = await discover_endpoints(hub.session, creds.url, creds.token, hub.settings.registration_timeout,
                                         policy=hub.outbound, max_bytes=hub.settings.max_reply_bytes, version=version,
                                         party_role=creds.roles[0].role if version == V211 else None)
        caller = await reauthenticate(hub, caller)
        platform, token_c = await _save_registration(hub, caller, creds, found)
    ex = exchange_of(request)
    if ex is not None:
        ex.ocpi_version = platform.version
    return Caller(platform=platform, token=token_c, is_token_a=False)


async def _save_registration(hub: Hub, caller: Caller, creds: Credentials, found: Discovered) -> tuple[Platform, str]:
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
    if caller.platform.version not in (None, found.version):
        log.info("platform %s moves from OCPI %s to %s", platform.id, caller.platform.version, found.version)
    platform.endpoints = found.endpoints
    platform.versions_url = creds.url
    platform.version = found.version
    platform.outbound_token = creds.token
    platform.inbound_token_hash = hash_token(token_c)
    platform.token_a_hash = None  # OCPI: returning Token C invalidates Token A
    platform.status = ConnectionStatus.CONNECTED
    platform.updated_at = platform.last_seen = now
    await hub.registry.save(platform)
    return platform, token_c


async def get_credentials(request: web.Request) -> web.Response:
    hub = hub_of(request)
    caller = await authenticate(request, hub, allow_token_a=True)
    body = hub_credentials(hub, caller.token, _version(request), caller.platform)
    return ocpi_response(body, headers=reply_headers(request))


async def post_credentials(request: web.Request) -> web.Response:
    hub = hub_of(request)
    caller = await authenticate(request, hub, allow_token_a=True)
    if not caller.is_token_a:
        _count(hub, "register", "refused")
        raise MethodNotAllowed("already registered: use PUT to update credentials")
    version = _version(request)
    creds = await _read_credentials(request, caller, version)
    _check_roles(caller.platform, creds)
    try:
        done = await _apply(request, hub, caller, creds, version)
    except Exception:
        _count(hub, "register", "failed")
        raise
    _count(hub, "register", "ok")
    log.info("platform %s registered in OCPI %s", caller.platform.id, version)
    return ocpi_response(hub_credentials(hub, done.token, version, done.platform), headers=reply_headers(request))


async def put_credentials(request: web.Request) -> web.Response:
    hub = hub_of(request)
    caller = await _registered(request, hub, "update")
    version = _version(request)
    creds = await _read_credentials(request, caller, version)
    _check_roles(caller.platform, creds)
    try:
        done = await _apply(request, hub, caller, creds, version)
    except Exception:
        _count(hub, "update", "failed")
        raise
    _count(hub, "update", "ok")
    return ocpi_response(hub_credentials(hub, done.token, version, done.platform), headers=reply_headers(request))


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
    paths = [f"/ocpi/{version}/credentials{slash}" for version in SUPPORTED for slash in ("", "/")]
    for path in paths:
        app.router.add_get(path, get_credentials)
        app.router.add_post(path, post_credentials)
        app.router.add_put(path, put_credentials)
        app.router.add_delete(path, delete_credentials)
