"""Version bridging of routed messages: which object a body holds, and that body in the receiver's version.

Same version on both sides: nothing here runs, the bytes pass as they are. Otherwise the body is translated
field by field (routing/ocpi/translate) and the losses of every step are returned for the audit record and the
metrics (docs/versions.md). A 2.1.1 request is first read as 2.2.1, the routing core's own language: its
routing keys (token owner, location id, ...) are then found exactly as for a 2.2.1 request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import orjson

from routing.broadcast import BROADCAST_DELETES_211, DATA_OWNER
from routing.ocpi.errors import HubError, InvalidParameters
from routing.ocpi.models import MAX_JSON_DEPTH, nests_too_deep
from routing.ocpi.token_query import query_type, with_query_type
from routing.ocpi.translate import Context, Loss, Untranslatable, translatable, translate
from routing.ocpi.translate import base as kinds
from routing.ocpi.translate.base import MAPPED
from routing.ocpi.translate.common import TOKEN_TYPES_211, TOKEN_TYPES_221
from routing.ocpi.versions import ROLES_211, V211, V221, V230, interface_role_211
from routing.router import path_segments
from routing.wire import ForwardRequest

_COMMAND_KINDS = {"START_SESSION": kinds.START_SESSION, "STOP_SESSION": kinds.STOP_SESSION,
                  "RESERVE_NOW": kinds.RESERVE_NOW, "CANCEL_RESERVATION": kinds.CANCEL_RESERVATION,
                  "UNLOCK_CONNECTOR": kinds.UNLOCK_CONNECTOR}
_OBJECT_KIND = {"sessions": kinds.SESSION, "cdrs": kinds.CDR, "tariffs": kinds.TARIFF, "tokens": kinds.TOKEN}
_LOCATION_DEPTH = {0: kinds.LOCATION, 1: kinds.LOCATION, 2: kinds.EVSE, 3: kinds.CONNECTOR}
# CommandType of OCPI 2.1.1 (mod_commands): no CANCEL_RESERVATION; 2.2.1 has the five above, 2.3.0 the same in an
# OpenEnum.
_COMMAND_TYPES_211 = frozenset({"RESERVE_NOW", "START_SESSION", "STOP_SESSION", "UNLOCK_CONNECTOR"})
# Modules whose objects are the same in 2.2.1 and 2.3.0 and have no 2.1.1 counterpart: passed as they are.
UNCHANGED_221_230 = frozenset({"chargingprofiles", "hubclientinfo"})


def reads_alike(module: str, written_for: str, version: str) -> bool:
    """Whether a message written for a receiver speaking OCPI ``written_for`` means the same to one speaking
    ``version``: the same version, or a module whose objects 2.2.1 and 2.3.0 share (docs/versions.md)."""
    return written_for == version or (module in UNCHANGED_221_230 and {written_for, version} <= {V221, V230})


# Modules whose pushes the hub translates object by object; a queued message of another module (with a body) is
# never translated again at delivery.
_TRANSLATED_MODULES = frozenset({"locations", "sessions", "cdrs", "tariffs", "tokens", "commands"})


@dataclass(frozen=True, slots=True)
class WrittenAgain:
    """A queued push, written for its receiver's former version, in the version it speaks now: translated from
    ``source`` (the version of what it was made from) into ``target``, or sent as its sender sent it when
    ``source`` is ``target``."""

    body: bytes
    query: str
    source: str
    target: str
    losses: list[Loss]
    # The method it goes with (``write_for`` sets it; a sender's may differ from the queued copy's, and a PATCH the
    # hub writes from its copy of the object goes as a PUT, both ways across 2.1.1: hub/bridging.py,
    # ``write_at_delivery``).
    method: str = ""
    written_for: str = ""  # the receiver's former version, the one the queued copy was written for
    # What it was made from: "queued" (the copy written for the former version), "sent" (what its sender sent) or
    # "kept" (the hub's copy of the object as it is at delivery).
    basis: str = "queued"


def write_for(fwd: ForwardRequest, now: str) -> WrittenAgain | str:
    """A queued push ``fwd``, written for its receiver's version of the moment (``fwd.receiver_version``), for that
    receiver now speaking ``now``; or why it cannot be sent (docs/store-and-forward.md, "When the receiver changes
    version or endpoint"). Called only when the two versions read the message otherwise (``reads_alike``).

    A cross-version push keeps what its sender sent (``fwd.sent``): a receiver that now speaks the sender's version
    gets that as it was sent (its path tail is the sender's for every receiver version: hub/modules.py queues
    ``req.tail``, checked on arrival against the sender's version), and one that moved between 2.2.1 and 2.3.0
    away from the sender's version gets it translated from that (``write_again``), not from the copy written for
    its former version, which may have lost fields on the way (into 2.1.1 above all). Otherwise the copy is
    translated again where that needs nothing but the message (2.2.1 <-> 2.3.0), else refused.
    """
    written_for, sent = fwd.receiver_version, fwd.sent
    if sent is not None:
        if sent.version == now:
            return WrittenAgain(sent.body, sent.query, now, now, [], sent.method, written_for, "sent")
        if {sent.version, now} == {V221, V230}:
            again = write_again(fwd.module, fwd.interface_role, sent.method, fwd.tail, sent.query, sent.body,
                                source=sent.version, target=now)
            return again if isinstance(again, str) else replace(again, method=sent.method, written_for=written_for,
                                                                basis="sent")
    if fwd.method == "DELETE" and not fwd.body and fwd.module in BROADCAST_DELETES_211 \
            and fwd.interface_role == "RECEIVER":
        # A Tariff DELETE has no body, and its path and query mean the same in every version: nothing to write.
        return WrittenAgain(b"", fwd.query, written_for, now, [], fwd.method, written_for)
    again = write_again(fwd.module, fwd.interface_role, fwd.method, fwd.tail, fwd.query, fwd.body,
                        source=written_for, target=now)
    if isinstance(again, str):
        # Into 2.1.1 (from a 2.2.1 or 2.3.0 sender, ``into_211``), or out of it (a 2.1.1 sender's message written
        # for its 2.1.1 receiver, which keeps nothing more, ``from_211_copy``): the step needs what the hub knows
        # (the kept Session, the held Location, token types), so the delivery engine asks the hub. Or a step that
        # refuses.
        return again if sent is None else f"{again} (its sender wrote it in OCPI {sent.version})"
    return replace(again, method=fwd.method, written_for=written_for)


def from_211_copy(fwd: ForwardRequest, now: str) -> bool:
    """A queued push whose only body is the one written for its receiver on OCPI 2.1.1 (a 2.1.1 sender's message
    for a 2.1.1 receiver, which keeps nothing more, or one queued before the sender's copy was kept), for that
    receiver now on 2.2.1 or 2.3.0. ``write_for`` refuses it (the step out of 2.1.1 needs what the hub knows of
    the parties); the delivery engine asks the hub to write it (``Delivery.write_with_hub``,
    docs/store-and-forward.md)."""
    return fwd.receiver_version == V211 and now != V211 and fwd.sent is None


def into_211(fwd: ForwardRequest, now: str) -> bool:
    """A queued push written for a receiver on OCPI 2.2.1 or 2.3.0, whose sender did not write it in 2.1.1, for that
    receiver now on 2.1.1 (it moved down, e.g. rolling back an upgrade). ``write_for`` refuses it (the step into
    2.1.1 needs what the hub holds: the Location a 2.1.1 Session embeds, the Session a PATCH's periods complete);
    the delivery engine asks the hub to write it (``Delivery.write_with_hub``, docs/store-and-forward.md)."""
    return (now == V211 and fwd.receiver_version not in ("", V211)
            and (fwd.sent is None or fwd.sent.version != V211))


def whole_when_behind(fwd: ForwardRequest) -> bool:
    """A push older than what its receiver already got of the object (or of a part of it) that is sent as a PUT of
    the hub's copy of the object rather than dropped (``Delivery.write_superseded``): a PUT or PATCH of a Location
    (EVSE, Connector), Tariff or Token, which the hub holds as GET All serves them, or of a Session, which it keeps
    as the receiver was sent it (catch-up). A newer PATCH, or a push of another part of a Location, does not carry
    its change (nor, in OCPI 2.2.1 and 2.3.0, an older Session PATCH's charging_periods, which are appended). A newer
    PUT of the object or of one holding it carried all of it: that drops any older push before this is asked."""
    return (fwd.module in ("locations", "sessions", "tariffs", "tokens") and fwd.interface_role == "RECEIVER"
            and fwd.method in ("PUT", "PATCH") and len(path_segments(fwd.tail)) >= 3)


def write_again(module: str, role: str, method: str, tail: str, query: str, body: bytes, *, source: str,
                target: str) -> WrittenAgain | str:
    """A queued push written for a receiver speaking OCPI ``source`` (body, query) in ``target``, the version that
    receiver registered in since; or why it cannot be (docs/store-and-forward.md, "When the receiver changes
    version or endpoint").

    Only between 2.2.1 and 2.3.0: those steps are functions of the object alone (the method tells a PATCH), and
    everything the hub read to write the message (the kept Session's periods, a Tariff PATCH sent as a PUT, the
    TokenType behind the URL) means the same in both. A step into or out of 2.1.1 needs what the hub read when the
    message arrived (the kept Session, the held Location, token types), which the queue does not hold.
    """
    if {source, target} != {V221, V230}:
        return (f"the receiver now speaks OCPI {target}; this {module} message was written for OCPI {source} and "
                "a step into or out of 2.1.1 needs what the hub read when it arrived: it is not translated again")
    segs = path_segments(tail)
    kind = request_kind(module, role, method, segs)
    losses: list[Loss] = []
    if body:
        if module not in _TRANSLATED_MODULES or kind is None or not translatable(kind, source, target):
            return (f"the receiver now speaks OCPI {target}; this {module} message was written for OCPI {source} "
                    "and holds no object the hub translates")
        try:
            data = orjson.loads(body)
            done = translate(kind, data, source=source, target=target,
                             ctx=Context(owner=owner_from_path(module, role, segs), partial=method == "PATCH"))
        except Untranslatable as exc:
            return (f"the receiver now speaks OCPI {target}; this {module} message was written for OCPI {source} "
                    f"and cannot be translated: {exc.message}")
        except (orjson.JSONDecodeError, RecursionError):
            return (f"the receiver now speaks OCPI {target}; this {module} message was written for OCPI {source} "
                    "and its body cannot be read again")
        body, losses = orjson.dumps(done.data), done.losses
    if (found := type_target_lacks(module, query, source, target)) is not None:
        query = with_query_type(query, "OTHER")
        losses.append(type_sent_as_other(found, source, target))
    return WrittenAgain(body, query, source, target, losses)


def type_target_lacks(module: str, query: str, source: str, target: str) -> str | None:
    """A Tokens URL's TokenType (``?type=``, OCPI 2.2.1 and 2.3.0 mod_tokens) that OCPI ``target`` does not have,
    so it goes there as OTHER (docs/versions.md, "Tokens"); None: the query goes as it is."""
    if module != "tokens" or target == source or target not in (V211, V221):
        return None
    found = query_type(query)
    return found if found is not None and found not in (TOKEN_TYPES_211 if target == V211 else TOKEN_TYPES_221) \
        else None


def type_sent_as_other(found: str, source: str, target: str) -> Loss:
    """The loss report of ``type_target_lacks``: the URL's TokenType ``found`` sent to ``target`` as OTHER."""
    return Loss("?type", MAPPED, f"TokenType {quote(found, safe='')} of the URL does not exist in OCPI {target}: sent "
                "as OTHER", f"{source}>{target}")


def request_kind(module: str, role: str, method: str, segs: list[str]) -> str | None:
    """The kind of object a request body holds, or None when it carries none the hub translates."""
    if module == "commands":
        if role == "RECEIVER" and segs:
            return _COMMAND_KINDS.get(segs[0].upper(), "Command:" + segs[0].upper())
        return kinds.COMMAND_RESULT if role == "SENDER" else None
    if module == "tokens" and role == "SENDER":
        return kinds.LOCATION_REFERENCES if method == "POST" else None
    if module == "sessions" and role == "SENDER" and len(segs) >= 2:
        return kinds.CHARGING_PREFERENCES
    if role != "RECEIVER" or method not in ("PUT", "PATCH", "POST"):
        return None
    if module == "locations":
        return _LOCATION_DEPTH.get(max(len(segs) - 2, 0))
    return _OBJECT_KIND.get(module)


def reply_kind(module: str, role: str, method: str, segs: list[str]) -> str | None:
    """The kind of object an answer's ``data`` holds (one object or a list of them), or None."""
    if module == "commands" and role == "RECEIVER" and method == "POST":
        return kinds.COMMAND_RESPONSE
    if module == "tokens" and role == "SENDER" and method == "POST":
        return kinds.AUTHORIZATION_INFO
    if method != "GET":
        return None
    if module == "locations":
        depth = len(segs) - 2 if role == "RECEIVER" else len(segs)
        return _LOCATION_DEPTH.get(max(depth, 0))
    return _OBJECT_KIND.get(module)


def command_lacking(module: str, role: str, segs: list[str], source: str, target: str) -> bool:
    """A command sent from another version that the receiver's version does not define (CANCEL_RESERVATION to a
    2.1.1 CPO, a type only a 2.3.0 OpenEnum holds): the hub answers NOT_SUPPORTED itself (docs/versions.md,
    "Commands")."""
    if module != "commands" or role != "RECEIVER" or not segs or source == target:
        return False
    known = _COMMAND_TYPES_211 if target == V211 else frozenset(_COMMAND_KINDS)
    return segs[0].upper() not in known


def check_charging_preferences(module: str, role: str, segs: list[str], target: str) -> None:
    """Charging preferences for a 2.1.1 CPO's session: 2.1.1 has none, and no 2.1.1 EVSE is
    CHARGING_PREFERENCES_CAPABLE, for which OCPI 2.2.1 mod_sessions has the receiver answer HTTP 404 with 2001."""
    if module == "sessions" and role == "SENDER" and target == V211 and len(segs) >= 2:
        raise InvalidParameters("the CPO speaks OCPI 2.1.1: its EVSEs cannot take charging preferences",
                                http_status=404)


# OCPI 2.2.1 and 2.3.0 status_codes: 2004 Unknown Token (2.1.1 has no such code).
UNKNOWN_TOKEN = 2004


def unknown_token_211(module: str, role: str, method: str, segs: list[str], source: str, target: str,
                      status: int) -> bool:
    """A 2.1.1 eMSP's HTTP ``status`` to a newer CPO's real-time authorization that means "unknown token": OCPI 2.1.1
    mod_tokens names only the HTTP 404 (whatever the body), OCPI 2.2.1 and 2.3.0 mod_tokens require 404 with 2004
    and no ``data``, which the hub then answers in its place (docs/versions.md, "Tokens")."""
    return (status == 404 and target == V211 and source != V211 and module == "tokens" and role == "SENDER"
            and method == "POST" and len(segs) == 2 and segs[1] == "authorize")


def not_supported(command: str, source: str, target: str) -> dict[str, Any]:
    """The CommandResponse NOT_SUPPORTED in the sender's version ``source``: 2.1.1 has only ``result``; 2.2.1 and
    2.3.0 require ``timeout`` (0: no result will follow) and may say why."""
    if source == V211:
        return {"result": "NOT_SUPPORTED"}
    return {"result": "NOT_SUPPORTED", "timeout": 0,
            "message": [{"language": "en", "text": f"OCPI {target}, which the receiver speaks, has no {command}"}]}


def owner_from_path(module: str, role: str, segs: list[str]) -> tuple[str, str] | None:
    """Client Owned Object paths name the owner: ``{country_code}/{party_id}/{id}`` (RECEIVER interfaces)."""
    if role == "RECEIVER" and module in ("locations", "sessions", "tariffs", "tokens") and len(segs) >= 2:
        return segs[0].upper(), segs[1].upper()
    return None


@dataclass
class Bridged:
    """A body in the receiver's version, and what that cost."""

    data: Any
    losses: list[Loss] = field(default_factory=list)

    def encode(self) -> bytes:
        return orjson.dumps(self.data)


def translate_body(kind: str | None, module: str, data: Any, *, source: str, target: str,
                   ctx: Context) -> Bridged:
    """``data`` (a request body) from ``source`` to ``target``; Untranslatable (400/2001) when impossible."""
    if source == target or data is None:
        return Bridged(data)
    if module in UNCHANGED_221_230 and {source, target} == {V221, V230}:
        return Bridged(data)
    if kind is None:
        if module in UNCHANGED_221_230 or module not in ("locations", "sessions", "cdrs", "tariffs", "tokens",
                                                          "commands"):
            return Bridged(data)
        raise InvalidParameters(f"this {module} request has a body the hub cannot carry from OCPI {source} to "
                                f"{target}")
    if not translatable(kind, source, target):
        raise Untranslatable("body", f"a {kind} cannot be carried between OCPI {source} and {target}", target)
    done = translate(kind, data, source=source, target=target, ctx=ctx)
    return Bridged(done.data, done.losses)


def translate_reply(body: bytes, kind: str | None, *, source: str, target: str,
                    ctx: Context) -> tuple[bytes, list[Loss]]:
    """An answer's envelope with its ``data`` in ``target``; an object of a list that cannot be expressed there
    is left out of the list and reported, an answer that is one such object becomes ``data: null`` (reported).
    Answers without data, or not translatable as a whole, pass as they are."""
    if source == target or kind is None or not translatable(kind, source, target):
        return body, []
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, []
    if not isinstance(doc, dict) or doc.get("data") is None:
        return body, []
    refuse_deep_answer(body, doc)
    data = doc["data"]
    losses: list[Loss] = []
    if isinstance(data, list):
        out = []
        for i, item in enumerate(data):
            try:
                done = translate(kind, item, source=source, target=target, ctx=ctx)
            except Untranslatable as exc:
                losses.append(Loss(f"data[{i}]", kinds.DROPPED, f"left out of the list: {exc.message}",
                                   f"{source}>{target}"))
                continue
            out.append(done.data)
            losses.extend(_under(f"data[{i}]", done.losses))
        doc["data"] = out
    else:
        try:
            done = translate(kind, data, source=source, target=target, ctx=ctx)
            doc["data"] = done.data
            losses.extend(_under("data", done.losses))
        except Untranslatable as exc:
            doc["data"] = None
            losses.append(Loss("data", kinds.DROPPED, exc.message, f"{source}>{target}"))
    return orjson.dumps(doc), losses


def refuse_deep_answer(body: bytes, doc: Any) -> None:
    """An answer to translate that nests deeper than the hub's JSON limit (``MAX_JSON_DEPTH``; orjson reads 1024
    levels, the translators recurse and orjson writes at most 254) is not one the hub can carry across versions:
    502 / 4000, as for any answer the hub cannot use, never a RecursionError and a 500."""
    if nests_too_deep(body, doc):
        raise HubError(f"receiver's answer nests JSON deeper than {MAX_JSON_DEPTH} levels: the hub cannot translate "
                       "it into the caller's OCPI version")


def _under(prefix: str, losses: list[Loss]) -> list[Loss]:
    return [Loss(f"{prefix}.{loss.path}" if loss.path else prefix, loss.rule, loss.detail, loss.step)
            for loss in losses]


def report(source: str, target: str, losses: list[Loss]) -> dict[str, Any]:
    """The loss report as the audit record keeps it."""
    return {"from": source, "to": target, "losses": [loss.as_dict() for loss in losses]}


# -- OCPI 2.1.1 callers: one party, no routing headers -----------------------------------------------------------

# What a 2.1.1 party pushes to every counterpart (TO = the hub): the broadcast modules of its role.
_BROADCAST_211 = {"CPO": frozenset({"locations", "tariffs"}), "EMSP": frozenset({"tokens"})}


def hub_interface_211(party_role: str, module: str) -> str:
    """The interface the hub plays for a 2.1.1 caller: the opposite of the one the caller's role offers for that
    module (a CPO pushes its Locations to the hub's eMSP interface, RECEIVER; an eMSP pulls them from the hub's
    CPO interface, SENDER). OCPI 2.1.1 mod_* "CPO Interface" / "eMSP Interface"."""
    if party_role not in ROLES_211:
        raise InvalidParameters(f"OCPI 2.1.1 connections are CPOs or eMSPs; this one is {party_role}")
    offered = interface_role_211(module, party_role)
    if offered is None or module == "credentials":
        raise InvalidParameters(f"OCPI 2.1.1 has no {module} module")
    return "RECEIVER" if offered == "SENDER" else "SENDER"


def addressed_to_hub_211(party_role: str, module: str, role: str, method: str, segs: list[str]) -> bool:
    """TO for a 2.1.1 request: the hub for broadcast pushes (a CPO's Tariff DELETE included) and for list pulls
    (GET All); otherwise the hub finds the receiver by content (open routing: token owner, location, session)."""
    if role == "RECEIVER" and method in ("PUT", "PATCH") and module in _BROADCAST_211.get(party_role, ()):
        return True
    if role == "RECEIVER" and method == "DELETE" and module in BROADCAST_DELETES_211:
        return party_role == DATA_OWNER[module]
    return role == "SENDER" and method == "GET" and not segs

