"""Pagination of lists the hub serves itself: date_from/date_to/offset/limit in, Link/X-Total-Count/X-Limit out
(OCPI 2.2.1 Pagination)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from routing.ocpi.errors import InvalidParameters

MAX_LIMIT = 100
# Offsets past any real list are clamped: the page is empty either way, and the store's integers are 64-bit.
MAX_OFFSET = 2**31 - 1


@dataclass(frozen=True)
class Page:
    date_from: datetime | None
    date_to: datetime | None
    offset: int
    limit: int  # already capped at MAX_LIMIT
    raw: dict[str, str]  # the filters as given, repeated in the Link


def parse_datetime(value: str, name: str) -> datetime:
    """OCPI DateTime, leniently: 'Z', no zone (= UTC) or an explicit offset are accepted.

    The one parser of dates a partner or operator sends: a value that is no date, or one whose offset moves it
    outside the years 1-9999 in UTC (``0001-01-01T00:00:00+05:00``), is 400 / 2001, never an OverflowError.
    """
    text = value.strip().replace(" ", "+")  # a '+' in an unencoded query arrives as a space
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidParameters(f"{name} is not an RFC 3339 DateTime in the years 1-9999: {value[:64]!r}") from None


def _int(query: dict[str, str], name: str, default: int) -> int:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        raise InvalidParameters(f"{name} must be a whole number") from None
    if value < 0:
        raise InvalidParameters(f"{name} must not be negative")
    return min(value, MAX_OFFSET)


def parse_page(query: dict[str, str]) -> Page:
    date_from = parse_datetime(query["date_from"], "date_from") if query.get("date_from") else None
    date_to = parse_datetime(query["date_to"], "date_to") if query.get("date_to") else None
    limit = min(_int(query, "limit", MAX_LIMIT), MAX_LIMIT)
    raw = {k: query[k] for k in ("date_from", "date_to") if query.get(k)}
    return Page(date_from, date_to, _int(query, "offset", 0), limit, raw)


def page_headers(base_url: str, page: Page, returned: int, total: int) -> dict[str, str]:
    """``returned``: how many objects of the list the page covers, ``total``: the list's size. Both count objects
    the caller's version cannot hold: ``offset`` indexes that list, and clients do offset arithmetic with
    ``X-Total-Count`` (docs/versions.md, "Routing across versions")."""
    headers = {"X-Total-Count": str(total), "X-Limit": str(MAX_LIMIT)}
    next_offset = page.offset + returned
    if returned and next_offset < total:
        params = {**page.raw, "offset": str(next_offset), "limit": str(page.limit)}
        headers["Link"] = f'<{base_url}?{urlencode(params)}>; rel="next"'
    return headers
