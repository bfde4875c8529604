"""Calls the hub makes to a partner's versions endpoints during registration, in any OCPI version the hub speaks
(OCPI 2.1.1, 2.2.1 and 2.3.0 credentials, Registration; docs/versions.md, "Versions and registration").

Every URL on the way (versions URL, version details URL, endpoint URLs) passes the outbound-URL policy
(routing/outbound.py) before the hub calls or stores it: a refusal is 400/2001 naming the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from routing.delivery import read_at_most
from routing.ocpi.auth import authorization_header
from routing.ocpi.errors import (
    InvalidJson,
    InvalidParameters,
    NoMatchingEndpoints,
    UnableToUseClientApi,
    UnsupportedVersion,
)
from routing.ocpi.headers import own_request_ids
from routing.ocpi.models import (
    MAX_LISTED,
    Version,
    VersionDetails,
    VersionDetails211,
    parse_json,
    parse_model,
)
from routing.ocpi.versions import SUPPORTED, V211, V230, interface_role_211, modules_of, newest_common, order
from routing.ocpi.versions import token_encoding as encoding_of
from routing.outbound import OutboundPolicy, refused_address
from routing.platform import Endpoint

log = logging.getLogger("hub.peer")


@dataclass(frozen=True)
class Discovered:
    """What registration learns from a partner: the version both sides use and its endpoints in that version."""

    version: str
    endpoints: list[Endpoint]


class _HttpRefused(UnableToUseClientApi):
    """A callback answered with a non-200 HTTP status (kept, so a 401 can be retried with the raw token)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def partner_json(raw: bytes | None, call: str, max_bytes: int) -> Any:
    """A partner's answer as ``read_at_most`` gave it (None: past ``max_bytes``, HUB_MAX_REPLY_BYTES, which bounds
    what a partner can make the hub buffer, here as when routing), read by the one body parser
    (routing/ocpi/models.py): an answer too large, not JSON, or nested deeper than that parser takes is the
    partner's API failing us (3001), never a RecursionError and a 500."""
    if raw is None:
        raise UnableToUseClientApi(f"the answer of {call} is larger than the hub accepts ({max_bytes} bytes)")
    try:
        return parse_json(raw)
    except InvalidJson as exc:
        raise UnableToUseClientApi(f"{call} did not answer usable JSON: {exc.message}") from None


async def _get_data(session: aiohttp.ClientSession, url: str, token: str, limit: float, encoding: str,
                    max_bytes: int) -> Any:
    try:
        async with session.get(
            url, headers={"Authorization": authorization_header(token, encoding), **own_request_ids()},
            timeout=aiohttp.ClientTimeout(total=limit), allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                raise _HttpRefused(f"GET {url} answered HTTP {resp.status}", resp.status)
            raw = await read_at_most(resp, max_bytes)
    except UnableToUseClientApi:
        raise
    except TimeoutError:
        raise UnableToUseClientApi(f"GET {url} timed out") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if (refused := refused_address(exc)) is not None:  # its host name resolves to a private address
            raise InvalidParameters(f"GET {url} refused: {refused}") from None
        raise UnableToUseClientApi(f"GET {url} failed: {type(exc).__name__}") from None
    doc = partner_json(raw, f"GET {url}", max_bytes)
    if not isinstance(doc, dict) or doc.get("status_code") != 1000 or "data" not in doc:
        raise UnableToUseClientApi(f"GET {url} did not answer an OCPI success envelope")
    return doc["data"]


async def read_versions(
    session: aiohttp.ClientSession, versions_url: str, token: str, limit: float, *, policy: OutboundPolicy,
    field: str, max_bytes: int, encoding: str = "base64",
) -> list[Version]:
    """The partner's versions list. The versions endpoint serves every version, so a partner may expect either
    token encoding there: ``encoding`` first (the version's, when known), and after a 401 once more the other
    (2.1.1 sends the token raw, 2.2 and later Base64-encoded)."""
    policy.check(versions_url, field)
    try:
        data = await _get_data(session, versions_url, token, limit, encoding, max_bytes)
    except _HttpRefused as exc:
        if exc.status != 401:
            raise
        data = await _get_data(session, versions_url, token, limit, "base64" if encoding == "raw" else "raw",
                               max_bytes)
    if isinstance(data, dict) and isinstance(data.get("versions"), list):
        data = data["versions"]  # the 2.1.1 text shows the list inside a "versions" property; its example does not
    if not isinstance(data, list):
        raise UnableToUseClientApi("versions endpoint did not answer a list")
    if len(data) > MAX_LISTED:
        raise UnableToUseClientApi(f"versions endpoint lists {len(data)} versions, more than the hub reads "
                                   f"({MAX_LISTED})")
    try:
        return [parse_model(Version, v, "version") for v in data]
    except InvalidParameters as exc:
        raise UnableToUseClientApi(f"partner's versions list: {exc.message}") from None


def choose_version(offered: list[Version], wanted: str | None = None) -> Version:
    """``wanted`` (the version of the credentials endpoint a partner called) if the partner offers it, else the
    newest version both sides speak; 3002 when there is none."""
    listed = ", ".join(v.version for v in offered) or "none"
    if wanted is not None:
        found = next((v for v in offered if v.version == wanted), None)
        if found is None:
            raise UnsupportedVersion(f"credentials were sent to the OCPI {wanted} endpoint, but the partner's "
                                     f"versions list offers {listed}")
        return found
    common = newest_common([v.version for v in offered])
    if common is None:
        raise UnsupportedVersion(f"partner offers OCPI {listed}; this hub speaks {', '.join(SUPPORTED)}")
    return next(v for v in offered if v.version == common)


def _module_id(identifier: str) -> str:
    """2.3.0 prints the Bookings module id as "Booking" while its URLs say "bookings": the hub stores "bookings"."""
    return "bookings" if identifier.lower() in ("booking", "bookings") else identifier


async def read_endpoints(
    session: aiohttp.ClientSession, version: Version, token: str, limit: float, *, policy: OutboundPolicy,
    max_bytes: int, party_role: str | None = None,
) -> list[Endpoint]:
    """The partner's endpoints in ``version``; 2.1.1 endpoints get the interface role their module has for a party
    with ``party_role`` (routing.ocpi.versions.interface_role_211), so ``Platform.endpoint_url`` works alike for
    every version. Raises 3003 without credentials or any functional module of that version."""
    if version.version == V211 and party_role is None:
        raise InvalidParameters("a 2.1.1 connection needs the role of its party (CPO or EMSP)")
    policy.check(version.url, f"versions: url of version {version.version}")
    raw = await _get_data(session, version.url, token, limit, encoding_of(version.version), max_bytes)
    endpoints: list[Endpoint] = []
    try:
        if version.version == V211:
            assert party_role is not None
            for e in parse_model(VersionDetails211, raw, "version details").endpoints:
                role = interface_role_211(e.identifier, party_role)
                if role is not None:  # a module 2.1.1 does not define cannot be routed on this connection
                    endpoints.append(Endpoint(identifier=e.identifier, role=role, url=e.url))
        else:
            details = parse_model(VersionDetails, raw, "version details")
            endpoints = [Endpoint(identifier=_module_id(e.identifier) if version.version == V230 else e.identifier,
                                  role=e.role, url=e.url) for e in details.endpoints]
    except InvalidParameters as exc:  # a malformed answer is the partner's API failing us
        raise UnableToUseClientApi(f"partner's version details: {exc.message}") from None
    for ep in endpoints:
        policy.check(ep.url, f"version details: url of endpoint {ep.identifier} {ep.role}")
    if not any(e.identifier == "credentials" for e in endpoints):
        raise NoMatchingEndpoints("partner's version details lack the credentials endpoint")
    if not any(e.identifier in modules_of(version.version) for e in endpoints):
        raise NoMatchingEndpoints(f"partner offers no OCPI {version.version} functional module "
                                  "(locations, sessions, cdrs, ...)")
    return endpoints


async def discover_endpoints(
    session: aiohttp.ClientSession, versions_url: str, token: str, limit: float, *, policy: OutboundPolicy,
    max_bytes: int, field: str = "credentials url", version: str | None = None, party_role: str | None = None,
) -> Discovered:
    """Read the partner's versions and, in ``version`` (the newest common one when None), its endpoints; raise
    3001/3002/3003 as the spec says, 2001 for a refused URL. ``field`` names where ``versions_url`` came from."""
    offered = await read_versions(session, versions_url, token, limit, policy=policy, field=field, max_bytes=max_bytes,
                                  encoding=encoding_of(version) if version is not None else "base64")
    chosen = choose_version(offered, version)
    newest = newest_common([v.version for v in offered])
    if version is not None and newest is not None and order(newest) > order(version):
        # The client of a registration picks the version (OCPI credentials): accepted, and noted for the operator.
        log.info("partner at %s registers in OCPI %s although it also speaks %s", versions_url, version, newest)
    endpoints = await read_endpoints(session, chosen, token, limit, policy=policy, max_bytes=max_bytes,
                                     party_role=party_role)
    return Discovered(chosen.version, endpoints)
