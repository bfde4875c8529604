"""Who is calling: the credentials token in the Authorization header mapped to a platform (OCPI 2.2.1 Authorization
header)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from hub.context import Hub
from hub.exchange import exchange_of
from routing.ocpi.auth import sole_authorization, token_candidates
from routing.ocpi.errors import PlatformSuspended, RateLimited, Unauthorized
from routing.platform import ConnectionStatus, Platform, hash_token


@dataclass
class Caller:
    platform: Platform
    token: str  # the token as presented (decoded), needed to answer credentials GET
    is_token_a: bool


async def authenticate(request: web.Request, hub: Hub, *, allow_token_a: bool) -> Caller:
    header = sole_authorization(request.headers)
    registry = hub.registry
    # A header that authenticated before, with nothing changed since, skips Base64 and SHA-256 (hub/registry.py);
    # every check below still runs on the platform as it is now.
    hit = registry.cached_caller(header) if header else None
    if hit is not None:
        caller = _admit(hit[0], hit[1], hit[2], allow_token_a)
    else:
        caller = await _resolve(hub, token_candidates(header), allow_token_a)
        assert header is not None  # token_candidates refused a missing one
        registry.remember_caller(header, caller.platform, caller.is_token_a, caller.token)
    ex = exchange_of(request)
    if ex is not None:
        ex.platform_id = caller.platform.id
        if ex.ocpi_version is None:  # the version the caller registered in (none yet on a Token A)
            ex.ocpi_version = caller.platform.version
    if hub.on_seen is not None:
        hub.on_seen(caller.platform.id)  # any request counts as a sign of life (still-alive checks)
    try:
        hub.rate_limits.check(caller.platform)  # 429 beyond the platform's rate; in memory, no Redis round trip
    except RateLimited as refusal:
        await hub.rate_limits.hold(refusal)
        raise
    return caller


async def reauthenticate(hub: Hub, caller: Caller) -> Caller:
    """The same check after a slow step (registration callbacks): the operator may have acted meanwhile.

    Returns the platform as it is now, so the caller changes the current state, not the one it started from.
    """
    again = await _resolve(hub, [caller.token], caller.is_token_a)
    if again.platform.id != caller.platform.id or again.is_token_a != caller.is_token_a:
        raise Unauthorized("unknown token")
    return again


async def _resolve(hub: Hub, candidates: list[str], allow_token_a: bool) -> Caller:
    found = await hub.registry.by_token(candidates)
    if found is None:
        raise Unauthorized("unknown token")
    platform, is_token_a = found
    token = next(c for c in candidates if _matches(platform, c, is_token_a))
    return _admit(platform, is_token_a, token, allow_token_a)


def _admit(platform: Platform, is_token_a: bool, token: str, allow_token_a: bool) -> Caller:
    """The checks on the platform a token belongs to, as it is now (after a full lookup or a cached one)."""
    if platform.removed:
        raise Unauthorized("unknown token")
    if is_token_a and not allow_token_a:
        # OCPI: Token A is valid only on versions and credentials (OCPI 2.2.1 Authorization header)
        raise Unauthorized("Token A may only be used on versions and credentials")
    if platform.status == ConnectionStatus.SUSPENDED:
        raise PlatformSuspended()
    return Caller(platform=platform, token=token, is_token_a=is_token_a)


def _matches(platform: Platform, token: str, is_token_a: bool) -> bool:
    expected = platform.token_a_hash if is_token_a else platform.inbound_token_hash
    return hash_token(token) == expected
