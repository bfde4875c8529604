"""Tariffs between OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md, "Tariffs").

Facts from the object tables of OCPI 2.1.1 mod_tariffs, 2.2.1 and 2.3.0 mod_tariffs (Tariff, TariffElement,
PriceComponent, TariffRestrictions, PriceLimit, TaxIncluded). Prices: 2.1.1 and 2.2.1 ``price`` excludes VAT;
2.3.0 ``price`` includes taxes or not according to ``tax_included``. Every step works on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Any

from routing.ocpi.translate.base import DEFAULTED, DERIVED, DROPPED, MAPPED, TARIFF, Context, Report, path_of, step
from routing.ocpi.translate.common import (
    Schema,
    drop_undocumented,
    price_limit_221_to_230,
    price_limit_230_to_221,
)
from routing.ocpi.translate.locations import SCHEMA_211, SCHEMA_221, energy_mix_down, energy_mix_up
from routing.ocpi.versions import V211, V221, V230

Json = dict[str, Any]

_RESTRICTIONS_211 = ("start_time", "end_time", "start_date", "end_date", "min_kwh", "max_kwh", "min_power",
                     "max_power", "min_duration", "max_duration", "day_of_week")
# Restrictions 2.1.1 lacks: an element kept without them would price every session, so the element is left out.
_RESTRICTIONS_NEW_221 = ("min_current", "max_current", "reservation")
_TARIFF_211: dict[str, str | None] = {
    "id": None, "currency": None, "tariff_alt_text": "DisplayText", "tariff_alt_url": None, "elements": "TariffElement",
    "energy_mix": "EnergyMix", "last_updated": None}
_ELEMENT: dict[str, str | None] = {"price_components": "PriceComponent", "restrictions": "TariffRestrictions"}

TARIFF_SCHEMA_211: Schema = {
    **SCHEMA_211,
    "Tariff": _TARIFF_211,
    "TariffElement": _ELEMENT,
    "PriceComponent": dict.fromkeys(("type", "price", "step_size")),
    "TariffRestrictions": dict.fromkeys(_RESTRICTIONS_211),
}
TARIFF_SCHEMA_221: Schema = {
    **SCHEMA_221,
    "Tariff": {**_TARIFF_211, **dict.fromkeys(("country_code", "party_id", "type", "start_date_time",
                                               "end_date_time")), "min_price": "Price", "max_price": "Price"},
    "Price": dict.fromkeys(("excl_vat", "incl_vat")),
    "TariffElement": _ELEMENT,
    "PriceComponent": dict.fromkeys(("type", "price", "vat", "step_size")),
    "TariffRestrictions": dict.fromkeys(_RESTRICTIONS_211 + _RESTRICTIONS_NEW_221),
}
TARIFF_SCHEMA_230: Schema = {
    **TARIFF_SCHEMA_221,
    "Tariff": {**TARIFF_SCHEMA_221["Tariff"], "min_price": "PriceLimit", "max_price": "PriceLimit",
               "preauthorize_amount": None, "tax_included": None},
    "PriceLimit": dict.fromkeys(("before_taxes", "after_taxes")),
}
TAX_INCLUDED = frozenset({"YES", "NO", "N/A"})


def _drop(obj: Json, key: str, path: str, report: Report, detail: str) -> None:
    if key in obj:
        del obj[key]
        report.add(path_of(path, key), DROPPED, detail)


def _components(tariff: Json, skip: frozenset[int] = frozenset()) -> list[tuple[str, Json]]:
    """(path, PriceComponent) of every price component, elements and components in order (elements ``skip``
    left out)."""
    out: list[tuple[str, Json]] = []
    elements = tariff.get("elements")
    for i, element in enumerate(elements if isinstance(elements, list) else []):
        if i in skip:
            continue
        components = element.get("price_components") if isinstance(element, dict) else None
        for j, component in enumerate(components if isinstance(components, list) else []):
            if isinstance(component, dict):
                out.append((f"elements[{i}].price_components[{j}]", component))
    return out


def _nonzero(price: Any) -> bool:
    return isinstance(price, int | float) and not isinstance(price, bool) and price != 0


# --- 2.1.1 ⇄ 2.2.1 ------------------------------------------------------------------------------------------------


@step(TARIFF, V211, V221)
def tariff_211_to_221(data: Any, ctx: Context, report: Report) -> Any:
    tariff = copy.deepcopy(data)
    drop_undocumented(tariff, TARIFF_SCHEMA_211, "Tariff", "", report, V211)
    if not isinstance(tariff, dict):
        return tariff
    for path, component in _components(tariff):
        if _nonzero(component.get("price")):
            report.add(path_of(path, "vat"), DEFAULTED, "OCPI 2.1.1 prices exclude VAT and name no rate: vat left "
                                                       "out, which OCPI 2.2.1 reads as 'no VAT applicable'")
    for i, element in enumerate(tariff.get("elements") or []):
        restrictions = element.get("restrictions") if isinstance(element, dict) else None
        for key in ("start_time", "end_time"):
            if isinstance(restrictions, dict) and restrictions.get(key) == "24:00":
                restrictions[key] = "00:00"
                report.add(f"elements[{i}].restrictions.{key}", MAPPED,
                           "24:00 is not a valid OCPI 2.2.1 time: sent as 00:00 (midnight, end of the day)")
    if "energy_mix" in tariff:
        energy_mix_up(tariff["energy_mix"])
    if ctx.partial:
        return tariff
    if ctx.owner is None:
        raise report.refuse("country_code", "OCPI 2.1.1 objects carry no owner and none is known for this message")
    report.add("country_code", DERIVED, "the owner's country code, from the URL path or the connection")
    report.add("party_id", DERIVED, "the owner's party id, from the URL path or the connection")
    return {"country_code": ctx.owner[0], "party_id": ctx.owner[1], **tariff}


@step(TARIFF, V221, V211)
def tariff_221_to_211(data: Any, ctx: Context, report: Report) -> Any:
    tariff = copy.deepcopy(data)
    drop_undocumented(tariff, TARIFF_SCHEMA_221, "Tariff", "", report, V221)
    if not isinstance(tariff, dict):
        return tariff
    for key in ("country_code", "party_id"):
        _drop(tariff, key, "", report, "OCPI 2.1.1 objects carry no owner: it travels in the URL path")
    _drop(tariff, "type", "", report, "OCPI 2.1.1 has no tariff types (one tariff per connector)")
    for key in ("min_price", "max_price"):
        _drop(tariff, key, "", report, "OCPI 2.1.1 has no price limits")
    for key in ("start_date_time", "end_date_time"):
        _drop(tariff, key, "", report, "OCPI 2.1.1 tariffs have no validity period")
    elements = tariff.get("elements")
    if isinstance(elements, list):
        kept: list[Any] = []
        dropped: set[int] = set()
        for i, element in enumerate(elements):
            restrictions = element.get("restrictions") if isinstance(element, dict) else None
            new = [k for k in _RESTRICTIONS_NEW_221 if isinstance(restrictions, dict) and k in restrictions]
            if new:
                report.add(f"elements[{i}]", DROPPED, f"restricted by {', '.join(new)}, which OCPI 2.1.1 lacks; "
                                                      "without the restriction the element would price every session")
                dropped.add(i)
                continue
            kept.append(element)
        for path, component in _components(tariff, frozenset(dropped)):
            _drop(component, "vat", path, report, "OCPI 2.1.1 prices exclude VAT and carry no rate")
        if elements and not kept:
            raise report.refuse("elements", "every element is restricted by current or reservation, which OCPI "
                                            "2.1.1 cannot express")
        tariff["elements"] = kept
    if "energy_mix" in tariff:
        energy_mix_down(tariff["energy_mix"], "energy_mix", report, V211)
    return tariff


# --- 2.2.1 ⇄ 2.3.0 ------------------------------------------------------------------------------------------------


@step(TARIFF, V221, V230)
def tariff_221_to_230(data: Any, ctx: Context, report: Report) -> Any:
    tariff = copy.deepcopy(data)  # fields 2.2.1 does not define are kept: 2.3.0 accepts them
    if not isinstance(tariff, dict):
        return tariff
    for key in ("min_price", "max_price"):
        if key in tariff:
            tariff[key] = price_limit_221_to_230(tariff[key])
    if not ctx.partial:
        tariff["tax_included"] = "NO"
        report.add("tax_included", DEFAULTED, "NO: OCPI 2.2.1 prices exclude VAT")
    return tariff


def _untax(tariff: Json, report: Report) -> None:
    """``tax_included: YES``: each price less its VAT, ``price / (1 + vat/100)``; without a rate it cannot be."""
    for path, component in _components(tariff):
        price, vat = component.get("price"), component.get("vat")
        if not _nonzero(price) or not isinstance(price, int | float):
            continue
        if not isinstance(vat, int | float) or isinstance(vat, bool):
            raise report.refuse(path_of(path, "price"), "includes taxes (tax_included YES) and no vat rate is given "
                                                        "to take them out; OCPI 2.2.1 and 2.1.1 prices exclude VAT")
        component["price"] = round(price / (1 + vat / 100), 10)
        report.add(path_of(path, "price"), DERIVED,
                   f"{price} includes {vat}% VAT (tax_included YES): sent as {component['price']} excluding VAT")


@step(TARIFF, V230, V221)
def tariff_230_to_221(data: Any, ctx: Context, report: Report) -> Any:
    tariff = copy.deepcopy(data)
    drop_undocumented(tariff, TARIFF_SCHEMA_230, "Tariff", "", report, V230)
    if not isinstance(tariff, dict):
        return tariff
    _drop(tariff, "preauthorize_amount", "", report, "new in OCPI 2.3.0 (Payments)")
    for key in ("min_price", "max_price"):
        if key in tariff:
            tariff[key] = price_limit_230_to_221(tariff[key])
    taxes = tariff.pop("tax_included", None)
    if taxes is not None and taxes not in TAX_INCLUDED:
        raise report.refuse("tax_included", f"unknown value {taxes}")
    if taxes == "YES":
        _untax(tariff, report)
        report.add("tax_included", DROPPED, "YES: prices converted to excluding VAT, as OCPI 2.2.1 states them")
    elif taxes == "N/A":
        for path, component in _components(tariff):
            _drop(component, "vat", path, report, "tax_included N/A: no taxes apply, which OCPI 2.2.1 says by "
                                                  "leaving vat out")
        report.add("tax_included", MAPPED, "N/A (no taxes apply): sent as price components without vat")
    # NO (or absent in a PATCH): 2.2.1 prices exclude VAT by definition; nothing is lost.
    return tariff
