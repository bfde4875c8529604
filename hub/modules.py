"""The functional modules' endpoints (locations, sessions, cdrs, tariffs, tokens, commands, chargingprofiles).

A thin edge: authenticate, parse headers and body, ask ``routing.router`` for the receiver, hand the request to
the delivery engine, relay the answer with the caller's own request id (digest §3.3).
"""

from __future__ import annotations

import time

from aiohttp import web

from hub.access import authenticate
from hub.context import Hub, hub_of
from hub.exchange import EXCHANGE
from hub.ocpi.envelope import envelope
from hub.ocpi.errors import InvalidParameters
from hub.ocpi.headers import CORRELATION_ID, REQUEST_ID, ROUTING_HEADERS, Party, parse_routing, routing_reply_headers
from hub.ocpi.models import MODULES, parse_json
from routing.queue import Message
from routing.router import InboundRequest, check_client_owned, check_sender, direct_route
from routing.wire import ForwardRequest, Reply

ROLE_OF_PATH = {"sender": "SENDER", "receiver": "RECEIVER"}


async def handle(request: web.Request) -> web.StreamResponse:
    hub = hub_of(request)
    ex = request[EXCHANGE]
    role = ROLE_OF_PATH[request.match_info["role"]]
    module = request.match_info["module"]
    ex.module, ex.interface_role = module, role
    if module not in MODULES:
        raise web.HTTPNotFound(reason=f"unknown module '{module}'")
    caller = await authenticate(request, hub, allow_token_a=False)
    ex.platform_id = caller.platform.id
    routing = parse_routing(request)
    ex.from_party = routing.from_.key if routing.from_ else None
    ex.to_party = routing.to.key if routing.to else None
    hub_party = Party(hub.settings.hub_country_code, hub.settings.hub_party_id)
    # Errors answer TO = the requester, FROM = the hub (digest §3.2).
    ex.reply_headers.update(routing_reply_headers(routing.from_, hub_party))
    body = await request.read()
    ex.request_size = len(body)
    req = InboundRequest(
        platform=caller.platform,
        module=module,
        interface_role=role,
        method=request.method,
        tail=request.match_info.get("tail", "").strip("/"),
        query=request.query_string,
        routing=routing,
        body=body,
        json_body=parse_json(body) if body else None,
    )
    sender = check_sender(req)
    check_client_owned(req, sender)
    if routing.to is None:
        raise InvalidParameters("OCPI-to-country-code and OCPI-to-party-id are required (open routing is not enabled)")
    if routing.to == hub_party:
        raise InvalidParameters("requests addressed to the hub itself (broadcast, GET All) are not enabled")
    route = direct_route(req, hub.registry, sender)
    ex.receiver_platform_id = route.receiver.id
    return await forward(request, hub, req, route.receiver.id, route.group)


async def forward(
    request: web.Request, hub: Hub, req: InboundRequest, receiver_id: str, group: str | None
) -> web.Response:
    headers = {h: request.headers[h] for h in ROUTING_HEADERS if h in request.headers}
    headers[CORRELATION_ID] = request[EXCHANGE].correlation_id
    if req.body:
        headers["Content-Type"] = "application/json"
    fwd = ForwardRequest(
        method=req.method, module=req.module, interface_role=req.interface_role, tail=req.tail,
        query=req.query, headers=headers, body=req.body,
    )
    msg = Message(
        receiver=receiver_id,
        group=group or "",
        payload=fwd.encode(),
        kind="direct",
        deadline=time.time() + hub.settings.forward_timeout,
    )
    if not group:
        msg.group = "msg:" + msg.id
    reply = await hub.delivery.send_direct(msg)
    return relay(request, reply)


def relay(request: web.Request, reply: Reply) -> web.Response:
    """The receiver's real answer, or the hub error standing in for it, with the caller's own ids."""
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
    headers.update(reply.headers)  # receiver's routing headers: TO = requester, FROM = receiver
    headers[REQUEST_ID] = ex.request_id
    ex.outcome = "forwarded"
    return web.Response(body=reply.body, status=reply.status, content_type="application/json", headers=headers)


def add_routes(app: web.Application) -> None:
    for role in ROLE_OF_PATH:
        app.router.add_route("*", f"/ocpi/2.2.1/{{role:{role}}}/{{module}}", handle)
        app.router.add_route("*", f"/ocpi/2.2.1/{{role:{role}}}/{{module}}/{{tail:.*}}", handle)
