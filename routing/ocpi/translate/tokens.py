"""Tokens between OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md, "Tokens"): Token, AuthorizationInfo,
LocationReferences."""

from __future__ import annotations

from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

from routing.ocpi.translate.base import (
    AUTHORIZATION_INFO,
    DEFAULTED,
    DERIVED,
    DROPPED,
    LOCATION_REFERENCES,
    TOKEN,
    Context,
    Report,
    path_of,
    step,
)
from routing.ocpi.translate.common import (
    DISPLAY_TEXT,
    TOKEN_TYPES_211,
    TOKEN_TYPES_221,
    Fields,
    prune,
    token_type_to,
)
from routing.ocpi.translate.sessions import NA, drop_owner, owner_fields
from routing.ocpi.versions import V211, V221, V230

# Documented fields (OCPI mod_tokens of each version; 2.3.0 = 2.2.1 with the TokenType OpenEnum).
TOKEN_211: Fields = {key: None for key in (
    "uid", "type", "auth_id", "visual_number", "issuer", "valid", "whitelist", "language", "last_updated")}
TOKEN_221: Fields = {
    "country_code": None, "party_id": None, "uid": None, "type": None, "contract_id": None, "visual_number": None,
    "issuer": None, "group_id": None, "valid": None, "whitelist": None, "language": None,
    "default_profile_type": None, "energy_contract": {"supplier_name": None, "contract_id": None},
    "last_updated": None,
}
LOCATION_REFERENCES_211: Fields = {"location_id": None, "evse_uids": None, "connector_ids": None}
LOCATION_REFERENCES_221: Fields = {"location_id": None, "evse_uids": None}
# 2.1.1 AuthorizationInfo has no token; the hub hands the requested one over as ``token`` (see below).
AUTHORIZATION_INFO_211: Fields = {"allowed": None, "location": None, "info": DISPLAY_TEXT, "token": None}
AUTHORIZATION_INFO_221: Fields = {"allowed": None, "token": TOKEN_221, "location": LOCATION_REFERENCES_221,
                                  "authorization_reference": None, "info": DISPLAY_TEXT}


# --- Token ---------------------------------------------------------------------------------------------------

def token_211_to_221(data: Any, ctx: Context, report: Report, path: str = "") -> Any:
    src = prune(data, TOKEN_211, path, report, V211)
    out: dict[str, Any] = _owner(ctx, report, path)
    for key, value in src.items():
        out["contract_id" if key == "auth_id" else key] = value
    return out


def _owner(ctx: Context, report: Report, path: str) -> dict[str, Any]:
    if not path:
        return owner_fields(ctx, report, "Token")
    if ctx.owner is None:
        raise report.refuse(path_of(path, "country_code"), "a 2.1.1 Token carries no owner and the hub gave none")
    detail = "the eMSP owning the token (the sender of the 2.1.1 message), which 2.1.1 Tokens do not carry"
    report.add(path_of(path, "country_code"), DERIVED, detail)
    report.add(path_of(path, "party_id"), DERIVED, detail)
    return {"country_code": ctx.owner[0], "party_id": ctx.owner[1]}


def token_221_to_211(data: Any, report: Report, path: str = "") -> Any:
    src = prune(data, TOKEN_221, path, report, V221)
    drop_owner(src, report, path)
    out: dict[str, Any] = {}
    for key, value in src.items():
        if key in ("country_code", "party_id"):
            continue
        if key == "contract_id":
            out["auth_id"] = value
        elif key == "type":
            out[key] = token_type_to(value, TOKEN_TYPES_211, V211, path_of(path, key), report)
        elif key in ("group_id", "default_profile_type", "energy_contract"):
            report.add(path_of(path, key), DROPPED, f"a 2.1.1 Token has no {key}")
        else:
            out[key] = value
    return out


def token_230_to_221(data: Any, report: Report, path: str = "") -> Any:
    out = prune(data, TOKEN_221, path, report, V230)
    if isinstance(out, dict) and "type" in out:
        out["type"] = token_type_to(out["type"], TOKEN_TYPES_221, V221, path_of(path, "type"), report)
    return out


@step(TOKEN, V211, V221)
def _token_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    return token_211_to_221(data, ctx, report)


@step(TOKEN, V221, V211)
def _token_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    return token_221_to_211(data, report)


@step(TOKEN, V221, V230)
def _token_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    return deepcopy(data)


@step(TOKEN, V230, V221)
def _token_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    return token_230_to_221(data, report)


# --- LocationReferences --------------------------------------------------------------------------------------

def location_references_up(data: Any, report: Report, path: str = "") -> Any:
    out = prune(data, LOCATION_REFERENCES_211, path, report, V211)
    if isinstance(out, dict) and "connector_ids" in out:
        del out["connector_ids"]
        report.add(path_of(path, "connector_ids"), DROPPED, "2.2.1 removed connector_ids (not unique within a "
                                                            "Location)")
    return out


@step(LOCATION_REFERENCES, V211, V221)
def _location_references_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    return location_references_up(data, report)


@step(LOCATION_REFERENCES, V221, V211)
def _location_references_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    return prune(data, LOCATION_REFERENCES_221, "", report, V221)


@step(LOCATION_REFERENCES, V221, V230)
def _location_references_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    return deepcopy(data)


@step(LOCATION_REFERENCES, V230, V221)
def _location_references_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    return prune(data, LOCATION_REFERENCES_221, "", report, V230)


# --- AuthorizationInfo ---------------------------------------------------------------------------------------

@step(AUTHORIZATION_INFO, V211, V221)
def authorization_info_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    """2.2.1 requires the Token the authorization was asked for; a 2.1.1 answer does not carry it. The hub knows
    it (the request URL names uid and type; the token may be stored): it hands it over as ``token``, a 2.1.1
    Token, complete or at least ``{uid, type}``. Owner: ``ctx.owner``, the answering eMSP. Required fields the
    hand-over lacks are defaulted (``contract_id``/``issuer`` #NA, ``valid`` from ``allowed``, ``whitelist``
    NEVER, ``last_updated`` now). Without a token a full answer is refused."""
    src = prune(data, AUTHORIZATION_INFO_211, "", report, V211)
    out: dict[str, Any] = {}
    for key, value in src.items():
        if key == "token":
            out[key] = _token_handed_over(value, src.get("allowed"), ctx, report)
        elif key == "location":
            out[key] = location_references_up(value, report, key)
        else:
            out[key] = value
    if "token" not in out and not ctx.partial:
        raise report.refuse("token", "2.2.1 AuthorizationInfo requires the Token; the 2.1.1 answer has none and "
                                     "none was handed over")
    return out


def _token_handed_over(value: Any, allowed: Any, ctx: Context, report: Report) -> Any:
    if not isinstance(value, dict) or "uid" not in value:
        raise report.refuse("token", "the handed-over token needs at least uid and type")
    token = token_211_to_221(value, ctx, report, "token")
    defaults: dict[str, tuple[Any, str]] = {
        "type": ("RFID", "the OCPI default token type of the authorize request"),
        "contract_id": (NA, "not known from the 2.1.1 answer"),
        "issuer": (NA, "not known from the 2.1.1 answer"),
        "valid": (allowed == "ALLOWED", "valid = (allowed is ALLOWED)"),
        "whitelist": ("NEVER", "the token was authorized in real time"),
        "last_updated": (datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "the time of translation"),
    }
    for key, (default, why) in defaults.items():
        if key not in token:
            token[key] = default
            report.add(path_of("token", key), DERIVED if key == "valid" else DEFAULTED, why)
    return token


@step(AUTHORIZATION_INFO, V221, V211)
def authorization_info_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    src = prune(data, AUTHORIZATION_INFO_221, "", report, V221)
    out: dict[str, Any] = {}
    for key, value in src.items():
        if key == "token":
            report.add(key, DROPPED, "a 2.1.1 AuthorizationInfo carries no token (the CPO sent its uid)")
        elif key == "authorization_reference":
            report.add(key, DROPPED, "2.1.1 has no authorization reference")
        else:
            out[key] = value
    return out


@step(AUTHORIZATION_INFO, V221, V230)
def authorization_info_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    return deepcopy(data)


@step(AUTHORIZATION_INFO, V230, V221)
def authorization_info_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    fields = {**AUTHORIZATION_INFO_221, "token": None}  # the token is pruned with its own rules below
    out = prune(data, fields, "", report, V230)
    if isinstance(out, dict) and "token" in out:
        out["token"] = token_230_to_221(out["token"], report, "token")
    return out
