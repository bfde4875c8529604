"""Partners: every platform with its parties, version, status, last contact, forwarding figures, queue and rate
limit; onboarding in the browser (Token A and the versions URL to copy, then the registration seen live), and the
operator's actions — suspend, resume, rotate, remove — through the same functions as the admin API."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hub import operations
from hub.admin import PARTY_ROLES
from hub.clientinfo import LIVENESS_KEY
from hub.console.render import render
from hub.console.session import hub_from, read_form
from hub.console.stats import ForwardStats, forward_stats
from hub.context import Hub
from routing.ocpi.errors import ClientError, NotFound
from routing.outbound import MAX_ALLOWED_HOSTS, normalise_host
from routing.platform import Party, Platform
from routing.queue import ReceiverStats

ROLE_LINE = re.compile(r"([A-Za-z]{2})[:/ ]([A-Za-z0-9]{3})[:/ ]([A-Za-z]{3,5})")


@dataclass
class PartnerRow:
    platform: Platform
    status: str
    last_seen: float | None
    forwards: ForwardStats
    queue: ReceiverStats | None
    rate_rps: float
    rate_burst: int
    rate_source: str


async def partner_rows(hub: Hub, request: web.Request, *, removed: bool = False) -> list[PartnerRow]:
    stats = await forward_stats(hub.metrics)
    queues = {q.receiver: q for q in await hub.queue.stats()}
    seen = await request.config_dict[LIVENESS_KEY].last_seen()
    rows = []
    for p in hub.registry.all():
        if p.removed and not removed:
            continue
        limit = hub.rate_limits.limit_of(p)
        rows.append(PartnerRow(
            platform=p, status="REMOVED" if p.removed else p.status.value, last_seen=seen.get(p.id),
            forwards=stats.get(p.id, ForwardStats()), queue=queues.get(p.id), rate_rps=limit.rps,
            rate_burst=limit.burst, rate_source="default" if p.rate_limit is None else "own"))
    return rows


def parse_roles(text: str) -> list[Party]:
    """``NL:CPA:CPO`` per line (or separated by commas): country code, party id, role."""
    parties = []
    for item in filter(None, (x.strip() for x in re.split(r"[\n,;]+", text))):
        match = ROLE_LINE.fullmatch(item)
        if match is None:
            raise ClientError(f"not a role {item[:40]!r}: write CC:PID:ROLE, e.g. NL:CPA:CPO", http_status=400)
        cc, pid, role = match.groups()
        if role.upper() not in PARTY_ROLES:
            raise ClientError(f"role must be one of {', '.join(PARTY_ROLES)}", http_status=400)
        parties.append(Party(country_code=cc.upper(), party_id=pid.upper(), role=role.upper()))
    if not parties:
        raise ClientError("name at least one role, e.g. NL:CPA:CPO", http_status=400)
    return parties


def parse_hosts(text: str) -> list[str]:
    hosts = [h for h in re.split(r"[\s,;]+", text) if h]
    if len(hosts) > MAX_ALLOWED_HOSTS:
        raise ClientError(f"at most {MAX_ALLOWED_HOSTS} allowed hosts", http_status=400)
    try:
        return sorted({normalise_host(h) for h in hosts})
    except ValueError as exc:
        raise ClientError(f"allowed hosts: {exc}", http_status=400) from None


async def page(request: web.Request) -> web.Response:
    hub = hub_from(request)
    removed = request.query.get("removed") == "1"
    return render(request, "partners.html", {"rows": await partner_rows(hub, request, removed=removed),
                                             "removed": removed, "versions_url": hub.versions_url})


async def table(request: web.Request) -> web.Response:
    hub = hub_from(request)
    removed = request.query.get("removed") == "1"
    return render(request, "_partners_table.html", {"rows": await partner_rows(hub, request, removed=removed),
                                                    "removed": removed})


def _onboarding(hub: Hub, platform: Platform, token_a: str) -> dict[str, Any]:
    return {"platform": platform, "token_a": token_a, "versions_url": hub.versions_url}


async def onboard(request: web.Request) -> web.Response:
    hub = hub_from(request)
    form = await read_form(request)
    name = str(form.get("name", "")).strip()
    if not 1 <= len(name) <= 100:
        raise ClientError("give the partner a name (at most 100 characters)", http_status=400)
    platform, token_a = await operations.onboard(hub, name, parse_roles(str(form.get("roles", ""))),
                                                 parse_hosts(str(form.get("allowed_hosts", ""))))
    return render(request, "_onboarding.html", _onboarding(hub, platform, token_a), status=201,
                  headers={"HX-Trigger": "partners-changed"})


def _platform(hub: Hub, request: web.Request) -> Platform:
    platform = hub.registry.get(request.match_info["id"])
    if platform is None:
        raise NotFound(f"no platform {request.match_info['id']}")
    return platform


async def registration(request: web.Request) -> web.Response:
    """Polled by the onboarding panel until the partner has registered (then the polling element is gone)."""
    hub = hub_from(request)
    return render(request, "_registration.html", {"platform": _platform(hub, request)})


async def _table_after(request: web.Request, onboarding: dict[str, Any] | None = None) -> web.Response:
    hub = hub_from(request)
    return render(request, "_partners_table.html", {"rows": await partner_rows(hub, request), "removed": False,
                                                    "onboarding": onboarding})


async def suspend(request: web.Request) -> web.Response:
    await operations.suspend(hub_from(request), request.match_info["id"])
    return await _table_after(request)


async def resume(request: web.Request) -> web.Response:
    hub = hub_from(request)
    platform, token_a = await operations.resume(hub, request.match_info["id"])
    return await _table_after(request, _onboarding(hub, platform, token_a) if token_a else None)


async def rotate(request: web.Request) -> web.Response:
    await operations.rotate_tokens(hub_from(request), request.match_info["id"])
    return await _table_after(request)


async def remove(request: web.Request) -> web.Response:
    await operations.remove(hub_from(request), request.match_info["id"])
    return await _table_after(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/partners", page)
    app.router.add_get("/partners/table", table)
    app.router.add_post("/partners", onboard)
    app.router.add_get("/partners/{id}/registration", registration)
    app.router.add_post("/partners/{id}/suspend", suspend)
    app.router.add_post("/partners/{id}/resume", resume)
    app.router.add_post("/partners/{id}/rotate", rotate)
    app.router.add_post("/partners/{id}/remove", remove)
