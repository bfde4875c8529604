"""One routed request across OCPI versions: the body as its sender wrote it, as 2.2.1 for the routing core
(2.1.1 senders), and as each receiver's version needs it, with the loss report of every translation made
(docs/versions.md)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.audit import AuditRecord
from hub.context import Hub
from hub.envelope import envelope
from hub.objects import merge_patch, object_id, type_211_token
from hub.redact import redact_path
from hub.store.protocol import RoutedObject, StoredObject
from routing.bridge import (
    UNKNOWN_TOKEN,
    WrittenAgain,
    owner_from_path,
    refuse_deep_answer,
    reply_kind,
    report,
    request_kind,
    translate_body,
    translate_reply,
    type_sent_as_other,
    type_target_lacks,
    unknown_token_211,
)
from routing.ocpi.errors import InvalidParameters
from routing.ocpi.headers import (
    CORRELATION_ID,
    FROM_CC,
    FROM_PID,
    TO_CC,
    TO_PID,
    Party,
    RoutingHeaders,
    time_ordered_id,
)
from routing.ocpi.models import parse_json
from routing.ocpi.token_query import query_type, with_query_type
from routing.ocpi.translate import Context, Loss, Untranslatable, translate
from routing.ocpi.translate.base import AUTHORIZATION_INFO, DEFAULTED, DERIVED, DROPPED, LOCATION, MAPPED, SESSION
from routing.ocpi.versions import V211, V221
from routing.platform import Platform, utcnow
from routing.queue import Message
from routing.router import InboundRequest, path_segments
from routing.wire import ForwardRequest, Reply

log = logging.getLogger("hub.bridging")


# Why no push of a Location the hub holds unpublished reaches a 2.1.1 party (``Bridge.unpublished_below``): live
# (the broadcast) and at delivery (a receiver that moved down to 2.1.1).
UNPUBLISHED_211 = ("the Location is not published (publish false) and OCPI 2.1.1 has no unpublished Locations: a "
                   "2.1.1 receiver would show it")


class Bridge:
    """One request across versions: its body as the sender wrote it, as 2.2.1 for the routing core (2.1.1
    senders), and as each receiver's version needs it; the losses of every translation made."""

    def __init__(self, version: str, req: InboundRequest) -> None:
        self.version = version
        self.req = req
        self.original = req.json_body  # in the sender's version
        self.up: list[Loss] = []  # 2.1.1 -> 2.2.1, made once
        self.reports: list[dict[str, Any]] = []
        self._rules: list[tuple[str, str, list[str]]] = []
        self._lost: list[list[Loss]] = []  # the losses of each report, as objects
        # The TokenType a real-time authorization with ``?type=OTHER`` stands for, put in the query by the router
        # (routing/open_routing.py, ``type_behind_other``); None: the query's type is the sender's.
        self.retyped: str | None = None

    @functools.cached_property
    def kind(self) -> str | None:
        """Worked out only when a body crosses versions: a same-version request never needs it."""
        req = self.req
        return request_kind(req.module, req.interface_role, req.method, req.segments)

    def _ctx(self, counterpart: Party | None) -> Context:
        req = self.req
        owner = owner_from_path(req.module, req.interface_role, req.segments)
        if owner is None and req.routing.from_ is not None:
            owner = (req.routing.from_.country_code, req.routing.from_.party_id)
        return Context(owner=owner, partial=req.method == "PATCH",
                       counterpart=(counterpart.country_code, counterpart.party_id) if counterpart else None)

    async def read_as_221(self, hub: Hub, received: datetime | None = None) -> None:
        """A 2.1.1 body in 2.2.1; a session or CDR names its token by ``auth_id`` only, so the eMSP that pushed
        that token (learned from its token pushes) becomes the ``cdr_token`` owner. ``received``: when the hub
        received the request, for one written again at delivery (``write_from_211``); None: now, on arrival."""
        req = self.req
        counterpart = None
        body = self.original
        if req.module in ("sessions", "cdrs") and isinstance(body, dict) and isinstance(body.get("auth_id"), str):
            counterpart = await contract_owner(hub, body["auth_id"])
        done = translate_body(self.kind, req.module, body, source=V211, target=V221, ctx=self._ctx(counterpart))
        req.json_body, self.up = done.data, done.losses
        if req.method == "PATCH" and isinstance(req.json_body, dict) and "last_updated" not in req.json_body:
            # 2.2.1 requires last_updated in every PATCH, 2.1.1 does not: the time the hub received it, the least
            # bad value (a hub must not change last_updated, but there is none to keep).
            stamp = (received or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")
            req.json_body = {**req.json_body, "last_updated": stamp}
            self.up.append(Loss("last_updated", DEFAULTED, "2.2.1 requires last_updated in a PATCH: the time the "
                                "hub received it", f"{V211}>{V221}"))

    def source(self) -> tuple[Any, str, list[Loss]]:
        """What translations start from: the 2.2.1 reading of a 2.1.1 body, else the body as sent."""
        if self.version == V211:
            return self.req.json_body, V221, self.up
        return self.original, self.version, []

    def body_for(self, target: str, to: Party | None) -> tuple[bytes, Any]:
        """The request body in ``target`` (bytes and decoded); the sender's bytes when the versions match."""
        if target == self.version or self.original is None:
            return self.req.body, self.original
        data, version, losses = self.source()
        if version != target:
            done = translate_body(self.kind, self.req.module, data, source=version, target=target,
                                  ctx=self._ctx(to))
            data, losses = done.data, losses + done.losses
        self._note(self.version, target, losses + self._type_loss(target))
        return orjson.dumps(data), data

    def whole_for(self, target: str, data: Any, written_in: str, to: Party | None = None) -> bytes:
        """A whole object the hub keeps (written in ``written_in``) in ``target``, reported with this request: a
        2.1.1 Tariff PATCH reaches versions without Tariff PATCH as a PUT of the patched Tariff."""
        ctx = dataclasses.replace(self._ctx(to), partial=False)
        done = translate_body(self.kind, self.req.module, data, source=written_in, target=target, ctx=ctx)
        self._note(written_in, target, done.losses)
        return orjson.dumps(done.data)

    def whole_at_delivery(self, target: str, data: Any, written_in: str, to: Party | None, why: str) -> bytes:
        """A PATCH that waited for a receiver now on ``target`` (across 2.1.1, either way: ``_whole_from_copy``), or a
        push behind newer ones of its object (``write_superseded``), as a PUT of the hub's copy of its object
        (``data``, written in ``written_in``) as it is at delivery, reported: the copy holds this push and may hold
        later changes, which the receiver then gets with it. ``why``: why not the push as it is."""
        body = self.whole_for(target, data, written_in, to)
        self._add_loss(Loss("", DERIVED, f"sent as a PUT of the whole object: the hub's copy as it is at delivery, "
                            f"which holds this PATCH and may hold later changes; {why}", f"{written_in}>{target}"))
        return body

    async def with_held_location(self, hub: Hub, target: str, data: Any) -> tuple[bytes, Any] | None:
        """A Session from 2.2.1 or 2.3.0 names its Location by ids only, and the translator sends a 2.1.1 receiver
        a skeleton of it: the Location the hub holds for that CPO (its broadcast copy) fills it in, with only the
        session's EVSE and connector (OCPI 2.1.1 mod_sessions; docs/versions.md, "Sessions"). None: nothing held."""
        req = self.req
        if (target != V211 or self.version == V211 or req.module != "sessions" or req.interface_role != "RECEIVER"
                or len(req.segments) < 3 or not isinstance(data, dict) or not isinstance(data.get("location"), dict)):
            return None
        skeleton = data["location"]
        cc, pid = req.segments[0].upper(), req.segments[1].upper()
        kept = await hub.store.get_object("locations", cc, pid, str(skeleton.get("id")))
        if kept is None:
            return None
        try:
            held = kept.data if kept.ocpi_version == V211 else translate(
                LOCATION, kept.data, source=kept.ocpi_version, target=V211, ctx=Context(owner=(cc, pid))).data
        except Untranslatable:  # a Location 2.1.1 cannot show (publish false): the skeleton stays
            return None
        out = {**data, "location": {**held, "evses": [_relevant_evse(held, e) for e in skeleton.get("evses") or []]}}
        loss = Loss("location", DERIVED, "the Location the hub holds for the CPO, with the session's EVSE and "
                    "connector only", f"{V221}>{V211}")
        self._add_loss(loss)  # with the report of this translation (body_for)
        return orjson.dumps(out), out

    async def unpublished_below(self, hub: Hub) -> bool:
        """An EVSE or Connector push, or a PATCH, of a Location the hub holds with ``publish: false``: what 2.1.1
        receivers were refused as a whole must not reach them in parts (docs/versions.md, Locations)."""
        req = self.req
        segs = req.segments
        if req.module != "locations" or len(segs) < 3 or (req.method == "PUT" and len(segs) == 3):
            return False
        if isinstance(req.json_body, dict) and req.json_body.get("publish") is not None:
            return False  # a PATCH that sets publish: translated (and refused for 2.1.1 when false) as it is
        kept = await hub.store.get_object("locations", segs[0].upper(), segs[1].upper(), segs[2])
        return kept is not None and kept.data.get("publish") is False

    def crosses_periods(self, target: str) -> bool:
        """A Session PATCH with ``charging_periods`` between 2.1.1 and 2.2.1 or 2.3.0: OCPI 2.2.1 and 2.3.0
        mod_sessions append a PATCH's periods to the receiver's, a 2.1.1 PATCH replaces them (the general PATCH
        rule). The only request ``periods_for`` reads the store for; decided without I/O."""
        req = self.req
        return (req.module == "sessions" and req.method == "PATCH" and req.interface_role == "RECEIVER"
                and (self.version == V211) != (target == V211) and len(req.segments) == 3
                and isinstance(self.original, dict) and "charging_periods" in self.original)

    async def periods_for(self, hub: Hub, target: str, to: Party) -> tuple[bytes, Any, str]:
        """The body and method of a PATCH ``crosses_periods`` in ``target``, its periods meaning at ``to`` what the
        sender meant, read against the hub's catch-up copy of what ``to`` was sent of that Session
        (docs/versions.md, "Sessions"). Without a copy the periods are left out: sent as they are they would wipe
        a 2.1.1 receiver's earlier periods, or repeat a 2.2.1 or 2.3.0 receiver's."""
        kept = await kept_session(hub, self.req, to)
        if target == V211:
            return self._periods_down(target, to, kept)
        return self._periods_up(target, to, kept)

    def _periods_down(self, target: str, to: Party, kept: RoutedObject | None) -> tuple[bytes, Any, str]:
        """To a 2.1.1 receiver: the periods it was sent before, then the new ones (its PATCH replaces the list)."""
        body, data = self.body_for(target, to)
        added = data.get("charging_periods") if isinstance(data, dict) else None
        if not isinstance(added, list):
            return body, data, "PATCH"  # not a list: the receiver refuses it as the sender wrote it
        if kept is None:
            data = {k: v for k, v in data.items() if k != "charging_periods"}
            self._add_loss(Loss("charging_periods", DROPPED, _NO_COPY_DOWN, f"{self.version}>{target}"))
            return orjson.dumps(data), data, "PATCH"
        prior = _periods_in(kept, V211)
        data = {**data, "charging_periods": prior + added}
        self._add_loss(Loss("charging_periods", DERIVED, f"the {len(prior)} periods the receiver was sent before "
                            f"(the hub's copy of the Session) ahead of the {len(added)} of this PATCH: a 2.1.1 "
                            f"PATCH replaces the list, an OCPI {self.version} PATCH appends to it",
                            f"{self.version}>{target}"))
        return orjson.dumps(data), data, "PATCH"

    def _periods_up(self, target: str, to: Party, kept: RoutedObject | None) -> tuple[bytes, Any, str]:
        """From a 2.1.1 sender (its PATCH holds the whole list): only the periods beyond those the receiver was
        sent before; a list that changes those goes as a PUT of the whole Session (OCPI 2.2.1 mod_sessions: to
        replace periods the Sender SHALL PUT)."""
        assert isinstance(self.original, dict)
        sent = self.original["charging_periods"]
        step = f"{V211}>{target}"
        if not isinstance(sent, list):
            return (*self.body_for(target, to), "PATCH")
        if kept is None:
            patch = {k: v for k, v in self.original.items() if k != "charging_periods"}
            return self._up(target, to, patch, Loss("charging_periods", DROPPED, _NO_COPY_UP, step))
        prior = _periods_in(kept, V211)
        if sent[:len(prior)] == prior:
            new = sent[len(prior):]
            return self._up(target, to, {**self.original, "charging_periods": new}, Loss(
                "charging_periods", DERIVED, f"the {len(new)} periods beyond the {len(prior)} the receiver was sent "
                f"before (the hub's copy of the Session): an OCPI {target} PATCH appends them, a 2.1.1 PATCH "
                "carries the whole list", step))
        owner = (self.req.segments[0].upper(), self.req.segments[1].upper())
        whole = merge_patch(SESSION, kept.data, kept.ocpi_version, self.original, V211, owner)
        stamp = self.read_last_updated()
        if isinstance(stamp, str):
            whole["last_updated"] = stamp  # the PATCH's, or the time the hub received it (read_as_221)
        body = self.whole_for(target, whole, kept.ocpi_version, to)
        self._add_loss(Loss("charging_periods", DERIVED, f"the PATCH changes periods the receiver was sent before "
                            f"(the hub's copy of the Session), which an OCPI {target} PATCH can only append to: "
                            "sent as a PUT of the whole Session, the hub's copy with this PATCH merged in", step))
        return body, orjson.loads(body), "PUT"

    def _up(self, target: str, to: Party, patch: dict[str, Any], loss: Loss) -> tuple[bytes, Any, str]:
        """``patch``, the 2.1.1 PATCH as the hub sends it (its periods cut or left out), in ``target``, with the
        last_updated of the 2.2.1 reading of the one sent (``read_as_221``: the sender's, or the time received)."""
        stamp = self.read_last_updated()
        if "last_updated" not in patch and stamp is not None:
            patch = {**patch, "last_updated": stamp}
        done = translate_body(self.kind, self.req.module, patch, source=V211, target=target, ctx=self._ctx(to))
        stamped = [lost for lost in self.up if lost.path == "last_updated"]
        self._note(V211, target, [*done.losses, *stamped, loss])
        return orjson.dumps(done.data), done.data, "PATCH"

    def read_last_updated(self) -> Any:
        """The request's ``last_updated`` as the hub reads it (``read_as_221``): the sender's, or for a 2.1.1 PATCH
        without one the time the hub received it."""
        body = self.req.json_body
        return body.get("last_updated") if isinstance(body, dict) else None

    def as_kept(self) -> Any:
        """The body as the hub keeps it (GET All, catch-up): as sent, in the sender's version, but a 2.1.1 PATCH
        without last_updated gets the receive time it was sent on with (``read_as_221``), so the copy shows when it
        changed and ``date_from`` finds it (docs/versions.md, "Routing across versions")."""
        body = self.original
        if self.version != V211 or not isinstance(body, dict) or "last_updated" in body:
            return body
        stamp = self.read_last_updated()
        return {**body, "last_updated": stamp} if isinstance(stamp, str) else body

    def _add_loss(self, loss: Loss) -> None:
        """One more loss of the last translation reported (``body_for``, ``whole_for``), counted with it."""
        if not self.reports:
            self._note(self.version, loss.step.partition(">")[2], [])
        self.reports[-1]["losses"].append(loss.as_dict())
        self._rules[-1][2].append(loss.rule)
        self._lost[-1].append(loss)

    def query_for(self, target: str) -> str:
        """The query in ``target``: a Tokens URL's ``type`` (OCPI 2.2.1 and 2.3.0 mod_tokens) goes as the body's
        TokenType does, OTHER where the target lacks it (docs/versions.md, "Tokens"); everything else as sent (an
        authorization's OTHER as the type the router found behind it, ``retyped``). Without a body to report with,
        the change is reported on its own."""
        query = self.req.query
        found = self._token_type(target)
        if found is None and self.retyped is None:
            return query
        if found is not None:
            query = with_query_type(query, "OTHER")
        if self.original is None:
            self._note(self.version, target, self._type_loss(target))
        return query

    def _token_type(self, target: str) -> str | None:
        """The query's TokenType, when ``target`` does not have that type."""
        return type_target_lacks(self.req.module, self.req.query, self.version, target)

    def _type_loss(self, target: str) -> list[Loss]:
        """How the URL's TokenType changed on the way to ``target``: mapped to OTHER (a type ``target`` lacks), or
        the type OTHER stood for (``retyped``) derived from the eMSP's own push of the token."""
        step = f"{self.version}>{target}"
        if self.retyped is not None:
            return [Loss("?type", DERIVED, f"TokenType OTHER of the URL: the token's type is {self.retyped}, which "
                         f"OCPI {self.version} lacks (the caller got it as OTHER); sent as {self.retyped}, the type "
                         "its eMSP gave it", step)]
        found = self._token_type(target)
        return [] if found is None else [type_sent_as_other(found, self.version, target)]

    def unknown_token(self, reply: Reply, target: str) -> Reply | None:
        """A 2.1.1 eMSP's 404 to a newer CPO's authorization, with or without an OCPI body, as a 2.2.1 or 2.3.0
        eMSP answers an unknown token: HTTP 404, status 2004, no ``data`` (reported ``mapped``). None: any other
        answer, relayed as usual. The receiver's own status stays in the reply for the audit."""
        req = self.req
        status = reply.status if reply.hub_error is None else (
            reply.receiver_status if reply.cause == "not_ocpi" else None)
        if status is None or not unknown_token_211(req.module, req.interface_role, req.method, req.segments,
                                                   self.version, target, status):
            return None
        self._note(target, self.version, [Loss("status_code", MAPPED, "HTTP 404 of an OCPI 2.1.1 eMSP: the token is "
                                               f"unknown to it, answered as {UNKNOWN_TOKEN} Unknown Token without "
                                               "data", f"{target}>{self.version}")], what="reply")
        return Reply(status=404, headers=reply.headers, receiver_ms=reply.receiver_ms, ocpi_status=reply.ocpi_status,
                     body=envelope(status_code=UNKNOWN_TOKEN, message="Unknown Token"))

    async def reply_for(self, hub: Hub, body: bytes, target: str, to: Party) -> bytes:
        """The receiver's answer (in ``target``) in the sender's version."""
        req = self.req
        kind = reply_kind(req.module, req.interface_role, req.method, req.segments)
        # Objects an answer carries are the answering party's on a SENDER interface (a pulled Location); on a
        # RECEIVER interface they are the caller's own, pushed earlier (its CDR behind a Location URL), unless
        # the path names the owner. The other party is the counterpart (the eMSP of a CDR's token).
        sender = req.routing.from_
        asked = (to.country_code, to.party_id)
        asking = (sender.country_code, sender.party_id) if sender else None
        holder, other = (asking, asked) if req.interface_role == "RECEIVER" and asking else (asked, asking)
        ctx = Context(owner=owner_from_path(req.module, req.interface_role, req.segments) or holder,
                      counterpart=other)
        if kind == AUTHORIZATION_INFO and target == V211 and req.segments:
            kept = await stored_token_211(hub, to, req.segments[0], req.query)
            body = with_authorized_token(body, req.segments[0], req.query, kept)
        out, losses = translate_reply(body, kind, source=target, target=self.version, ctx=ctx)
        if out is not body:
            self._note(target, self.version, losses, what="reply")
        return out

    def _note(self, source: str, target: str, losses: list[Loss], what: str = "request") -> None:
        self.reports.append({"of": what, **report(source, target, losses)})
        self._rules.append((source, target, [loss.rule for loss in losses]))
        self._lost.append(list(losses))

    def request_losses(self) -> list[Loss]:
        """The losses of every translation of the request body and query made (``body_for``, ``query_for``)."""
        return [loss for got, lost in zip(self.reports, self._lost, strict=True) if got["of"] == "request"
                for loss in lost]

    def record(self, hub: Hub, ex: Any) -> None:
        """Loss reports into the audit record, counts into the metrics."""
        if not self.reports:
            return
        ex.translation = {"reports": self.reports}
        for source, target, rules in self._rules:
            hub.metrics.count_translation(self.req.module, source, target, rules)


_NO_COPY = ("left out: the hub holds no copy of what the receiver was sent of this Session (catch-up off, or the "
            "Session never routed through it), ")
_NO_COPY_DOWN = _NO_COPY + "and a 2.1.1 PATCH's periods replace the receiver's: the new ones alone would wipe the rest"
_NO_COPY_UP = _NO_COPY + ("and a 2.2.1 or 2.3.0 PATCH's periods are appended to the receiver's: the 2.1.1 PATCH's "
                          "whole list would repeat those it holds")


async def kept_session(hub: Hub, req: InboundRequest, to: Party) -> RoutedObject | None:
    """The catch-up copy of the Session a PATCH names, as ``to`` was sent it (docs/catchup.md); None when the hub
    keeps none (``HUB_CATCHUP_DAYS=0``: what may linger until the next purge is no longer kept up to date)."""
    if hub.settings.catchup_days <= 0:
        return None
    cc, pid, session_id = req.segments
    return await hub.store.get_routed("sessions", to.key, cc.upper(), pid.upper(), session_id)


async def kept_tariff(hub: Hub, req: InboundRequest) -> StoredObject | None:
    """The hub's copy of the Tariff a PATCH names (GET All's, in its owner's version), the patched Tariff a version
    without Tariff PATCH gets whole; None once deleted, or never pushed whole (docs/versions.md, "Tariffs")."""
    cc, pid, tariff_id = req.segments[:3]
    return await hub.store.get_object("tariffs", cc.upper(), pid.upper(), tariff_id)


def no_tariff_copy(version: str, tariff_id: str, since: str = "") -> str:
    """Why a 2.1.1 Tariff PATCH cannot reach a party of ``version`` (it has none): no copy to send whole."""
    return (f"OCPI {version} has no Tariff PATCH, and the hub holds no copy of tariff {tariff_id}{since} to send "
            "whole as a PUT")


def _periods_in(kept: RoutedObject, version: str) -> list[Any]:
    """The charging periods of a kept Session, in ``version`` (it is kept in its sender's)."""
    periods = kept.data.get("charging_periods")
    if not isinstance(periods, list):
        return []
    done = translate(SESSION, {"charging_periods": periods}, source=kept.ocpi_version, target=version,
                     ctx=Context(partial=True))
    return list(done.data.get("charging_periods") or [])


def _relevant_evse(held: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The held Location's EVSE a skeleton names, with the named connector only (its tariff_id, taken from the
    session's charging periods, kept); whatever the held Location lacks stays as the skeleton has it."""
    evse = next((e for e in held.get("evses") or [] if isinstance(e, dict) and e.get("uid") == wanted.get("uid")),
                None)
    if evse is None:
        return wanted
    connectors = []
    for named in wanted.get("connectors") or []:
        found = next((c for c in evse.get("connectors") or []
                      if isinstance(c, dict) and c.get("id") == named.get("id")), None)
        tariff = {"tariff_id": named["tariff_id"]} if "tariff_id" in named else {}
        connectors.append({**found, **tariff} if found is not None else named)
    return {**evse, "connectors": connectors}


async def contract_owner(hub: Hub, contract_id: str) -> Party | None:
    """The eMSP whose token carries this contract id (2.1.1 ``auth_id``), learned from its token pushes."""
    parties = await hub.hints.find("contract", contract_id)
    if len(parties) != 1:
        return None
    cc, _, pid = parties[0].partition(":")
    return Party(cc, pid)


async def stored_token_211(hub: Hub, owner: Party, uid: str, query: str) -> dict[str, Any] | None:
    """The 2.1.1 Token its eMSP pushed to the hub (the GET All copy) for the uid and type an authorize URL names."""
    kept = await hub.store.get_object("tokens", owner.country_code, owner.party_id,
                                      object_id("tokens", [owner.country_code, owner.party_id, uid], None, query))
    return kept.data if kept is not None and kept.ocpi_version == V211 else None


def with_authorized_token(body: bytes, uid: str, query: str, kept: dict[str, Any] | None = None) -> bytes:
    """A 2.1.1 AuthorizationInfo names no token, which 2.2.1 requires: the stored 2.1.1 Token (``kept``), else
    the uid and type the authorize URL named, go with it as ``token`` (the translator reports what it fills in,
    docs/versions.md "Tokens")."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    refuse_deep_answer(body, doc)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or "token" in data:
        return body
    token_type = query_type(query) or "RFID"
    doc["data"] = {**data, "token": kept if kept is not None else {"uid": uid, "type": token_type}}
    return orjson.dumps(doc)


_BASES = {"sent": "as its sender sent it", "queued": "the queued copy",
          "kept": "the hub's copy of the object at delivery, as a PUT"}


def record_written_again(hub: Hub, msg: Message, fwd: ForwardRequest, again: WrittenAgain, reply: Reply,
                         request_id: str) -> None:
    """A queued push written again at delivery, because its receiver changed OCPI version while it waited or got
    newer pushes of the object first (``Delivery.on_written_again``; docs/store-and-forward.md), and accepted by the
    receiver: translated from the copy written for the receiver's former version or from what its sender sent
    (``basis`` queued or sent), made from the hub's copy of the object as it is at delivery (``basis`` kept: sent as
    a PUT), or sent as its sender sent it (``from`` = ``to``, no losses). Its loss report is kept as every
    translation's is, in an audit record of its own (``of`` = redelivery, with ``written_for`` the version the push
    was written for; the message's first translation is in the record of the request that brought it) and, when it
    was translated, in the translation metrics. The record describes the push as sent: the hub is the caller (no
    platform), the path is the module's path in the receiver's version."""
    if again.source != again.target:
        hub.metrics.count_translation(fwd.module, again.source, again.target, [loss.rule for loss in again.losses])
    headers = fwd.headers
    from_ = f"{headers[FROM_CC]}:{headers[FROM_PID]}" if FROM_CC in headers and FROM_PID in headers else None
    to = f"{headers[TO_CC]}:{headers[TO_PID]}" if TO_CC in headers and TO_PID in headers else None
    base = f"/ocpi/{V211}/{fwd.module}" if again.target == V211 else \
        f"/ocpi/{again.target}/{fwd.interface_role.lower()}/{fwd.module}"
    path = base + (f"/{fwd.tail}" if fwd.tail else "")
    translation = {"reports": [{"of": "redelivery", **report(again.source, again.target, again.losses),
                                "written_for": again.written_for, "basis": again.basis}]}
    hub.audit.add(AuditRecord(
        id=time_ordered_id(), time=utcnow(), request_id=request_id, correlation_id=headers.get(CORRELATION_ID, ""),
        platform_id=None, from_party=from_, to_party=to, module=fwd.module, interface_role=fwd.interface_role,
        method=fwd.method, path=redact_path(path), outcome="forwarded", http_status=reply.status,
        ocpi_status=reply.ocpi_status, receiver_platform_id=msg.receiver, receiver_http_status=reply.status,
        receiver_ocpi_status=reply.ocpi_status, latency_receiver_ms=reply.receiver_ms, request_size=len(fwd.body),
        response_size=len(reply.body), receiver_version=again.target, translation=translation,
    ))
    if again.source == again.target and again.basis != "kept":
        log.info("push %s to %s, written for OCPI %s, delivered in OCPI %s as its sender sent it", msg.id,
                 msg.receiver, again.written_for, again.target)
    else:
        log.info("push %s to %s, written for OCPI %s, written again from %s (%s) in %s at delivery (%d losses)",
                 msg.id, msg.receiver, again.written_for, again.source, _BASES.get(again.basis, again.basis),
                 again.target, len(again.losses))


# What a 2.1.1 push written for a 2.1.1 receiver becomes for that receiver back in 2.2.1 or 2.3.0 (module, method
# on the RECEIVER interface): the pushes the live path translates with the same Bridge steps, nothing read but the
# parties behind the body and a Token's type, and the PATCHes it sends as a PUT made from the hub's copy of the
# object (a Tariff PATCH, a Session PATCH with charging_periods: ``_whole_from_copy``) (docs/store-and-forward.md,
# "When the receiver changes version or endpoint"). A PATCH without last_updated gets the time the hub accepted it,
# as it got on arrival.
_WRITTEN_FROM_211 = frozenset({("cdrs", "POST"), ("sessions", "PUT"), ("sessions", "PATCH"), ("locations", "PUT"),
                               ("locations", "PATCH"), ("tariffs", "PUT"), ("tariffs", "PATCH"), ("tokens", "PUT"),
                               ("tokens", "PATCH")})
# What a push written in 2.2.1 or 2.3.0 becomes for a receiver that moved down to 2.1.1 (as its sender sent it): the
# pushes the live path writes into 2.1.1, with the same Bridge steps; the same but for a Tariff PATCH, which 2.2.1
# and 2.3.0 do not have (a Tariff DELETE, with no body, goes as queued: ``routing.bridge.write_for``).
_WRITTEN_INTO_211 = _WRITTEN_FROM_211 - {("tariffs", "PATCH")}


def _not_written(fwd: ForwardRequest, method: str, data: Any, written: frozenset[tuple[str, str]]) -> str | None:
    """Why a queued push (its method and body ``data`` as the hub starts from them) is not one the hub writes at
    delivery (``written``: the module and method pairs it writes), or None."""
    if fwd.interface_role != "RECEIVER" or (fwd.module, method) not in written or data is None:
        kinds = sorted({f"{module} {verb}" for module, verb in written})
        return f"only these pushes are written at delivery ({', '.join(kinds)}), not a {fwd.module} {method}"
    if fwd.module != "cdrs" and len(path_segments(fwd.tail)) < 3:
        return "its path names no object"
    return None


# Why a PATCH goes as a PUT of the hub's copy (``Bridge.whole_at_delivery``), per module and direction.
_AS_PUT = {("tariffs", "up"): "OCPI {target} has no Tariff PATCH (OCPI 2.1.1 mod_tariffs has one)",
           ("sessions", "up"): "a 2.1.1 PATCH carries the whole list of charging_periods, an OCPI {target} PATCH "
                               "appends to the receiver's, and to replace periods the Sender SHALL PUT (OCPI 2.2.1 "
                               "mod_sessions)",
           ("sessions", "down"): "an OCPI {source} PATCH's charging_periods are appended to the receiver's, a 2.1.1 "
                                 "PATCH's replace them (OCPI 2.1.1 mod_sessions): the whole Session says both"}


async def _whole_from_copy(hub: Hub, msg: Bridge, now: str, to: Party | None, written_for: str,
                           ) -> WrittenAgain | str:
    """A PATCH the live path sends a receiver of ``now`` as a PUT made from (a 2.1.1 Tariff PATCH to 2.2.1 or 2.3.0,
    ``patched_tariff`` in hub/modules.py) or completed with (a Session PATCH with charging_periods across 2.1.1,
    ``periods_for``) the hub's copy of its object, written at delivery as a PUT of that copy as it is then: the
    Tariff the hub keeps (``kept_tariff``), the Session as the receiver was sent it (``kept_session``). The copy
    holds this PATCH and any later change, and every later message of the object follows in the same ordering group
    (a PUT of the copy again, a PATCH, a DELETE): the receiver ends with the object's current state, where a dead
    letter would leave it a stale one. Or why not: the hub holds no copy. Only the object the message names, for
    the receiver it was queued for: no one sees more."""
    req = msg.req
    if req.module == "tariffs":
        kept: StoredObject | RoutedObject | None = await kept_tariff(hub, req)
        if kept is None:
            return no_tariff_copy(now, req.segments[2], " (deleted since?)")
        to = None  # a fan-out's body is the same for every party, as live
    else:
        kept = await kept_session(hub, req, to) if to is not None else None
        if kept is None:
            return (f"its charging_periods are {'the whole list' if msg.version == V211 else 'appended'} where a "
                    f"PATCH of OCPI {now} {'appends' if msg.version == V211 else 'replaces the list'}, and the hub "
                    f"keeps no copy of what the receiver was sent of session {req.segments[2]} (catch-up off, "
                    "HUB_CATCHUP_DAYS=0; the copy purged; or the Session never routed through the hub) to send "
                    "whole as a PUT")
    why = _AS_PUT[(req.module, "down" if now == V211 else "up")].format(source=msg.version, target=now)
    body = msg.whole_at_delivery(now, kept.data, kept.ocpi_version, to, why)
    return WrittenAgain(body, msg.query_for(now), kept.ocpi_version, now, msg.request_losses(), "PUT", written_for,
                        "kept")


def _pair_of(headers: dict[str, str], cc: str, pid: str) -> Party | None:
    return Party(headers[cc], headers[pid]) if cc in headers and pid in headers else None


def _rebuilt(hub: Hub, fwd: ForwardRequest, receiver: Platform, version: str, method: str, query: str, body: bytes,
             data: Any) -> tuple[Bridge, Party | None] | None:
    """The request a queued push was made from, rebuilt from the message (the sender from the owner in the path,
    else the FROM routing header the hub set; the receiver from TO) as a ``Bridge`` in ``version``, and the party it
    was sent to. None: it names no sender."""
    owner = owner_from_path(fwd.module, fwd.interface_role, path_segments(fwd.tail))
    sender = Party(*owner) if owner is not None else _pair_of(fwd.headers, FROM_CC, FROM_PID)
    if sender is None:
        return None
    to = _pair_of(fwd.headers, TO_CC, TO_PID)
    # The Bridge reads the request, not its caller: the sender's platform while it is registered, else the receiver.
    caller = hub.registry.by_party(sender.country_code, sender.party_id)
    req = InboundRequest(platform=caller[0] if caller is not None else receiver, module=fwd.module,
                         interface_role=fwd.interface_role, method=method, tail=fwd.tail, query=query,
                         routing=RoutingHeaders(to=to, from_=sender), body=body, json_body=data)
    return Bridge(version, req), to


async def write_at_delivery(hub: Hub, fwd: ForwardRequest, receiver: Platform, accepted_at: float,
                            ) -> WrittenAgain | str:
    """A queued push that only the hub can write in its receiver's new version (``Delivery.write_with_hub``):
    into 2.1.1 (``write_into_211``) or out of a 2.1.1 copy (``write_from_211``)."""
    if receiver.version == V211:
        return await write_into_211(hub, fwd, receiver)
    return await write_from_211(hub, fwd, receiver, accepted_at)


async def write_from_211(hub: Hub, fwd: ForwardRequest, receiver: Platform, accepted_at: float,
                         ) -> WrittenAgain | str:
    """A queued push written in OCPI 2.1.1 for a receiver that now speaks 2.2.1 or 2.3.0 and keeps no other body
    (a 2.1.1 sender's push for a 2.1.1 receiver; ``routing.bridge.from_211_copy``), written in the receiver's
    version as the live path writes it (docs/store-and-forward.md): the request is rebuilt from the message
    (``_rebuilt``), read as 2.2.1 with what the hub knows of the parties (``read_as_221``: the eMSP behind a
    Session's or CDR's ``auth_id``; a Token's type, ``type_211_token``) and written in the receiver's version
    (``body_for``, ``query_for``), with the losses of those steps. A PATCH without last_updated gets the time the
    hub accepted the push (``accepted_at``, seconds since the epoch), as on arrival: not the delivery time, which
    would make an old change look newer than later ones. A Tariff PATCH and a Session PATCH with charging periods,
    which the live path writes from the hub's copy of the object, go as a PUT of that copy as it is at delivery
    (``_whole_from_copy``). Or why not: no such copy, a DELETE or any other method, and what the translation
    refuses."""
    now = receiver.version or V221

    def refused(why: str) -> str:
        return (f"the receiver now speaks OCPI {now}; this {fwd.module} message was written in OCPI {V211} for "
                f"OCPI {V211} and {why}: it is not translated again")

    try:
        data = parse_json(fwd.body) if fwd.body else None
    except InvalidParameters:
        return refused("its body cannot be read again")
    if (why := _not_written(fwd, fwd.method, data, _WRITTEN_FROM_211)) is not None:
        return refused(why)
    try:
        if (rebuilt := _rebuilt(hub, fwd, receiver, V211, fwd.method, fwd.query, fwd.body, data)) is None:
            return refused("names no sender")
        msg, to = rebuilt
        req = msg.req
        if fwd.method == "PATCH" and (fwd.module == "tariffs" or msg.crosses_periods(now)):
            again = await _whole_from_copy(hub, msg, now, to, V211)
            return refused(again) if isinstance(again, str) else again
        await msg.read_as_221(hub, datetime.fromtimestamp(accepted_at, UTC))
        if fwd.module == "tokens":  # as on arrival (hub/modules.py): 2.2.1 and 2.3.0 name a token by uid and type
            req.query = await type_211_token(hub.store, req.segments, msg.original, req.query)
        body, _ = msg.body_for(now, None if fwd.recipient else to)  # a fan-out's body is the same for every party
        query = msg.query_for(now)
    except InvalidParameters as exc:  # Untranslatable too
        return refused(f"cannot be translated: {exc.message}")
    return WrittenAgain(body, query, V211, now, msg.request_losses(), fwd.method, V211, "queued")


async def write_into_211(hub: Hub, fwd: ForwardRequest, receiver: Platform) -> WrittenAgain | str:
    """A queued push written in OCPI 2.2.1 or 2.3.0 for a receiver that now speaks 2.1.1 (it moved down, e.g.
    rolling back an upgrade; ``routing.bridge.into_211``), written in 2.1.1 as the live path writes it
    (docs/store-and-forward.md): from what its sender sent (``fwd.sent``; else the queued copy, which is what the
    sender sent when both spoke one version), the request rebuilt from the message (``_rebuilt``), translated
    (``body_for``, ``query_for``) with what the hub holds as it is at delivery: the Location a 2.1.1 Session
    embeds (``with_held_location``), and for a Session PATCH with charging_periods (a 2.1.1 PATCH replaces the
    receiver's list, a 2.2.1 or 2.3.0 one appends to it) a PUT of the Session as the receiver was sent it
    (``_whole_from_copy``). Or why not: no such copy, a Location the hub holds unpublished (``unpublished_below``),
    a message of another kind, and what the translation refuses."""
    written_for, sent = fwd.receiver_version, fwd.sent
    version, method, query, raw = (sent.version, sent.method, sent.query, sent.body) if sent is not None else (
        written_for, fwd.method, fwd.query, fwd.body)
    wrote = f" (its sender wrote it in OCPI {version})" if version != written_for else ""

    def refused(why: str) -> str:
        return (f"the receiver now speaks OCPI {V211}; this {fwd.module} message was written for OCPI "
                f"{written_for}{wrote} and {why}: it is not translated again")

    try:
        data = parse_json(raw) if raw else None
    except InvalidParameters:
        return refused("its body cannot be read again")
    if (why := _not_written(fwd, method, data, _WRITTEN_INTO_211)) is not None:
        return refused(why)
    try:
        if (rebuilt := _rebuilt(hub, fwd, receiver, version, method, query, raw, data)) is None:
            return refused("names no sender")
        msg, to = rebuilt
        if method == "PATCH" and msg.crosses_periods(V211):
            whole = await _whole_from_copy(hub, msg, V211, to, written_for)
            if isinstance(whole, str):
                return refused(whole)
            body, out, method, source, basis = whole.body, orjson.loads(whole.body), "PUT", whole.source, "kept"
        elif await msg.unpublished_below(hub):
            return refused(UNPUBLISHED_211)
        else:
            body, out = msg.body_for(V211, None if fwd.recipient else to)  # a fan-out's body: the same for every party
            source, basis = version, "sent" if sent is not None else "queued"
        if (held := await msg.with_held_location(hub, V211, out)) is not None:
            body = held[0]
        query = msg.query_for(V211)
    except InvalidParameters as exc:  # Untranslatable too
        return refused(f"cannot be translated: {exc.message}")
    return WrittenAgain(body, query, source, V211, msg.request_losses(), method, written_for, basis)


async def write_superseded(hub: Hub, fwd: ForwardRequest, receiver: Platform) -> WrittenAgain | str:
    """A queued push older than what its receiver already got of the object or of a part of it, whose change the
    newer pushes may not carry (``routing.bridge.whole_when_behind``), written as a PUT of the hub's copy of the
    object as it is at delivery, in the receiver's version: a Location, EVSE or Connector, a Tariff or a Token
    from what the hub holds for GET All (``_held_behind``), a Session from the Session as the receiver was sent it
    (``_session_behind``). Or why not: it is then dropped as superseded, as any older push is
    (docs/store-and-forward.md, "Exactly once, as far as OCPI allows")."""
    if fwd.module == "sessions":
        return await _session_behind(hub, fwd, receiver)
    return await _held_behind(hub, fwd, receiver)


_WHAT = {"tariffs": "Tariff", "tokens": "Token"}
_LOCATION_PART = {3: "Location", 4: "EVSE", 5: "Connector"}


async def _held_behind(hub: Hub, fwd: ForwardRequest, receiver: Platform) -> WrittenAgain | str:
    """A Location (EVSE, Connector), Tariff or Token push older than a push of it, or of a part of it, that the
    receiver got (a replayed dead letter after newer pushes): it goes as a PUT of that object as the hub holds it
    for GET All, which every push the hub accepted went into, so the receiver gets its change without losing the
    newer ones. Or why not: no copy (a Token of another type than the URL names included), no such EVSE or
    Connector in the Location any more, or a Location unpublished for a 2.1.1 receiver (``UNPUBLISHED_211``)."""
    now, written_for, module = receiver.version or V221, fwd.receiver_version, fwd.module
    segs = path_segments(fwd.tail)
    what = _LOCATION_PART.get(len(segs), "object") if module == "locations" else _WHAT.get(module, "object")
    newer = f"a newer push of this {what}{' or of a part of it' if module == 'locations' else ''}"
    lost = f"{newer} was delivered, and this older one is not sent: "
    try:
        data = parse_json(fwd.body) if fwd.body else None
    except InvalidParameters:
        data = None
    held = await hub.store.get_object(module, segs[0].upper(), segs[1].upper(),
                                      object_id(module, segs, data, fwd.query))
    if held is None:
        return lost + f"the hub holds no copy of the {what if module != 'locations' else 'Location'} to send whole"
    part = _part_of(held.data, segs[3:]) if module == "locations" else held.data
    if part is None:
        return lost + f"the Location the hub holds has no {what} {segs[-1]} any more"
    if module == "locations" and now == V211 and held.data.get("publish") is False:
        return lost + UNPUBLISHED_211
    try:
        if (rebuilt := _rebuilt(hub, fwd, receiver, written_for, "PUT", fwd.query, b"", part)) is None:
            return lost + "the message names no sender"
        msg, _ = rebuilt
        why = f"{newer} reached the receiver first, and may not carry this push's change: sent whole, it has both"
        body = msg.whole_at_delivery(now, part, held.ocpi_version, None, why)  # a fan-out's body: the same for all
        query = msg.query_for(now)
    except InvalidParameters as exc:  # Untranslatable too
        return lost + f"the hub's copy cannot be written in OCPI {now}: {exc.message}"
    return WrittenAgain(body, query, held.ocpi_version, now, msg.request_losses(), "PUT", written_for, "kept")


def _part_of(location: dict[str, Any], ids: list[str]) -> dict[str, Any] | None:
    """The Location itself, one of its EVSEs (by uid) or one of an EVSE's Connectors (by id); None: not in it."""
    part: dict[str, Any] | None = location
    for key, list_name, wanted in zip(("uid", "id"), ("evses", "connectors"), ids, strict=False):
        items = part.get(list_name) if part is not None else None
        part = next((i for i in items if isinstance(i, dict) and i.get(key) == wanted), None) \
            if isinstance(items, list) else None
    return part


async def _session_behind(hub: Hub, fwd: ForwardRequest, receiver: Platform) -> WrittenAgain | str:
    """A queued Session PUT or PATCH older than a version of the Session the receiver got (a replayed dead
    letter): the newer version may not carry its changes (a newer PATCH, of other fields; in OCPI 2.2.1 and 2.3.0
    a PATCH's charging_periods are appended, so no newer version carries an older PATCH's). It goes as a PUT of the
    Session as the receiver was sent it (``kept_session``), as it is at delivery, in the receiver's version (the
    held Location embedded for 2.1.1, as ``write_into_211`` does): the copy holds every accepted change, every
    period in the order the hub accepted them. Or why not: the hub keeps no copy, the message names no sender, or
    the translation refuses."""
    now, written_for = receiver.version or V221, fwd.receiver_version
    lost = (f"a newer version of the Session was delivered, which may not carry this {fwd.method}'s changes (an "
            "OCPI 2.2.1 or 2.3.0 PATCH's charging_periods are appended), and this older one is not sent: ")
    try:
        data = parse_json(fwd.body)
        if (rebuilt := _rebuilt(hub, fwd, receiver, written_for, fwd.method, fwd.query, fwd.body, data)) is None:
            return lost + "the message names no sender"
        req, to = rebuilt[0].req, rebuilt[1]
        kept = await kept_session(hub, req, to) if to is not None else None
        if kept is None:
            return lost + (f"the hub keeps no copy of what the receiver was sent of session {req.segments[2]} "
                           "(catch-up off, HUB_CATCHUP_DAYS=0; the copy purged) to send whole as a PUT")
        msg = Bridge(kept.ocpi_version, req)  # what is sent is the copy, in its version
        why = (f"a newer version of the Session reached the receiver before this {fwd.method}, and may not carry its "
               "changes (an OCPI 2.2.1 or 2.3.0 PATCH's charging_periods are appended): sent as the whole Session, "
               "the receiver has both")
        body = msg.whole_at_delivery(now, kept.data, kept.ocpi_version, to, why)
        if now == V211 and (held := await msg.with_held_location(hub, V211, orjson.loads(body))) is not None:
            body = held[0]
        query = msg.query_for(now)
    except InvalidParameters as exc:  # Untranslatable too
        return lost + f"the hub's copy cannot be written in OCPI {now}: {exc.message}"
    return WrittenAgain(body, query, kept.ocpi_version, now, msg.request_losses(), "PUT", written_for, "kept")
