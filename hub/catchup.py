"""Catch-up (docs/catchup.md): the Sessions and CDRs the hub routed are kept for ``HUB_CATCHUP_DAYS``, sealed, so a
party that was away, or lost data, can fetch what was addressed to it from the hub: GET on the Sessions or CDRs
SENDER interface with TO = the hub, paginated as GET All (OCPI 2.2.1 Pagination).

Kept as their sender wrote them (and in its version); served in the caller's version. Keeping never fails the
request it follows: the receiver has taken the message, and that answer is what the sender must get.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Final

from hub.context import Hub
from hub.objects import in_version, last_updated_of, merge_patch
from hub.store.protocol import RoutedObject
from routing.ocpi.errors import InvalidParameters
from routing.ocpi.headers import Party
from routing.ocpi.pagination import Page
from routing.ocpi.translate import Context, Loss
from routing.ocpi.translate import base as kinds
from routing.platform import Platform, utcnow

log = logging.getLogger("hub.catchup")

CATCHUP_MODULES: Final = frozenset({"sessions", "cdrs"})
# (module, method, interface role) of the routed messages kept: a Session as it is created and updated at its
# receiver, a CDR as it is posted.
CATCHUP_EVENTS: Final = frozenset((("sessions", "PUT", "RECEIVER"), ("sessions", "PATCH", "RECEIVER"),
                                   ("cdrs", "POST", "RECEIVER")))
_KIND: Final = {"sessions": kinds.SESSION, "cdrs": kinds.CDR}


async def keep_routed(hub: Hub, *, module: str, method: str, segments: list[str], json_body: Any, version: str,
                      sender: Party, receiver: Party, receiver_platform_id: str) -> None:
    """Keep one routed Session PUT/PATCH or CDR POST for ``receiver``'s catch-up; ``json_body`` in ``version``, as
    its sender wrote it. Independent of how the message was delivered (now, or accepted for later). A PATCH of a
    Session the hub does not hold is left out: it cannot become a whole Session."""
    days = hub.settings.catchup_days
    if days <= 0 or (module, method, "RECEIVER") not in CATCHUP_EVENTS or not isinstance(json_body, dict):
        return
    try:
        await _keep(hub, module, method, segments, json_body, version, sender, receiver, receiver_platform_id,
                    days)
    except Exception as exc:  # the store down, a body the hub cannot read: the routed request still stands
        args = (method, module, receiver.key, exc)
        if hub.client_log is not None:  # throttled: a store outage must not become a line per routed session
            hub.client_log.log(logging.WARNING, "catchup_not_kept", "%s %s for %s not kept for catch-up: %s", *args)
        else:
            log.warning("%s %s for %s not kept for catch-up: %s", *args)


async def _keep(hub: Hub, module: str, method: str, segments: list[str], body: dict[str, Any], version: str,
                sender: Party, receiver: Party, receiver_platform_id: str, days: int) -> None:
    now = utcnow()
    expires_at = now + timedelta(days=days)
    # The owner is the sender: the router checked that the path (Sessions) or body (CDRs) names FROM.
    owner = (sender.country_code.upper(), sender.party_id.upper())
    object_id = body.get("id") if module == "cdrs" else (segments[2] if len(segments) == 3 else None)
    if not isinstance(object_id, str) or not object_id:
        return
    if method == "PATCH":
        def change(kept: RoutedObject) -> RoutedObject:
            data = merge_patch(_KIND[module], kept.data, kept.ocpi_version, body, version, owner)
            return dataclasses.replace(kept, data=data, last_updated=last_updated_of(data), expires_at=expires_at,
                                       sender=sender.key, receiver_platform_id=receiver_platform_id)

        await hub.store.change_routed(module, receiver.key, *owner, object_id, change)
        return
    await hub.store.keep_routed(RoutedObject(
        module=module, country_code=owner[0], party_id=owner[1], object_id=object_id, receiver=receiver.key,
        sender=sender.key, receiver_platform_id=receiver_platform_id, ocpi_version=version,
        last_updated=last_updated_of(body), expires_at=expires_at, data=body, kept_at=now))


async def fetch(hub: Hub, module: str, platform: Platform, caller: Party, roles: Iterable[str], page: Page,
                version: str) -> tuple[list[dict[str, Any]], int, list[Loss], int]:
    """One page of the unexpired Sessions or CDRs addressed to ``caller`` (a party of ``platform``), in ``version``,
    as ``hub.objects.get_all`` gives it (the last value: how many kept objects the page covers).

    Under roaming agreements only those of senders the caller may still see (as GET All: routing/roaming.py)."""
    if hub.settings.catchup_days <= 0:
        raise InvalidParameters(f"this hub keeps no {module} for catch-up; address the party concerned with "
                                "OCPI-to-* headers")
    owners = hub.roaming.visible_owners(platform, caller, roles, module)
    items, total = await hub.store.list_routed(module, caller.key, date_from=page.date_from, date_to=page.date_to,
                                               offset=page.offset, limit=page.limit, owners=owners)
    me = (caller.country_code, caller.party_id)
    out, losses = in_version([(_KIND[module], o.data, o.ocpi_version,
                               Context(owner=(o.country_code, o.party_id), counterpart=me)) for o in items], version)
    return out, total, losses, len(items)
