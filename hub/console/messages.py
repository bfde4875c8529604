"""Messages: audit search, a message's whole trail (every record sharing its correlation id), the queues per
receiver and the dead letters with replay and delete."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiohttp import web

from hub.audit import AUDIT_MODULES, OUTCOMES, AuditQuery, AuditRecord
from hub.console.render import render
from hub.console.session import hub_from
from hub.context import Hub
from routing.ocpi.errors import ClientError, NotFound
from routing.ocpi.headers import CORRELATION_ID, TO_CC, TO_PID
from routing.platform import utcnow
from routing.queue import DeadLetter
from routing.wire import ForwardRequest

PAGE: Final = 100
OBJECT_SCAN: Final = 1000  # records of the other filters looked through for an object id
TRAIL_MAX: Final = 1000
DEAD_LETTER_SCAN: Final = 1000
PARTY: Final = re.compile(r"([A-Za-z]{2})[:/*-]?([A-Za-z0-9]{3})")
OBJECT_ID: Final = re.compile(r"[\x21-\x7e]{1,255}")


def _when(value: str, name: str) -> datetime | None:
    """A ``datetime-local`` field (no zone: read as UTC) or an ISO 8601 time."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ClientError(f"{name}: not a date and time", http_status=400) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class Search:
    correlation_id: str = ""
    request_id: str = ""
    party: str = ""
    module: str = ""
    outcome: str = ""
    object_id: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, query: Any) -> Search:
        return cls(**{name: str(query.get(name, "")).strip()[:255] for name in cls.__dataclass_fields__})

    @property
    def empty(self) -> bool:
        return not any(vars(self).values())

    def audit_query(self, limit: int) -> AuditQuery:
        party = None
        if self.party:
            match = PARTY.fullmatch(self.party)
            if match is None:
                raise ClientError("party is CC:PID, e.g. NL:CPA", http_status=400)
            party = f"{match.group(1).upper()}:{match.group(2).upper()}"
        if self.module and self.module not in AUDIT_MODULES:
            raise ClientError(f"unknown module {self.module!r}", http_status=400)
        if self.outcome and self.outcome not in OUTCOMES:
            raise ClientError(f"unknown outcome {self.outcome!r}", http_status=400)
        if self.object_id and not OBJECT_ID.fullmatch(self.object_id):
            raise ClientError("object id: printable ASCII without spaces", http_status=400)
        return AuditQuery(since=_when(self.since, "from"), until=_when(self.until, "until"), party=party,
                          module=self.module or None, outcome=self.outcome or None,
                          correlation_id=self.correlation_id or None, request_id=self.request_id or None,
                          limit=limit)


def names_of(hub: Hub) -> dict[str, str]:
    """Platform id → name, for tables that show ids."""
    return {p.id: p.name for p in hub.registry.all()}


def _holds_object(record: AuditRecord, object_id: str) -> bool:
    """The object id is a segment of the request path (paths are stored as received; token uids are masked)."""
    return object_id in record.path.split("?")[0].split("/")


async def search(hub: Hub, s: Search) -> tuple[list[AuditRecord], bool]:
    """Newest first; with an object id, among the newest OBJECT_SCAN records of the other filters (the second
    value says whether that scan was cut)."""
    await hub.audit.flush()  # what this process handled a moment ago is part of the answer
    if not s.object_id:
        return await hub.store.query_audit(s.audit_query(PAGE)), False
    scanned = await hub.store.query_audit(s.audit_query(OBJECT_SCAN))
    return [r for r in scanned if _holds_object(r, s.object_id)][:PAGE], len(scanned) == OBJECT_SCAN


async def page(request: web.Request) -> web.Response:
    hub = hub_from(request)
    s = Search.of(request.query)
    records, cut = ([], False) if s.empty else await search(hub, s)
    if s.empty:  # the latest traffic, as a start
        records = await hub.store.query_audit(AuditQuery(since=utcnow() - timedelta(days=1), limit=25))
    return render(request, "messages.html", {
        "s": s, "records": records, "cut": cut, "names": names_of(hub), "modules": AUDIT_MODULES,
        "outcomes": OUTCOMES, "queues": await hub.queue.stats(), "stored": await _stored(hub),
        "letters": await _letters(hub, None), "receiver": "",
    })


async def results(request: web.Request) -> web.Response:
    hub = hub_from(request)
    s = Search.of(request.query)
    records, cut = await search(hub, s)
    return render(request, "_search_results.html", {"records": records, "cut": cut, "names": names_of(hub),
                                                    "s": s})


@dataclass
class Letter:
    letter: DeadLetter
    request: ForwardRequest
    correlation_id: str
    to: str


def _letter(d: DeadLetter) -> Letter:
    fwd = ForwardRequest.decode(d.payload)
    return Letter(d, fwd, fwd.headers.get(CORRELATION_ID, ""),
                  f"{fwd.headers.get(TO_CC, '')}:{fwd.headers.get(TO_PID, '')}".strip(":"))


async def _letters(hub: Hub, receiver: str | None) -> list[Letter]:
    return [_letter(d) for d in await hub.queue.list_dead_letters(PAGE, receiver=receiver)]


async def trail(request: web.Request) -> web.Response:
    """Every record with this correlation id, oldest first, and any dead letter that carries it."""
    hub = hub_from(request)
    correlation_id = request.query.get("id", "").strip()
    if not correlation_id or len(correlation_id) > 255:
        raise ClientError("which correlation id? (?id=...)", http_status=400)
    await hub.audit.flush()
    records = await hub.store.query_audit(AuditQuery(correlation_id=correlation_id, limit=TRAIL_MAX))
    records.reverse()
    letters = [x for x in map(_letter, await hub.queue.list_dead_letters(DEAD_LETTER_SCAN))
               if x.correlation_id == correlation_id]
    return render(request, "trail.html", {"correlation_id": correlation_id, "records": records,
                                          "letters": letters, "names": names_of(hub)})


async def queues(request: web.Request) -> web.Response:
    hub = hub_from(request)
    return render(request, "_queues.html", {"queues": await hub.queue.stats(), "stored": await _stored(hub),
                                            "names": names_of(hub)})


async def _stored(hub: Hub) -> list[dict[str, Any]]:
    """Store-and-forward per receiver and module (docs/store-and-forward.md)."""
    return await hub.delivery.ledger.stats() if hub.delivery.ledger is not None else []


async def dead_letters(request: web.Request) -> web.Response:
    hub = hub_from(request)
    receiver = request.query.get("receiver") or None
    if receiver is not None and hub.registry.get(receiver) is None:
        raise ClientError("unknown receiver platform", http_status=400)
    return render(request, "_dead_letters.html", {"letters": await _letters(hub, receiver),
                                                  "names": names_of(hub), "receiver": receiver or ""})


async def replay(request: web.Request) -> web.Response:
    """Queue a dead letter again, to be retried like a fresh push (as ``POST /admin/dead-letters/{id}/replay``)."""
    hub = hub_from(request)
    msg = await hub.queue.replay_dead_letter(request.match_info["letter"])
    if msg is None:
        raise NotFound(f"no dead letter {request.match_info['letter']}")
    hub.delivery.wake()
    return await _letters_after(request, f"Dead letter {msg.id} queued again for {msg.receiver}.")


async def delete(request: web.Request) -> web.Response:
    hub = hub_from(request)
    if not await hub.queue.delete_dead_letter(request.match_info["letter"]):
        raise NotFound(f"no dead letter {request.match_info['letter']}")
    return await _letters_after(request, f"Dead letter {request.match_info['letter']} deleted.")


async def _letters_after(request: web.Request, notice: str) -> web.Response:
    hub = hub_from(request)
    return render(request, "_dead_letters.html", {"letters": await _letters(hub, None), "names": names_of(hub),
                                                  "receiver": "", "notice": notice})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/messages", page)
    app.router.add_get("/messages/search", results)
    app.router.add_get("/messages/trail", trail)
    app.router.add_get("/messages/queues", queues)
    app.router.add_get("/messages/dead-letters", dead_letters)
    app.router.add_post("/messages/dead-letters/{letter}/replay", replay)
    app.router.add_post("/messages/dead-letters/{letter}/delete", delete)
