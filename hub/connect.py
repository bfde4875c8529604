"""The hub as credentials *sender*: register with a partner that issued a Token A, and rotate tokens by PUT
(OCPI 2.1.1, 2.2.1 and 2.3.0 credentials, Registration "The hub registers with a party").

The hub registers in the newest version both sides speak and talks to the partner in that version's shape
(credentials object, Authorization header). A 2.1.1 partner's credentials carry no role: the operator names it
(docs/versions.md, "Versions and registration").
"""

from __future__ import annotations

import copy
import logging
import uuid
from typing import Any

import aiohttp

from hub.context import Hub
from hub.credentials_shapes import given_role, hub_credentials, parties_211, read_partner_credentials
from hub.peer import choose_version, discover_endpoints, partner_json, read_endpoints, read_versions
from hub.store.protocol import PartyConflict
from routing.delivery import read_at_most
from routing.ocpi.auth import authorization_header
from routing.ocpi.errors import InvalidParameters, OcpiError, UnableToUseClientApi
from routing.ocpi.headers import own_request_ids
from routing.ocpi.models import Credentials
from routing.ocpi.versions import V211, V221, token_encoding
from routing.platform import ConnectionStatus, Endpoint, Party, Platform, hash_token, new_token, party_key, utcnow

log = logging.getLogger("hub.connect")


class RoleRequired(InvalidParameters):
    """The partner speaks only OCPI 2.1.1, whose credentials carry no role, and the operator named none."""


async def _send_credentials(hub: Hub, method: str, url: str, token: str, body: dict[str, Any], version: str,
                            role: str | None) -> Credentials:
    try:
        async with hub.session.request(
            method, url, json=body,
            headers={"Authorization": authorization_header(token, token_encoding(version)), **own_request_ids()},
            timeout=aiohttp.ClientTimeout(total=hub.settings.registration_timeout * 3), allow_redirects=False,
        ) as resp:
            raw = await read_at_most(resp, hub.settings.max_reply_bytes)
            status = resp.status
    except TimeoutError:
        raise UnableToUseClientApi(f"{method} {url} timed out") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise UnableToUseClientApi(f"{method} {url} failed: {type(exc).__name__}") from None
    doc = partner_json(raw, f"{method} {url}", hub.settings.max_reply_bytes)
    if status != 200 or not isinstance(doc, dict) or doc.get("status_code") != 1000:
        message = doc.get("status_message") if isinstance(doc, dict) else None
        raise UnableToUseClientApi(f"{method} {url} answered HTTP {status}: {message or 'no OCPI success'}")
    try:
        return read_partner_credentials(version, doc.get("data"), lambda cc, pid: role or "",
                                        "partner credentials")
    except OcpiError as exc:
        raise UnableToUseClientApi(exc.message) from None


def _credentials_url(platform: Platform) -> str:
    for ep in platform.endpoints:
        if ep.identifier == "credentials":
            return ep.url
    raise UnableToUseClientApi("partner offers no credentials endpoint")


def _parties(creds: Credentials) -> list[Party]:
    now = utcnow()
    return [Party(country_code=r.country_code, party_id=r.party_id, role=r.role, status=ConnectionStatus.CONNECTED,
                  business_details=r.business_details.model_dump(exclude_none=True), last_updated=now)
            for r in creds.roles if r.role != "HUB"]


def _role_211(platform: Platform) -> str | None:
    """The role of a 2.1.1 platform's one party (what its endpoints were read as)."""
    parties = parties_211(platform)
    return parties[0].role if platform.version == V211 and parties else None


async def connect(hub: Hub, name: str, versions_url: str, token_a: str, role: str | None = None) -> Platform:
    """Register the hub with a partner. Its Token B is valid before the POST, since the partner calls back.

    ``role`` is the partner's party role, needed (and only used) when the newest common version is 2.1.1.
    """
    limit = hub.settings.registration_timeout
    offered = await read_versions(hub.session, versions_url, token_a, limit, policy=hub.outbound,
                                  field="versions_url", max_bytes=hub.settings.max_reply_bytes)
    chosen = choose_version(offered)
    if chosen.version == V211:
        if role is None:
            raise RoleRequired("the partner speaks OCPI 2.1.1 only, whose credentials carry no role: "
                               "give the role of its party (CPO or EMSP)")
        role = given_role(role, "the partner")
    endpoints = await read_endpoints(hub.session, chosen, token_a, limit, policy=hub.outbound,
                                     max_bytes=hub.settings.max_reply_bytes,
                                     party_role=role if chosen.version == V211 else None)
    version = chosen.version
    token_b = new_token()
    platform = Platform(id=uuid.uuid4().hex[:12], name=name, inbound_token_hash=hash_token(token_b),
                        versions_url=versions_url, version=version, endpoints=endpoints)
    await hub.registry.save(platform)
    creds: Credentials | None = None
    try:
        creds = await _send_credentials(hub, "POST", _credentials_url(platform), token_a,
                                        hub_credentials(hub, token_b, version, platform), version, role)
        if creds.url != versions_url:
            endpoints = (await discover_endpoints(
                hub.session, creds.url, creds.token, limit, policy=hub.outbound, field="partner credentials url",
                max_bytes=hub.settings.max_reply_bytes,
                version=version, party_role=role if version == V211 else None)).endpoints
        parties = _parties(creds)
        _check_parties(hub, platform, parties)
        done = copy.deepcopy(platform)
        done.parties = parties
        done.outbound_token, done.versions_url, done.endpoints = creds.token, creds.url, endpoints
        done.status = ConnectionStatus.CONNECTED
        done.updated_at = done.last_seen = utcnow()
        await hub.registry.save(done)  # PartyConflict when another platform took a pair meanwhile
    except BaseException as exc:
        # Nothing half-registered stays usable: Token B dies, the record is kept (REMOVED) for the operator.
        failed = copy.deepcopy(platform)
        failed.inbound_token_hash, failed.removed = None, True
        await hub.registry.save(failed)
        if creds is not None and isinstance(exc, Exception):
            # The partner registered us: undo that too, or it keeps a hub registration nobody can use.
            await _unregister(hub, _credentials_url(platform), creds.token, version)
        raise
    log.info("platform %s connected in OCPI %s", done.id, version)
    return done


async def _unregister(hub: Hub, url: str, token: str, version: str) -> None:
    """Best effort DELETE of our registration at a partner; a failure is logged, the caller's error stands."""
    try:
        async with hub.session.delete(
            url, headers={"Authorization": authorization_header(token, token_encoding(version)), **own_request_ids()},
            timeout=aiohttp.ClientTimeout(total=hub.settings.registration_timeout), allow_redirects=False,
        ) as resp:
            await resp.read()
            if resp.status != 200:
                log.warning("partner at %s answered HTTP %d to the credentials DELETE", url, resp.status)
    except (TimeoutError, aiohttp.ClientError, OSError) as err:
        log.warning("could not unregister at partner %s: %s", url, type(err).__name__)


def _check_parties(hub: Hub, platform: Platform, parties: list[Party]) -> None:
    """The partner's roles become its parties: at least one, none the hub's own, none another platform's."""
    if not parties:
        raise UnableToUseClientApi("partner's credentials list no party role (only HUB or none)")
    own = party_key(hub.settings.hub_country_code, hub.settings.hub_party_id)
    for party in parties:
        if party.key == own:
            raise UnableToUseClientApi(f"partner claims the hub's own party {party.country_code}/{party.party_id}")
        found = hub.registry.by_party(party.country_code, party.party_id)
        if found is not None and found[0].id != platform.id:
            raise PartyConflict(f"{party.country_code}/{party.party_id}", found[0].id)


async def rotate(hub: Hub, platform: Platform) -> Platform:
    """Credentials PUT from the hub, in the platform's version: new token both ways, endpoints re-read.

    During the PUT the new inbound token sits in the Token A slot, so the partner's callbacks (versions,
    details — all Token A may reach) work while the old token keeps serving traffic until the swap. Once the
    partner accepted the PUT it uses the new tokens only: the swap is kept even if re-reading its endpoints
    fails afterwards (the old endpoint list stays).
    """
    if not platform.registered or not platform.outbound_token:
        raise UnableToUseClientApi("platform is not registered")
    url = _credentials_url(platform)
    version, role = platform.version or V221, _role_211(platform)
    new_inbound = new_token()
    pending = _current(hub, platform)
    pending.token_a_hash = hash_token(new_inbound)
    await hub.registry.save(pending)
    try:
        creds = await _send_credentials(hub, "PUT", url, platform.outbound_token,
                                        hub_credentials(hub, new_inbound, version, platform), version, role)
    except BaseException:
        restored = _current(hub, platform)
        restored.token_a_hash = platform.token_a_hash  # the offered token dies; the old ones keep working
        await hub.registry.save(restored)
        raise
    endpoints: list[Endpoint] | None
    try:
        endpoints = (await discover_endpoints(
            hub.session, creds.url, creds.token, hub.settings.registration_timeout, policy=hub.outbound,
            field="partner credentials url", max_bytes=hub.settings.max_reply_bytes, version=version,
            party_role=role)).endpoints
    except OcpiError as exc:
        log.warning("platform %s: tokens rotated, but its endpoints could not be re-read: %s", platform.id,
                    exc.message)
        endpoints = None
    done = _current(hub, platform)
    done.inbound_token_hash, done.token_a_hash = hash_token(new_inbound), None
    done.outbound_token = creds.token
    if hub.outbound.refusal(creds.url) is None:  # a refused URL is never stored: liveness would call it
        done.versions_url = creds.url
    if endpoints is not None:
        done.endpoints = endpoints
    done.updated_at = utcnow()
    await hub.registry.save(done)
    return done


def _current(hub: Hub, platform: Platform) -> Platform:
    """A copy of the platform as the registry holds it now: a liveness or operator change made meanwhile stays."""
    return copy.deepcopy(hub.registry.get(platform.id) or platform)
