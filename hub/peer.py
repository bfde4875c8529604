"""Calls the hub makes to a partner's versions endpoints during registration (OCPI 2.2.1 credentials §6.3).

Every URL on the way (versions URL, version details URL, endpoint URLs) passes the outbound-URL policy
(routing/outbound.py) before the hub calls or stores it: a refusal is 400/2001 naming the field.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from routing.ocpi.auth import authorization_header
from routing.ocpi.errors import InvalidParameters, NoMatchingEndpoints, UnableToUseClientApi, UnsupportedVersion
from routing.ocpi.models import MODULES, Version, VersionDetails, parse_model
from routing.outbound import OutboundPolicy, refused_address
from routing.platform import Endpoint

VERSION = "2.2.1"


async def _get_data(session: aiohttp.ClientSession, url: str, token: str, limit: float) -> Any:
    try:
        async with session.get(
            url, headers={"Authorization": authorization_header(token)},
            timeout=aiohttp.ClientTimeout(total=limit), allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                raise UnableToUseClientApi(f"GET {url} answered HTTP {resp.status}")
            doc = await resp.json(content_type=None)
    except UnableToUseClientApi:
        raise
    except TimeoutError:
        raise UnableToUseClientApi(f"GET {url} timed out") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if (refused := refused_address(exc)) is not None:  # its host name resolves to a private address
            raise InvalidParameters(f"GET {url} refused: {refused}") from None
        raise UnableToUseClientApi(f"GET {url} failed: {type(exc).__name__}") from None
    if not isinstance(doc, dict) or doc.get("status_code") != 1000 or "data" not in doc:
        raise UnableToUseClientApi(f"GET {url} did not answer an OCPI success envelope")
    return doc["data"]


async def discover_endpoints(
    session: aiohttp.ClientSession, versions_url: str, token: str, limit: float, *, policy: OutboundPolicy,
    field: str = "credentials url",
) -> list[Endpoint]:
    """Read the partner's 2.2.1 endpoints; raise 3001/3002/3003 as the spec says, 2001 for a refused URL.

    ``field`` names where ``versions_url`` came from, for the refusal message.
    """
    policy.check(versions_url, field)
    data = await _get_data(session, versions_url, token, limit)
    if not isinstance(data, list):
        raise UnableToUseClientApi("versions endpoint did not answer a list")
    try:
        versions = [parse_model(Version, v, "version") for v in data]
    except InvalidParameters as exc:
        raise UnableToUseClientApi(f"partner's versions list: {exc.message}") from None
    chosen = next((v for v in versions if v.version == VERSION), None)
    if chosen is None:
        offered = ", ".join(v.version for v in versions) or "none"
        raise UnsupportedVersion(f"partner offers OCPI {offered}; this hub speaks {VERSION}")
    policy.check(chosen.url, f"versions: url of version {VERSION}")
    raw_details = await _get_data(session, chosen.url, token, limit)
    try:
        details = parse_model(VersionDetails, raw_details, "version details")
    except InvalidParameters as exc:  # a malformed answer is the partner's API failing us
        raise UnableToUseClientApi(f"partner's version details: {exc.message}") from None
    endpoints = [Endpoint(identifier=e.identifier, role=e.role, url=e.url) for e in details.endpoints]
    for ep in endpoints:
        policy.check(ep.url, f"version details: url of endpoint {ep.identifier} {ep.role}")
    if not any(e.identifier == "credentials" for e in endpoints):
        raise NoMatchingEndpoints("partner's version details lack the credentials endpoint")
    if not any(e.identifier in MODULES for e in endpoints):
        raise NoMatchingEndpoints("partner offers no functional module (locations, sessions, cdrs, ...)")
    return endpoints
