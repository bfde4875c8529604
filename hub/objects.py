"""Objects pushed to the hub itself (broadcast) are kept so the hub can answer GET All (OCPI 2.2.1 Broadcast Push; GET
All via Hub).

Only data addressed to the hub is merged into one copy: a direct push to one party is that party's business
and is never stored (OCPI 2.2.1 Message Routing, maintainer #507/#511). ``last_updated`` is the owner's, never the
hub's; the one exception is a 2.1.1 PATCH without one, kept with the time the hub received it (``Bridge.as_kept``).

EVSE and Connector pushes are a read-modify-write of the stored Location: ``object_lock`` makes them one writer
per object at a time, in this process and across hub processes, so concurrent pushes never lose an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import LockError

from hub.store.protocol import ObjectStore, StoredObject
from routing import keys
from routing.ocpi.errors import InvalidParameters, ServerError
from routing.ocpi.pagination import Page, parse_datetime
from routing.ocpi.token_query import query_type, with_query_type
from routing.ocpi.translate import Context, Loss, Untranslatable, translate
from routing.ocpi.translate import base as kinds
from routing.ocpi.translate.base import DROPPED
from routing.ocpi.versions import V211, V221
from routing.platform import utcnow

GET_ALL_MODULES = frozenset({"locations", "tariffs", "tokens"})
# The kind of object a push holds, by path depth ({country_code}/{party_id}/{id}[/{evse_uid}[/{connector_id}]]).
_KIND_AT_DEPTH = {"locations": {3: kinds.LOCATION, 4: kinds.EVSE, 5: kinds.CONNECTOR},
                  "tariffs": {3: kinds.TARIFF}, "tokens": {3: kinds.TOKEN}}
# Who may see what through GET All: the same audience a broadcast of that data reaches.
_VIEWERS = {
    "locations": frozenset({"EMSP", "NSP", "NAP", "OTHER"}),
    "tariffs": frozenset({"EMSP", "NSP", "NAP", "OTHER"}),
    "tokens": frozenset({"CPO"}),
}


def object_id(module: str, segs: list[str], body: Any, query: str) -> str:
    if module != "tokens":
        return segs[2]
    token_type = body.get("type") if isinstance(body, dict) else None
    token_type = token_type or query_type(query) or "RFID"
    return f"{segs[2]}|{str(token_type).upper()}"


async def type_211_token(store: ObjectStore, segs: list[str], body: Any, query: str) -> str:
    """The query of a 2.1.1 eMSP's Token push with the token's type in it. OCPI 2.1.1 names a token by uid alone,
    2.2.1 and 2.3.0 by uid and ``?type=`` (default RFID): an OTHER token's push carries ``type=OTHER``, taken from
    the body or, for a PATCH without one, from the hub's copy of that uid."""
    if query_type(query) is not None:
        return query
    token_type = body.get("type") if isinstance(body, dict) else None
    if not isinstance(token_type, str):
        cc, pid = segs[0].upper(), segs[1].upper()
        if await store.get_object("tokens", cc, pid, f"{segs[2]}|RFID") is not None:
            return query
        if await store.get_object("tokens", cc, pid, f"{segs[2]}|OTHER") is None:
            return query
        token_type = "OTHER"
    if token_type.upper() == "RFID":
        return query
    return with_query_type(query, token_type)


# Longest a writer may hold an object (it expires with a dead process), and longest another one waits for it.
LOCK_SECONDS = 10.0
_local_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock name -> (lock, users): waiters in this process


def _lock_name(prefix: str, module: str, segs: list[str], body: Any, query: str) -> str:
    owner = f"{segs[0].upper()}:{segs[1].upper()}"
    return keys.object_lock(prefix, module, owner, object_id(module, segs, body, query))


@contextlib.asynccontextmanager
async def object_lock(redis: Redis, prefix: str, module: str, segs: list[str], body: Any,
                      query: str) -> AsyncIterator[None]:
    """Hold one pushed object: its stored copy and its fan-out are then in the same order in every process.

    Waiters of this process queue on an asyncio lock; only one of them at a time contends for the Redis lock.
    """
    name = _lock_name(prefix, module, segs, body, query)
    local, users = _local_locks.get(name, (asyncio.Lock(), 0))
    _local_locks[name] = (local, users + 1)
    try:
        async with local:
            lock = redis.lock(name, timeout=LOCK_SECONDS, sleep=0.01, blocking_timeout=LOCK_SECONDS,
                              thread_local=False)
            if not await lock.acquire():
                raise ServerError("the object is being updated by another request for too long; try again")
            try:
                yield
            finally:
                with contextlib.suppress(LockError):  # expired meanwhile: nothing left to release
                    await lock.release()
    finally:
        local, users = _local_locks[name]
        if users > 1:
            _local_locks[name] = (local, users - 1)
        else:
            del _local_locks[name]


def last_updated_of(data: dict[str, Any]) -> datetime:
    """An object's own last_updated (what date_from/date_to filter on); now when it has none. One that is not a
    DateTime string (OCPI 2.2.1 types) is 400 / 2001, as an unparsable one is."""
    value = data.get("last_updated")
    if value is None:
        return utcnow()
    if not isinstance(value, str):
        raise InvalidParameters(f"last_updated is not an RFC 3339 DateTime string: {type(value).__name__}")
    return parse_datetime(value, "last_updated")


def merge_patch(kind: str, kept: dict[str, Any], kept_version: str, patch: dict[str, Any], version: str,
                owner: tuple[str, str]) -> dict[str, Any]:
    """A PATCH of a whole object merged into the hub's copy: its fields replace the copy's (OCPI 2.2.1 Transport and
    format, PATCH), except a Session's ``charging_periods``, which a 2.2.1 or 2.3.0 PATCH appends (OCPI 2.2.1 and
    2.3.0 mod_sessions, Receiver PATCH; a 2.1.1 PATCH replaces them). A PATCH written in another version than the
    copy (its owner moved to a newer one) is translated into the copy's version first."""
    appends = kind == kinds.SESSION and version != V211
    if version != kept_version:
        patch = translate(kind, patch, source=version, target=kept_version,
                          ctx=Context(owner=owner, partial=True)).data
    merged = {**kept, **patch}
    added = patch.get("charging_periods")
    if appends and isinstance(added, list) and isinstance(kept.get("charging_periods"), list):
        merged["charging_periods"] = kept["charging_periods"] + added
    return merged


def in_version(objects: Sequence[tuple[str, dict[str, Any], str, Context]],
               version: str) -> tuple[list[dict[str, Any]], list[Loss]]:
    """A page of kept objects, each ``(kind, data, version it is written in, context)``, in the viewer's
    ``version``; an object that version cannot hold is left out and reported (its index names it)."""
    if all(written_in == version for _, _, written_in, _ in objects):
        return [data for _, data, _, _ in objects], []
    out: list[dict[str, Any]] = []
    losses: list[Loss] = []
    for i, (kind, data, written_in, ctx) in enumerate(objects):
        if written_in == version:
            out.append(data)
            continue
        try:
            done = translate(kind, data, source=written_in, target=version, ctx=ctx)
        except Untranslatable as exc:
            losses.append(Loss(f"data[{i}]", DROPPED, f"left out of the page: {exc.message}",
                               f"{written_in}>{version}"))
            continue
        out.append(done.data)
        losses.extend(Loss(f"data[{i}].{loss.path}", loss.rule, loss.detail, loss.step) for loss in done.losses)
    return out, losses


def _find_child(parent: dict[str, Any], field: str, key: str, child_id: str) -> dict[str, Any] | None:
    for child in parent.get(field) or []:
        if isinstance(child, dict) and str(child.get(key)) == child_id:
            return child
    return None


def _apply_child(parent: dict[str, Any], field: str, key: str, child_id: str, body: dict[str, Any],
                 replace: bool) -> None:
    """PUT replaces (or adds) the child, PATCH merges into an existing one."""
    existing = _find_child(parent, field, key, child_id)
    if existing is not None:
        if replace:
            existing.clear()
        existing.update(body)
    elif replace and isinstance(parent.setdefault(field, []), list):
        parent[field].append(body)


async def store_push(store: ObjectStore, module: str, method: str, segs: list[str], body: Any, query: str, *,
                     version: str = V221) -> None:
    """Apply a broadcast PUT/PATCH to the hub's copy: object, EVSE or Connector level (Locations).

    The copy is kept in its owner's version. A push in another version (the owner moved to a newer one) replaces
    a whole object in that version, and is translated into the stored version when it changes only part of it.
    """
    if not isinstance(body, dict):
        raise InvalidParameters(f"{method} {module} needs a JSON object body")
    last_updated_of(body)  # refused (400 / 2001) when it is no DateTime, whatever the hub holds of the object
    cc, pid = segs[0].upper(), segs[1].upper()
    oid = object_id(module, segs, body, query)
    existing = await store.get_object(module, cc, pid, oid)
    if len(segs) == 3:
        if method == "PUT":
            data = body  # a whole object, in its owner's current version
        elif existing is None:
            return  # a PATCH of an object the hub never saw cannot become a whole object
        else:
            data = merge_patch(_KIND_AT_DEPTH[module][3], existing.data, existing.ocpi_version, body, version,
                               (cc, pid))
            version = existing.ocpi_version
    else:  # Locations: EVSE (depth 4) or Connector (depth 5)
        if existing is None:
            return
        if existing.ocpi_version != version:
            body = translate(_KIND_AT_DEPTH[module][len(segs)], body, source=version, target=existing.ocpi_version,
                             ctx=Context(owner=(cc, pid), partial=method == "PATCH")).data
            version = existing.ocpi_version
        data = copy.deepcopy(existing.data)
        replace = method == "PUT"
        if len(segs) == 4:
            _apply_child(data, "evses", "uid", segs[3], body, replace)
        else:
            evse = _find_child(data, "evses", "uid", segs[3])
            if evse is None:
                return
            _apply_child(evse, "connectors", "id", segs[4], body, replace)
        pushed = body.get("last_updated")
        if isinstance(pushed, str) and (not isinstance(data.get("last_updated"), str)
                                        or last_updated_of(body) > last_updated_of(data)):
            data["last_updated"] = pushed  # OCPI: a child's change bumps the parent's last_updated
    await store.save_object(StoredObject(module=module, country_code=cc, party_id=pid, object_id=oid,
                                         last_updated=last_updated_of(data), data=data, ocpi_version=version))


async def forget_deleted(store: ObjectStore, module: str, segs: list[str]) -> None:
    """The owner DELETEd a tariff at a receiver, or (2.1.1 CPOs) broadcast its DELETE: the GET All copy goes too.

    A 2.2.1 or 2.3.0 CPO sends a DELETE to each eMSP itself, but the owner saying that its tariff no longer exists
    holds for every viewer of the hub's copy, so that copy must not outlive it.
    """
    if module == "tariffs" and len(segs) == 3:
        await store.delete_object(module, segs[0], segs[1], segs[2])


async def get_all(store: ObjectStore, module: str, viewer_roles: Iterable[str], page: Page, *,
                  version: str = V221, owners: Collection[tuple[str, str]] | None = None,
                  ) -> tuple[list[dict[str, Any]], int, list[Loss], int]:
    """One page of the module's objects for a party holding ``viewer_roles`` (any one of them may suffice), each
    in the viewer's OCPI ``version``; an object that version cannot hold is left out and reported. ``owners``:
    only those parties' objects (the viewer's roaming partners, routing/roaming.py); None: everyone's.

    Returns the page, the total, the losses and how many objects of the list the page covers. The total and that
    count include left-out objects: the offsets index the stored list, so ``X-Total-Count`` is its size and the
    next page starts after them (OCPI 2.2.1 Pagination; docs/versions.md)."""
    if module not in GET_ALL_MODULES:
        raise InvalidParameters(f"GET All is served for locations, tariffs and tokens; for {module} "
                                "address the party concerned with OCPI-to-* headers")
    if _VIEWERS[module].isdisjoint(viewer_roles):
        return [], 0, [], 0
    items, total = await store.list_objects(module, date_from=page.date_from, date_to=page.date_to,
                                            offset=page.offset, limit=page.limit, owners=owners)
    kind = _KIND_AT_DEPTH[module][3]
    out, losses = in_version([(kind, o.data, o.ocpi_version, Context(owner=(o.country_code, o.party_id)))
                              for o in items], version)
    return out, total, losses, len(items)
