"""Pydantic models of the OCPI objects the hub itself reads or writes (digest §5, §6, §7).

Objects the hub only routes (Locations, Sessions, ...) are never modelled: they pass through as bytes so
``last_updated`` and unknown fields are untouched (digest §3.8).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.ocpi.errors import InvalidJson, InvalidParameters

M = TypeVar("M", bound=BaseModel)

ROLES = ("CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP")
MODULES = ("cdrs", "chargingprofiles", "commands", "locations", "sessions", "tariffs", "tokens")
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


class CredentialsRole(OcpiModel):
    role: Literal["CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"]
    business_details: BusinessDetails
    party_id: str = Field(pattern=r"^[A-Za-z0-9]{3}$")
    country_code: str = Field(pattern=r"^[A-Za-z]{2}$")

    @field_validator("party_id", "country_code")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class Credentials(OcpiModel):
    token: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    url: str = Field(min_length=1, max_length=255)
    roles: list[CredentialsRole] = Field(min_length=1)


class Version(OcpiModel):
    version: str
    url: str


class Endpoint(OcpiModel):
    identifier: str
    role: Literal["SENDER", "RECEIVER"]
    url: str


class VersionDetails(OcpiModel):
    version: str
    endpoints: list[Endpoint] = Field(min_length=1)


def parse_json(body: bytes) -> Any:
    """Invalid JSON is HTTP 400 / OCPI 2001, never a stack trace (digest §4)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None


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
