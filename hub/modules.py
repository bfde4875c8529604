"""The functional modules' endpoints (locations, sessions, cdrs, tariffs, tokens, commands, chargingprofiles).

A thin edge: authenticate, parse headers and body, ask ``routing.router`` for the receiver, hand the request to
the delivery engine, relay the answer with the caller's own request id (OCPI 2.2.1 Message Routing).
"""

from __future__ import annotations

import asyncio
import functools
import time
from urllib.parse import quote

from aiohttp import web

from hub import store_and_forward
from hub.access import authenticate
from hub.admission import admit, admitted
from hub.answer import Answer
from hub.bridging import UNPUBLISHED_211, Bridge, kept_tariff, no_tariff_copy
from hub.catchup import CATCHUP_EVENTS, CATCHUP_MODULES, fetch, keep_routed
from hub.context import Hub, hub_of
from hub.credentials_shapes import parties_211
from hub.envelope import Handler, envelope, ocpi_response
from hub.exchange import EXCHANGE
from hub.objects import forget_deleted, get_all, object_lock, store_push, type_211_token
from hub.usage import USAGE_EVENTS
from routing.agreements import PartyRef
from routing.bridge import (
    UNKNOWN_TOKEN,
    addressed_to_hub_211,
    check_charging_preferences,
    command_lacking,
    hub_interface_211,
    not_supported,
)
from routing.broadcast import Recipient, broadcast_role, check_broadcast, check_broadcast_path, recipients
from routing.ocpi.errors import InvalidParameters, MethodNotAllowed, NotFound, PartyNotAllowed, ReceiverNotConnected
from routing.ocpi.headers import (
    CORRELATION_ID,
    REQUEST_ID,
    ROUTING_HEADERS,
    TO_CC,
    Party,
    RoutingHeaders,
    claimed_from,
    parse_routing,
    routing_reply_headers,
)
from routing.ocpi.ids import check_path_tail
from routing.ocpi.models import parse_json
from routing.ocpi.pagination import page_headers, parse_page
from routing.ocpi.versions import V211, V221, V230, has_module
from routing.open_routing import find_receiver, learn, learns, type_behind_other, types_as_other
from routing.platform import ConnectionStatus, Platform, utcnow
from routing.queue import Message
from routing.rewrite import (
    Rewritten,
    check_response_url,
    rearm_result_callback,
    rewrite_request,
    rewrite_response_headers,
    rewrites,
)
from routing.router import (
    InboundRequest,
    Route,
    allowed_methods,
    check_client_owned,
    check_sender,
    direct_route,
    order_group,
    path_segments,
)
from routing.store_forward import defers_push, defers_result, object_path, version_of
from routing.wire import ForwardRequest, Reply, Sent

ROLE_OF_PATH = {"sender": "SENDER", "receiver": "RECEIVER"}


def handler_of(version: str, role_in_path: str) -> Handler:
    """The handler of one version's one interface role: both come from the route, not from parsing the path."""
    return admitted(functools.partial(handle, version=version, role_in_path=role_in_path,
                                      role=ROLE_OF_PATH[role_in_path]))


async def handle(request: web.Request, *, version: str, role_in_path: str, role: str) -> web.StreamResponse:
    """OCPI 2.2.1 and 2.3.0: the interface role is in the path, the addresses in the routing headers."""
    hub = hub_of(request)
    ex = request[EXCHANGE]
    module = request.match_info["module"]
    ex.module, ex.interface_role = module, role
    hub_party = hub.party
    # Errors answer TO = the requester, FROM = the hub (OCPI 2.2.1 Routing headers), from the very first check on.
    # Malformed routing headers are refused (400) only after authentication, as every other check of the request.
    routing: RoutingHeaders | None = None
    try:
        routing = parse_routing(request)
        requester = routing.from_
    except InvalidParameters as err:
        bad_routing, requester = err, claimed_from(request)
    ex.reply_headers.update(routing_reply_headers(requester, hub_party))
    caller = await authenticate(request, hub, allow_token_a=False)  # first: an anonymous probe learns nothing
    ex.ocpi_version = version
    if not has_module(version, module):
        raise NotFound(f"unknown module '{module}' in OCPI {version}")
    _check_method(request, module, role, version)
    if ex.bad_ids is not None:  # replaced for the audit and this answer; never forwarded as a stand-in
        raise InvalidParameters(ex.bad_ids)
    if routing is None:
        raise bad_routing
    tail = raw_tail(request, f"/ocpi/{version}/{role_in_path}/{module}")
    return await route(request, hub, caller.platform, version, module, role, routing, tail)


@admitted
async def handle_211(request: web.Request) -> web.StreamResponse:
    """OCPI 2.1.1: one party per connection, no routing headers. The hub plays the interface the caller's role
    talks to, FROM is the connection's party, and TO is the hub (broadcast, GET All) or found by content
    (docs/versions.md, "Routing across versions")."""
    hub = hub_of(request)
    ex = request[EXCHANGE]
    module = request.match_info["module"]
    ex.module = module
    caller = await authenticate(request, hub, allow_token_a=False)
    ex.ocpi_version = V211
    if not has_module(V211, module):
        raise NotFound(f"unknown module '{module}' in OCPI 2.1.1")
    parties = parties_211(caller.platform)
    if len(parties) != 1:
        raise InvalidParameters("an OCPI 2.1.1 connection is one party; this platform has "
                                f"{len(parties)}: use OCPI 2.2.1 or 2.3.0")
    party = parties[0]
    role = hub_interface_211(party.role, module)
    ex.interface_role = role
    _check_method(request, module, role, V211)
    tail = raw_tail(request, f"/ocpi/2.1.1/{module}")
    segs = path_segments(tail)
    sender = Party(party.country_code, party.party_id)
    to = hub.party if addressed_to_hub_211(party.role, module, role, request.method, segs) else None
    return await route(request, hub, caller.platform, V211, module, role, RoutingHeaders(to=to, from_=sender), tail)


def _check_method(request: web.Request, module: str, role: str, version: str) -> None:
    allowed = allowed_methods(module, role, version)
    if request.method not in allowed:
        request[EXCHANGE].reply_headers["Allow"] = ", ".join(sorted(allowed))
        raise MethodNotAllowed(f"{request.method} is not defined on the {module} {role} interface (OCPI {version})")


async def route(request: web.Request, hub: Hub, platform: Platform, version: str, module: str, role: str,
                routing: RoutingHeaders, tail: str) -> web.StreamResponse:
    """Everything after the edge of one version: admission, body, checks, then broadcast, GET All or forward."""
    ex = request[EXCHANGE]
    hub_party = hub.party
    ex.from_party = routing.from_.key if routing.from_ else None
    ex.to_party = routing.to.key if routing.to else None
    # Admission (503 at once when full) before the body is read: the receiver's room too when TO names it.
    ticket = admit(request, hub.admission)
    if routing.to is not None and routing.to != hub_party and (
            addressed := hub.registry.by_party(routing.to.country_code, routing.to.party_id)) is not None:
        ticket.bind(addressed[0].id)
    body = await ticket.read_body(request)
    ex.request_size = len(body)
    req = InboundRequest(
        platform=platform,
        module=module,
        interface_role=role,
        method=request.method,
        tail=tail,
        query=request.rel_url.raw_query_string,
        routing=routing,
        body=body,
        json_body=parse_json(body) if body else None,
    )
    if hub.settings.audit_bodies:
        ex.request_json = req.json_body
    if rewrites(module, role):  # as sent, in any version: refused before anything is routed or queued
        check_response_url(module, req.method, req.json_body, req.query)
    msg = Bridge(version, req)
    if version == V211 and req.json_body is not None:
        await msg.read_as_221(hub)  # the routing core reads 2.2.1: FROM/owner checks and routing keys as usual
    sender = check_sender(req)
    check_client_owned(req, sender)
    if version == V211 and module == "tokens" and role == "RECEIVER" and req.method in ("PUT", "PATCH"):
        req.query = await type_211_token(hub.store, req.segments, msg.original, req.query)
    if routing.to == hub_party:
        return await to_hub(request, hub, req, sender, hub_party, msg)
    if routing.to is None:  # open routing: the hub finds the receiver from content it has seen
        admits = hub.roaming.route_filter(platform, sender, module)
        if as_other := types_as_other(req, version):  # a token type the caller's version lacks, authorized as OTHER
            msg.retyped = await type_behind_other(req, hub.hints, as_other, admits=admits)
        found = await find_receiver(req, hub.hints, admits)
        req.routing = RoutingHeaders(to=found, from_=sender)
        ex.to_party = req.routing.to.key if req.routing.to else None
    assert req.routing.to is not None
    hub.roaming.check_direct(platform, sender, req.routing.to, module)  # roaming agreements: before anything else
    route_ = direct_route(req, hub.registry, sender, waits=lambda p: defers_push(p, module, role, req.method))
    ex.receiver_platform_id = route_.receiver.id
    ticket.bind(route_.receiver.id)  # open routing: the receiver is known only now
    target = route_.receiver.version or V221
    ex.receiver_version = target
    if routing.to is not None and (as_other := types_as_other(req, version, target)):
        msg.retyped = await type_behind_other(req, hub.hints, as_other, to=route_.to)  # looked up at that eMSP
    check_charging_preferences(module, role, req.segments, target)
    if command_lacking(module, role, req.segments, version, target):  # never sent (docs/versions.md, "Commands")
        ex.outcome = "not_supported"
        return ocpi_response(not_supported(req.segments[0].upper(), version, target),
                             headers={**ex.reply_headers, **routing_reply_headers(sender, hub_party)})
    method = req.method
    if msg.crosses_periods(target):  # append (2.2.1, 2.3.0) vs replace (2.1.1): read against the kept Session
        out_body, out_json, method = await msg.periods_for(hub, target, route_.to)
    else:
        out_body, out_json = msg.body_for(target, route_.to)
    if target == V211 and (held := await msg.with_held_location(hub, target, out_json)) is not None:
        out_body, out_json = held
    out_query = msg.query_for(target)
    rewritten = await rewrite_request(
        hub.callbacks, module=module, interface_role=role, method=req.method, body=out_body,
        json_body=out_json, query=out_query, requester=sender, requester_platform=platform.id,
        receiver=route_.to, command=req.segments[0] if req.segments else "",
    ) if rewrites(module, role) else Rewritten(out_body, out_query)
    # A 2.1.1 sender sends no routing headers: the hub sets both, so a 2.2.1 or 2.3.0 receiver knows the parties.
    headers = routing_reply_headers(route_.to, sender) if version == V211 else None
    if defers_push(route_.receiver, module, role, req.method):  # store-and-forward (docs/store-and-forward.md)
        fwd = forward_request(request, req, body=rewritten.body, query=rewritten.query, routing=headers,
                              method=method)
        fwd.receiver_version = target  # written for it: never sent once the receiver speaks another version
        if target != version:  # kept for a receiver that moves to another version before delivery
            fwd.sent = Sent(version, req.method, request.rel_url.raw_query_string, req.body)
        answer, first = await store_and_forward.accept(request, hub, req, fwd, route_.receiver.id, route_.group,
                                                       sender, as_sent=msg.original)
        if learns(req):
            await learn(req, hub.hints, route_.to)
        if first:  # a sender's repeat (same request id) is no second message: not kept nor counted again
            await accepted_by_hub(hub, req, msg, sender, route_, version)  # kept before the 1000 (catch-up)
        msg.record(hub, ex)
        return answer
    reply = await forward(request, hub, req, route_.receiver.id, route_.group, body=rewritten.body,
                          query=rewritten.query, routing=headers, method=method)
    if reply.hub_error is None and reply.status < 300:
        if req.method == "DELETE" and role == "RECEIVER" and reply.accepted:
            await forget_deleted(hub.store, module, req.segments)
        if learns(req):
            await learn(req, hub.hints, route_.to)
        if rewritten.callback_id is not None:
            await rearm_result_callback(hub.callbacks, rewritten, reply.body)
        if "Link" in reply.headers or "Location" in reply.headers:  # most answers have neither
            reply.headers = await rewrite_response_headers(
                hub.callbacks, reply.headers, module=module, interface_role=role, caller=sender,
                receiver=route_.to, receiver_platform=route_.receiver.id,
            )
        if reply.accepted:
            await accepted_by_hub(hub, req, msg, sender, route_, version)
    if target == V211 and version != V211 and (unknown := msg.unknown_token(reply, target)) is not None:
        reply, ex.ocpi_status = unknown, UNKNOWN_TOKEN  # a 2.1.1 eMSP's 404 as a 2.2.1 eMSP answers it
    elif target != version and reply.hub_error is None:
        reply.body = await msg.reply_for(hub, reply.body, target, route_.to)
    msg.record(hub, ex)
    return relay(request, reply, answered_by=route_.to)


async def accepted_by_hub(hub: Hub, req: InboundRequest, msg: Bridge, sender: Party, route_: Route,
                          version: str) -> None:
    """A routed push the receiver accepted, or the hub accepted for later delivery: counted for Insights (a dict
    update, no I/O) and, for Sessions and CDRs, kept for the receiver's catch-up (docs/catchup.md)."""
    event = (req.module, req.method, req.interface_role)
    if event in USAGE_EVENTS:
        hub.usage.note(req.module, req.json_body, sender.key, route_.to.key, utcnow().date())
    if event in CATCHUP_EVENTS:
        await keep_routed(hub, module=req.module, method=req.method, segments=req.segments, json_body=msg.as_kept(),
                          version=version, sender=sender, receiver=route_.to, receiver_platform_id=route_.receiver.id)


async def to_hub(request: web.Request, hub: Hub, req: InboundRequest, sender: Party, hub_party: Party,
                 msg: Bridge) -> web.Response:
    """TO = the hub: GET All on a SENDER interface (Sessions and CDRs: the caller's catch-up), or a broadcast push
    (OCPI 2.2.1 Broadcast Push; GET All via Hub). Objects are stored as their owner wrote them; GET All and each
    fan-out give every party its version."""
    ex = request[EXCHANGE]
    # One pair may hold several roles (CPO and EMSP under one party id): all of them count.
    roles = [p.role for p in req.platform.parties if p.key == sender.key] or ["OTHER"]
    headers = {**ex.reply_headers, **routing_reply_headers(sender, hub_party)}
    if req.method == "GET" and req.interface_role == "SENDER" and not req.segments:
        page = parse_page(dict(request.query))
        if req.module in CATCHUP_MODULES:  # what was routed to the caller (docs/catchup.md)
            items, total, losses, read = await fetch(hub, req.module, req.platform, sender, roles, page,
                                                     msg.version)
        else:
            owners = hub.roaming.visible_owners(req.platform, sender, roles, req.module)
            items, total, losses, read = await get_all(hub.store, req.module, roles, page, version=msg.version,
                                                       owners=owners)
        base = (f"{hub.settings.public_url.rstrip('/')}/ocpi/2.1.1/{req.module}" if msg.version == V211
                else f"{hub.settings.public_url.rstrip('/')}/ocpi/{msg.version}/sender/{req.module}")
        # The next page starts after every object read for this one, also those the caller's version cannot hold.
        headers.update(page_headers(base, page, read, total))
        ex.outcome = "catchup" if req.module in CATCHUP_MODULES else "get_all"
        if losses:
            ex.translation = {"reports": [{"of": ex.outcome, "to": msg.version,
                                           "losses": [loss.as_dict() for loss in losses]}]}
        return ocpi_response(items, headers=headers)
    check_broadcast(req.module, req.interface_role, req.method, msg.version)
    check_broadcast_path(req.module, req.segments)
    role = broadcast_role(roles, req.module)
    owner = PartyRef(sender.country_code, sender.party_id, role)
    targets = recipients(hub.registry.all(), req.platform, role, req.module,
                         admits=hub.roaming.audience_filter(req.platform, owner, req.module))
    group = order_group(req, hub_party, sender)
    # A replayed or retried push older than what a receiver already got is dropped (docs/store-and-forward.md):
    # judged on the last_updated the sender gave, not on the receive time the hub fills in for a 2.1.1 PATCH.
    pushed_version = version_of(req.method, msg.original)
    path = object_path(req.module, req.segments, req.query) if pushed_version is not None and req.segments else ""
    # OCPI 2.1.1 has a Tariff PATCH, 2.2.1 and 2.3.0 have none: their parties get the patched Tariff as a PUT,
    # made from the hub's copy once the PATCH is merged into it (docs/versions.md, "Tariffs").
    as_put = req.module == "tariffs" and req.method == "PATCH"
    messages = []
    bodies: dict[str, bytes | None] = {}  # per receiver version, translated once
    refused: dict[str, str] = {}
    if any(t.platform.version == V211 for t in targets) and await msg.unpublished_below(hub):
        # 2.1.1 parties never got this Location: nor do they get its parts and changes
        bodies[V211], refused[V211] = None, UNPUBLISHED_211
    later: list[Recipient] = []
    # What the owner sent, kept with every fan-out message written for another version: a receiver that moves to
    # another version before delivery gets it from this (docs/store-and-forward.md)
    sent = Sent(msg.version, req.method, request.rel_url.raw_query_string, req.body)

    def fan_out(target: Recipient, body: bytes, method: str) -> None:
        to = Party(target.party.country_code, target.party.party_id)
        # A TokenType the receiver's version has (docs/versions.md, "Tokens"); a 2.1.1 sender's query goes to a
        # 2.1.1 receiver as sent (a token type the hub added is for 2.2.1 and 2.3.0 only).
        target_version = target.platform.version or V221
        query = (request.rel_url.raw_query_string if target_version == V211 and msg.version == V211
                 else msg.query_for(target_version))
        fwd_headers = {**routing_reply_headers(to, hub_party), CORRELATION_ID: ex.correlation_id}
        if body:  # a broadcast DELETE has none
            fwd_headers["Content-Type"] = "application/json"
        fwd = ForwardRequest(
            method=method, module=req.module, interface_role=req.interface_role, tail=req.tail,
            query=query, body=body, headers=fwd_headers,
            receiver_revision=target.platform.revision, receiver_version=target_version,
            # judged again at delivery: a push queued before its agreement ended is dropped (docs/agreements.md)
            subject=f"{owner.key}:{role}", recipient=f"{target.party.key}:{target.party.role}",
            object_path=path, object_version=pushed_version or 0.0,
            sent=sent if target_version != msg.version else None,
        )
        messages.append(Message(receiver=target.platform.id, group=group or "", payload=fwd.encode(),
                                kind="broadcast"))

    for target in targets:
        version = target.platform.version or V221
        if as_put and version != V211:
            later.append(target)
            continue
        if version not in bodies:
            try:
                bodies[version] = msg.body_for(version, None)[0]
            except InvalidParameters as exc:  # this version cannot hold the object: its parties do not get it
                bodies[version], refused[version] = None, exc.message
        body = bodies[version]
        if body is not None:
            fan_out(target, body, req.method)
    # Stored durably before the 1000: the hub's copy (GET All) and every fan-out message in Redis. One push of
    # an object at a time: concurrent EVSE pushes would otherwise overwrite each other's stored Location, and
    # the receivers could get the pushes in another order than the one the stored copy reflects.
    async with object_lock(hub.redis, hub.settings.key_prefix, req.module, req.segments, req.json_body, req.query):
        if req.method == "DELETE":  # a 2.1.1 CPO's Tariff DELETE: GET All forgets it too
            await forget_deleted(hub.store, req.module, req.segments)
        else:
            await store_push(hub.store, req.module, req.method, req.segments, msg.as_kept(), req.query,
                             version=msg.version)
        if later:
            puts = await patched_tariff(hub, req, msg, {t.platform.version or V221 for t in later}, refused)
            for target in later:
                if (put := puts.get(target.platform.version or V221)) is not None:
                    fan_out(target, put, "PUT")
        # All receivers at once: the enqueues share one Redis pipeline instead of a round trip each.
        await asyncio.gather(*(hub.queue.enqueue(m) for m in messages))
    for version, why in refused.items():
        msg.reports.append({"of": "broadcast", "from": msg.version, "to": version, "not_sent": why})
    await learn(req, hub.hints, None)
    if messages:
        hub.delivery.wake()
    ex.outcome = "broadcast"
    msg.record(hub, ex)
    note = "".join(f"; not sent to OCPI {v} parties: {why}" for v, why in refused.items())
    return ocpi_response(message=f"accepted for {len(messages)} receivers{note}", headers=headers)


async def patched_tariff(hub: Hub, req: InboundRequest, msg: Bridge, versions: set[str],
                         refused: dict[str, str]) -> dict[str, bytes]:
    """The Tariff a 2.1.1 PATCH was just merged into, whole, per version in ``versions`` (those without Tariff
    PATCH); a version that cannot get it is noted in ``refused``. Without a copy there is nothing whole to send."""
    kept = await kept_tariff(hub, req)
    out: dict[str, bytes] = {}
    for version in sorted(versions):
        if kept is None:
            refused[version] = no_tariff_copy(version, req.segments[2])
            continue
        # The PATCH's last_updated (the time the hub received it when it had none): the Tariff changed then.
        stamp = msg.read_last_updated()
        whole = {**kept.data, "last_updated": stamp} if isinstance(stamp, str) else kept.data
        try:
            out[version] = msg.whole_for(version, whole, kept.ocpi_version)
        except InvalidParameters as exc:
            refused[version] = exc.message
    return out


def raw_tail(request: web.Request, prefix: str) -> str:
    """The path below the module base as sent: decoding it would let an encoded '/' or '?' inside an id change
    the path's shape at the receiver (ids are CiString, any printable ASCII). Ids a receiver could read as
    another path (dot segments, encoded '/') are refused here, before anything is forwarded or stored."""
    raw = request.rel_url.raw_path
    if raw == prefix or raw.startswith(prefix + "/"):
        tail = raw[len(prefix):].strip("/")
    else:  # the prefix itself was percent-encoded
        tail = quote(request.match_info.get("tail", ""), safe="/").strip("/")
    check_path_tail(tail)
    return tail


def forward_request(request: web.Request, req: InboundRequest, *, body: bytes, query: str, url: str = "",
                    routing: dict[str, str] | None = None, method: str | None = None) -> ForwardRequest:
    """What the receiver gets: routing headers as the caller sent them (TO added for open routing), or
    ``routing`` when the hub sets them itself; the caller's correlation id. ``method``: the caller's, unless the
    hub sends the request as another (a 2.1.1 Session PATCH that must become a PUT, docs/versions.md)."""
    if routing is not None:
        headers = dict(routing)
    else:
        got = request.headers.get
        headers = {h: v for h in ROUTING_HEADERS if (v := got(h)) is not None}
        if TO_CC not in headers:  # open routing: the receiver learns who it is meant for
            headers.update(routing_reply_headers(req.routing.to, None))
    headers[CORRELATION_ID] = request[EXCHANGE].correlation_id
    if body:
        headers["Content-Type"] = "application/json"
    return ForwardRequest(
        method=method or req.method, module=req.module, interface_role=req.interface_role, tail=req.tail,
        query=query, headers=headers, body=body, url=url,
    )


async def forward(
    request: web.Request, hub: Hub, req: InboundRequest, receiver_id: str, group: str | None, *,
    body: bytes, query: str, url: str = "", routing: dict[str, str] | None = None, method: str | None = None,
) -> Reply:
    """Through the receiver's queue, waiting for its answer."""
    fwd = forward_request(request, req, body=body, query=query, url=url, routing=routing, method=method)
    msg = Message(
        receiver=receiver_id,
        group=group or "",
        payload=fwd.encode(),
        kind="direct",
        deadline=time.time() + hub.settings.forward_timeout,
    )
    return await hub.delivery.send_direct(msg, fwd)


def relay(request: web.Request, reply: Reply, answered_by: Party | None = None) -> web.Response:
    """The receiver's real answer, or the hub error standing in for it, with the caller's own ids.

    ``answered_by``: the receiving party, FROM of the answer even when the receiver omits routing headers.
    """
    ex = request[EXCHANGE]
    # a hub error standing in for an answer the receiver did send (not OCPI, an invalid status): what it sent
    ex.receiver_http_status = reply.status if reply.hub_error is None else reply.receiver_status
    ex.receiver_ocpi_status = reply.ocpi_status
    ex.latency_receiver_ms = reply.receiver_ms
    headers = dict(ex.reply_headers)
    if reply.hub_error is not None:
        ex.ocpi_status = reply.hub_error
        return Answer(
            body=envelope(status_code=reply.hub_error, message=reply.message),
            status=reply.status, content_type="application/json", headers=headers,
        )
    if answered_by is not None:
        headers.update(routing_reply_headers(None, answered_by))
    headers.update(reply.headers)  # receiver's routing headers: TO = requester, FROM = receiver
    headers[REQUEST_ID] = ex.request_id
    ex.outcome = "forwarded"
    return Answer(body=reply.body, status=reply.status, content_type="application/json", headers=headers)


@admitted
async def handle_callback(request: web.Request) -> web.StreamResponse:
    """A hub URL handed out in place of a partner URL (docs/ocpi-decisions.md, Callback URLs): only its party may use
    it, until it expires."""
    hub = hub_of(request)
    ex = request[EXCHANGE]
    hub_party = hub.party
    ex.reply_headers.update(routing_reply_headers(claimed_from(request), hub_party))
    caller = await authenticate(request, hub, allow_token_a=False)
    if ex.bad_ids is not None:
        raise InvalidParameters(ex.bad_ids)
    check_path_tail(request.rel_url.raw_path.rpartition("/")[2])  # the id as sent: {id} holds no '/'
    cb = await hub.callbacks.resolve(request.match_info["id"])
    if cb is None:
        raise NotFound("this hub URL is unknown or has expired")
    ex.module, ex.interface_role = cb.module, cb.interface_role
    if request.method != cb.method:
        ex.reply_headers["Allow"] = cb.method
        raise MethodNotAllowed(f"this hub URL accepts {cb.method} only")
    routing = parse_routing(request)
    issued_to = party_of(cb.issued_to)
    if (routing.from_ is not None and routing.from_ != issued_to) or caller.platform.party(
            issued_to.country_code, issued_to.party_id) is None:
        raise PartyNotAllowed("this hub URL was issued to another party")
    # Answers go TO = the party the URL was issued to, also when the caller sent no FROM (OCPI 2.2.1 Routing headers).
    ex.reply_headers.update(routing_reply_headers(issued_to, None))
    to = party_of(cb.to_party)
    ex.from_party, ex.to_party, ex.receiver_platform_id = issued_to.key, to.key, cb.target_platform
    ticket = admit(request, hub.admission)
    ticket.bind(cb.target_platform)
    body = await ticket.read_body(request)
    ex.request_size = len(body)
    req = InboundRequest(platform=caller.platform, module=cb.module, interface_role=cb.interface_role,
                         method=request.method, tail="", query="", routing=RoutingHeaders(to=to, from_=issued_to),
                         body=body, json_body=parse_json(body) if body else None)
    receiver = hub.registry.get(cb.target_platform)
    party = receiver.party(to.country_code, to.party_id) if receiver is not None else None
    deferred = receiver is not None and defers_result(receiver, cb.module)
    # A receiver that opted in for results waits out an OFFLINE spell: its result is kept for it.
    reachable = (ConnectionStatus.CONNECTED, ConnectionStatus.OFFLINE) if deferred else (ConnectionStatus.CONNECTED,)
    if receiver is None or receiver.removed or receiver.status not in reachable or party is None \
            or party.status not in reachable:
        raise ReceiverNotConnected(f"party {to.country_code}/{to.party_id} is not connected")
    # Each side in its own version: a 2.1.1 CPO's CommandResponse reaches a 2.2.1 eMSP as a CommandResult.
    version, target = caller.platform.version or V221, receiver.version or V221
    ex.ocpi_version, ex.receiver_version = version, target
    msg = Bridge(version, req)
    if version == V211 and req.json_body is not None and target != V211:
        await msg.read_as_221(hub)
    out_body = msg.body_for(target, to)[0] if target != version else body
    # TO = the party the URL belongs to, FROM = the party it was issued to, whatever the caller put there.
    if deferred:
        fwd = forward_request(request, req, body=out_body, query="", url=cb.url,
                              routing=routing_reply_headers(to, issued_to))
        fwd.receiver_version = target
        if target != version:  # kept for a receiver that moves to another version before delivery
            fwd.sent = Sent(version, req.method, "", body)
        answer, _ = await store_and_forward.accept(request, hub, req, fwd, receiver.id, None, issued_to)
        msg.record(hub, ex)
        return answer
    reply = await forward(request, hub, req, receiver.id, None, body=out_body, query="", url=cb.url,
                          routing=routing_reply_headers(to, issued_to))
    if reply.hub_error is None and reply.status < 300:
        reply.headers = await rewrite_response_headers(
            hub.callbacks, reply.headers, module=cb.module, interface_role=cb.interface_role, caller=issued_to,
            receiver=to, receiver_platform=receiver.id,
        )
    if target != version and reply.hub_error is None:
        reply.body = await msg.reply_for(hub, reply.body, target, to)
    msg.record(hub, ex)
    return relay(request, reply, answered_by=to)


def party_of(key: str) -> Party:
    cc, _, pid = key.partition(":")
    return Party(cc, pid)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/ocpi/2.2.1/callbacks/{id}", handle_callback)
    # Literal version and role: aiohttp indexes routes by their literal prefix, so a routed request is matched
    # against the two routes of its own prefix instead of every /ocpi route (a regular expression each).
    for version in (V221, V230):
        for role in ROLE_OF_PATH:
            handler = handler_of(version, role)
            app.router.add_route("*", f"/ocpi/{version}/{role}/{{module}}", handler)
            # [\s\S]*, not .*: a tail holding an encoded CR or LF reaches the handler, which refuses it (400/2001)
            app.router.add_route("*", f"/ocpi/{version}/{role}/{{module}}/{{tail:[\\s\\S]*}}", handler)
    # OCPI 2.1.1: one URL per module (no interface role in it); credentials are routed before these.
    app.router.add_route("*", "/ocpi/2.1.1/{module}", handle_211)
    app.router.add_route("*", "/ocpi/2.1.1/{module}/{tail:[\\s\\S]*}", handle_211)
