"""Insights: per partner pair and day, the sessions and CDRs the hub routed, their energy and revenue by
currency (from the usage totals, hub/usage.py), as a table, a chart and a CSV download."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

from aiohttp import web

from hub.console.render import render
from hub.console.session import hub_from
from hub.context import Hub
from hub.usage import UsageRow
from routing.ocpi.errors import ClientError
from routing.platform import utcnow

DEFAULT_DAYS: Final = 30
MAX_DAYS: Final = 366
CHART_SERIES: Final = 6  # partner pairs drawn; the rest are summed as "others"


@dataclass
class PairDay:
    """One line of the table: a day and a partner pair (CPO → eMSP)."""

    day: str
    from_party: str
    to_party: str
    sessions: int = 0
    cdrs: int = 0
    kwh: float = 0.0  # from CDRs: a session's kWh keeps growing until its CDR settles it
    revenue: dict[str, float] = field(default_factory=dict)  # currency → total cost excl. VAT, from CDRs


def window(query: Any) -> tuple[date, date]:
    today = utcnow().date()
    try:
        until = date.fromisoformat(query.get("until") or today.isoformat())
        since = date.fromisoformat(query.get("since") or (until - timedelta(days=DEFAULT_DAYS - 1)).isoformat())
    except ValueError:
        raise ClientError("since and until are dates, YYYY-MM-DD", http_status=400) from None
    if since > until:
        raise ClientError("since is after until", http_status=400)
    if (until - since).days >= MAX_DAYS:
        raise ClientError(f"at most {MAX_DAYS} days at once", http_status=400)
    return since, until


def pair_days(rows: list[UsageRow]) -> list[PairDay]:
    table: dict[tuple[str, str, str], PairDay] = {}
    for r in rows:
        line = table.setdefault((r.day, r.from_party, r.to_party), PairDay(r.day, r.from_party, r.to_party))
        if r.module == "sessions":
            line.sessions += r.count
        else:
            line.cdrs += r.count
            line.kwh += r.kwh
            if r.currency or r.cost:
                line.revenue[r.currency or "?"] = line.revenue.get(r.currency or "?", 0.0) + r.cost
    return sorted(table.values(), key=lambda x: (x.day, x.from_party, x.to_party), reverse=True)


def chart(lines: list[PairDay], since: date, until: date) -> dict[str, Any]:
    """uPlot's data: x = days (unix seconds), one kWh series per busiest pair, the rest summed."""
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    index = {d.isoformat(): i for i, d in enumerate(days)}
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        totals[f"{line.from_party} → {line.to_party}"] += line.kwh
    top = [pair for pair, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:CHART_SERIES]]
    series: dict[str, list[float]] = {pair: [0.0] * len(days) for pair in top}
    others = [0.0] * len(days)
    for line in lines:
        pair = f"{line.from_party} → {line.to_party}"
        target = series.get(pair, others)
        target[index[line.day]] += round(line.kwh, 3)
    if len(totals) > len(top):
        series["others"] = others
    return {"x": [(d - date(1970, 1, 1)).days * 86400 for d in days],
            "series": [{"label": k, "values": v} for k, v in series.items()]}


async def _usage(hub: Hub, since: date, until: date) -> list[UsageRow]:
    await hub.usage.flush()  # this process's latest increments are part of the answer
    return await hub.store.query_usage(since.isoformat(), until.isoformat())


async def page(request: web.Request) -> web.Response:
    hub = hub_from(request)
    since, until = window(request.query)
    lines = pair_days(await _usage(hub, since, until))
    totals = PairDay("", "", "")
    for line in lines:
        totals.sessions += line.sessions
        totals.cdrs += line.cdrs
        totals.kwh += line.kwh
        for currency, amount in line.revenue.items():
            totals.revenue[currency] = totals.revenue.get(currency, 0.0) + amount
    return render(request, "insights.html", {"lines": lines, "totals": totals, "since": since.isoformat(),
                                             "until": until.isoformat(), "chart": chart(lines, since, until)})


async def download(request: web.Request) -> web.Response:
    """The raw per-day totals as CSV: one row per day, pair, module and currency."""
    hub = hub_from(request)
    since, until = window(request.query)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["day", "from_party", "to_party", "module", "currency", "count", "kwh", "cost_excl_vat"])
    for r in await _usage(hub, since, until):
        writer.writerow([r.day, r.from_party, r.to_party, r.module, r.currency, r.count, f"{r.kwh:.3f}",
                         f"{r.cost:.2f}"])
    return web.Response(text=out.getvalue(), content_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="ocpi-hub-usage-{since}-{until}.csv"',
        "Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/insights", page)
    app.router.add_get("/insights.csv", download)
