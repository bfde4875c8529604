"""Accepting a message for later delivery (store-and-forward, docs/store-and-forward.md).

The sender gets 1000 once the message is in the receiver's Redis queue; the hub then delivers it with backoff
within ``HUB_STORE_FORWARD_WINDOW``, always under the one ``X-Request-ID`` chosen here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub.context import Hub
from hub.envelope import ocpi_response
from hub.exchange import EXCHANGE
from routing.ocpi.headers import REQUEST_ID, Party, new_id
from routing.queue import Message
from routing.router import InboundRequest
from routing.store_forward import ACCEPTED_MESSAGE, KIND, object_path, version_of
from routing.wire import ForwardRequest


async def accept(request: web.Request, hub: Hub, req: InboundRequest, fwd: ForwardRequest, receiver_id: str,
                 group: str | None, sender: Party, as_sent: Any = None) -> tuple[web.Response, bool]:
    """Queue ``fwd`` for ``receiver_id`` and answer the sender; the same request id sent again is answered
    from the first acceptance, not queued twice. ``as_sent``: the body in the sender's version, when the hub
    read it into another one (its version is the ``last_updated`` the sender gave, not one the hub filled in).
    Also whether this is the first acceptance: what follows one (the catch-up copy, Insights) must not follow a
    repeat, or a Session PATCH's charging_periods would be appended to the copy twice."""
    ex = request[EXCHANGE]
    fwd.headers[REQUEST_ID] = new_id()  # one id for every attempt: the receiver can tell a retry from a new message
    fwd.sender_request_id, fwd.sender = ex.request_id, sender.key
    version = version_of(req.method, req.json_body if as_sent is None else as_sent)
    if version is not None and req.segments:
        fwd.object_path, fwd.object_version = object_path(req.module, req.segments, req.query), version
    msg = Message(receiver=receiver_id, group=group or "", payload=fwd.encode(), kind=KIND)
    state = await hub.delivery.defer(msg, fwd, req.module)
    ex.outcome = "stored"
    again = state.message_id != msg.id
    note = (f"{ACCEPTED_MESSAGE} (request id {ex.request_id} was accepted before; state: {state.state})" if again
            else f"{ACCEPTED_MESSAGE}: it is kept and delivered to the receiver as soon as it can take it")
    return ocpi_response(message=note, headers=ex.reply_headers), not again
