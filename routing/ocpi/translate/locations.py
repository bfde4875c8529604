"""Locations between OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md, "Locations").

Three kinds share one set of rules: a Location, an EVSE pushed at ``/{location_id}/{evse_uid}`` and a Connector
pushed one level deeper. Every step works on a deep copy of its input. Facts from the object tables of OCPI 2.1.1
mod_locations, 2.2.1 and 2.3.0 mod_locations (Location, EVSE, Connector and their classes and enums).
"""

from __future__ import annotations

import copy
import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from routing.ocpi.translate.base import (
    CONNECTOR,
    DEFAULTED,
    DERIVED,
    DROPPED,
    EVSE,
    LOCATION,
    MAPPED,
    Context,
    Report,
    path_of,
    step,
)
from routing.ocpi.translate.common import Schema, drop_undocumented, keep_known
from routing.ocpi.versions import V211, V221, V230

Json = dict[str, Any]

# --- Shapes: documented fields per class and version -------------------------------------------------------------


def _fields(*names: str, **classes: str) -> dict[str, str | None]:
    out: dict[str, str | None] = dict.fromkeys(names)
    out.update(classes)
    return out


_SHARED: Schema = {
    "GeoLocation": _fields("latitude", "longitude"),
    "AdditionalGeoLocation": _fields("latitude", "longitude", name="DisplayText"),
    "DisplayText": _fields("language", "text"),
    "BusinessDetails": _fields("name", "website", logo="Image"),
    "Image": _fields("url", "thumbnail", "category", "type", "width", "height"),
    "Hours": _fields("twentyfourseven", regular_hours="RegularHours", exceptional_openings="ExceptionalPeriod",
                     exceptional_closings="ExceptionalPeriod"),
    "RegularHours": _fields("weekday", "period_begin", "period_end"),
    "ExceptionalPeriod": _fields("period_begin", "period_end"),
    "EnergyMix": _fields("is_green_energy", "supplier_name", "energy_product_name", energy_sources="EnergySource",
                         environ_impact="EnvironmentalImpact"),
    "EnergySource": _fields("source", "percentage"),
    "StatusSchedule": _fields("period_begin", "period_end", "status"),
}
_LOCATION_COMMON = ("id", "name", "address", "city", "postal_code", "country", "facilities", "time_zone",
                    "charging_when_closed", "last_updated")
_LOCATION_CLASSES = {"coordinates": "GeoLocation", "related_locations": "AdditionalGeoLocation", "evses": "EVSE",
                     "directions": "DisplayText", "operator": "BusinessDetails", "suboperator": "BusinessDetails",
                     "owner": "BusinessDetails", "opening_times": "Hours", "images": "Image",
                     "energy_mix": "EnergyMix"}
_EVSE_COMMON = ("uid", "evse_id", "status", "capabilities", "floor_level", "physical_reference",
                "parking_restrictions", "last_updated")
_EVSE_CLASSES = {"status_schedule": "StatusSchedule", "connectors": "Connector", "coordinates": "GeoLocation",
                 "directions": "DisplayText", "images": "Image"}
_CONNECTOR_COMMON = ("id", "standard", "format", "power_type", "terms_and_conditions", "last_updated")

SCHEMA_211: Schema = {
    **_SHARED,
    "EnvironmentalImpact": _fields("source", "amount"),
    "Location": _fields(*_LOCATION_COMMON, "type", **_LOCATION_CLASSES),
    "EVSE": _fields(*_EVSE_COMMON, **_EVSE_CLASSES),
    "Connector": _fields(*_CONNECTOR_COMMON, "voltage", "amperage", "tariff_id"),
}
SCHEMA_221: Schema = {
    **_SHARED,
    "EnvironmentalImpact": _fields("category", "amount"),
    "PublishTokenType": _fields("uid", "type", "visual_number", "issuer", "group_id"),
    "Location": _fields(*_LOCATION_COMMON, "country_code", "party_id", "publish", "state", "parking_type",
                        publish_allowed_to="PublishTokenType", **_LOCATION_CLASSES),
    "EVSE": _fields(*_EVSE_COMMON, **_EVSE_CLASSES),
    "Connector": _fields(*_CONNECTOR_COMMON, "max_voltage", "max_amperage", "max_electric_power", "tariff_ids"),
}
# 2.3.0 adds AFIR data; Parking and EVSEParking are dropped whole on the way down, so their insides are not listed.
SCHEMA_230: Schema = {
    **SCHEMA_221,
    "Location": {**SCHEMA_221["Location"], **_fields("parking_places", "help_phone")},
    "EVSE": {**SCHEMA_221["EVSE"], **_fields("parking", "accepted_service_providers")},
    "Connector": {**SCHEMA_221["Connector"], **_fields("capabilities")},
}

# --- Closed enums of 2.1.1 and 2.2.1 (2.3.0 makes most of them OpenEnums) ------------------------------------------

CAPABILITY_211 = frozenset({"CHARGING_PROFILE_CAPABLE", "CREDIT_CARD_PAYABLE", "REMOTE_START_STOP_CAPABLE",
                            "RESERVABLE", "RFID_READER", "UNLOCK_CAPABLE"})
CAPABILITY_221 = CAPABILITY_211 | {"CHARGING_PREFERENCES_CAPABLE", "CHIP_CARD_SUPPORT", "CONTACTLESS_CARD_SUPPORT",
                                   "DEBIT_CARD_PAYABLE", "PED_TERMINAL", "START_SESSION_CONNECTOR_REQUIRED",
                                   "TOKEN_GROUP_CAPABLE"}
CONNECTOR_TYPE_211 = frozenset({
    "CHADEMO", *(f"DOMESTIC_{c}" for c in "ABCDEFGHIJKL"), "IEC_60309_2_single_16", "IEC_60309_2_three_16",
    "IEC_60309_2_three_32", "IEC_60309_2_three_64", "IEC_62196_T1", "IEC_62196_T1_COMBO", "IEC_62196_T2",
    "IEC_62196_T2_COMBO", "IEC_62196_T3A", "IEC_62196_T3C", "TESLA_R", "TESLA_S"})
CONNECTOR_TYPE_221 = CONNECTOR_TYPE_211 | {
    "CHAOJI", "DOMESTIC_M", "DOMESTIC_N", "DOMESTIC_O", "GBT_AC", "GBT_DC", "NEMA_5_20", "NEMA_6_30", "NEMA_6_50",
    "NEMA_10_30", "NEMA_10_50", "NEMA_14_30", "NEMA_14_50", "PANTOGRAPH_BOTTOM_UP", "PANTOGRAPH_TOP_DOWN"}
FACILITY_211 = frozenset({"HOTEL", "RESTAURANT", "CAFE", "MALL", "SUPERMARKET", "SPORT", "RECREATION_AREA", "NATURE",
                          "MUSEUM", "BUS_STOP", "TAXI_STAND", "TRAIN_STATION", "AIRPORT", "CARPOOL_PARKING",
                          "FUEL_STATION", "WIFI"})
FACILITY_221 = FACILITY_211 | {"BIKE_SHARING", "TRAM_STOP", "METRO_STATION", "PARKING_LOT"}
PARKING_RESTRICTION_221 = frozenset({"EV_ONLY", "PLUGGED", "DISABLED", "CUSTOMERS", "MOTORCYCLES"})  # = 2.1.1
# 2.3.0 EMPLOYEES/TENANTS still restrict the spot to a group: CUSTOMERS keeps that signal; TAXIS has no near value.
PARKING_RESTRICTION_NEAREST = {"EMPLOYEES": "CUSTOMERS", "TENANTS": "CUSTOMERS"}
PARKING_TYPE_221 = frozenset({"ALONG_MOTORWAY", "PARKING_GARAGE", "PARKING_LOT", "ON_DRIVEWAY", "ON_STREET",
                              "UNDERGROUND_GARAGE"})
LOCATION_TYPE_211 = frozenset({"ON_STREET", "PARKING_GARAGE", "UNDERGROUND_GARAGE", "PARKING_LOT", "OTHER",
                               "UNKNOWN"})
POWER_TYPE_211 = frozenset({"AC_1_PHASE", "AC_3_PHASE", "DC"})
POWER_TYPE_221 = POWER_TYPE_211 | {"AC_2_PHASE", "AC_2_PHASE_SPLIT"}
IMAGE_CATEGORY = frozenset({"CHARGER", "ENTRANCE", "LOCATION", "NETWORK", "OPERATOR", "OTHER", "OWNER"})
ENVIRONMENTAL_IMPACT_CATEGORY = frozenset({"NUCLEAR_WASTE", "CARBON_DIOXIDE"})
TOKEN_TYPE_221 = frozenset({"AD_HOC_USER", "APP_USER", "OTHER", "RFID"})

MAX_ID = 36  # Location.id and EVSE.uid: string(39) in 2.1.1, CiString(36) from 2.2 on

# 2.1.1 Location.time_zone is optional, 2.2.1 requires it: derived from ``country`` where the country has a single
# IANA zone (ISO 3166-1 alpha-3 → tz). Countries spanning several zones (ESP, PRT, USA, ...) are not listed.
SINGLE_ZONE = {
    "ALB": "Europe/Tirane", "AND": "Europe/Andorra", "ARE": "Asia/Dubai", "AUT": "Europe/Vienna",
    "BEL": "Europe/Brussels", "BGR": "Europe/Sofia", "BIH": "Europe/Sarajevo", "CHE": "Europe/Zurich",
    "CZE": "Europe/Prague", "DEU": "Europe/Berlin", "DNK": "Europe/Copenhagen", "EST": "Europe/Tallinn",
    "FIN": "Europe/Helsinki", "FRA": "Europe/Paris", "GBR": "Europe/London", "GRC": "Europe/Athens",
    "HRV": "Europe/Zagreb", "HUN": "Europe/Budapest", "IRL": "Europe/Dublin", "ISL": "Atlantic/Reykjavik",
    "ISR": "Asia/Jerusalem", "ITA": "Europe/Rome", "JPN": "Asia/Tokyo", "KOR": "Asia/Seoul", "LIE": "Europe/Vaduz",
    "LTU": "Europe/Vilnius", "LUX": "Europe/Luxembourg", "LVA": "Europe/Riga", "MCO": "Europe/Monaco",
    "MKD": "Europe/Skopje", "MLT": "Europe/Malta", "MNE": "Europe/Podgorica", "NLD": "Europe/Amsterdam",
    "NOR": "Europe/Oslo", "POL": "Europe/Warsaw", "ROU": "Europe/Bucharest", "SGP": "Asia/Singapore",
    "SMR": "Europe/San_Marino", "SRB": "Europe/Belgrade", "SVK": "Europe/Bratislava", "SVN": "Europe/Ljubljana",
    "SWE": "Europe/Stockholm", "TUR": "Europe/Istanbul",
}

_SIX_DECIMALS = re.compile(r"^-?[0-9]{1,3}\.[0-9]{6}$")


# --- Small shared pieces ------------------------------------------------------------------------------------------


def _drop(obj: Json, key: str, path: str, report: Report, detail: str) -> None:
    if key in obj:
        del obj[key]
        report.add(path_of(path, key), DROPPED, detail)


def _rename(obj: Json, old: str, new: str, value: Any = None, *, convert: bool = False) -> None:
    """Renames ``old`` to ``new`` in place, keeping the field's position; ``convert``: with a new value."""
    items = list(obj.items())
    obj.clear()
    obj.update((new, value if convert else v) if k == old else (k, v) for k, v in items)


def _check_id(obj: Json, key: str, path: str, report: Report) -> None:
    value = obj.get(key)
    if isinstance(value, str) and len(value) > MAX_ID:
        raise report.refuse(path_of(path, key), f"{len(value)} characters, OCPI 2.2.1 and later allow {MAX_ID}")


def energy_mix_up(mix: Any) -> Any:
    """2.1.1 ``EnvironmentalImpact.source`` is 2.2.1 ``category`` (a rename the 2.2 changelog calls a fix)."""
    if isinstance(mix, dict) and isinstance(mix.get("environ_impact"), list):
        for impact in mix["environ_impact"]:
            if isinstance(impact, dict) and "source" in impact:
                _rename(impact, "source", "category")
    return mix


def energy_mix_down(mix: Any, path: str, report: Report, target: str) -> Any:
    """``category`` back to ``source`` (2.1.1 only); impact categories ``target`` lacks drop their entry."""
    if not (isinstance(mix, dict) and isinstance(mix.get("environ_impact"), list)):
        return mix
    kept: list[Any] = []
    for i, impact in enumerate(mix["environ_impact"]):
        if isinstance(impact, dict) and "category" in impact:
            if impact["category"] not in ENVIRONMENTAL_IMPACT_CATEGORY:
                report.add(path_of(path_of(path, "environ_impact"), i), DROPPED,
                           f"EnvironmentalImpactCategory {impact['category']} has no OCPI {target} counterpart")
                continue
            if target == V211:
                _rename(impact, "category", "source")
        kept.append(impact)
    mix["environ_impact"] = kept
    return mix


def _images(images: Any, path: str, report: Report, target: str) -> None:
    """Image categories ``target`` lacks (2.3.0 OpenEnum) become ``OTHER``, the catch-all of every version."""
    for i, image in enumerate(images if isinstance(images, list) else [images]):
        sub = path_of(path, i) if isinstance(images, list) else path
        if isinstance(image, dict) and "category" in image and image["category"] not in IMAGE_CATEGORY:
            report.add(path_of(sub, "category"), MAPPED,
                       f"ImageCategory {image['category']} has no OCPI {target} counterpart: sent as OTHER")
            image["category"] = "OTHER"


def _business_details(obj: Json, path: str, report: Report, target: str) -> None:
    for key in ("operator", "suboperator", "owner"):
        details = obj.get(key)
        if isinstance(details, dict) and "logo" in details:
            _images(details["logo"], path_of(path_of(path, key), "logo"), report, target)


def _six_decimals(geo: Any, path: str, report: Report) -> None:
    """2.1.1 coordinates have exactly 6 decimals; 2.2.1 allows 5 to 7: padded or rounded, reported."""
    if not isinstance(geo, dict):
        return
    for key in ("latitude", "longitude"):
        value = geo.get(key)
        if not isinstance(value, str) or _SIX_DECIMALS.match(value):
            continue
        try:
            number = Decimal(value)
        except InvalidOperation:
            continue
        if not number.is_finite():
            continue
        geo[key] = format(number.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN), "f")
        report.add(path_of(path, key), MAPPED, f"{value} written as {geo[key]}: OCPI 2.1.1 requires 6 decimals")


def _hours_up(hours: Any, path: str, report: Report) -> Any:
    """2.1.1 ``Hours`` is a choice (``regular_hours`` or ``twentyfourseven``); 2.2.1 always has ``twentyfourseven``.

    Returns None when the 2.1.1 object has neither (nothing known to send)."""
    if not isinstance(hours, dict):
        return hours
    if "twentyfourseven" not in hours:
        regular = hours.get("regular_hours")
        if not (isinstance(regular, list) and regular):
            report.add(path, DROPPED, "neither regular_hours nor twentyfourseven: OCPI 2.2.1 requires "
                                      "twentyfourseven, and the opening times are unknown")
            return None
        hours["twentyfourseven"] = False
        report.add(path_of(path, "twentyfourseven"), DERIVED, "false, because the 2.1.1 object lists regular_hours")
    regular = hours.get("regular_hours")
    for i, period in enumerate(regular if isinstance(regular, list) else []):
        for key in ("period_begin", "period_end"):
            if isinstance(period, dict) and period.get(key) == "24:00":
                period[key] = "23:59"
                report.add(path_of(path_of(path_of(path, "regular_hours"), i), key), MAPPED,
                           "24:00 is not a valid OCPI 2.2.1 time: sent as 23:59")
    return hours


# --- Connector ----------------------------------------------------------------------------------------------------


def _connector_up_221(c: Json, path: str, report: Report) -> Json:
    _check_id(c, "id", path, report)
    if "voltage" in c:
        _rename(c, "voltage", "max_voltage")
    if "amperage" in c:
        _rename(c, "amperage", "max_amperage")
    if "tariff_id" in c:
        tariff = c["tariff_id"]
        _rename(c, "tariff_id", "tariff_ids", [tariff] if tariff is not None else [], convert=True)
    return c


def _connector_down_211(c: Json, path: str, report: Report) -> Json | None:
    """None when the connector's standard has no 2.1.1 counterpart (the caller drops it)."""
    standard = c.get("standard")
    if "standard" in c and standard not in CONNECTOR_TYPE_211:
        report.add(path, DROPPED, f"ConnectorType {standard} has no OCPI 2.1.1 counterpart: connector left out")
        return None
    if c.get("power_type") in ("AC_2_PHASE", "AC_2_PHASE_SPLIT"):
        report.add(path_of(path, "power_type"), MAPPED,
                   f"{c['power_type']} has no OCPI 2.1.1 counterpart: sent as AC_1_PHASE (under- rather than "
                   "over-states the power)")
        c["power_type"] = "AC_1_PHASE"
    if "max_voltage" in c:
        _rename(c, "max_voltage", "voltage")
    if "max_amperage" in c:
        _rename(c, "max_amperage", "amperage")
    _drop(c, "max_electric_power", path, report, "OCPI 2.1.1 has no maximum power; readers compute it from "
                                                   "voltage and amperage")
    if "tariff_ids" in c:
        ids = c["tariff_ids"]
        if isinstance(ids, list) and ids:
            _rename(c, "tariff_ids", "tariff_id", ids[0], convert=True)
            for i in range(1, len(ids)):
                report.add(path_of(path_of(path, "tariff_ids"), i), DROPPED,
                           "OCPI 2.1.1 links one tariff per connector: the first listed is sent")
        else:
            del c["tariff_ids"]
            report.add(path_of(path, "tariff_ids"), DROPPED, "an empty list has no OCPI 2.1.1 form: tariff_id left "
                                                             "out")
    return c


def _connector_down_221(c: Json, path: str, report: Report) -> Json | None:
    standard = c.get("standard")
    if "standard" in c and standard not in CONNECTOR_TYPE_221:
        report.add(path, DROPPED, f"ConnectorType {standard} has no OCPI 2.2.1 counterpart: connector left out")
        return None
    _drop(c, "capabilities", path, report, "ConnectorCapability (ISO 15118 Plug & Charge) is new in OCPI 2.3.0")
    return c


# --- EVSE ---------------------------------------------------------------------------------------------------------


def _connectors(evse: Json, path: str, report: Report, each: Any) -> bool:
    """Translates ``connectors`` with ``each``; False when the EVSE had connectors and none is left."""
    connectors = evse.get("connectors")
    if not isinstance(connectors, list):
        return True
    kept: list[Any] = []
    for i, connector in enumerate(connectors):
        out = each(connector, path_of(path_of(path, "connectors"), i), report) if isinstance(connector, dict) \
            else connector
        if out is not None:
            kept.append(out)
    evse["connectors"] = kept
    return bool(kept) or not connectors


def _evse_up_221(e: Json, path: str, report: Report) -> Json:
    _check_id(e, "uid", path, report)
    if "capabilities" in e:
        e["capabilities"] = keep_known(e["capabilities"], CAPABILITY_221, path_of(path, "capabilities"), report, V221,
                                       "Capability")
    _connectors(e, path, report, _connector_up_221)
    return e


def _evse_down_211(e: Json, path: str, report: Report) -> Json | None:
    """None when every connector was left out (an EVSE needs one)."""
    if "capabilities" in e:
        e["capabilities"] = keep_known(e["capabilities"], CAPABILITY_211, path_of(path, "capabilities"), report, V211,
                                       "Capability")
    if "parking_restrictions" in e:
        e["parking_restrictions"] = keep_known(e["parking_restrictions"], PARKING_RESTRICTION_221,
                                               path_of(path, "parking_restrictions"), report, V211,
                                               "ParkingRestriction")
    _six_decimals(e.get("coordinates"), path_of(path, "coordinates"), report)
    if not _connectors(e, path, report, _connector_down_211):
        report.add(path, DROPPED, "every connector has a standard OCPI 2.1.1 lacks: EVSE left out")
        return None
    return e


def _evse_down_221(e: Json, path: str, report: Report) -> Json | None:
    _drop(e, "parking", path, report, "EVSEParking (AFIR parking data) is new in OCPI 2.3.0")
    _drop(e, "accepted_service_providers", path, report, "new in OCPI 2.3.0")
    if "capabilities" in e:
        e["capabilities"] = keep_known(e["capabilities"], CAPABILITY_221, path_of(path, "capabilities"), report, V221,
                                       "Capability")
    if "parking_restrictions" in e:
        e["parking_restrictions"] = keep_known(e["parking_restrictions"], PARKING_RESTRICTION_221,
                                               path_of(path, "parking_restrictions"), report, V221,
                                               "ParkingRestriction", PARKING_RESTRICTION_NEAREST)
    _images(e.get("images", []), path_of(path, "images"), report, V221)
    if not _connectors(e, path, report, _connector_down_221):
        report.add(path, DROPPED, "every connector has a standard OCPI 2.2.1 lacks: EVSE left out")
        return None
    return e


def _evses(loc: Json, path: str, report: Report, each: Any) -> None:
    evses = loc.get("evses")
    if not isinstance(evses, list):
        return
    kept: list[Any] = []
    for i, evse in enumerate(evses):
        out = each(evse, path_of(path_of(path, "evses"), i), report) if isinstance(evse, dict) else evse
        if out is not None:
            kept.append(out)
    loc["evses"] = kept


# --- Location -----------------------------------------------------------------------------------------------------


def _owner_up(loc: Json, ctx: Context, report: Report) -> Json:
    """2.1.1 objects name no owner: the connection's (or the URL path's) party fills it."""
    if ctx.partial:
        return loc
    if ctx.owner is None:
        raise report.refuse("country_code", "OCPI 2.1.1 objects carry no owner and none is known for this message")
    report.add("country_code", DERIVED, "the owner's country code, from the URL path or the connection")
    report.add("party_id", DERIVED, "the owner's party id, from the URL path or the connection")
    return {"country_code": ctx.owner[0], "party_id": ctx.owner[1], **loc}


def _owner_down(obj: Json, report: Report) -> None:
    for key in ("country_code", "party_id"):
        _drop(obj, key, "", report, "OCPI 2.1.1 objects carry no owner: it travels in the URL path")


def _location_up_221(loc: Json, ctx: Context, report: Report) -> Json:
    _check_id(loc, "id", "", report)
    if "type" in loc:
        kind = loc["type"]
        if kind in PARKING_TYPE_221:
            _rename(loc, "type", "parking_type")
            report.add("type", MAPPED, f"LocationType {kind} sent as ParkingType {kind} (parking_type)")
        else:
            del loc["type"]
            detail = f"LocationType {kind} has no ParkingType: parking_type left out"
            if ctx.partial:
                detail += " (a PATCH cannot remove a parking_type the receiver already has)"
            report.add("type", DROPPED, detail)
    if "time_zone" not in loc and not ctx.partial:
        zone = SINGLE_ZONE.get(str(loc.get("country")))
        if zone is None:
            raise report.refuse("time_zone", f"required from OCPI 2.2.1 on, absent, and country {loc.get('country')} "
                                             "does not have a single time zone to derive it from")
        loc["time_zone"] = zone
        report.add("time_zone", DERIVED, f"{zone}, the only time zone of country {loc.get('country')}")
    if "opening_times" in loc:
        hours = _hours_up(loc["opening_times"], "opening_times", report)
        if hours is None:
            del loc["opening_times"]
    if "facilities" in loc:
        loc["facilities"] = keep_known(loc["facilities"], FACILITY_221, "facilities", report, V221, "Facility")
    if "energy_mix" in loc:
        energy_mix_up(loc["energy_mix"])
    _evses(loc, "", report, _evse_up_221)
    loc = _owner_up(loc, ctx, report)
    if not ctx.partial:
        loc["publish"] = True
        report.add("publish", DEFAULTED, "true: OCPI 2.1.1 Locations are all public")
    return loc


def _location_down_211(loc: Json, ctx: Context, report: Report) -> Json:
    _owner_down(loc, report)
    if loc.get("publish") is False:
        raise report.refuse("publish", "OCPI 2.1.1 has no unpublished Locations: a 2.1.1 receiver would show it")
    loc.pop("publish", None)  # true: every 2.1.1 Location is public, nothing is lost
    _drop(loc, "publish_allowed_to", "", report, "OCPI 2.1.1 has no restricted visibility")
    _drop(loc, "state", "", report, "OCPI 2.1.1 has no state field")
    if "parking_type" in loc:
        parking = loc["parking_type"]
        if parking in LOCATION_TYPE_211:
            _rename(loc, "parking_type", "type")
        else:
            _rename(loc, "parking_type", "type", "OTHER", convert=True)
            report.add("parking_type", MAPPED, f"ParkingType {parking} has no LocationType: sent as type OTHER")
    elif not ctx.partial:
        loc["type"] = "UNKNOWN"
        report.add("type", DEFAULTED, "required in OCPI 2.1.1; no parking_type given: UNKNOWN")
    if "postal_code" not in loc and not ctx.partial:
        loc["postal_code"] = ""
        report.add("postal_code", DEFAULTED, "required in OCPI 2.1.1; the location has none: empty string")
    _six_decimals(loc.get("coordinates"), "coordinates", report)
    for i, related in enumerate(loc.get("related_locations") or []):
        _six_decimals(related, path_of("related_locations", i), report)
    if "facilities" in loc:
        loc["facilities"] = keep_known(loc["facilities"], FACILITY_211, "facilities", report, V211, "Facility")
    if "energy_mix" in loc:
        energy_mix_down(loc["energy_mix"], "energy_mix", report, V211)
    _evses(loc, "", report, _evse_down_211)
    return loc


def _location_down_221(loc: Json, ctx: Context, report: Report) -> Json:
    _drop(loc, "parking_places", "", report, "Parking (AFIR parking data) is new in OCPI 2.3.0")
    _drop(loc, "help_phone", "", report, "new in OCPI 2.3.0")
    if "parking_type" in loc and loc["parking_type"] not in PARKING_TYPE_221:
        _drop(loc, "parking_type", "", report, f"ParkingType {loc['parking_type']} has no OCPI 2.2.1 counterpart")
    if "facilities" in loc:
        loc["facilities"] = keep_known(loc["facilities"], FACILITY_221, "facilities", report, V221, "Facility")
    for i, token in enumerate(loc.get("publish_allowed_to") or []):
        if isinstance(token, dict) and "type" in token and token["type"] not in TOKEN_TYPE_221:
            _drop(token, "type", path_of("publish_allowed_to", i), report,
                  f"TokenType {token['type']} has no OCPI 2.2.1 counterpart")
    if "energy_mix" in loc:
        energy_mix_down(loc["energy_mix"], "energy_mix", report, V221)
    _images(loc.get("images", []), "images", report, V221)
    _business_details(loc, "", report, V221)
    _evses(loc, "", report, _evse_down_221)
    return loc


# --- Registered steps ---------------------------------------------------------------------------------------------


def _copy(data: Any, schema: Schema | None, cls: str, report: Report, version: str) -> Any:
    """A deep copy of the input (never mutated); undocumented fields dropped when ``schema`` is given."""
    out = copy.deepcopy(data)
    if schema is not None:
        drop_undocumented(out, schema, cls, "", report, version)
    return out


@step(LOCATION, V211, V221)
def location_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    loc = _copy(data, SCHEMA_211, "Location", report, V211)
    return _location_up_221(loc, ctx, report) if isinstance(loc, dict) else loc


@step(LOCATION, V221, V211)
def location_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    loc = _copy(data, SCHEMA_221, "Location", report, V221)
    return _location_down_211(loc, ctx, report) if isinstance(loc, dict) else loc


@step(LOCATION, V230, V221)
def location_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    loc = _copy(data, SCHEMA_230, "Location", report, V230)
    return _location_down_221(loc, ctx, report) if isinstance(loc, dict) else loc


@step(LOCATION, V221, V230)
@step(EVSE, V221, V230)
@step(CONNECTOR, V221, V230)
def superset_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    """2.3.0 Locations, EVSEs and Connectors only add optional fields and enum values: a copy, no loss (fields
    2.2.1 does not define are kept, 2.3.0 accepts them)."""
    return copy.deepcopy(data)


@step(EVSE, V211, V221)
def evse_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    evse = _copy(data, SCHEMA_211, "EVSE", report, V211)
    return _evse_up_221(evse, "", report) if isinstance(evse, dict) else evse


def _whole_evse(evse: Json | None, report: Report, target: str) -> Json:
    if evse is None:
        raise report.refuse("connectors", f"every connector has a standard OCPI {target} lacks")
    return evse


@step(EVSE, V221, V211)
def evse_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    evse = _copy(data, SCHEMA_221, "EVSE", report, V221)
    return _whole_evse(_evse_down_211(evse, "", report), report, V211) if isinstance(evse, dict) else evse


@step(EVSE, V230, V221)
def evse_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    evse = _copy(data, SCHEMA_230, "EVSE", report, V230)
    return _whole_evse(_evse_down_221(evse, "", report), report, V221) if isinstance(evse, dict) else evse


@step(CONNECTOR, V211, V221)
def connector_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    c = _copy(data, SCHEMA_211, "Connector", report, V211)
    return _connector_up_221(c, "", report) if isinstance(c, dict) else c


def _whole_connector(c: Json | None, data: Any, report: Report, target: str) -> Json:
    if c is None:
        raise report.refuse("standard", f"ConnectorType {data.get('standard')} has no OCPI {target} counterpart")
    return c


@step(CONNECTOR, V221, V211)
def connector_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    c = _copy(data, SCHEMA_221, "Connector", report, V221)
    return _whole_connector(_connector_down_211(c, "", report), data, report, V211) if isinstance(c, dict) else c


@step(CONNECTOR, V230, V221)
def connector_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    c = _copy(data, SCHEMA_230, "Connector", report, V230)
    return _whole_connector(_connector_down_221(c, "", report), data, report, V221) if isinstance(c, dict) else c
