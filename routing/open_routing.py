"""Open routing (no TO headers): the hub finds the receiver from content it has seen (OCPI 2.2.1 Open Routing Request).

Keys the hub learns from traffic passing through it (``learn``) and looks up (``find_receiver``):
token uid+type → eMSP, contract id → eMSP (for OCPI 2.1.1 ``auth_id``), location id → CPO, session id → CPO,
session → eMSP, reservation id → CPO.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from routing.ocpi.errors import InvalidParameters, NotEnoughInformation, UnknownReceiver
from routing.ocpi.headers import Party
from routing.ocpi.token_query import query_type, with_query_type
from routing.ocpi.translate.common import TOKEN_TYPES_211, TOKEN_TYPES_221
from routing.ocpi.versions import V211, V221
from routing.router import InboundRequest

log = logging.getLogger("routing.open_routing")

_COMMAND_KEYS = (("location_id", "location"), ("session_id", "session"), ("reservation_id", "reservation"))
# The body field each command is routed by (OCPI 2.2.1 mod_commands); unknown commands try the fields in _COMMAND_KEYS
# order.
_KEY_OF_COMMAND = {"START_SESSION": _COMMAND_KEYS[0], "RESERVE_NOW": _COMMAND_KEYS[0],
                   "UNLOCK_CONNECTOR": _COMMAND_KEYS[0], "STOP_SESSION": _COMMAND_KEYS[1],
                   "CANCEL_RESERVATION": _COMMAND_KEYS[2]}


class HintStore(Protocol):
    async def add_route_hints(self, hints: Sequence[tuple[str, str, str]]) -> None: ...

    async def find_route_hint(self, kind: str, key: str) -> list[str]: ...


# Kinds whose key is personal data (a token uid): stored only as a keyed hash, so a leaked store does not
# give them away; the hub can still look them up, hashing the uid it is asked about the same way.
HASHED_KINDS = frozenset({"token", "contract"})


class RouteHints:
    """Hints in the durable store, fronted by a bounded in-process cache (lookups sit on the routing path).

    Writes go behind the routing path: the cache knows a hint at once, the store a moment later, in one
    batch (other hub processes see it from then on). Keys of ``HASHED_KINDS`` reach the store as an HMAC under
    the first of ``hint_keys``; a look-up that misses tries the older keys (a secret-key rotation in progress).
    """

    def __init__(self, store: HintStore, hint_keys: Sequence[bytes], cache_size: int = 100_000,
                 flush_delay: float = 0.05, refresh_after: float = 86400.0) -> None:
        if not hint_keys:
            raise ValueError("RouteHints needs at least one hint key")
        self.store = store
        self.hint_keys = tuple(hint_keys)
        self.cache_size = cache_size
        self.flush_delay = flush_delay
        # A hint pushed again is written again (its ``seen`` refreshed, so retention keeps it) at most this often.
        self.refresh_after = refresh_after
        self._cache: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        self._written: dict[tuple[str, str], float] = {}  # monotonic time this process last wrote the first party
        self._unwritten: dict[tuple[str, str, str], None] = {}
        self._writer: asyncio.Task[None] | None = None

    async def add(self, kind: str, key: str, party: str) -> None:
        key = key.upper()  # ids are CiString: case-insensitive (OCPI 2.2.1 types)
        known = self._cache.get((kind, key))
        now = time.monotonic()
        if known and known[0] == party and now - self._written.get((kind, key), -math.inf) < self.refresh_after:
            return
        parties = [party, *[p for p in known or [] if p != party]]
        self._remember(kind, key, parties)
        self._written[(kind, key)] = now
        if len(parties) > 1 and kind in HASHED_KINDS:
            # For the operator (logs only): the key is now ambiguous and open routing will refuse it.
            log.warning("open routing: a %s key is now claimed by %s; open-routed requests for it get 4001",
                        kind, ", ".join(parties))
        self._unwritten[(kind, self._stored_key(kind, key), party)] = None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_soon())

    async def flush(self) -> None:
        while self._unwritten:
            batch, self._unwritten = list(self._unwritten), {}
            try:
                await self.store.add_route_hints(batch)
            except Exception:
                log.warning("writing %d route hints failed; kept for the next try", len(batch), exc_info=True)
                for hint in batch:
                    self._unwritten.setdefault(hint, None)
                return

    async def _write_soon(self) -> None:
        await asyncio.sleep(self.flush_delay)
        await self.flush()

    async def find(self, kind: str, key: str) -> list[str]:
        key = key.upper()
        known = self._cache.get((kind, key))
        if known is not None:
            self._cache.move_to_end((kind, key))
            return known
        parties: list[str] = []
        for stored in self._stored_keys(kind, key):
            parties = await self.store.find_route_hint(kind, stored)
            if parties:
                self._remember(kind, key, parties)
                break
        return parties

    def _stored_key(self, kind: str, key: str) -> str:
        if kind not in HASHED_KINDS:
            return key
        return hmac.new(self.hint_keys[0], key.encode(), hashlib.sha256).hexdigest()

    def _stored_keys(self, kind: str, key: str) -> list[str]:
        if kind not in HASHED_KINDS:
            return [key]
        return [hmac.new(k, key.encode(), hashlib.sha256).hexdigest() for k in self.hint_keys]

    def _remember(self, kind: str, key: str, parties: list[str]) -> None:
        self._cache[(kind, key)] = parties
        self._cache.move_to_end((kind, key))
        while len(self._cache) > self.cache_size:
            evicted, _ = self._cache.popitem(last=False)
            self._written.pop(evicted, None)


def _party(key: str) -> Party:
    cc, _, pid = key.partition(":")
    return Party(cc, pid)


def token_key(uid: str, token_type: str | None) -> str:
    return f"{uid}|{(token_type or 'RFID').upper()}"


Admits = Callable[[str], bool]  # may the sender reach this candidate ("CC:PID")? (roaming agreements)

# TokenTypes of the versions that lack some (OCPI 2.1.1 and 2.2.1 mod_tokens; 2.3.0's OpenEnum has them all), and
# the types newer versions added, which reach those versions as OTHER (docs/versions.md, "Tokens").
_TOKEN_TYPES = {V211: TOKEN_TYPES_211, V221: TOKEN_TYPES_221}
_ADDED_TYPES = ("AD_HOC_USER", "APP_USER", "EMAID")


def types_as_other(req: InboundRequest, version: str, target: str | None = None) -> tuple[str, ...]:
    """The TokenTypes a real-time authorization with ``?type=OTHER`` (OCPI 2.2.1 mod_tokens, Sender ``authorize``)
    may stand for: those the caller's ``version`` lacks, which reached it as OTHER, and, once the receiver is known,
    that its version (``target``) has. Empty for every other request; decided without I/O."""
    segs = req.segments
    if not (req.module == "tokens" and req.interface_role == "SENDER" and len(segs) == 2 and segs[1] == "authorize"
            and version in _TOKEN_TYPES and (query_type(req.query) or "").upper() == "OTHER"):
        return ()
    lacking = [t for t in _ADDED_TYPES if t not in _TOKEN_TYPES[version]]
    has = _TOKEN_TYPES.get(target or "")
    return tuple(t for t in lacking if has is None or t in has)


async def type_behind_other(req: InboundRequest, hints: RouteHints, types: Sequence[str], *,
                            admits: Admits | None = None, to: Party | None = None) -> str | None:
    """The type the eMSP gave a token the caller authorizes as OTHER (``types``: ``types_as_other``), put in the
    query so the token is found and the eMSP is asked about its own type; returned, None when the query stays.

    Looked up among the eMSPs the caller may reach (``admits``; open routing) or at the addressed one (``to``). A
    uid known there as OTHER only, or under no type, leaves the query as it is. A uid known under several of these
    types is ambiguous, never guessed: 4001 when open routing, 2002 (not enough information) when addressed."""
    uid = req.segments[0]
    found = []
    for token_type in ("OTHER", *types):
        parties = await hints.find("token", token_key(uid, token_type))
        if to is not None:
            parties = [p for p in parties if p == to.key]
        elif admits is not None:
            parties = [p for p in parties if admits(p)]
        if parties:
            found.append(token_type)
    if len(found) > 1:
        what = (f"token {uid} of type OTHER is ambiguous (known with more than one type that your OCPI version "
                "shows as OTHER)")
        if to is not None:
            raise NotEnoughInformation(what)
        raise UnknownReceiver(f"open routing: {what}")
    if not found or found[0] == "OTHER":
        return None
    req.query = with_query_type(req.query, found[0])
    return found[0]


async def _one(hints: RouteHints, kind: str, key: str, what: str, admits: Admits | None = None) -> Party:
    parties = await hints.find(kind, key)
    if admits is not None:
        # Candidates the sender has no roaming agreement with are not candidates: never named, never counted, so
        # the answer says nothing about where else the key is known (docs/agreements.md).
        parties = [p for p in parties if admits(p)]
        if not parties:
            raise UnknownReceiver(f"open routing: no receiver you have a roaming agreement with is known for {what}; "
                                  "send OCPI-to-* headers")
    if not parties:
        raise UnknownReceiver(f"open routing: no receiver known for {what}; send OCPI-to-* headers")
    if len(parties) > 1:
        # Naming the parties would tell any caller who else holds this key (a token uid: whose card it is).
        raise UnknownReceiver(f"open routing: {what} is ambiguous (known at more than one party); "
                              "send OCPI-to-* headers")
    return _party(parties[0])


def _cdr_token_owner(body: Any) -> Party | None:
    token = body.get("cdr_token") if isinstance(body, dict) else None
    if not isinstance(token, dict):
        return None
    cc, pid = token.get("country_code"), token.get("party_id")
    if isinstance(cc, str) and isinstance(pid, str):
        return Party(cc.upper(), pid.upper())
    return None


async def find_receiver(req: InboundRequest, hints: RouteHints, admits: Admits | None = None) -> Party:
    """The party a request without TO headers is meant for, or a clear 4001 saying why not; with ``admits``, only
    among the candidates the sender may reach (routing/roaming.py)."""
    segs, body = req.segments, req.json_body
    if req.method == "GET" and not segs:
        raise InvalidParameters("a GET list needs TO headers: TO = the hub for GET All, or TO = one party")
    if req.module == "tokens" and req.interface_role == "SENDER" and len(segs) == 2 and segs[1] == "authorize":
        return await _one(hints, "token", token_key(segs[0], query_type(req.query)), f"token {segs[0]}", admits)
    if req.module == "commands" and req.interface_role == "RECEIVER" and isinstance(body, dict):
        command = segs[0].upper() if segs else ""
        candidates = (_KEY_OF_COMMAND[command],) if command in _KEY_OF_COMMAND else _COMMAND_KEYS
        for field_name, kind in candidates:
            if isinstance(body.get(field_name), str):
                return await _one(hints, kind, body[field_name], f"{field_name} {body[field_name]}", admits)
        names = " or ".join(f for f, _ in candidates)
        raise UnknownReceiver(f"open routing: the command names no {names}; send OCPI-to-* headers")
    if req.module in ("sessions", "cdrs") and req.interface_role == "RECEIVER":
        owner = _cdr_token_owner(body)
        if owner is not None:
            return owner
        if req.module == "sessions" and len(segs) >= 3:
            key = f"{segs[0].upper()}:{segs[1].upper()}:{segs[2]}"
            return await _one(hints, "session_emsp", key, f"session {segs[2]}", admits)
        raise UnknownReceiver(f"open routing: the {req.module} request carries no cdr_token; send OCPI-to-* headers")
    if req.module == "chargingprofiles" and req.interface_role == "RECEIVER" and segs:
        return await _one(hints, "session", segs[0], f"session {segs[0]}", admits)
    if req.module == "chargingprofiles" and req.interface_role == "SENDER" and segs and req.routing.from_:
        # ActiveChargingProfile pushes go to whoever set a profile on that session (OCPI 2.2.1 mod_charging_profiles).
        key = f"{req.routing.from_.key}:{segs[0]}"
        return await _one(hints, "profile_setter", key, f"charging profiles of session {segs[0]}", admits)
    if req.module == "sessions" and req.interface_role == "SENDER" and len(segs) >= 2:
        return await _one(hints, "session", segs[0], f"session {segs[0]}", admits)  # {session_id}/charging_preferences
    if req.module == "locations" and req.interface_role == "SENDER" and segs:
        return await _one(hints, "location", segs[0], f"location {segs[0]}", admits)
    raise UnknownReceiver(f"open routing is not possible for {req.method} {req.module} {req.interface_role}; "
                          "send OCPI-to-* headers")


def _is_token_owner(req: InboundRequest, owner: str) -> bool:
    """Only a token's owner teaches the hub where its uid goes: the eMSP named in the path is the sender (FROM)
    and holds the EMSP role on the sending platform. Anyone else could steer or block that token's
    authorizations."""
    sender = req.routing.from_
    if sender is None or sender.key != owner:
        return False
    return any(p.key == owner and p.role == "EMSP" for p in req.platform.parties)


def learns(req: InboundRequest) -> bool:
    """Whether ``learn`` has anything to look at: a RECEIVER push with a JSON object (callers skip the call
    otherwise, once per routed GET)."""
    return req.interface_role == "RECEIVER" and req.method in ("PUT", "POST") and isinstance(req.json_body, dict)


async def learn(req: InboundRequest, hints: RouteHints, to: Party | None) -> None:
    """Remember owners the request reveals, so later requests without TO headers can be routed."""
    body = req.json_body
    if not learns(req) or not isinstance(body, dict):
        return
    segs = req.segments
    if req.module == "tokens" and len(segs) == 3:
        token_owner = f"{segs[0].upper()}:{segs[1].upper()}"
        if _is_token_owner(req, token_owner):
            await hints.add("token", token_key(segs[2], body.get("type") or query_type(req.query)), token_owner)
            if isinstance(body.get("contract_id"), str):  # OCPI 2.1.1 sessions and CDRs name only this (auth_id)
                await hints.add("contract", body["contract_id"], token_owner)
    elif req.module == "locations" and len(segs) == 3:
        await hints.add("location", segs[2], f"{segs[0].upper()}:{segs[1].upper()}")
    elif req.module == "sessions" and len(segs) == 3:
        await hints.add("session", segs[2], f"{segs[0].upper()}:{segs[1].upper()}")
        owner = _cdr_token_owner(body) or to
        if owner is not None:
            await hints.add("session_emsp", f"{segs[0].upper()}:{segs[1].upper()}:{segs[2]}", owner.key)
    elif req.module == "chargingprofiles" and req.method == "PUT" and segs and to is not None \
            and req.routing.from_ is not None:
        await hints.add("profile_setter", f"{to.key}:{segs[0]}", req.routing.from_.key)
    elif req.module == "commands" and segs and segs[0] == "RESERVE_NOW" and to is not None:
        if isinstance(body.get("reservation_id"), str):
            await hints.add("reservation", body["reservation_id"], to.key)
