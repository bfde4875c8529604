"""Types several objects share: money (2.1.1 number, 2.2.1 Price, 2.3.0 Price with taxes), DateTime.

Money rules (docs/versions.md, "Money"): 2.1.1 amounts are numbers excluding VAT; 2.2.1 ``Price`` is
``{excl_vat, incl_vat?}``; 2.3.0 ``Price`` is ``{before_taxes, taxes[]?}`` with ``TaxAmount {name,
account_number?, percentage?, amount}``, and Tariff ``min_price``/``max_price`` are ``PriceLimit {before_taxes,
after_taxes?}``.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from routing.ocpi.translate.base import DERIVED, DROPPED, MAPPED, Report, path_of


def number_to_price_221(value: Any) -> dict[str, Any]:
    """2.1.1 number (excl. VAT) → 2.2.1 Price: ``incl_vat`` unknown, so omitted (a rename, no loss)."""
    return {"excl_vat": value}


def price_221_to_number(price: Any, path: str, report: Report) -> Any:
    """2.2.1 Price → 2.1.1 number: ``excl_vat``; ``incl_vat`` has no 2.1.1 counterpart."""
    if not isinstance(price, dict):
        return price
    if price.get("incl_vat") is not None:
        report.add(path_of(path, "incl_vat"), DROPPED, "2.1.1 amounts are a number excluding VAT")
    return price.get("excl_vat")


def price_221_to_230(price: Any, path: str, report: Report) -> Any:
    """``before_taxes = excl_vat``; ``incl_vat`` present: one tax ``VAT`` of ``incl_vat - excl_vat``."""
    if not isinstance(price, dict):
        return price
    out: dict[str, Any] = {"before_taxes": price.get("excl_vat")}
    incl = price.get("incl_vat")
    if incl is not None and isinstance(out["before_taxes"], int | float):
        out["taxes"] = [{"name": "VAT", "amount": round(incl - out["before_taxes"], 4)}]
        report.add(path_of(path, "incl_vat"), DERIVED,
                   "taxes = one tax named VAT of incl_vat - excl_vat (2.2.1 has no tax names or percentages)")
    return out


def price_230_to_221(price: Any, path: str, report: Report) -> Any:
    """``excl_vat = before_taxes``; taxes present: ``incl_vat = before_taxes + Σ amount``, their split lost."""
    if not isinstance(price, dict):
        return price
    before = price.get("before_taxes")
    out: dict[str, Any] = {"excl_vat": before}
    taxes = price.get("taxes")
    if isinstance(taxes, list) and taxes:
        amounts: list[Any] = [t.get("amount") for t in taxes if isinstance(t, dict)]
        if isinstance(before, int | float) and all(isinstance(a, int | float) for a in amounts):
            out["incl_vat"] = round(before + float(sum(amounts)), 4)
        report.add(path_of(path, "taxes"), DERIVED,
                   "incl_vat = before_taxes + the sum of the tax amounts; tax names, account numbers, percentages "
                   "and the split per tax are dropped")
    return out


def price_230_to_number(price: Any, path: str, report: Report) -> Any:
    """2.3.0 Price → 2.1.1 number (via 2.2.1 in ``translate``; kept for direct use): ``before_taxes``."""
    return price_221_to_number(price_230_to_221(price, path, report), path, report)


def price_limit_221_to_230(price: Any) -> Any:
    """Tariff ``min_price``/``max_price``: a rename, ``excl_vat → before_taxes``, ``incl_vat → after_taxes``."""
    if not isinstance(price, dict):
        return price
    out = {"before_taxes": price.get("excl_vat")}
    if "incl_vat" in price:
        out["after_taxes"] = price["incl_vat"]
    return out


def price_limit_230_to_221(price: Any) -> Any:
    if not isinstance(price, dict):
        return price
    out = {"excl_vat": price.get("before_taxes")}
    if "after_taxes" in price:
        out["incl_vat"] = price["after_taxes"]
    return out


# Object shapes (Locations, Tariffs): the fields a version documents for each class, and closed enums.
# ``Schema`` maps a class name to its fields; a field's value names the class of its value (an object, or a list
# of objects) or is None (a scalar, a list of scalars, or an object the step drops as a whole).
Schema = dict[str, dict[str, str | None]]


def drop_undocumented(value: Any, schema: Schema, cls: str, path: str, report: Report, version: str) -> None:
    """Removes, in place (callers pass their own copy), every field OCPI ``version`` does not define for ``cls``,
    at any depth, and reports it: older versions do not accept fields they do not define."""
    fields = schema.get(cls)
    if fields is None:
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            drop_undocumented(item, schema, cls, path_of(path, i), report, version)
        return
    if not isinstance(value, dict):
        return
    for key in list(value):
        sub = path_of(path, key)
        if key not in fields:
            del value[key]
            report.add(sub, DROPPED, f"not a field of the OCPI {version} {cls} object")
        elif fields[key] is not None:
            drop_undocumented(value[key], schema, str(fields[key]), sub, report, version)


def keep_known(values: Any, allowed: frozenset[str], path: str, report: Report, target: str, enum: str,
               nearest: dict[str, str] | None = None) -> Any:
    """A list of enum values with each value ``target`` lacks mapped to its ``nearest`` counterpart or dropped,
    reported; a value mapped onto one already listed is dropped (no duplicates)."""
    if not isinstance(values, list):
        return values
    out: list[Any] = []
    for i, value in enumerate(values):
        sub = path_of(path, i)
        if value in allowed:
            if value in out:
                report.add(sub, DROPPED, f"{enum} {value} is listed already (a value mapped onto it, or twice)")
            else:
                out.append(value)
        elif nearest and value in nearest:
            mapped = nearest[value]
            if mapped in out:
                report.add(sub, DROPPED, f"{enum} {value} has no OCPI {target} counterpart; its nearest, {mapped}, "
                                         "is already listed")
            else:
                out.append(mapped)
                report.add(sub, MAPPED, f"{enum} {value} has no OCPI {target} counterpart: sent as {mapped}")
        else:
            report.add(sub, DROPPED, f"{enum} {value} has no OCPI {target} counterpart")
    return out


# Documented fields: an object's field names, each mapped to the fields of its sub-object (or list of
# sub-objects), or None for a value taken as a whole. ``prune`` keeps these and reports the rest.
Fields = dict[str, "Fields | None"]

DISPLAY_TEXT: Fields = {"language": None, "text": None}
GEO_LOCATION: Fields = {"latitude": None, "longitude": None}
PRICE_221: Fields = {"excl_vat": None, "incl_vat": None}
PRICE_230: Fields = {"before_taxes": None,
                     "taxes": {"name": None, "account_number": None, "percentage": None, "amount": None}}
PRICE_LIMIT_230: Fields = {"before_taxes": None, "after_taxes": None}


def prune(obj: Any, fields: Fields, path: str, report: Report, version: str) -> Any:
    """A deep copy of ``obj`` holding only the fields OCPI ``version`` documents for it; every other field is
    dropped and reported. 2.3.0 tolerates undocumented fields, older versions do not promise to: a step towards
    2.2.1 or 2.1.1 prunes with the fields of the version it reads."""
    if isinstance(obj, list):
        return [prune(item, fields, path_of(path, i), report, version) for i, item in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key not in fields:
            report.add(path_of(path, key), DROPPED, f"not a documented field of OCPI {version}")
            continue
        sub = fields[key]
        out[key] = deepcopy(value) if sub is None else prune(value, sub, path_of(path, key), report, version)
    return out


# TokenType (OCPI mod_tokens): 2.2.1 adds AD_HOC_USER and APP_USER, 2.3.0 adds EMAID and makes it an OpenEnum.
TOKEN_TYPES_211 = frozenset({"OTHER", "RFID"})
TOKEN_TYPES_221 = TOKEN_TYPES_211 | {"AD_HOC_USER", "APP_USER"}


def token_type_to(value: Any, known: frozenset[str], version: str, path: str, report: Report) -> Any:
    """A TokenType the target lacks (2.3.0 EMAID, an unknown OpenEnum value, 2.2.1 APP_USER/AD_HOC_USER towards
    2.1.1) is sent as OTHER, the type every version keeps for "any other token"; the token's uid stays."""
    if value is None or value in known:
        return value
    report.add(path, MAPPED, f"TokenType {value} does not exist in OCPI {version}: sent as OTHER")
    return "OTHER"
