"""The functional modules' endpoints (locations, sessions, cdrs, tariffs, tokens, commands, chargingprofiles).

A thin edge: authenticate, parse headers and body, ask ``routing.router`` for the receiver, hand the request to
the delivery engine, relay the answer with the caller's own request id (OCPI 2.2.1 Message Routing).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

from aiohttp import web

from hub.access import authenticate
from hub.admission import admit, admitted
from hub.context import Hub, hub_of
from hub.envelope import envelope, ocpi_response
from hub.exchange import EXCHANGE
from hub.objects import forget_deleted, get_all, object_lock, store_push
from routing.broadcast import broadcast_role, check_broadcast, recipients
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
from routing.ocpi.models import MODULES, parse_json
from routing.ocpi.pagination import page_headers, parse_page
from routing.open_routing import find_receiver, learn
from routing.platform import ConnectionStatus
from routing.queue import Message
from routing.rewrite import rearm_result_callback, rewrite_request, rewrite_response_headers
from routing.router import (
    InboundRequest,
    allowed_methods,
    check_client_owned,
    check_sender,
    direct_route,
    order_group,
)
from routing.wire import ForwardRequest, Reply

ROLE_OF_PATH = {"sender": "SENDER", "receiver": "RECEIVER"}


@admitted
async def handle(request: web.Request) -> web.StreamResponse:
    hub = hub_of(request)
    ex = request[EXCHANGE]
    role = ROLE_OF_PATH[request.match_info["role"]]
    module = request.match_info["module"]
    ex.module, ex.interface_role = module, role
    hub_party = hub.party
    # Errors answer TO = the requester, FROM = the hub (OCPI 2.2.1 Routing headers), from the very first check on.
    # Malformed
    # routing headers are refused (400) only after authentication, as every other check of the request.
    routing: RoutingHeaders | None = None
    try:
        routing = parse_routing(request)
        requester = routing.from_
    except InvalidParameters as err:
        bad_routing, requester = err, claimed_from(request)
    ex.reply_headers.update(routing_reply_headers(requester, hub_party))
    caller = await authenticate(request, hub, allow_token_a=False)  # first: an anonymous probe learns nothing
    if module not in MODULES:
        raise NotFound(f"unknown module '{module}'")
    allowed = allowed_methods(module, role)
    if request.method not in allowed:
        ex.reply_headers["Allow"] = ", ".join(sorted(allowed))
        raise MethodNotAllowed(f"{request.method} is not defined on the {module} {role} interface (OCPI 2.2.1)")
    if ex.bad_ids is not None:  # replaced for the audit and this answer; never forwarded as a stand-in
        raise InvalidParameters(ex.bad_ids)
    if routing is None:
        raise bad_routing
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
        platform=caller.platform,
        module=module,
        interface_role=role,
        method=request.method,
        tail=raw_tail(request),
        query=request.rel_url.raw_query_string,
        routing=routing,
        body=body,
        json_body=parse_json(body) if body else None,
    )
    if hub.settings.audit_bodies:
        ex.request_json = req.json_body
    sender = check_sender(req)
    check_client_owned(req, sender)
    if routing.to == hub_party:
        return await to_hub(request, hub, req, sender, hub_party)
    # open routing: the hub finds the receiver from content it has seen (OCPI 2.2.1 Open Routing Request)
    if routing.to is None:
        req.routing = RoutingHeaders(to=await find_receiver(req, hub.hints), from_=sender)
        ex.to_party = req.routing.to.key if req.routing.to else None
    route = direct_route(req, hub.registry, sender)
    ex.receiver_platform_id = route.receiver.id
    ticket.bind(route.receiver.id)  # open routing: the receiver is known only now
    rewritten = await rewrite_request(
        hub.callbacks, module=module, interface_role=role, method=req.method, body=req.body,
        json_body=req.json_body, query=req.query, requester=sender, requester_platform=caller.platform.id,
        receiver=route.to,
    )
    reply = await forward(request, hub, req, route.receiver.id, route.group, body=rewritten.body,
                          query=rewritten.query)
    if reply.hub_error is None and reply.status < 300:
        if req.method == "DELETE" and role == "RECEIVER" and reply.accepted:
            await forget_deleted(hub.store, module, req.segments)
        await learn(req, hub.hints, route.to)
        await rearm_result_callback(hub.callbacks, rewritten.callback_id, reply.body)
        if "Link" in reply.headers or "Location" in reply.headers:  # most answers have neither
            reply.headers = await rewrite_response_headers(
                hub.callbacks, reply.headers, module=module, interface_role=role, caller=sender,
                receiver=route.to, receiver_platform=route.receiver.id,
            )
    return relay(request, reply, answered_by=route.to)


async def to_hub(request: web.Request, hub: Hub, req: InboundRequest, sender: Party, hub_party: Party) -> web.Response:
    """TO = the hub: GET All on a SENDER interface, or a broadcast push (OCPI 2.2.1 Broadcast Push; GET All via Hub)."""
    ex = request[EXCHANGE]
    # One pair may hold several roles (CPO and EMSP under one party id): all of them count.
    roles = [p.role for p in req.platform.parties if p.key == sender.key] or ["OTHER"]
    headers = {**ex.reply_headers, **routing_reply_headers(sender, hub_party)}
    if req.method == "GET" and req.interface_role == "SENDER" and not req.segments:
        page = parse_page(dict(request.query))
        items, total = await get_all(hub.store, req.module, roles, page)
        base = f"{hub.base_url}/sender/{req.module}"
        headers.update(page_headers(base, page, len(items), total))
        ex.outcome = "get_all"
        return ocpi_response(items, headers=headers)
    check_broadcast(req.module, req.interface_role, req.method)
    targets = recipients(hub.registry.all(), req.platform, broadcast_role(roles, req.module), req.module)
    group = order_group(req, hub_party, sender)
    messages = []
    for target in targets:
        to = Party(target.party.country_code, target.party.party_id)
        fwd = ForwardRequest(
            method=req.method, module=req.module, interface_role=req.interface_role, tail=req.tail,
            query=req.query, body=req.body,
            headers={**routing_reply_headers(to, hub_party), CORRELATION_ID: ex.correlation_id,
                     "Content-Type": "application/json"},
            receiver_revision=target.platform.revision,
        )
        messages.append(Message(receiver=target.platform.id, group=group or "", payload=fwd.encode(),
                                kind="broadcast"))
    # Stored durably before the 1000: the hub's copy (GET All) and every fan-out message in Redis. One push of
    # an object at a time: concurrent EVSE pushes would otherwise overwrite each other's stored Location, and
    # the receivers could get the pushes in another order than the one the stored copy reflects.
    async with object_lock(hub.redis, hub.settings.key_prefix, req.module, req.segments, req.json_body, req.query):
        await store_push(hub.store, req.module, req.method, req.segments, req.json_body, req.query)
        # All receivers at once: the enqueues share one Redis pipeline instead of a round trip each.
        await asyncio.gather(*(hub.queue.enqueue(msg) for msg in messages))
    await learn(req, hub.hints, None)
    if targets:
        hub.delivery.wake()
    ex.outcome = "broadcast"
    return ocpi_response(message=f"accepted for {len(targets)} receivers", headers=headers)


def raw_tail(request: web.Request) -> str:
    """The path below the module base as sent: decoding it would let an encoded '/' or '?' inside an id change
    the path's shape at the receiver (ids are CiString, any printable ASCII). Ids a receiver could read as
    another path (dot segments, encoded '/') are refused here, before anything is forwarded or stored."""
    prefix = f"/ocpi/2.2.1/{request.match_info['role']}/{request.match_info['module']}"
    raw = request.rel_url.raw_path
    if raw == prefix or raw.startswith(prefix + "/"):
        tail = raw[len(prefix):].strip("/")
    else:  # the prefix itself was percent-encoded
        tail = quote(request.match_info.get("tail", ""), safe="/").strip("/")
    check_path_tail(tail)
    return tail


async def forward(
    request: web.Request, hub: Hub, req: InboundRequest, receiver_id: str, group: str | None, *,
    body: bytes, query: str, url: str = "", routing: dict[str, str] | None = None,
) -> Reply:
    """Through the receiver's queue: routing headers as the caller sent them (TO added for open routing), or
    ``routing`` when the hub sets them itself."""
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
    fwd = ForwardRequest(
        method=req.method, module=req.module, interface_role=req.interface_role, tail=req.tail,
        query=query, headers=headers, body=body, url=url,
    )
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
    ex.receiver_http_status = reply.status if reply.hub_error is None else None
    ex.receiver_ocpi_status = reply.ocpi_status
    ex.latency_receiver_ms = reply.receiver_ms
    headers = dict(ex.reply_headers)
    if reply.hub_error is not None:
        ex.ocpi_status = reply.hub_error
        return web.Response(
            body=envelope(status_code=reply.hub_error, message=reply.message),
            status=reply.status, content_type="application/json", headers=headers,
        )
    if answered_by is not None:
        headers.update(routing_reply_headers(None, answered_by))
    headers.update(reply.headers)  # receiver's routing headers: TO = requester, FROM = receiver
    headers[REQUEST_ID] = ex.request_id
    ex.outcome = "forwarded"
    return web.Response(body=reply.body, status=reply.status, content_type="application/json", headers=headers)


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
    if receiver is None or receiver.removed or receiver.status != ConnectionStatus.CONNECTED or party is None \
            or party.status != ConnectionStatus.CONNECTED:
        raise ReceiverNotConnected(f"party {to.country_code}/{to.party_id} is not connected")
    # TO = the party the URL belongs to, FROM = the party it was issued to, whatever the caller put there.
    reply = await forward(request, hub, req, receiver.id, None, body=body, query="", url=cb.url,
                          routing=routing_reply_headers(to, issued_to))
    if reply.hub_error is None and reply.status < 300:
        reply.headers = await rewrite_response_headers(
            hub.callbacks, reply.headers, module=cb.module, interface_role=cb.interface_role, caller=issued_to,
            receiver=to, receiver_platform=receiver.id,
        )
    return relay(request, reply, answered_by=to)


def party_of(key: str) -> Party:
    cc, _, pid = key.partition(":")
    return Party(cc, pid)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/ocpi/2.2.1/callbacks/{id}", handle_callback)
    for role in ROLE_OF_PATH:
        app.router.add_route("*", f"/ocpi/2.2.1/{{role:{role}}}/{{module}}", handle)
        # [\s\S]*, not .*: a tail holding an encoded CR or LF reaches the handler, which refuses it (400/2001)
        app.router.add_route("*", f"/ocpi/2.2.1/{{role:{role}}}/{{module}}/{{tail:[\\s\\S]*}}", handle)
