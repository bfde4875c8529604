"""Objects pushed to the hub itself (broadcast) are kept so the hub can answer GET All (digest §3.5, §3.7).

Only data addressed to the hub is merged into one copy: a direct push to one party is that party's business
and is never stored (digest §3.8, maintainer #507/#511). ``last_updated`` is the owner's, never the hub's.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from hub.ocpi.errors import InvalidParameters
from hub.ocpi.pagination import Page, parse_datetime
from hub.platform import utcnow
from hub.store.protocol import ObjectStore, StoredObject

GET_ALL_MODULES = frozenset({"locations", "tariffs", "tokens"})
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
    token_type = token_type or (parse_qs(query).get("type") or ["RFID"])[0]
    return f"{segs[2]}|{str(token_type).upper()}"


def _last_updated(data: dict[str, Any]) -> datetime:
    value = data.get("last_updated")
    return parse_datetime(value, "last_updated") if isinstance(value, str) else utcnow()


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


async def store_push(store: ObjectStore, module: str, method: str, segs: list[str], body: Any, query: str) -> None:
    """Apply a broadcast PUT/PATCH to the hub's copy: object, EVSE or Connector level (Locations)."""
    if not isinstance(body, dict):
        raise InvalidParameters(f"{method} {module} needs a JSON object body")
    cc, pid = segs[0].upper(), segs[1].upper()
    oid = object_id(module, segs, body, query)
    existing = await store.get_object(module, cc, pid, oid)
    if len(segs) == 3:
        if method == "PUT" or existing is None:
            if method != "PUT":
                return  # a PATCH of an object the hub never saw cannot become a whole object
            data = body
        else:
            data = {**existing.data, **body}
    else:  # Locations: EVSE (depth 4) or Connector (depth 5)
        if existing is None:
            return
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
                                        or _last_updated(body) > _last_updated(data)):
            data["last_updated"] = pushed  # OCPI: a child's change bumps the parent's last_updated
    await store.save_object(StoredObject(module=module, country_code=cc, party_id=pid, object_id=oid,
                                         last_updated=_last_updated(data), data=data))


async def get_all(store: ObjectStore, module: str, viewer_role: str, page: Page) -> tuple[list[dict[str, Any]], int]:
    if module not in GET_ALL_MODULES:
        raise InvalidParameters(f"GET All is served for locations, tariffs and tokens; for {module} "
                                "address the party concerned with OCPI-to-* headers")
    if viewer_role not in _VIEWERS[module]:
        return [], 0
    items, total = await store.list_objects(module, date_from=page.date_from, date_to=page.date_to,
                                            offset=page.offset, limit=page.limit)
    return [o.data for o in items], total
