"""What an operator does to a platform — onboard, suspend, resume, rotate, remove — shared by the admin API and
the console, so both apply exactly the same rules. Refusals are ``ClientError`` with the HTTP status to answer."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable
from typing import TypeVar

from hub.connect import RoleRequired, rotate
from hub.context import Hub
from hub.store.protocol import PartyConflict
from routing.ocpi.errors import ClientError, NotFound, OcpiError
from routing.platform import ConnectionStatus, Party, Platform, hash_token, new_token, party_key, utcnow

T = TypeVar("T")


async def current(hub: Hub, platform_id: str) -> Platform:
    """The platform as the store has it, for an action that saves it whole: this worker's view may not have
    applied another worker's change yet (a registration, a token rotation), which the save would undo."""
    platform = await hub.registry.refresh(platform_id)
    if platform is None:
        raise NotFound(f"no platform {platform_id}")
    return copy.deepcopy(platform)


async def save(hub: Hub, platform: Platform) -> None:
    try:
        await hub.registry.save(platform)
    except PartyConflict as exc:
        raise ClientError(str(exc), http_status=409) from None


async def onboard(hub: Hub, name: str, parties: list[Party], allowed_hosts: list[str]) -> tuple[Platform, str]:
    """A new PLANNED platform and its Token A (shown once, only its hash is kept)."""
    keys = [(p.country_code, p.party_id, p.role) for p in parties]
    if len(set(keys)) != len(keys):
        raise ClientError("the same role is listed twice", http_status=400)
    own = party_key(hub.settings.hub_country_code, hub.settings.hub_party_id)
    if any(p.key == own for p in parties):
        # Requests addressed to this pair are answered by the hub itself: no platform may host it.
        raise ClientError(f"party {own} is the hub's own party", http_status=409)
    token_a = new_token()
    platform = Platform(id=uuid.uuid4().hex[:12], name=name, parties=parties, token_a_hash=hash_token(token_a),
                        allowed_hosts=allowed_hosts)
    await save(hub, platform)
    return platform, token_a


def set_status(platform: Platform, status: ConnectionStatus) -> None:
    now = utcnow()
    platform.status, platform.updated_at = status, now
    for party in platform.parties:
        if party.status != status:
            party.status, party.last_updated = status, now


async def suspend(hub: Hub, platform_id: str) -> Platform:
    platform = await current(hub, platform_id)
    if platform.removed:
        raise ClientError("platform was removed", http_status=409)
    set_status(platform, ConnectionStatus.SUSPENDED)
    await save(hub, platform)
    return platform


def registered_party(party: Party) -> bool:
    """Business details come only from the partner's credentials: a party without them never registered."""
    return party.business_details is not None


async def resume(hub: Hub, platform_id: str) -> tuple[Platform, str | None]:
    """Back to CONNECTED when registered; otherwise PLANNED with a fresh Token A to register again."""
    platform = await current(hub, platform_id)
    if platform.removed:
        raise ClientError("platform was removed; onboard it again", http_status=409)
    token_a = None
    if platform.registered:
        set_status(platform, ConnectionStatus.CONNECTED)
        for party in platform.parties:
            if not registered_party(party):
                party.status = ConnectionStatus.PLANNED
    else:
        token_a = new_token()
        platform.token_a_hash = hash_token(token_a)
        set_status(platform, ConnectionStatus.PLANNED)
    await save(hub, platform)
    return platform, token_a


async def remove(hub: Hub, platform_id: str) -> Platform:
    """Offboard: tokens die, parties are SUSPENDED, queued messages for it are dropped."""
    platform = await current(hub, platform_id)
    platform.inbound_token_hash = platform.token_a_hash = platform.outbound_token = None
    set_status(platform, ConnectionStatus.SUSPENDED)
    platform.removed = True
    await save(hub, platform)
    await hub.queue.purge_receiver(platform.id)
    return platform


async def handshake_errors(coro: Awaitable[T]) -> T:
    """A partner that fails the handshake is the operator's to hear about: 502 with the OCPI reason."""
    try:
        return await coro
    except RoleRequired as exc:  # the operator's call lacks what a 2.1.1 partner needs
        raise ClientError(exc.message, http_status=400) from None
    except OcpiError as exc:
        raise ClientError(f"partner handshake failed (OCPI {exc.status_code}): {exc.message}",
                          http_status=502) from None
    except PartyConflict as exc:
        raise ClientError(str(exc), http_status=409) from None


async def rotate_tokens(hub: Hub, platform_id: str) -> Platform:
    """Credentials PUT from the hub: both tokens are replaced and the partner's endpoints re-read."""
    platform = await current(hub, platform_id)
    if platform.removed or not platform.registered:
        raise ClientError("platform is not registered", http_status=409)
    return await handshake_errors(rotate(hub, platform))
