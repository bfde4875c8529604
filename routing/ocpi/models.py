"""Pydantic models of the OCPI objects the hub itself reads or writes (OCPI 2.1.1, 2.2.1 and 2.3.0
version_information_endpoint and credentials; 2.2.1 mod_hub_client_info).

Objects the hub only routes (Locations, Sessions, ...) are never modelled: they pass through as bytes so
``last_updated`` and unknown fields are untouched (OCPI 2.2.1 Message Routing).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routing.ocpi.errors import InvalidJson, InvalidParameters

M = TypeVar("M", bound=BaseModel)

ROLES = ("CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP")
INTERFACE_ROLES = ("SENDER", "RECEIVER")


class OcpiModel(BaseModel):
    # Unknown fields are kept, never a reason to refuse (2.3.0 makes this explicit; we apply it to all).
    model_config = ConfigDict(extra="allow")


class Image(OcpiModel):
    url: str
    category: str
    type: str


class BusinessDetails(OcpiModel):
    name: str = Field(max_length=100)
    website: str | None = Field(default=None, max_length=255)
    logo: Image | None = None


class _PartyIds(OcpiModel):
    party_id: str = Field(pattern=r"^[A-Za-z0-9]{3}$")
    country_code: str = Field(pattern=r"^[A-Za-z]{2}$")

    @field_validator("party_id", "country_code")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class CredentialsRole(_PartyIds):
    role: Literal["CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"]
    business_details: BusinessDetails


class Credentials(OcpiModel):
    """OCPI 2.2.1 credentials; also the hub's canonical form of a partner's credentials in any version."""

    token: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    url: str = Field(min_length=1, max_length=255)
    roles: list[CredentialsRole] = Field(min_length=1)


class Credentials211(_PartyIds):
    """OCPI 2.1.1 credentials: one party per connection, no role (OCPI 2.1.1 credentials, Credentials object)."""

    token: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    url: str = Field(min_length=1, max_length=255)
    business_details: BusinessDetails


class CredentialsRole230(_PartyIds):
    """A 2.3.0 role entry, read tolerantly: a role value the hub does not know is kept as text, for the caller to
    skip, rather than failing the whole object (2.3.0 asks receivers not to refuse what they do not know)."""

    role: str = Field(min_length=1, max_length=32)
    business_details: BusinessDetails


class Credentials230(OcpiModel):
    """OCPI 2.3.0 credentials: 2.2.1's plus ``hub_party_id`` (country code and party id concatenated)."""

    token: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    url: str = Field(min_length=1, max_length=255)
    hub_party_id: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}[A-Za-z0-9]{3}$")
    roles: list[CredentialsRole230] = Field(min_length=1)


# OCPI has a handful of versions and, per version, about two endpoints per module (20-30 in all). A partner's list
# is validated, checked against the outbound-URL policy and stored with its platform item by item: one listing tens
# of thousands (within HUB_MAX_REPLY_BYTES) stalled a process for seconds. Far above any real list.
MAX_LISTED = 100


class Version(OcpiModel):
    version: str
    url: str


class Endpoint(OcpiModel):
    identifier: str
    role: Literal["SENDER", "RECEIVER"]
    url: str


class VersionDetails(OcpiModel):
    version: str
    endpoints: list[Endpoint] = Field(min_length=1, max_length=MAX_LISTED)


class Endpoint211(OcpiModel):
    """OCPI 2.1.1 endpoint: no interface role; the side follows from the party's role."""

    identifier: str
    url: str


class VersionDetails211(OcpiModel):
    version: str
    endpoints: list[Endpoint211] = Field(min_length=1, max_length=MAX_LISTED)


# OCPI objects nest a handful of levels (Location > EVSE > Connector, Tariff > element > price component);
# the envelope and unknown extension fields add a few. orjson parses up to 1024 levels but serialises only 254,
# and every recursive walk over a body (audit redaction) must stay far below Python's recursion limit.
MAX_JSON_DEPTH = 32


def parse_json(body: bytes) -> Any:
    """The one parser of request bodies (OCPI and admin API): invalid JSON, or JSON nested deeper than
    ``MAX_JSON_DEPTH``, is HTTP 400 / OCPI 2001, never a stack trace (OCPI 2.2.1 transport_and_format §4.1)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    if nests_too_deep(body, data):
        raise InvalidJson(f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels")
    return data


def nests_too_deep(raw: bytes, data: Any) -> bool:
    """Whether ``data``, parsed from ``raw``, nests deeper than ``MAX_JSON_DEPTH``. Only a document with more
    brackets than the limit can nest that deep, so a small one is never walked."""
    return raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth_exceeds(data, MAX_JSON_DEPTH)


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Iterative, so a deep document cannot exhaust the interpreter's stack while being measured."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_model(model: type[M], data: Any, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidParameters(f"invalid {what}: {validation_message(exc)}") from None
