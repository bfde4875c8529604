"""Sessions between OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md, "Sessions").

Also the parts a CDR shares with a Session (OCPI mod_cdrs defines them for both): the owner fields 2.1.1 lacks,
``auth_id`` ⇄ ``cdr_token``, ``auth_method`` and the charging periods.
"""

from __future__ import annotations

import re
from copy import deepcopy
from typing import Any

from routing.ocpi.translate.base import (
    CHARGING_PREFERENCES,
    DEFAULTED,
    DERIVED,
    DROPPED,
    MAPPED,
    SESSION,
    Context,
    Report,
    path_of,
    step,
)
from routing.ocpi.translate.common import (
    PRICE_221,
    PRICE_230,
    TOKEN_TYPES_221,
    Fields,
    number_to_price_221,
    price_221_to_230,
    price_221_to_number,
    price_230_to_221,
    prune,
    token_type_to,
)
from routing.ocpi.versions import V211, V221, V230

NA = "#NA"  # 2.2.1: a required string that cannot be filled

# Documented fields (OCPI 2.1.1 mod_sessions/mod_cdrs; 2.2.1 and 2.3.0 mod_sessions/mod_cdrs).
DIMENSION: Fields = {"type": None, "volume": None}
PERIOD_211: Fields = {"start_date_time": None, "dimensions": DIMENSION}
PERIOD_221: Fields = {**PERIOD_211, "tariff_id": None}
CDR_TOKEN: Fields = {"country_code": None, "party_id": None, "uid": None, "type": None, "contract_id": None}
SESSION_211: Fields = {
    "id": None, "start_datetime": None, "end_datetime": None, "kwh": None, "auth_id": None, "auth_method": None,
    "location": None, "meter_id": None, "currency": None, "charging_periods": PERIOD_211, "total_cost": None,
    "status": None, "last_updated": None,
}
SESSION_221: Fields = {
    "country_code": None, "party_id": None, "id": None, "start_date_time": None, "end_date_time": None,
    "kwh": None, "cdr_token": CDR_TOKEN, "auth_method": None, "authorization_reference": None,
    "location_id": None, "evse_uid": None, "connector_id": None, "meter_id": None, "currency": None,
    "charging_periods": PERIOD_221, "total_cost": PRICE_221, "status": None, "last_updated": None,
}
SESSION_230: Fields = {**SESSION_221, "total_cost": PRICE_230}
CHARGING_PREFERENCES_FIELDS: Fields = {
    "profile_type": None, "departure_time": None, "energy_need": None, "discharge_allowed": None,
}

# CdrDimensionType values 2.1.1 has; 2.2.1 removed FLAT and added the rest.
DIMENSIONS_211 = frozenset({"ENERGY", "FLAT", "MAX_CURRENT", "MIN_CURRENT", "PARKING_TIME", "TIME"})
DIMENSIONS_221 = frozenset({
    "CURRENT", "ENERGY", "ENERGY_EXPORT", "ENERGY_IMPORT", "MAX_CURRENT", "MIN_CURRENT", "MAX_POWER", "MIN_POWER",
    "PARKING_TIME", "POWER", "RESERVATION_TIME", "STATE_OF_CHARGE", "TIME",
})
# eMI3 / ISO 15118 contract id (eMAID): country code, provider id, instance (9), optional check digit.
EMAID = re.compile(r"^([A-Za-z]{2})-?([A-Za-z0-9]{3})-?[A-Za-z0-9]{9}(?:-?[A-Za-z0-9])?$")


# --- owners --------------------------------------------------------------------------------------------------

def owner_fields(ctx: Context, report: Report, what: str) -> dict[str, Any]:
    """2.1.1 objects carry no owner: a full object going up takes it from the context (URL path or connection);
    a PATCH body gets none (its owner is in the URL path)."""
    if ctx.partial:
        return {}
    if ctx.owner is None:
        raise report.refuse("country_code", f"a 2.1.1 {what} carries no owner and the hub gave none")
    country_code, party_id = ctx.owner
    detail = f"the owner of the 2.1.1 {what}, from the URL path or the connection (2.1.1 objects carry none)"
    report.add("country_code", DERIVED, detail)
    report.add("party_id", DERIVED, detail)
    return {"country_code": country_code, "party_id": party_id}


def drop_owner(src: dict[str, Any], report: Report, path: str = "") -> None:
    for key in ("country_code", "party_id"):
        if key in src:
            report.add(path_of(path, key), DROPPED, "2.1.1 objects carry no owner: it goes into the URL path")


# --- auth_id ⇄ cdr_token, auth_method ------------------------------------------------------------------------

def cdr_token_from_auth_id(auth_id: Any, ctx: Context, report: Report, path: str = "auth_id") -> dict[str, Any]:
    """2.1.1 names the driver by ``auth_id`` (the token's contract id) only. The token owner is the party the
    message is for (``ctx.counterpart``), else the eMAID prefix of ``auth_id``, else the object is refused:
    without the eMSP the 2.2.1 object can neither be filled nor routed."""
    if ctx.counterpart is not None:
        owner, source = ctx.counterpart, "the eMSP the message is for"
    else:
        match = EMAID.match(auth_id) if isinstance(auth_id, str) else None
        if match is None:
            raise report.refuse(path, "2.2.1 cdr_token needs the token owner: the hub does not know it and auth_id "
                                      "is no eMAID to read it from")
        owner, source = (match.group(1).upper(), match.group(2).upper()), "the eMAID prefix of auth_id"
    report.add(path, DERIVED, f"cdr_token.contract_id = auth_id; cdr_token.country_code/party_id = {source}")
    report.add(path, DEFAULTED, "cdr_token.uid = auth_id and cdr_token.type = OTHER: a 2.1.1 Session or CDR names "
                                "the token by its contract id only")
    return {"country_code": owner[0], "party_id": owner[1], "uid": auth_id, "type": "OTHER",
            "contract_id": auth_id}


def auth_id_from_cdr_token(token: Any, report: Report, path: str = "cdr_token") -> Any:
    """``auth_id = cdr_token.contract_id`` (2.1.1 ``auth_id`` is the token's contract id, 2.2.1 renamed it)."""
    if not isinstance(token, dict):
        return token
    for key in ("country_code", "party_id", "uid", "type"):
        if key in token:
            report.add(path_of(path, key), DROPPED, "2.1.1 auth_id is the contract id only; the token uid, type and "
                                                    "owner have no counterpart")
    return token.get("contract_id")


def auth_method_down(value: Any, path: str, report: Report) -> Any:
    if value == "COMMAND":
        report.add(path, MAPPED, "COMMAND -> AUTH_REQUEST: the eMSP authorized the session, by a command")
        return "AUTH_REQUEST"
    return value


# --- charging periods ----------------------------------------------------------------------------------------

def periods_up(periods: Any, tariff_id: Any, path: str, report: Report, why: str) -> Any:
    """2.1.1 → 2.2.1: FLAT dimensions dropped (2.2.1 removed the type), periods left empty dropped;
    ``tariff_id`` (when the 2.1.1 object names one) filled in every period, ``why`` saying where it came from."""
    if not isinstance(periods, list):
        return periods
    out: list[Any] = []
    for i, period in enumerate(periods):
        here = path_of(path, i)
        if not isinstance(period, dict):
            out.append(period)
            continue
        new = dict(period)
        if isinstance(period.get("dimensions"), list):
            new["dimensions"] = _keep_dimensions(period["dimensions"], DIMENSIONS_221, path_of(here, "dimensions"),
                                                 report, "2.2.1")
            if not new["dimensions"] and period["dimensions"]:
                report.add(here, DROPPED, "no dimension left that 2.2.1 knows (a period needs one)")
                continue
        if tariff_id is not None and "tariff_id" not in new:
            new["tariff_id"] = tariff_id
            report.add(path_of(here, "tariff_id"), DERIVED, why)
        out.append(new)
    return out


def periods_down(periods: Any, path: str, report: Report) -> tuple[Any, Any]:
    """2.2.1 → 2.1.1: dimension types 2.1.1 lacks dropped, periods left empty dropped, ``tariff_id`` dropped.
    Returns the periods and the first ``tariff_id`` met (a 2.1.1 object names its tariff on the connector)."""
    if not isinstance(periods, list):
        return periods, None
    out: list[Any] = []
    first_tariff = None
    for i, period in enumerate(periods):
        here = path_of(path, i)
        if not isinstance(period, dict):
            out.append(period)
            continue
        new = dict(period)
        if "tariff_id" in new:
            first_tariff = first_tariff if first_tariff is not None else new["tariff_id"]
            del new["tariff_id"]
            report.add(path_of(here, "tariff_id"), DROPPED, "2.1.1 periods name no tariff (the connector does)")
        if isinstance(period.get("dimensions"), list):
            new["dimensions"] = _keep_dimensions(period["dimensions"], DIMENSIONS_211, path_of(here, "dimensions"),
                                                 report, "2.1.1")
            if not new["dimensions"] and period["dimensions"]:
                report.add(here, DROPPED, "no dimension left that 2.1.1 knows (a period needs one)")
                continue
        out.append(new)
    return out, first_tariff


def _keep_dimensions(dimensions: list[Any], known: frozenset[str], path: str, report: Report,
                     version: str) -> list[Any]:
    kept = []
    for j, dimension in enumerate(dimensions):
        kind = dimension.get("type") if isinstance(dimension, dict) else None
        if kind in known:
            kept.append(dimension)
        else:
            report.add(path_of(path, j), DROPPED, f"CdrDimensionType {kind} does not exist in OCPI {version}")
    return kept


# --- the embedded 2.1.1 Location ⇄ location_id / evse_uid / connector_id --------------------------------------

def report_rest(obj: dict[str, Any], keep: set[str], path: str, report: Report, detail: str) -> None:
    for key in obj:
        if key not in keep:
            report.add(path_of(path, key), DROPPED, detail)


def location_refs(location: Any, path: str, report: Report) -> dict[str, Any]:
    """A 2.1.1 Session embeds its Location (reduced to the EVSE and connector used); 2.2.1 names them by id."""
    if not isinstance(location, dict):
        raise report.refuse(path, "2.1.1 Session location must be a Location object")
    detail = "a 2.2.1 Session references its Location by id: the rest of the embedded 2.1.1 Location is dropped"
    report_rest(location, {"id", "evses"}, path, report, detail)
    out: dict[str, Any] = {"location_id": location.get("id")}
    evses = location.get("evses") or []
    if not evses:
        report.add(path_of(path, "evses"), DEFAULTED, "no EVSE: evse_uid and connector_id = #NA (allowed by 2.2.1 "
                                                      "while no EVSE is assigned)")
        return {**out, "evse_uid": NA, "connector_id": NA}
    for i in range(1, len(evses)):
        report.add(path_of(path_of(path, "evses"), i), DROPPED, "a 2.2.1 Session names one EVSE")
    evse_path = path_of(path_of(path, "evses"), 0)
    evse = evses[0]
    report_rest(evse, {"uid", "connectors"}, evse_path, report, detail)
    out["evse_uid"] = evse.get("uid")
    connectors = evse.get("connectors") or [{}]
    for i in range(1, len(connectors)):
        report.add(path_of(path_of(evse_path, "connectors"), i), DROPPED, "a 2.2.1 Session names one connector")
    connector = connectors[0]
    connector_path = path_of(path_of(evse_path, "connectors"), 0)
    report_rest(connector, {"id", "tariff_id"}, connector_path, report, detail)
    if "tariff_id" in connector:
        report.add(path_of(connector_path, "tariff_id"), DROPPED,
                   "2.2.1 names the tariff per charging period (filled there when the Session has periods)")
    out["connector_id"] = connector.get("id")
    return out


def connector_tariff(location: Any) -> Any:
    try:
        return location["evses"][0]["connectors"][0].get("tariff_id")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def location_skeleton(src: dict[str, Any], tariff_id: Any, report: Report) -> dict[str, Any]:
    """2.2.1 → 2.1.1: the 2.1.1 Session embeds a Location that a 2.2.1 Session only references. The step has the
    ids only: it sends them with ``type`` and EVSE ``status`` UNKNOWN and ``last_updated`` of the Session; the
    address, coordinates and connector data 2.1.1 requires are the Location's, which the sender of the
    translated Session overlays from the Locations it holds when it has them (docs/versions.md, "Sessions")."""
    if "location_id" not in src:
        raise report.refuse("evse_uid" if "evse_uid" in src else "connector_id",
                            "a 2.1.1 Session PATCH carries the whole location: the location_id is needed too")
    report.add("location_id", DEFAULTED, "2.1.1 embeds the Location: sent as its ids, type UNKNOWN, EVSE status "
                                         "UNKNOWN, last_updated of the Session; address, coordinates and connector "
                                         "data are not in a 2.2.1 Session")
    updated = {"last_updated": src["last_updated"]} if "last_updated" in src else {}
    location: dict[str, Any] = {"id": src["location_id"], "type": "UNKNOWN", "evses": []}
    evse_uid, connector_id = src.get("evse_uid"), src.get("connector_id")
    if evse_uid == NA or evse_uid is None:
        if evse_uid == NA:
            report.add("evse_uid", MAPPED, "#NA (no EVSE assigned yet) -> an empty evses list")
    else:
        connector: dict[str, Any] = {"id": connector_id}
        if tariff_id is not None:
            connector["tariff_id"] = tariff_id
            report.add("charging_periods", DERIVED, "location.evses[0].connectors[0].tariff_id = the tariff_id of "
                                                    "the first charging period naming one")
        location["evses"] = [{"uid": evse_uid, "status": "UNKNOWN", "connectors": [{**connector, **updated}],
                              **updated}]
    return {**location, **updated}


# --- Session steps -------------------------------------------------------------------------------------------

@step(SESSION, V211, V221)
def session_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    src = prune(data, SESSION_211, "", report, V211)
    out: dict[str, Any] = owner_fields(ctx, report, "Session")
    tariff = connector_tariff(src.get("location"))
    for key, value in src.items():
        if key == "start_datetime":
            out["start_date_time"] = value
        elif key == "end_datetime":
            out["end_date_time"] = value
        elif key == "auth_id":
            out["cdr_token"] = cdr_token_from_auth_id(value, ctx, report)
        elif key == "location":
            out.update(location_refs(value, "location", report))
        elif key == "charging_periods":
            out[key] = periods_up(value, tariff, key, report,
                                  "the tariff of the Session's connector (location.evses[0].connectors[0].tariff_id)")
        elif key == "total_cost":
            out[key] = number_to_price_221(value)
        else:
            out[key] = value
    return out


@step(SESSION, V221, V211)
def session_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    src = prune(data, SESSION_221, "", report, V221)
    drop_owner(src, report)
    out: dict[str, Any] = {}
    periods, tariff = periods_down(src.get("charging_periods"), "charging_periods", report)
    for key, value in src.items():
        if key in ("country_code", "party_id", "evse_uid", "connector_id"):
            continue
        if key == "start_date_time":
            out["start_datetime"] = value
        elif key == "end_date_time":
            out["end_datetime"] = value
        elif key == "cdr_token":
            out["auth_id"] = auth_id_from_cdr_token(value, report)
        elif key == "auth_method":
            out[key] = auth_method_down(value, key, report)
        elif key == "authorization_reference":
            report.add(key, DROPPED, "2.1.1 has no authorization reference")
        elif key == "location_id":
            out["location"] = location_skeleton(src, tariff, report)
        elif key == "charging_periods":
            out[key] = periods
        elif key == "total_cost":
            out[key] = price_221_to_number(value, key, report)
        elif key == "status" and value == "RESERVATION":
            out[key] = "PENDING"
            report.add(key, MAPPED, "RESERVATION -> PENDING: 2.1.1 has no reservation state")
        else:
            out[key] = value
    if "location" not in out and ("evse_uid" in src or "connector_id" in src):
        location_skeleton(src, tariff, report)  # refuses: a 2.1.1 PATCH moves a session with its whole location
    return out


@step(SESSION, V221, V230)
def session_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    out = deepcopy(data)
    if "total_cost" in out:
        out["total_cost"] = price_221_to_230(out["total_cost"], "total_cost", report)
    return out


@step(SESSION, V230, V221)
def session_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    out = prune(data, SESSION_230, "", report, V230)
    cdr_token_230_to_221(out, report)
    if "total_cost" in out:
        out["total_cost"] = price_230_to_221(out["total_cost"], "total_cost", report)
    return out


def cdr_token_230_to_221(obj: dict[str, Any], report: Report) -> None:
    """``cdr_token.type`` is a 2.3.0 OpenEnum (EMAID, ...): mapped in place on the step's own copy."""
    token = obj.get("cdr_token")
    if isinstance(token, dict) and "type" in token:
        token["type"] = token_type_to(token["type"], TOKEN_TYPES_221, V221, "cdr_token.type", report)


# ChargingPreferences: the same fields in 2.2.1 and 2.3.0; only fields 2.3.0 tolerates undocumented are pruned.
@step(CHARGING_PREFERENCES, V221, V230)
def charging_preferences_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    return deepcopy(data)


@step(CHARGING_PREFERENCES, V230, V221)
def charging_preferences_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    return prune(data, CHARGING_PREFERENCES_FIELDS, "", report, V230)
