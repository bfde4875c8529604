"""Admin API of roaming agreements (docs/agreements.md): list, add, show, suspend, resume, remove, CSV export and
import, and the check the routing path makes. Changes go through ``hub.agreement_keeper`` (every worker applies
them before the answer) and are audited like every admin change (hub/admin_audit.py), with the agreement's
two parties as the record's FROM and TO so ``ocpi-hub audit --party`` finds them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
from datetime import datetime
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, field_validator

from hub.admin_audit import AUDIT_PARTIES
from hub.context import Hub, hub_of
from routing.agreements import (
    AGREEMENT_ID,
    Agreement,
    AgreementStatus,
    PartyRef,
    Policy,
    normalise_modules,
    timestamp,
    utcnow,
)
from routing.ocpi.errors import InvalidParameters, NotFound, OcpiError
from routing.ocpi.models import parse_json, validation_message
from routing.ocpi.pagination import parse_datetime

CSV_COLUMNS: Final = ("id", "party_a", "party_b", "modules", "valid_from", "valid_until", "status", "reference")
CSV_MODULE_SEPARATOR: Final = ";"
STATUSES: Final = tuple(s.value for s in AgreementStatus)


def new_id() -> str:
    return "A" + uuid.uuid4().hex[:11].upper()


def agreement_view(a: Agreement, now: datetime | None = None) -> dict[str, Any]:
    def side(p: PartyRef) -> dict[str, Any]:
        return {"country_code": p.country_code, "party_id": p.party_id, "role": p.role}

    return {
        "id": a.id, "party_a": side(a.party_a), "party_b": side(a.party_b), "modules": list(a.modules),
        "valid_from": timestamp(a.valid_from), "valid_until": timestamp(a.valid_until) if a.valid_until else None,
        "status": a.status.value, "reference": a.reference, "in_force": a.in_force(now or utcnow()),
        "created_at": a.created_at.isoformat(), "updated_at": a.updated_at.isoformat(),
    }


def _party(value: Any, name: str) -> PartyRef:
    """``"NL:CPA:CPO"`` or ``{"country_code": "NL", "party_id": "CPA", "role": "CPO"}``."""
    if isinstance(value, dict):
        value = ":".join(str(value.get(k, "")) for k in ("country_code", "party_id", "role"))
    if not isinstance(value, str):
        raise ValueError(f"{name} is CC:PID:ROLE or an object with country_code, party_id and role")
    try:
        return PartyRef.parse(value, role_required=True)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _when(value: str | None, name: str) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        return parse_datetime(value, name)
    except OcpiError as exc:
        raise ValueError(exc.message) from None


class AgreementIn(BaseModel):
    id: str | None = Field(None, max_length=64)
    party_a: Any
    party_b: Any
    modules: list[str] = Field(default_factory=list, max_length=64)
    valid_from: str | None = None  # default: now
    valid_until: str | None = None
    status: str = "active"
    reference: str = ""

    @field_validator("modules", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def build(body: AgreementIn, existing: Agreement | None = None) -> Agreement:
    """A valid agreement from the operator's input, or ValueError naming the field; keeps an existing one's
    created_at (an import that updates)."""
    if body.status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    now = utcnow()
    agreement = Agreement(
        id=body.id or new_id(), party_a=_party(body.party_a, "party_a"), party_b=_party(body.party_b, "party_b"),
        modules=normalise_modules(body.modules), valid_from=_when(body.valid_from, "valid_from") or now,
        valid_until=_when(body.valid_until, "valid_until"), status=AgreementStatus(body.status),
        reference=body.reference, created_at=existing.created_at if existing else now, updated_at=now,
    )
    agreement.validate()
    return agreement


def _audited(request: web.Request, agreement: Agreement) -> None:
    request[AUDIT_PARTIES] = (agreement.party_a.key, agreement.party_b.key)


def _find(request: web.Request) -> Agreement:
    agreement = hub_of(request).agreements.get(request.match_info["id"])
    if agreement is None:
        raise NotFound(f"no agreement {request.match_info['id'][:64]}")
    return agreement


async def list_agreements(request: web.Request) -> web.Response:
    """All agreements, oldest first; ``?party=CC:PID`` those it is a side of, ``?status=`` active or suspended."""
    hub, q = hub_of(request), request.query
    found = hub.agreements.all()
    if q.get("party"):
        try:
            key = PartyRef.parse(q["party"]).key
        except ValueError as exc:
            raise InvalidParameters(f"party: {exc}") from None
        found = [a for a in found if key in (a.party_a.key, a.party_b.key)]
    if q.get("status"):
        if q["status"] not in STATUSES:
            raise InvalidParameters(f"unknown status {q['status'][:32]!r}; valid values: {', '.join(STATUSES)}")
        found = [a for a in found if a.status.value == q["status"]]
    now = utcnow()
    return web.json_response([agreement_view(a, now) for a in found])


async def create_agreement(request: web.Request) -> web.Response:
    hub = hub_of(request)
    try:
        body = AgreementIn.model_validate(parse_json(await request.read()))
        agreement = build(body)
    except ValidationError as exc:
        raise InvalidParameters(validation_message(exc)) from None
    except ValueError as exc:
        raise InvalidParameters(str(exc)) from None
    if hub.agreements.get(agreement.id) is not None:
        raise InvalidParameters(f"agreement {agreement.id} exists already", http_status=409)
    _audited(request, agreement)
    await hub.agreement_keeper.save(agreement)
    return web.json_response(agreement_view(agreement), status=201)


async def show_agreement(request: web.Request) -> web.Response:
    return web.json_response(agreement_view(_find(request)))


async def _set_status(request: web.Request, status: AgreementStatus) -> web.Response:
    hub, agreement = hub_of(request), _find(request)
    _audited(request, agreement)
    changed = dataclasses.replace(agreement, status=status, updated_at=utcnow())
    await hub.agreement_keeper.save(changed)
    return web.json_response(agreement_view(changed))


async def suspend_agreement(request: web.Request) -> web.Response:
    """Stops what the agreement allows at once on every worker, queued pushes included; ``resume`` undoes it."""
    return await _set_status(request, AgreementStatus.SUSPENDED)


async def resume_agreement(request: web.Request) -> web.Response:
    return await _set_status(request, AgreementStatus.ACTIVE)


async def delete_agreement(request: web.Request) -> web.Response:
    hub, agreement = hub_of(request), _find(request)
    _audited(request, agreement)
    await hub.agreement_keeper.delete(agreement.id)
    return web.json_response({**agreement_view(agreement), "status": "removed", "in_force": False})


def to_csv(agreements: list[Agreement]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in agreements:
        writer.writerow([a.id, f"{a.party_a.key}:{a.party_a.role}", f"{a.party_b.key}:{a.party_b.role}",
                         CSV_MODULE_SEPARATOR.join(a.modules), timestamp(a.valid_from),
                         timestamp(a.valid_until) if a.valid_until else "", a.status.value, a.reference])
    return out.getvalue()


async def export_agreements(request: web.Request) -> web.Response:
    """Every agreement as CSV (docs/agreements.md, "CSV"): what ``import`` reads back."""
    return web.Response(text=to_csv(hub_of(request).agreements.all()), content_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="agreements.csv"'})


def from_csv(text: str, hub: Hub) -> tuple[list[Agreement], list[str]]:
    """Every row validated; the agreements, or the errors (``row N: ...``: N is the line of the file the row
    ends on, the header being row 1; blank lines are skipped but counted)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in ("party_a", "party_b") if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        problems = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
        return [], [f"row 1 (header): {'; '.join(problems)}; columns are {','.join(CSV_COLUMNS)}"]
    reader.fieldnames = header
    agreements: list[Agreement] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for row in reader:
        row_number = reader.line_num
        if None in row:  # more cells than columns
            errors.append(f"row {row_number}: {len(header) + len(row[None])} cells, the header has {len(header)}")
            continue
        cells = {k: (v or "").strip() for k, v in row.items()}
        if not any(cells.values()):
            continue  # a blank line
        try:
            if cells.get("id") and not AGREEMENT_ID.fullmatch(cells["id"]):
                raise ValueError("id must be 1-64 letters, digits, '.', '_' or '-'")
            body = AgreementIn(id=cells.get("id") or None, party_a=cells["party_a"], party_b=cells["party_b"],
                               modules=[m for m in cells.get("modules", "").split(CSV_MODULE_SEPARATOR)],
                               valid_from=cells.get("valid_from") or None, valid_until=cells.get("valid_until") or None,
                               status=cells.get("status") or "active", reference=cells.get("reference", ""))
            agreement = build(body, hub.agreements.get(cells["id"]) if cells.get("id") else None)
        except ValidationError as exc:
            errors.append(f"row {row_number}: {validation_message(exc)}")
            continue
        except ValueError as exc:
            errors.append(f"row {row_number}: {exc}")
            continue
        if agreement.id in seen:
            errors.append(f"row {row_number}: id {agreement.id} is also on row {seen[agreement.id]}")
            continue
        seen[agreement.id] = row_number
        agreements.append(agreement)
    return agreements, errors


async def import_agreements(request: web.Request) -> web.Response:
    """CSV in the export's columns: rows with a known id replace that agreement, others are added. Every row
    is checked first; one bad row and nothing is imported (400 listing every bad row by number)."""
    hub = hub_of(request)
    raw = await request.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return web.json_response({"error": "the CSV is not UTF-8", "errors": []}, status=400)
    agreements, errors = from_csv(text, hub)
    if errors:
        return web.json_response({"error": f"nothing imported: {len(errors)} bad row(s)", "errors": errors},
                                 status=400)
    if not agreements:
        return web.json_response({"error": "nothing imported: the CSV has no rows", "errors": []}, status=400)
    updated = sum(1 for a in agreements if hub.agreements.get(a.id) is not None)
    await hub.agreement_keeper.save_all(agreements)
    return web.json_response({"imported": len(agreements), "created": len(agreements) - updated,
                              "updated": updated, "ids": [a.id for a in agreements]})


async def check_agreement(request: web.Request) -> web.Response:
    """``?from=CC:PID[:ROLE]&to=CC:PID[:ROLE]&module=M``: what the routing path would decide now, and why."""
    hub, q = hub_of(request), request.query
    try:
        sender = PartyRef.parse(q.get("from", ""))
        receiver = PartyRef.parse(q.get("to", ""))
        module = normalise_modules([q.get("module", "")])[0] if q.get("module") else ""
    except ValueError as exc:
        raise InvalidParameters(str(exc)) from None
    if not module or module == "*":
        raise InvalidParameters("module is one functional module, e.g. cdrs")
    verdict = hub.roaming.verdict(sender, receiver, module)
    return web.json_response({"allowed": verdict.allowed, "reason": verdict.reason, "policy": hub.roaming.policy.value,
                              "from": str(sender), "to": str(receiver), "module": module})


def policy_view(hub: Hub, policy: Policy | None) -> dict[str, Any]:
    return {"policy": (policy or hub.roaming.policy).value, "source": "default" if policy is None else "platform"}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/agreements/export", export_agreements)
    app.router.add_post("/admin/agreements/import", import_agreements)
    app.router.add_get("/admin/agreements/check", check_agreement)
    app.router.add_get("/admin/agreements", list_agreements)
    app.router.add_post("/admin/agreements", create_agreement)
    app.router.add_get("/admin/agreements/{id}", show_agreement)
    app.router.add_delete("/admin/agreements/{id}", delete_agreement)
    app.router.add_post("/admin/agreements/{id}/suspend", suspend_agreement)
    app.router.add_post("/admin/agreements/{id}/resume", resume_agreement)
