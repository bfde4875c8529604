"""Types several objects share: money (2.1.1 number, 2.2.1 Price, 2.3.0 Price with taxes), DateTime.

Money rules (docs/versions.md, "Money"): 2.1.1 amounts are numbers excluding VAT; 2.2.1 ``Price`` is
``{excl_vat, incl_vat?}``; 2.3.0 ``Price`` is ``{before_taxes, taxes[]?}`` with ``TaxAmount {name,
account_number?, percentage?, amount}``, and Tariff ``min_price``/``max_price`` are ``PriceLimit {before_taxes,
after_taxes?}``.
"""

from __future__ import annotations

from typing import Any

from routing.ocpi.translate.base import DERIVED, DROPPED, Report, path_of


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
