"""CDRs between OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md, "CDRs").

A CDR carries its location and tariffs as they were at the start of the session: the 2.1.1 embedded Location ⇄
the 2.2.1 ``CdrLocation``, and the embedded Tariffs of each version, are translated here, for CDRs only.
The totals stay authoritative: a CDR's cost is never recomputed from translated tariffs.
"""

from __future__ import annotations

import re
from copy import deepcopy
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from routing.ocpi.translate.base import CDR, DEFAULTED, DERIVED, DROPPED, MAPPED, Context, Report, path_of, step
from routing.ocpi.translate.common import (
    DISPLAY_TEXT,
    GEO_LOCATION,
    PRICE_221,
    PRICE_230,
    PRICE_LIMIT_230,
    Fields,
    number_to_price_221,
    price_221_to_230,
    price_221_to_number,
    price_230_to_221,
    price_limit_221_to_230,
    price_limit_230_to_221,
    prune,
)
from routing.ocpi.translate.sessions import (
    CDR_TOKEN,
    NA,
    PERIOD_211,
    PERIOD_221,
    auth_id_from_cdr_token,
    auth_method_down,
    cdr_token_230_to_221,
    cdr_token_from_auth_id,
    connector_tariff,
    drop_owner,
    owner_fields,
    periods_down,
    periods_up,
    report_rest,
)
from routing.ocpi.versions import V211, V221, V230

# Documented fields (OCPI mod_tariffs and mod_cdrs of each version).
RESTRICTIONS_211: Fields = {key: None for key in (
    "start_time", "end_time", "start_date", "end_date", "min_kwh", "max_kwh", "min_power", "max_power",
    "min_duration", "max_duration", "day_of_week")}
RESTRICTIONS_221: Fields = {**RESTRICTIONS_211, "min_current": None, "max_current": None, "reservation": None}
COMPONENT_211: Fields = {"type": None, "price": None, "step_size": None}
COMPONENT_221: Fields = {**COMPONENT_211, "vat": None}
ENERGY_MIX_211: Fields = {
    "is_green_energy": None, "energy_sources": {"source": None, "percentage": None},
    "environ_impact": {"source": None, "amount": None}, "supplier_name": None, "energy_product_name": None,
}
ENERGY_MIX_221: Fields = {**ENERGY_MIX_211, "environ_impact": {"category": None, "amount": None}}
TARIFF_211: Fields = {
    "id": None, "currency": None, "tariff_alt_text": DISPLAY_TEXT, "tariff_alt_url": None,
    "elements": {"price_components": COMPONENT_211, "restrictions": RESTRICTIONS_211},
    "energy_mix": ENERGY_MIX_211, "last_updated": None,
}
TARIFF_221: Fields = {
    **TARIFF_211, "country_code": None, "party_id": None, "type": None, "min_price": PRICE_221,
    "max_price": PRICE_221, "start_date_time": None, "end_date_time": None, "energy_mix": ENERGY_MIX_221,
    "elements": {"price_components": COMPONENT_221, "restrictions": RESTRICTIONS_221},
}
TARIFF_230: Fields = {**TARIFF_221, "min_price": PRICE_LIMIT_230, "max_price": PRICE_LIMIT_230,
                      "tax_included": None, "preauthorize_amount": None}
CDR_LOCATION: Fields = {
    "id": None, "name": None, "address": None, "city": None, "postal_code": None, "state": None, "country": None,
    "coordinates": GEO_LOCATION, "evse_uid": None, "evse_id": None, "connector_id": None,
    "connector_standard": None, "connector_format": None, "connector_power_type": None,
}
SIGNED_DATA: Fields = {
    "encoding_method": None, "encoding_method_version": None, "public_key": None, "url": None,
    "signed_values": {"nature": None, "plain_data": None, "signed_data": None},
}
CDR_211: Fields = {
    "id": None, "start_date_time": None, "stop_date_time": None, "auth_id": None, "auth_method": None,
    "location": None, "meter_id": None, "currency": None, "tariffs": TARIFF_211, "charging_periods": PERIOD_211,
    "total_cost": None, "total_energy": None, "total_time": None, "total_parking_time": None, "remark": None,
    "last_updated": None,
}
MONEY = ("total_cost", "total_fixed_cost", "total_energy_cost", "total_time_cost", "total_parking_cost",
         "total_reservation_cost")
CDR_221: Fields = {
    "country_code": None, "party_id": None, "id": None, "start_date_time": None, "end_date_time": None,
    "session_id": None, "cdr_token": CDR_TOKEN, "auth_method": None, "authorization_reference": None,
    "cdr_location": CDR_LOCATION, "meter_id": None, "currency": None, "tariffs": TARIFF_221,
    "charging_periods": PERIOD_221, "signed_data": SIGNED_DATA, **{key: PRICE_221 for key in MONEY},
    "total_energy": None, "total_time": None, "total_parking_time": None, "remark": None,
    "invoice_reference_id": None, "credit": None, "credit_reference_id": None, "home_charging_compensation": None,
    "last_updated": None,
}
CDR_230: Fields = {**CDR_221, "tariffs": TARIFF_230, **{key: PRICE_230 for key in MONEY}}

# ConnectorType (OCPI mod_locations): 2.2.1 adds values 2.1.1 lacks; 2.3.0 adds MCS and SAE_J3400 (OpenEnum).
CONNECTORS_211 = frozenset({
    "CHADEMO", *(f"DOMESTIC_{c}" for c in "ABCDEFGHIJKL"), "IEC_60309_2_single_16", "IEC_60309_2_three_16",
    "IEC_60309_2_three_32", "IEC_60309_2_three_64", "IEC_62196_T1", "IEC_62196_T1_COMBO", "IEC_62196_T2",
    "IEC_62196_T2_COMBO", "IEC_62196_T3A", "IEC_62196_T3C", "TESLA_R", "TESLA_S",
})
CONNECTORS_221 = CONNECTORS_211 | {
    "CHAOJI", "DOMESTIC_M", "DOMESTIC_N", "DOMESTIC_O", "GBT_AC", "GBT_DC", "NEMA_5_20", "NEMA_6_30", "NEMA_6_50",
    "NEMA_10_30", "NEMA_10_50", "NEMA_14_30", "NEMA_14_50", "PANTOGRAPH_BOTTOM_UP", "PANTOGRAPH_TOP_DOWN",
}
POWER_TYPES_211 = frozenset({"AC_1_PHASE", "AC_3_PHASE", "DC"})
IMPACT_CATEGORIES = frozenset({"NUCLEAR_WASTE", "CARBON_DIOXIDE"})
DROPPED_221_TOTALS = ("total_fixed_cost", "total_energy_cost", "total_time_cost", "total_parking_cost",
                      "total_reservation_cost")
_DECIMAL = re.compile(r"^-?[0-9]+\.[0-9]+$")


# --- 2.1.1 embedded Location ⇄ CdrLocation --------------------------------------------------------------------

def cdr_location_up(location: Any, path: str, report: Report) -> dict[str, Any]:
    """The 2.1.1 Location (reduced to the EVSE and connector used) → CdrLocation: address and the connector's
    plug kept, everything else of the Location dropped."""
    if not isinstance(location, dict):
        raise report.refuse(path, "2.1.1 CDR location must be a Location object")
    detail = "a 2.2.1 CdrLocation has no such field: dropped from the CDR"
    report_rest(location, {"id", "name", "address", "city", "postal_code", "country", "coordinates", "evses"},
                path, report, detail)
    out = {key: deepcopy(location[key]) for key in ("id", "name", "address", "city", "postal_code", "country",
                                                    "coordinates") if key in location}
    evses = location.get("evses") or []
    evse = evses[0] if evses and isinstance(evses[0], dict) else None
    connectors = (evse or {}).get("connectors") or []
    connector = connectors[0] if connectors and isinstance(connectors[0], dict) else None
    if evse is None or connector is None:
        raise report.refuse(path_of(path, "evses"), "a 2.2.1 CdrLocation names the EVSE and connector used")
    evses_path = path_of(path, "evses")
    for i in range(1, len(evses)):
        report.add(path_of(evses_path, i), DROPPED, "a CdrLocation names one EVSE")
    evse_path = path_of(evses_path, 0)
    report_rest(evse, {"uid", "evse_id", "connectors"}, evse_path, report, detail)
    connectors_path = path_of(evse_path, "connectors")
    for i in range(1, len(connectors)):
        report.add(path_of(connectors_path, i), DROPPED, "a CdrLocation names one connector")
    connector_path = path_of(connectors_path, 0)
    report_rest(connector, {"id", "standard", "format", "power_type"}, connector_path, report, detail)
    out["evse_uid"] = evse.get("uid")
    if "evse_id" in evse:
        out["evse_id"] = evse["evse_id"]
    else:
        out["evse_id"] = NA
        report.add(path_of(evse_path, "evse_id"), DEFAULTED, "CdrLocation.evse_id is required: #NA (not known)")
    out.update({"connector_id": connector.get("id"), "connector_standard": connector.get("standard"),
                "connector_format": connector.get("format"), "connector_power_type": connector.get("power_type")})
    return out


def location_from_cdr_location(cdr_location: Any, tariff_id: Any, last_updated: Any, path: str,
                               report: Report) -> Any:
    """CdrLocation → the full 2.1.1 Location a 2.1.1 CDR embeds. Its required fields a CdrLocation lacks get
    documented placeholders: ``type`` UNKNOWN, EVSE ``status`` UNKNOWN, connector ``voltage``/``amperage`` 0
    (unknown), ``last_updated`` of the CDR."""
    if not isinstance(cdr_location, dict):
        return cdr_location
    report.add(path, DEFAULTED, "2.1.1 embeds a full Location: type UNKNOWN, EVSE status UNKNOWN, connector "
                                "voltage and amperage 0 (unknown), last_updated of the CDR")
    updated = {"last_updated": last_updated} if last_updated is not None else {}
    out: dict[str, Any] = {"id": cdr_location.get("id"), "type": "UNKNOWN"}
    for key in ("name", "address", "city", "postal_code", "country"):
        if key in cdr_location:
            out[key] = cdr_location[key]
    if "postal_code" not in out:
        out["postal_code"] = ""
        report.add(path_of(path, "postal_code"), DEFAULTED, "required in 2.1.1: empty (the location has none)")
    if "state" in cdr_location:
        report.add(path_of(path, "state"), DROPPED, "a 2.1.1 Location has no state")
    if "coordinates" in cdr_location:
        out["coordinates"] = six_decimals(cdr_location["coordinates"], path_of(path, "coordinates"), report)
    out["evses"] = []
    standard = cdr_location.get("connector_standard")
    if cdr_location.get("evse_uid") == NA:
        report.add(path_of(path, "evse_uid"), MAPPED, "#NA (reservation without EVSE) -> an empty evses list")
    elif standard not in CONNECTORS_211:
        report.add(path_of(path, "connector_standard"), DROPPED,
                   f"ConnectorType {standard} does not exist in 2.1.1 and a 2.1.1 connector needs one: the EVSE and "
                   f"connector are left out of the Location (evses is empty)")
    else:
        connector: dict[str, Any] = {
            "id": cdr_location.get("connector_id"), "standard": standard,
            "format": cdr_location.get("connector_format"),
            "power_type": _power_type_down(cdr_location.get("connector_power_type"),
                                           path_of(path, "connector_power_type"), report),
            "voltage": 0, "amperage": 0,
        }
        if tariff_id is not None:
            connector["tariff_id"] = tariff_id
            report.add("tariffs", DERIVED, "location.evses[0].connectors[0].tariff_id = the tariff of the charging "
                                           "periods, else the CDR's only tariff")
        evse: dict[str, Any] = {"uid": cdr_location.get("evse_uid")}
        if cdr_location.get("evse_id") == NA:
            report.add(path_of(path, "evse_id"), DROPPED, "#NA (unknown) is no 2.1.1 value; evse_id is optional")
        elif "evse_id" in cdr_location:
            evse["evse_id"] = cdr_location["evse_id"]
        out["evses"] = [{**evse, "status": "UNKNOWN", "connectors": [{**connector, **updated}], **updated}]
    return {**out, **updated}


def _power_type_down(value: Any, path: str, report: Report) -> Any:
    if value in ("AC_2_PHASE", "AC_2_PHASE_SPLIT"):
        report.add(path, MAPPED, f"{value} -> AC_1_PHASE: 2.1.1 has no two-phase power (under-states, never "
                                 f"over-states the power)")
        return "AC_1_PHASE"
    return value


def six_decimals(coordinates: Any, path: str, report: Report) -> Any:
    """2.1.1 GeoLocation values have exactly 6 decimals (2.2.1: 5 to 7)."""
    if not isinstance(coordinates, dict):
        return coordinates
    out = dict(coordinates)
    for key in ("latitude", "longitude"):
        value = coordinates.get(key)
        if isinstance(value, str) and _DECIMAL.match(value) and len(value.split(".")[1]) != 6:
            try:
                out[key] = str(Decimal(value).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))
            except InvalidOperation:
                continue
            report.add(path_of(path, key), MAPPED, "2.1.1 coordinates have exactly 6 decimals")
    return out


def _connector_standard_230_to_221(cdr: dict[str, Any], report: Report) -> None:
    location = cdr.get("cdr_location")
    if not isinstance(location, dict) or "connector_standard" not in location:
        return
    standard, path = location["connector_standard"], "cdr_location.connector_standard"
    if standard == "SAE_J3400":
        location["connector_standard"] = "TESLA_S"
        report.add(path, MAPPED, "SAE_J3400 -> TESLA_S: the same plug (2.2.1 has no SAE J3400; the communication "
                                 "differs)")
    elif standard not in CONNECTORS_221:
        raise report.refuse(path, f"ConnectorType {standard} does not exist in 2.2.1 and CdrLocation requires one")


# --- embedded Tariffs ----------------------------------------------------------------------------------------

def _impact_rename(mix: Any, old: str, new: str) -> Any:
    """EnvironmentalImpact ``source`` (2.1.1) was renamed ``category`` (2.2.1): a rename, no loss."""
    if isinstance(mix, dict) and isinstance(mix.get("environ_impact"), list):
        mix["environ_impact"] = [
            {(new if k == old else k): v for k, v in impact.items()} if isinstance(impact, dict) else impact
            for impact in mix["environ_impact"]
        ]
    return mix


def tariff_211_to_221(tariff: dict[str, Any], ctx: Context, path: str, report: Report) -> dict[str, Any]:
    if ctx.owner is None:
        raise report.refuse(path_of(path, "country_code"), "a 2.1.1 Tariff carries no owner and the hub gave none")
    detail = "the CDR's owner (the CPO), which 2.1.1 Tariffs do not carry"
    report.add(path_of(path, "country_code"), DERIVED, detail)
    report.add(path_of(path, "party_id"), DERIVED, detail)
    out: dict[str, Any] = {"country_code": ctx.owner[0], "party_id": ctx.owner[1], **tariff}
    if "energy_mix" in out:
        out["energy_mix"] = _impact_rename(out["energy_mix"], "source", "category")
    for i, element in enumerate(out.get("elements") or []):
        restrictions = element.get("restrictions") if isinstance(element, dict) else None
        for key in ("start_time", "end_time"):
            if isinstance(restrictions, dict) and restrictions.get(key) == "24:00":
                restrictions[key] = "00:00"
                report.add(path_of(path_of(path_of(path_of(path, "elements"), i), "restrictions"), key), MAPPED,
                           "24:00 -> 00:00: 2.2.1 times stop at 23:59, 00:00 ends the day")
    return out


def tariff_221_to_211(tariff: dict[str, Any], path: str, report: Report) -> dict[str, Any] | None:
    """2.2.1 Tariff → 2.1.1: owner, type, price limits and validity dropped; VAT dropped; elements priced for
    reservations or by current dropped (a 2.1.1 receiver would apply them to every session). ``None`` when no
    element is left."""
    out: dict[str, Any] = {}
    for key, value in tariff.items():
        if key in ("country_code", "party_id"):
            report.add(path_of(path, key), DROPPED, "2.1.1 Tariffs carry no owner")
        elif key in ("type", "min_price", "max_price", "start_date_time", "end_date_time"):
            report.add(path_of(path, key), DROPPED, f"a 2.1.1 Tariff has no {key}")
        elif key == "energy_mix":
            out[key] = _impact_rename(value, "category", "source")
        elif key == "elements":
            out[key] = _elements_down(value, path_of(path, key), report)
        else:
            out[key] = value
    if isinstance(out.get("elements"), list) and not out["elements"] and tariff.get("elements"):
        report.add(path, DROPPED, "no tariff element left that 2.1.1 can express")
        return None
    return out


def _elements_down(elements: Any, path: str, report: Report) -> Any:
    if not isinstance(elements, list):
        return elements
    out = []
    for i, element in enumerate(elements):
        here = path_of(path, i)
        restrictions = element.get("restrictions") if isinstance(element, dict) else None
        unknown = [k for k in ("reservation", "min_current", "max_current") if k in (restrictions or {})]
        if unknown:
            report.add(path_of(path_of(here, "restrictions"), unknown[0]), DROPPED,
                       f"2.1.1 has no {'/'.join(unknown)} restriction: the element is dropped (kept, it would apply "
                       f"to every session)")
            continue
        for j, component in enumerate(element.get("price_components") or []):
            if isinstance(component, dict) and "vat" in component:
                del component["vat"]
                report.add(path_of(path_of(path_of(here, "price_components"), j), "vat"), DROPPED,
                           "2.1.1 prices carry no VAT rate")
        out.append(element)
    return out


def tariff_221_to_230(tariff: dict[str, Any], path: str, report: Report) -> dict[str, Any]:
    out = dict(tariff)
    for key in ("min_price", "max_price"):
        if key in out:
            out[key] = price_limit_221_to_230(out[key])
    out["tax_included"] = "NO"
    report.add(path_of(path, "tax_included"), DEFAULTED, "NO: 2.2.1 tariff prices exclude VAT")
    return out


def tariff_230_to_221(tariff: dict[str, Any], path: str, report: Report) -> dict[str, Any] | None:
    """2.3.0 Tariff → 2.2.1 (excl. VAT prices). ``tax_included`` YES: prices divided by ``1 + vat/100``; YES
    without a VAT rate cannot be converted: the tariff is dropped from the CDR (the CDR totals stand)."""
    out = dict(tariff)
    tax = out.pop("tax_included", None)
    if "preauthorize_amount" in out:
        del out["preauthorize_amount"]
        report.add(path_of(path, "preauthorize_amount"), DROPPED, "2.2.1 Tariffs have no preauthorize amount")
    for key in ("min_price", "max_price"):
        if key in out:
            out[key] = price_limit_230_to_221(out[key])
    mix = out.get("energy_mix")
    if isinstance(mix, dict) and isinstance(mix.get("environ_impact"), list):
        kept = []
        for i, impact in enumerate(mix["environ_impact"]):
            if isinstance(impact, dict) and impact.get("category") not in IMPACT_CATEGORIES:
                report.add(path_of(path, f"energy_mix.environ_impact[{i}]"), DROPPED,
                           f"EnvironmentalImpactCategory {impact.get('category')} does not exist in 2.2.1")
            else:
                kept.append(impact)
        mix["environ_impact"] = kept
    components = [(path_of(path, f"elements[{i}].price_components[{j}]"), c)
                  for i, e in enumerate(out.get("elements") or []) if isinstance(e, dict)
                  for j, c in enumerate(e.get("price_components") or []) if isinstance(c, dict)]
    if tax == "YES":
        if any(not isinstance(c.get("vat"), int | float) or not isinstance(c.get("price"), int | float)
               for _, c in components):
            report.add(path, DROPPED, "prices include taxes of an unknown rate: no 2.2.1 price excluding VAT")
            return None
        for where, component in components:
            component["price"] = component["price"] / (1 + component["vat"] / 100)
            report.add(path_of(where, "price"), DERIVED, "price excluding VAT = price / (1 + vat/100) "
                                                         "(tax_included YES)")
    elif tax == "N/A":
        report.add(path_of(path, "tax_included"), MAPPED, "N/A: no taxes apply, which 2.2.1 says by giving no vat")
        for where, component in components:
            if "vat" in component:
                del component["vat"]
                report.add(path_of(where, "vat"), DROPPED, "tax_included N/A: no VAT applies")
    elif tax not in (None, "NO"):
        report.add(path, DROPPED, f"tax_included {tax} is no TaxIncluded value")
        return None
    return out


def _tariffs(tariffs: Any, convert: Any, path: str, report: Report) -> Any:
    if not isinstance(tariffs, list):
        return tariffs
    out = []
    for i, tariff in enumerate(tariffs):
        new = convert(tariff, path_of(path, i), report) if isinstance(tariff, dict) else tariff
        if new is not None:
            out.append(new)
    return out


# --- CDR steps -----------------------------------------------------------------------------------------------

@step(CDR, V211, V221)
def cdr_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    src = prune(data, CDR_211, "", report, V211)
    out: dict[str, Any] = owner_fields(ctx, report, "CDR")
    tariff_ids = [t.get("id") for t in src.get("tariffs") or [] if isinstance(t, dict)]
    on_connector = connector_tariff(src.get("location"))
    period_tariff = on_connector if on_connector in tariff_ids else tariff_ids[0] if len(tariff_ids) == 1 else None
    for key, value in src.items():
        if key == "stop_date_time":
            out["end_date_time"] = value
        elif key == "auth_id":
            out["cdr_token"] = cdr_token_from_auth_id(value, ctx, report)
        elif key == "location":
            out["cdr_location"] = cdr_location_up(value, key, report)
        elif key == "tariffs":
            out[key] = _tariffs(value, lambda t, p, r: tariff_211_to_221(t, ctx, p, r), key, report)
        elif key == "charging_periods":
            out[key] = periods_up(value, period_tariff, key, report,
                                  "the tariff of the CDR's connector when it is among the CDR's tariffs, else the "
                                  "CDR's only tariff")
        elif key == "total_cost":
            out[key] = number_to_price_221(value)
        else:
            out[key] = value
    return out


@step(CDR, V221, V211)
def cdr_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    src = prune(data, CDR_221, "", report, V221)
    if src.get("credit") is True:
        raise report.refuse("credit", "2.1.1 has no credit CDRs: a 2.1.1 eMSP would book it as a charge")
    drop_owner(src, report)
    periods, tariff = periods_down(src.get("charging_periods"), "charging_periods", report)
    if isinstance(periods, list) and not periods and src.get("charging_periods") and not ctx.partial:
        periods = [{"start_date_time": src.get("start_date_time"),
                    "dimensions": [{"type": "ENERGY", "volume": src.get("total_energy")}]}]
        report.add("charging_periods", DERIVED, "no period left that 2.1.1 can express (a CDR needs one): one period "
                                                "from start_date_time with ENERGY = total_energy")
    tariffs = _tariffs(src.get("tariffs"), tariff_221_to_211, "tariffs", report)
    if tariff is None and isinstance(tariffs, list) and len(tariffs) == 1:
        tariff = tariffs[0].get("id")
    out: dict[str, Any] = {}
    for key, value in src.items():
        if key in ("country_code", "party_id"):
            continue
        if key == "end_date_time":
            out["stop_date_time"] = value
        elif key == "cdr_token":
            out["auth_id"] = auth_id_from_cdr_token(value, report)
        elif key == "auth_method":
            out[key] = auth_method_down(value, key, report)
        elif key == "cdr_location":
            out["location"] = location_from_cdr_location(value, tariff, src.get("last_updated"), key, report)
        elif key == "tariffs":
            out[key] = tariffs
        elif key == "charging_periods":
            out[key] = periods
        elif key == "total_cost":
            out[key] = price_221_to_number(value, key, report)
        elif key in CDR_211:
            out[key] = value
        else:
            report.add(key, DROPPED, f"a 2.1.1 CDR has no {key}")
    return out


@step(CDR, V221, V230)
def cdr_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    out = deepcopy(data)
    for key in MONEY:
        if key in out:
            out[key] = price_221_to_230(out[key], key, report)
    if "tariffs" in out:
        out["tariffs"] = _tariffs(out["tariffs"], tariff_221_to_230, "tariffs", report)
    return out


@step(CDR, V230, V221)
def cdr_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    out = prune(data, CDR_230, "", report, V230)
    cdr_token_230_to_221(out, report)
    _connector_standard_230_to_221(out, report)
    for key in MONEY:
        if key in out:
            out[key] = price_230_to_221(out[key], key, report)
    if "tariffs" in out:
        out["tariffs"] = _tariffs(out["tariffs"], tariff_230_to_221, "tariffs", report)
    return out
