"""Who can reach whom: every party × every party for one module, and why a pair cannot talk — no agreement (the
roaming policy, docs/agreements.md), a suspended, offline, unregistered or removed side, a module the receiver's
OCPI version lacks or for which it offers no endpoint — plus the roaming agreements, edited in place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from hub.admin_agreements import STATUSES, AgreementIn, build
from hub.admin_audit import AUDIT_PARTIES
from hub.console.render import render
from hub.console.session import hub_from, read_form
from hub.context import Hub
from routing.agreements import FUNCTIONAL_MODULES, Agreement, AgreementStatus, PartyRef, timestamp, utcnow
from routing.ocpi.errors import ClientError, NotFound
from routing.ocpi.models import validation_message
from routing.ocpi.versions import V221, has_module
from routing.platform import ConnectionStatus, Party, Platform

MODULES: Final = tuple(sorted(FUNCTIONAL_MODULES))
DEFAULT_MODULE: Final = "sessions"
MAX_PARTIES: Final = 60  # a matrix beyond this is unreadable: the page asks for a filter instead


@dataclass(frozen=True)
class Cell:
    allowed: bool
    reasons: tuple[str, ...]  # why not; or, when allowed, what allows it (agreement id, open policy)


def _side_problem(platform: Platform, party: Party, who: str) -> str | None:
    """Why a side cannot take part in an exchange now, from its live status."""
    name = f"{party.country_code}:{party.party_id}"
    if platform.removed:
        return f"{who} {name} was removed"
    status = ConnectionStatus.SUSPENDED if ConnectionStatus.SUSPENDED in (platform.status, party.status) \
        else party.status if platform.status == ConnectionStatus.CONNECTED else platform.status
    if status == ConnectionStatus.SUSPENDED:
        return f"{who} {name} is suspended"
    if status == ConnectionStatus.OFFLINE:
        return f"{who} {name} is offline"
    if status == ConnectionStatus.PLANNED:
        return f"{who} {name} has not registered"
    return None


def _endpoint_problem(platform: Platform, party: Party, module: str) -> str | None:
    version = platform.version or V221
    if not platform.registered:
        return None  # said already: not registered
    if not has_module(version, module):
        return f"OCPI {version} of {party.country_code}:{party.party_id} has no {module}"
    if not any(e.identifier == module for e in platform.endpoints):
        return f"missing endpoint: {party.country_code}:{party.party_id} offers no {module} endpoint"
    return None


def cell(hub: Hub, sender: tuple[Platform, Party], receiver: tuple[Platform, Party], module: str) -> Cell:
    (fp, fparty), (tp, tparty) = sender, receiver
    reasons = [why for why in (_side_problem(fp, fparty, "sender"), _side_problem(tp, tparty, "receiver"),
                               _endpoint_problem(tp, tparty, module)) if why]
    # As for a direct request: routing headers carry no role, so any agreement between the two pairs counts.
    verdict = hub.roaming.verdict(PartyRef(fparty.country_code, fparty.party_id),
                                  PartyRef(tparty.country_code, tparty.party_id), module, from_platform=fp,
                                  to_platform=tp)
    if not verdict.allowed:
        reasons.insert(0, verdict.reason)
    return Cell(not reasons, tuple(reasons) if reasons else (verdict.reason,))


def parties(hub: Hub, party_filter: str = "") -> list[tuple[Platform, Party]]:
    wanted = party_filter.upper().replace("/", ":").strip()
    return [(p, party) for p in hub.registry.all() if not p.removed for party in p.parties
            if not wanted or wanted in f"{party.country_code}:{party.party_id}:{party.role}"]


def _module(request: web.Request) -> str:
    module = request.query.get("module") or DEFAULT_MODULE
    if module not in FUNCTIONAL_MODULES:
        raise ClientError(f"unknown module {module[:32]!r}", http_status=400)
    return module


def matrix_context(hub: Hub, module: str, party_filter: str) -> dict[str, Any]:
    rows = parties(hub, party_filter)
    too_many = len(rows) > MAX_PARTIES
    rows = rows[:MAX_PARTIES]
    grid = [[None if a[1].key == b[1].key else cell(hub, a, b, module) for b in rows] for a in rows]
    return {"module": module, "modules": MODULES, "rows": rows, "grid": grid, "too_many": too_many,
            "party_filter": party_filter, "policy": hub.roaming.policy.value,
            "overrides": [p for p in hub.registry.all() if p.roaming_policy is not None and not p.removed]}


def _agreements_context(hub: Hub, notice: str = "") -> dict[str, Any]:
    now = utcnow()
    return {"agreements": [(a, a.in_force(now)) for a in hub.agreements.all()], "modules": MODULES,
            "statuses": STATUSES, "notice": notice, "timestamp": timestamp}


async def page(request: web.Request) -> web.Response:
    hub = hub_from(request)
    return render(request, "reach.html", {**matrix_context(hub, _module(request), request.query.get("party", "")),
                                          **_agreements_context(hub)})


async def matrix(request: web.Request) -> web.Response:
    hub = hub_from(request)
    return render(request, "_reach_matrix.html", matrix_context(hub, _module(request),
                                                                request.query.get("party", "")))


def _form_agreement(form: Any, existing: Agreement | None) -> Agreement:
    modules = [m for m in str(form.get("modules", "")).replace(",", " ").split() if m]
    try:
        body = AgreementIn(id=existing.id if existing else (str(form.get("id", "")).strip() or None),
                           party_a=str(form.get("party_a", "")), party_b=str(form.get("party_b", "")),
                           modules=modules, valid_from=str(form.get("valid_from", "")).strip() or None,
                           valid_until=str(form.get("valid_until", "")).strip() or None,
                           status=str(form.get("status", "active")), reference=str(form.get("reference", "")))
        return build(body, existing)
    except ValidationError as exc:
        raise ClientError(validation_message(exc), http_status=400) from None
    except ValueError as exc:
        raise ClientError(str(exc), http_status=400) from None


async def _after(request: web.Request, notice: str) -> web.Response:
    """The agreements list again, and the matrix refreshed (it listens for ``reach-changed``)."""
    return render(request, "_agreements.html", _agreements_context(hub_from(request), notice),
                  headers={"HX-Trigger": "reach-changed"})


def _agreement(hub: Hub, request: web.Request) -> Agreement:
    agreement = hub.agreements.get(request.match_info["agreement"])
    if agreement is None:
        raise NotFound(f"no agreement {request.match_info['agreement'][:64]}")
    request[AUDIT_PARTIES] = (agreement.party_a.key, agreement.party_b.key)
    return agreement


async def create(request: web.Request) -> web.Response:
    hub = hub_from(request)
    agreement = _form_agreement(await read_form(request), None)
    if hub.agreements.get(agreement.id) is not None:
        raise ClientError(f"agreement {agreement.id} exists already", http_status=409)
    request[AUDIT_PARTIES] = (agreement.party_a.key, agreement.party_b.key)
    await hub.agreement_keeper.save(agreement)
    return await _after(request, f"Agreement {agreement.id} added.")


async def edit(request: web.Request) -> web.Response:
    hub = hub_from(request)
    existing = _agreement(hub, request)
    agreement = _form_agreement(await read_form(request), existing)
    request[AUDIT_PARTIES] = (agreement.party_a.key, agreement.party_b.key)
    await hub.agreement_keeper.save(agreement)
    return await _after(request, f"Agreement {agreement.id} saved.")


async def _set_status(request: web.Request, status: AgreementStatus) -> web.Response:
    hub = hub_from(request)
    agreement = _agreement(hub, request)
    await hub.agreement_keeper.save(dataclasses.replace(agreement, status=status, updated_at=utcnow()))
    return await _after(request, f"Agreement {agreement.id} {status.value}.")


async def suspend(request: web.Request) -> web.Response:
    return await _set_status(request, AgreementStatus.SUSPENDED)


async def resume(request: web.Request) -> web.Response:
    return await _set_status(request, AgreementStatus.ACTIVE)


async def delete(request: web.Request) -> web.Response:
    hub = hub_from(request)
    agreement = _agreement(hub, request)
    await hub.agreement_keeper.delete(agreement.id)
    return await _after(request, f"Agreement {agreement.id} deleted.")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/reach", page)
    app.router.add_get("/reach/matrix", matrix)
    app.router.add_post("/reach/agreements", create)
    app.router.add_post("/reach/agreements/{agreement}", edit)
    app.router.add_post("/reach/agreements/{agreement}/suspend", suspend)
    app.router.add_post("/reach/agreements/{agreement}/resume", resume)
    app.router.add_post("/reach/agreements/{agreement}/delete", delete)
