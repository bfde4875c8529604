"""Durable storage (platforms, audit, stored objects, route hints): the backend picked from settings, behind
one HubStore protocol."""

from __future__ import annotations

from hub.settings import Settings
from hub.store.protocol import HubStore, ObjectStore, PartyConflict, RouteHints, Store, StoredObject

__all__ = ["HubStore", "ObjectStore", "PartyConflict", "RouteHints", "Store", "StoredObject", "open_store"]


async def open_store(settings: Settings) -> HubStore:
    """MongoDB when HUB_MONGO_URL is set (production, scale-out), else the embedded SQLite file."""
    # Imported here so that importing hub.store does not pull in both drivers.
    from hub.store.mongo import MongoStore
    from hub.store.sqlite import SqliteStore

    store: HubStore
    if settings.mongo_url:
        store = MongoStore.from_url(
            settings.mongo_url, settings.mongo_db, audit_retention_days=settings.audit_retention_days
        )
    else:
        store = SqliteStore(settings.sqlite_path)
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store
