"""Admin API for hub operators (docs/architecture.md): onboard, inspect, suspend, resume and offboard platforms.

JSON in and out, ``Authorization: Bearer <HUB_ADMIN_TOKEN>``. The ``ocpi-hub`` CLI is a thin client of it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from hub import admin_agreements, operations
from hub.admin_agreements import policy_view
from hub.admin_audit import MUTATING, FailedLogins, client_address, record_action
from hub.audit import AUDIT_MODULES, OUTCOMES, AuditQuery, AuditRecord, outcome_of
from hub.connect import connect
from hub.context import HUB_KEY, Hub, hub_of
from hub.envelope import Handler
from routing import store_forward
from routing.agreements import Policy
from routing.ocpi.auth import bearer_is
from routing.ocpi.errors import InvalidParameters, NotFound, OcpiError
from routing.ocpi.headers import TO_CC, TO_PID
from routing.ocpi.ids import is_printable_id
from routing.ocpi.models import parse_json, validation_message
from routing.ocpi.pagination import parse_datetime
from routing.outbound import MAX_ALLOWED_HOSTS, normalise_host
from routing.platform import ConnectionStatus, Party, Platform, RateLimit, utcnow
from routing.wire import ForwardRequest

PARTY_ROLES = ("CPO", "EMSP", "NAP", "NSP", "OTHER", "SCSP")


class RoleIn(BaseModel):
    country_code: str = Field(pattern=r"^[A-Za-z]{2}$")
    party_id: str = Field(pattern=r"^[A-Za-z0-9]{3}$")
    role: str

    def party(self) -> Party:
        role = self.role.upper()
        if role not in PARTY_ROLES:
            raise InvalidParameters(f"role must be one of {', '.join(PARTY_ROLES)}")
        return Party(country_code=self.country_code, party_id=self.party_id, role=role)


class PlatformIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    roles: list[RoleIn] = Field(min_length=1)
    allowed_hosts: list[str] = Field(default_factory=list, max_length=MAX_ALLOWED_HOSTS)


class AllowedHostsIn(BaseModel):
    allowed_hosts: list[str] = Field(max_length=MAX_ALLOWED_HOSTS)


def _hosts(given: list[str]) -> list[str]:
    """The operator's allow-list of a platform, normalised; 400 naming the bad entry."""
    try:
        return sorted({normalise_host(h) for h in given})
    except ValueError as exc:
        raise InvalidParameters(f"allowed_hosts: {exc}") from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


FAILED_LOGINS = web.AppKey("admin_failed_logins", FailedLogins)


async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The admin token opens /admin; failed logins and every change an operator makes are audited. Called by the
    hub's middleware (hub/observe.py) for every /admin path, inside its error answers."""
    started = time.perf_counter()
    hub = hub_of(request)
    if not bearer_is(request.headers, hub.admin_token):
        request.app[FAILED_LOGINS].failed(request, started)
        return _error(401, "admin API needs 'Authorization: Bearer <HUB_ADMIN_TOKEN>'")
    if request.method not in MUTATING:
        return await handler(request)
    actor = f"admin@{client_address(request)}"
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except OcpiError as exc:
        status = exc.http_status
        raise
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        record_action(hub, request, actor, status, _acted_on(request, response), started,
                      "ok" if status < 400 else outcome_of(status, None))


def _acted_on(request: web.Request, response: web.StreamResponse | None) -> str | None:
    """The platform an admin request changed: from the URL, or the one it created."""
    if "platforms" not in request.path:
        return None
    if "id" in request.match_info and request.match_info["id"] != "connect":
        return request.match_info["id"][:64]
    if response is not None and response.status == 201 and isinstance(response, web.Response):
        try:
            created = json.loads(response.body) if isinstance(response.body, bytes) else None
        except ValueError:
            return None
        if isinstance(created, dict) and isinstance(created.get("id"), str):
            return str(created["id"])
    return None


async def _failed_logins(app: web.Application) -> AsyncIterator[None]:
    app[FAILED_LOGINS] = failed = FailedLogins(app[HUB_KEY])
    yield
    failed.close()


def platform_view(hub: Hub, p: Platform, token_a: str | None = None) -> dict[str, Any]:
    """What an operator sees of a platform: never a stored token or hash."""
    view: dict[str, Any] = {
        "id": p.id,
        "name": p.name,
        "status": "REMOVED" if p.removed else p.status.value,
        "registered": p.registered,
        "versions_url": hub.versions_url,
        "partner_versions_url": p.versions_url,
        "version": p.version,
        "parties": [
            {"country_code": x.country_code, "party_id": x.party_id, "role": x.role, "status": x.status.value,
             "business_details": x.business_details, "last_updated": x.last_updated.isoformat()}
            for x in p.parties
        ],
        "endpoints": [{"identifier": e.identifier, "role": e.role, "url": e.url} for e in p.endpoints],
        "allowed_hosts": list(p.allowed_hosts),
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
        "rate_limit": _rate_limit_view(hub, p),
        "roaming_policy": policy_view(hub, p.roaming_policy),
        "store_and_forward": sorted(p.store_forward),
    }
    if token_a is not None:
        view["token_a"] = token_a
    return view


def _rate_limit_view(hub: Hub, p: Platform) -> dict[str, Any]:
    limit = hub.rate_limits.limit_of(p)
    return {"rps": limit.rps, "burst": limit.burst, "source": "default" if p.rate_limit is None else "platform"}


async def _json(request: web.Request) -> Any:
    """The OCPI body parser, not ``request.json()``: the stdlib parser raises RecursionError on deep nesting."""
    return parse_json(await request.read())


def _platform(request: web.Request) -> Platform:
    platform = hub_of(request).registry.get(request.match_info["id"])
    if platform is None:
        # The id comes from the URL: it goes into the JSON body, never into the HTTP reason phrase.
        raise NotFound(f"no platform {request.match_info['id']}")
    return copy.deepcopy(platform)


async def _save(hub: Hub, platform: Platform) -> None:
    await operations.save(hub, platform)


async def create_platform(request: web.Request) -> web.Response:
    hub = hub_of(request)
    try:
        body = PlatformIn.model_validate(await _json(request))
    except ValidationError as exc:
        return _error(400, validation_message(exc))
    parties = [r.party() for r in body.roles]
    platform, token_a = await operations.onboard(hub, body.name, parties, _hosts(body.allowed_hosts))
    return web.json_response(platform_view(hub, platform, token_a), status=201)


PLATFORM_STATUSES = (*(str(s) for s in ConnectionStatus), "REMOVED")


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    """A filter that takes one of a known set of values: anything else is a 400 listing them, never ``[]``."""
    value = request.query.get(name)
    if not value:
        return None
    if value not in allowed:
        raise InvalidParameters(f"unknown {name} {value[:64]!r}; valid values: {', '.join(allowed)}")
    return value


def _known_platform(request: web.Request, name: str) -> str | None:
    """A platform id filter must name a platform the hub knows (removed ones included)."""
    value = request.query.get(name)
    if value and hub_of(request).registry.get(value) is None:
        raise InvalidParameters(f"unknown {name} {value[:64]!r}: no such platform (see 'ocpi-hub platforms list')")
    return value or None


async def list_platforms(request: web.Request) -> web.Response:
    """All platforms, or those with ``?status=`` (CONNECTED, OFFLINE, PLANNED, SUSPENDED, REMOVED)."""
    hub = hub_of(request)
    status = _choice(request, "status", PLATFORM_STATUSES)
    views = [platform_view(hub, p) for p in hub.registry.all()]
    return web.json_response([v for v in views if status is None or v["status"] == status])


async def show_platform(request: web.Request) -> web.Response:
    return web.json_response(platform_view(hub_of(request), _platform(request)))


async def suspend_platform(request: web.Request) -> web.Response:
    hub = hub_of(request)
    return web.json_response(platform_view(hub, await operations.suspend(hub, request.match_info["id"])))


async def resume_platform(request: web.Request) -> web.Response:
    """Back to CONNECTED when registered; otherwise PLANNED with a fresh Token A to register again."""
    hub = hub_of(request)
    platform, token_a = await operations.resume(hub, request.match_info["id"])
    return web.json_response(platform_view(hub, platform, token_a))


async def set_allowed_hosts(request: web.Request) -> web.Response:
    """Replace a platform's allow-list: hosts besides its registered ones on which it may hand over URLs
    (``response_url``, ``Link``, ``Location``). It never lifts the private-address rule (docs/security.md)."""
    hub, platform = hub_of(request), _platform(request)
    try:
        body = AllowedHostsIn.model_validate(await _json(request))
    except ValidationError as exc:
        return _error(400, validation_message(exc))
    platform.allowed_hosts = _hosts(body.allowed_hosts)
    platform.updated_at = utcnow()
    await _save(hub, platform)
    return web.json_response(platform_view(hub, platform))


async def remove_platform(request: web.Request) -> web.Response:
    """Offboard: tokens die, parties are SUSPENDED, queued messages for it are dropped."""
    hub = hub_of(request)
    return web.json_response(platform_view(hub, await operations.remove(hub, request.match_info["id"])))


async def list_queues(request: web.Request) -> web.Response:
    """Per receiver: its queue, and per module what store-and-forward holds for it and did with it."""
    hub = hub_of(request)
    stats = await hub.queue.stats()
    stored: dict[str, list[dict[str, Any]]] = {}
    if hub.delivery.ledger is not None:
        for row in await hub.delivery.ledger.stats():
            stored.setdefault(row.pop("receiver"), []).append(row)
    rows = [
        {"receiver": s.receiver, "platform": getattr(hub.registry.get(s.receiver), "name", None),
         "depth": s.depth, "inflight": s.inflight, "oldest_age_seconds": round(s.oldest_age_seconds, 3),
         "dead_letters": s.dead_letters, "dead_letter_bytes": s.dead_letter_bytes,
         "dead_letters_evicted": s.dead_letters_evicted, "store_and_forward": stored.pop(s.receiver, [])}
        for s in stats
    ]
    rows += [{"receiver": r, "platform": getattr(hub.registry.get(r), "name", None), "depth": 0, "inflight": 0,
              "oldest_age_seconds": 0.0, "dead_letters": 0, "dead_letter_bytes": 0, "dead_letters_evicted": 0,
              "store_and_forward": modules} for r, modules in sorted(stored.items())]
    return web.json_response(rows)


class StoreForwardIn(BaseModel):
    modules: list[str] = Field(max_length=len(store_forward.MODULES))


async def set_store_forward(request: web.Request) -> web.Response:
    """The modules whose messages to this platform the hub accepts for later delivery (docs/store-and-forward.md);
    an empty list turns store-and-forward off (what is queued is still delivered)."""
    hub = hub_of(request)
    platform = await operations.current(hub, request.match_info["id"])
    try:
        body = StoreForwardIn.model_validate(await _json(request))
        modules = store_forward.check_modules(body.modules)
    except ValidationError as exc:
        return _error(400, validation_message(exc))
    except ValueError as exc:
        return _error(400, str(exc))
    platform.store_forward, platform.updated_at = modules, utcnow()
    await _save(hub, platform)
    return web.json_response(platform_view(hub, platform))


async def show_deliveries(request: web.Request) -> web.Response:
    """Where the messages a sender sent under one X-Request-ID stand (store-and-forward); 404 when the hub
    accepted none under that id for later delivery (or forgot it: states are kept for the window + 1 day)."""
    hub = hub_of(request)
    request_id = request.match_info["request_id"]
    if not is_printable_id(request_id):  # the one rule for message ids (routing/ocpi/ids.py)
        return _error(400, "a request id is printable ASCII of at most 255 characters")
    states = await hub.delivery.ledger.states(request_id) if hub.delivery.ledger is not None else []
    if not states:
        return _error(404, f"no message accepted for later delivery under request id {request_id}")
    return web.json_response([dataclasses.asdict(s) for s in states])


class RateLimitIn(BaseModel):
    """Bounds as for HUB_RATE_LIMIT_RPS / HUB_RATE_LIMIT_BURST; burst defaults to two seconds' worth."""

    rps: float = Field(gt=0, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=10_000_000)

    def limit(self) -> RateLimit:
        return RateLimit(rps=self.rps, burst=self.burst or max(1, round(self.rps * 2)))


async def set_rate_limit(request: web.Request) -> web.Response:
    """The platform's own rate limit, hub-wide (every worker applies it once the save returns)."""
    hub, platform = hub_of(request), _platform(request)
    try:
        body = RateLimitIn.model_validate(await _json(request))
    except ValidationError as exc:
        return _error(400, validation_message(exc))
    platform.rate_limit, platform.updated_at = body.limit(), utcnow()
    await _save(hub, platform)
    return web.json_response(platform_view(hub, platform))


async def clear_rate_limit(request: web.Request) -> web.Response:
    """Back to the hub-wide default (HUB_RATE_LIMIT_RPS / HUB_RATE_LIMIT_BURST)."""
    hub, platform = hub_of(request), _platform(request)
    platform.rate_limit, platform.updated_at = None, utcnow()
    await _save(hub, platform)
    return web.json_response(platform_view(hub, platform))


class RoamingPolicyIn(BaseModel):
    policy: Policy | None  # None: back to HUB_ROAMING_POLICY


async def set_roaming_policy(request: web.Request) -> web.Response:
    """A platform's own roaming policy (docs/agreements.md, "Policy"), or null for the hub-wide one."""
    hub = hub_of(request)
    platform = await operations.current(hub, request.match_info["id"])
    try:
        body = RoamingPolicyIn.model_validate(await _json(request))
    except ValidationError as exc:
        return _error(400, validation_message(exc))
    platform.roaming_policy, platform.updated_at = body.policy, utcnow()
    await _save(hub, platform)
    return web.json_response(platform_view(hub, platform))


class ConnectIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    versions_url: str = Field(min_length=1, max_length=255)
    token_a: str = Field(min_length=1, max_length=64)
    # The party role of a partner that speaks only OCPI 2.1.1 (its credentials carry none); unused otherwise.
    role: str | None = Field(default=None, pattern=r"^(?i:CPO|EMSP)$")


async def connect_platform(request: web.Request) -> web.Response:
    """The hub registers with a partner that issued a Token A (hub = credentials sender)."""
    hub = hub_of(request)
    try:
        body = ConnectIn.model_validate(await _json(request))
    except ValidationError as exc:
        return _error(400, validation_message(exc))
    # The operator's URL: trusted for its host, not for its address (a typo or a pasted internal URL would
    # otherwise have the hub probe its own network).
    if (why := hub.outbound.refusal(body.versions_url)) is not None:
        return _error(400, f"versions_url refused: {why}")
    platform = await operations.handshake_errors(connect(hub, body.name, body.versions_url, body.token_a,
                                             body.role.upper() if body.role else None))
    return web.json_response(platform_view(hub, platform), status=201)


async def rotate_platform(request: web.Request) -> web.Response:
    """Credentials PUT from the hub: both tokens are replaced and the partner's endpoints re-read."""
    hub = hub_of(request)
    return web.json_response(platform_view(hub, await operations.rotate_tokens(hub, request.match_info["id"])))


def _dead_letter_view(hub: Hub, d: Any) -> dict[str, Any]:
    fwd = ForwardRequest.decode(d.payload)
    return {
        "id": d.id, "receiver": d.receiver, "platform": getattr(hub.registry.get(d.receiver), "name", None),
        "kind": d.kind, "group": d.group, "attempts": d.attempts, "reason": d.reason,
        "time": datetime.fromtimestamp(d.time, UTC).isoformat(),
        "request": {"method": fwd.method, "module": fwd.module, "interface_role": fwd.interface_role,
                    "path": fwd.tail, "query": fwd.query, "to": fwd.headers.get(TO_CC, "") + "/"
                    + fwd.headers.get(TO_PID, ""), "body_size": len(fwd.body)},
    }


def _int_param(request: web.Request, name: str, default: int, top: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except ValueError:
        raise InvalidParameters(f"{name} must be a whole number") from None
    if value < 0:
        raise InvalidParameters(f"{name} must not be negative")
    return min(value, top)


async def list_dead_letters(request: web.Request) -> web.Response:
    hub = hub_of(request)
    letters = await hub.queue.list_dead_letters(
        _int_param(request, "limit", 100, 1000), _int_param(request, "offset", 0, 10**9),
        receiver=_known_platform(request, "receiver"),
    )
    return web.json_response([_dead_letter_view(hub, d) for d in letters])


async def replay_dead_letter(request: web.Request) -> web.Response:
    """Queue a dead letter again, to be retried like a fresh push (the receiver must be CONNECTED by then)."""
    hub = hub_of(request)
    msg = await hub.queue.replay_dead_letter(request.match_info["id"])
    if msg is None:
        raise NotFound(f"no dead letter {request.match_info['id']}")
    hub.delivery.wake()
    return web.json_response({"id": msg.id, "receiver": msg.receiver, "status": "queued"})


async def delete_dead_letter(request: web.Request) -> web.Response:
    hub = hub_of(request)
    if not await hub.queue.delete_dead_letter(request.match_info["id"]):
        raise NotFound(f"no dead letter {request.match_info['id']}")
    return web.json_response({"id": request.match_info["id"], "status": "deleted"})


def _audit_view(r: AuditRecord) -> dict[str, Any]:
    view = dataclasses.asdict(r)
    view["time"] = r.time.isoformat()
    return view


async def search_audit(request: web.Request) -> web.Response:
    """Audit trail, newest first: filter by time range, platform, party (FROM or TO), module, outcome, ids."""
    hub, q = hub_of(request), request.query
    party = q.get("party")
    if party and not re.fullmatch(r"[A-Za-z]{2}[:/*-]?[A-Za-z0-9]{3}", party):
        raise InvalidParameters("party is CC:PID, e.g. NL:CPA")
    query = AuditQuery(
        since=parse_datetime(q["since"], "since") if q.get("since") else None,
        until=parse_datetime(q["until"], "until") if q.get("until") else None,
        platform_id=_known_platform(request, "platform"),
        party=f"{party[:2].upper()}:{party[-3:].upper()}" if party else None,
        module=_choice(request, "module", AUDIT_MODULES),
        outcome=_choice(request, "outcome", OUTCOMES),
        correlation_id=q.get("correlation_id") or None,
        request_id=q.get("request_id") or None,
        limit=_int_param(request, "limit", 100, 1000),
        offset=_int_param(request, "offset", 0, 10**9),
    )
    await hub.audit.flush()  # what this process handled a moment ago is part of the answer
    return web.json_response([_audit_view(r) for r in await hub.store.query_audit(query)])


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_failed_logins)
    app.router.add_get("/admin/audit", search_audit)
    app.router.add_post("/admin/platforms/connect", connect_platform)
    app.router.add_post("/admin/platforms/{id}/rotate", rotate_platform)
    app.router.add_get("/admin/dead-letters", list_dead_letters)
    app.router.add_post("/admin/dead-letters/{id}/replay", replay_dead_letter)
    app.router.add_delete("/admin/dead-letters/{id}", delete_dead_letter)
    app.router.add_post("/admin/platforms", create_platform)
    app.router.add_get("/admin/platforms", list_platforms)
    app.router.add_get("/admin/platforms/{id}", show_platform)
    app.router.add_post("/admin/platforms/{id}/suspend", suspend_platform)
    app.router.add_post("/admin/platforms/{id}/resume", resume_platform)
    app.router.add_put("/admin/platforms/{id}/allowed-hosts", set_allowed_hosts)
    app.router.add_delete("/admin/platforms/{id}", remove_platform)
    app.router.add_put("/admin/platforms/{id}/rate-limit", set_rate_limit)
    app.router.add_delete("/admin/platforms/{id}/rate-limit", clear_rate_limit)
    app.router.add_put("/admin/platforms/{id}/roaming-policy", set_roaming_policy)
    app.router.add_get("/admin/queues", list_queues)
    app.router.add_put("/admin/platforms/{id}/store-and-forward", set_store_forward)
    app.router.add_get("/admin/deliveries/{request_id}", show_deliveries)
    admin_agreements.add_routes(app)


