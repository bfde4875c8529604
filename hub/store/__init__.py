"""Durable storage (platforms, audit, stored objects, route hints): the backend picked from settings, behind
one HubStore protocol."""

from __future__ import annotations

import asyncio
import logging

from hub.sealing import Sealer, load_sealer
from hub.settings import Settings
from hub.store.protocol import (
    AgreementStore,
    HubStore,
    ObjectStore,
    PartyConflict,
    RoutedObject,
    RoutedStore,
    RouteHints,
    Store,
    StoredObject,
)

log = logging.getLogger("hub.store")

__all__ = ["AgreementStore", "HubStore", "ObjectStore", "PartyConflict", "RouteHints", "RoutedObject", "RoutedStore",
           "Store", "StoredObject", "open_store"]


async def open_store(settings: Settings, sealer: Sealer | None = None) -> HubStore:
    """MongoDB when HUB_MONGO_URL is set (production, scale-out), else the embedded SQLite file.

    Opening re-seals outbound tokens and kept Sessions and CDRs stored in clear or under an older key (see
    ``hub.sealing``). Without a ``sealer`` the one of the settings is loaded (``SecretKeyError`` when there is none
    to be had).
    """
    # Imported here so that importing hub.store does not pull in both drivers.
    from hub.store.mongo import MongoStore
    from hub.store.sqlite import SqliteStore

    if sealer is None:
        sealer = await asyncio.to_thread(load_sealer, settings)  # may read or create the key file
    store: HubStore
    if settings.mongo_url:
        store = MongoStore.from_url(
            settings.mongo_url, settings.mongo_db, audit_retention_days=settings.audit_retention_days,
            sealer=sealer,
        )
    else:
        store = SqliteStore(settings.sqlite_path, sealer=sealer)
    try:
        await store.open()
        resealed = await store.reseal_secrets()
        if resealed:
            log.info("sealed the outbound tokens of %d platforms with the first secret key", resealed)
        resealed = await store.reseal_routed()
        if resealed:
            log.info("sealed %d sessions and CDRs kept for catch-up with the first secret key", resealed)
    except BaseException:
        await store.close()
        raise
    return store
