"""The production store: MongoDB through pymongo's ``AsyncMongoClient`` (or mongomock-motor in tests).

Written against the subset both clients share (no aggregate, no transactions), so the collections are
typed ``Any``. Party pairs are reserved by a unique index on ``party_reservations``; without a
transaction, ``save_platform`` reserves first, writes the platform second and releases last, undoing its
own reservations when anything in between fails.

Audit records use the record id as ``_id`` (a retried batch cannot duplicate) and are queried on
``time_us`` (exact, microseconds); ``time`` is kept as a BSON date for the TTL index that enforces
retention.

Stored objects are upserted by a unique (module, country_code, party_id, object_id) index with
``$setOnInsert`` for ``created_at``, so a replacement keeps the first save's place in the crawl order; their
``data`` is JSON text (see ``names``). A page and its total are two reads, not one snapshot: a write
landing between them can make the total differ from what paging then finds, as any live OCPI list can.
Route hints are upserted by a unique (kind, key, party) index; usage totals by a unique (day, from_party,
to_party, module, currency) index, each increment an ``$inc``.

Sessions and CDRs kept for catch-up (``routed``) are upserted by a unique (module, receiver, country_code,
party_id, object_id) index; a TTL index on ``expires_at`` removes them once expired (reads never return them
before that either). A PATCH merged into one is a compare-and-set on its sealed data, retried on conflict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, Final

from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from hub.audit import AuditQuery, AuditRecord, AuditRecordRejected
from hub.sealing import Sealer, process_sealer
from hub.store.names import (
    AGREEMENTS,
    AUDIT,
    OBJECT_ORDER,
    OBJECTS,
    PARTY_RESERVATIONS,
    PLATFORMS,
    ROUTE_HINTS,
    ROUTED,
    ROUTED_KEY,
    ROUTED_ORDER,
    USAGE,
    SeenClock,
    agreement_from_doc,
    agreement_to_doc,
    audit_extra_filters,
    audit_from_doc,
    audit_to_doc,
    epoch_us,
    from_epoch_us,
    needs_reseal,
    now_us,
    object_from_doc,
    object_key,
    object_to_doc,
    party_pairs,
    platform_from_doc,
    platform_to_doc,
    resealed,
    resealed_routed,
    routed_from_doc,
    routed_key,
    routed_to_doc,
)
from hub.store.protocol import PartyConflict, RoutedObject, StoredObject
from hub.usage import UsageRow
from routing.agreements import Agreement
from routing.platform import Platform, party_key

AUDIT_TTL_INDEX: Final = "audit_ttl"
_DUPLICATE_KEY: Final = 11000
_NO_ID: Final = {"_id": 0}
_AUDIT_SORT: Final = [("time_us", DESCENDING), ("_id", DESCENDING)]
_OBJECT_KEY: Final = [(f, ASCENDING) for f in ("module", "country_code", "party_id", "object_id")]
_OBJECT_SORT: Final = [(f, ASCENDING) for f in OBJECT_ORDER]
_OBJECT_INSERT_ONLY: Final = ("created_at", "created_at_us")
_HINT_KEY: Final = [("kind", ASCENDING), ("key", ASCENDING), ("party", ASCENDING)]
_HINT_SORT: Final = [("seen_us", DESCENDING), ("party", ASCENDING)]
_ROUTED_KEY: Final = [(f, ASCENDING) for f in ROUTED_KEY]
_ROUTED_SORT: Final = [(f, ASCENDING) for f in ROUTED_ORDER]
ROUTED_TTL_INDEX: Final = "routed_ttl"
RESEAL_BATCH: Final = 500
_CHANGE_ATTEMPTS: Final = 10
_USAGE_KEY: Final = [(f, ASCENDING) for f in ("day", "from_party", "to_party", "module", "currency")]


def _pair_filter(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"country_code": cc, "party_id": pid} for cc, pid in pairs]


def _audit_filter(query: AuditQuery) -> dict[str, Any]:
    flt: dict[str, Any] = {}
    time_range: dict[str, int] = {}
    if query.since is not None:
        time_range["$gte"] = epoch_us(query.since)
    if query.until is not None:
        time_range["$lt"] = epoch_us(query.until)
    if time_range:
        flt["time_us"] = time_range
    if query.party is not None:
        flt["$or"] = [{"from_party": query.party}, {"to_party": query.party}]
    named = {
        "platform_id": query.platform_id,
        "module": query.module,
        "outcome": query.outcome,
        "correlation_id": query.correlation_id,
        "request_id": query.request_id,
    }
    flt.update({name: value for name, value in named.items() if value is not None})
    for name, value in audit_extra_filters(query.extra).items():
        flt["_id" if name == "id" else name] = value
    return flt


def _objects_filter(module: str, date_from: datetime | None, date_to: datetime | None,
                    owners: Collection[tuple[str, str]] | None = None) -> dict[str, Any]:
    flt: dict[str, Any] = {"module": module}
    if owners is not None:
        # $in on one field would match cross-pairs (NL:X with DE:Y's party id); each pair is one $or branch.
        flt["$or"] = _pair_filter(sorted(owners))
    last_updated: dict[str, int] = {}
    if date_from is not None:
        last_updated["$gte"] = epoch_us(date_from)
    if date_to is not None:
        last_updated["$lt"] = epoch_us(date_to)
    if last_updated:
        flt["last_updated_us"] = last_updated
    return flt


def _audit_doc(record: AuditRecord) -> dict[str, Any]:
    doc = audit_to_doc(record)
    doc["_id"] = doc.pop("id")
    return doc


def _audit_record(doc: dict[str, Any]) -> AuditRecord:
    doc["id"] = doc.pop("_id")
    return audit_from_doc(doc)


class MongoStore:
    """The Store on MongoDB: shared by every hub process, retention by TTL."""

    def __init__(self, client: Any, db_name: str, audit_retention_days: int = 90, *,
                 sealer: Sealer | None = None) -> None:
        if audit_retention_days < 1:
            raise ValueError("audit_retention_days must be at least 1")
        self.client = client
        self.db_name = db_name
        self.audit_retention_days = audit_retention_days
        self._owns_client = False
        self._db: Any = client[db_name]
        self._platforms: Any = self._db[PLATFORMS]
        self._reservations: Any = self._db[PARTY_RESERVATIONS]
        self._audit: Any = self._db[AUDIT]
        self._objects: Any = self._db[OBJECTS]
        self._hints: Any = self._db[ROUTE_HINTS]
        self._usage: Any = self._db[USAGE]
        self._agreements: Any = self._db[AGREEMENTS]
        self._routed: Any = self._db[ROUTED]
        self._seen_us = SeenClock()
        # Without a sealer: a key for this process only (tests); open_store always passes HUB_SECRET_KEYS'.
        self.sealer = sealer or process_sealer()

    @classmethod
    def from_url(cls, url: str, db_name: str, audit_retention_days: int = 90, *,
                 sealer: Sealer | None = None) -> MongoStore:
        """A store owning its client, with bounded timeouts so an unreachable Mongo fails fast (readyz)."""
        client: Any = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=5000,
            socketTimeoutMS=10000,
            tz_aware=True,
        )
        store = cls(client, db_name, audit_retention_days, sealer=sealer)
        store._owns_client = True
        return store

    async def open(self) -> None:
        await self._platforms.create_index([("id", ASCENDING)], unique=True, name="id")
        for field in ("inbound_token_hash", "token_a_hash"):
            await self._platforms.create_index([(field, ASCENDING)], unique=True, sparse=True, name=field)
        await self._reservations.create_index(
            [("country_code", ASCENDING), ("party_id", ASCENDING)], unique=True, name="pair"
        )
        await self._reservations.create_index([("platform_id", ASCENDING)], name="platform_id")
        await self._open_audit_indexes()
        await self._objects.create_index(_OBJECT_KEY, unique=True, name="key")
        await self._objects.create_index([("module", ASCENDING), *_OBJECT_SORT], name="page")
        await self._objects.create_index(
            [("module", ASCENDING), ("last_updated_us", ASCENDING)], name="last_updated"
        )
        await self._hints.create_index(_HINT_KEY, unique=True, name="hint")
        # (kind, key) first, as every look-up; seen_us after it so the index also orders the answer
        await self._hints.create_index([("kind", ASCENDING), ("key", ASCENDING), *_HINT_SORT], name="kind_key")
        await self._hints.create_index([("seen_us", ASCENDING)], name="seen")  # the retention purge
        await self._usage.create_index(_USAGE_KEY, unique=True, name="key")
        await self._agreements.create_index([("id", ASCENDING)], unique=True, name="id")
        await self._routed.create_index(_ROUTED_KEY, unique=True, name="key")
        await self._routed.create_index([("module", ASCENDING), ("receiver", ASCENDING), *_ROUTED_SORT], name="page")
        await self._routed.create_index([("seal_key", ASCENDING)], name="seal_key")
        # Each record carries its own expiry: the TTL index removes it at that time (expireAfterSeconds 0).
        await self._routed.create_index([("expires_at", ASCENDING)], name=ROUTED_TTL_INDEX, expireAfterSeconds=0)

    async def _open_audit_indexes(self) -> None:
        # Sorted queries end in (time_us, _id) so that the index, not an in-memory sort, orders the page.
        await self._audit.create_index(_AUDIT_SORT, name="time")
        for field in ("correlation_id", "request_id"):
            await self._audit.create_index([(field, ASCENDING)], name=field)
        for field in ("platform_id", "from_party", "to_party", "module", "outcome"):
            await self._audit.create_index([(field, ASCENDING), *_AUDIT_SORT], name=f"{field}_time")
        await self._open_ttl_index()

    async def _open_ttl_index(self) -> None:
        """Create the TTL index, or change its expiry in place when HUB_AUDIT_RETENTION_DAYS changed."""
        seconds = self.audit_retention_days * 86400
        try:
            await self._audit.create_index(
                [("time", ASCENDING)], name=AUDIT_TTL_INDEX, expireAfterSeconds=seconds
            )
            return
        except OperationFailure:
            pass  # same name, other expiry (IndexOptionsConflict)
        try:
            await self._db.command(
                {"collMod": AUDIT, "index": {"name": AUDIT_TTL_INDEX, "expireAfterSeconds": seconds}}
            )
        except NotImplementedError:  # mongomock has no collMod
            await self._audit.drop_index(AUDIT_TTL_INDEX)
            await self._audit.create_index(
                [("time", ASCENDING)], name=AUDIT_TTL_INDEX, expireAfterSeconds=seconds
            )

    async def close(self) -> None:
        if self._owns_client:
            await self.client.close()

    async def ping(self) -> None:
        await self._db.command("ping")

    async def save_platform(self, platform: Platform) -> None:
        wanted = party_pairs(platform)
        held = {
            (d["country_code"], d["party_id"])
            for d in await self._reservations.find({"platform_id": platform.id}, _NO_ID).to_list(length=None)
        }
        reserved: list[tuple[str, str]] = []
        try:
            for pair in wanted:
                if pair not in held and await self._reserve(pair, platform.id):
                    reserved.append(pair)
            await self._replace_platform(platform)
        except BaseException:
            if reserved:
                await self._reservations.delete_many(
                    {"platform_id": platform.id, "$or": _pair_filter(reserved)}
                )
            raise
        release: dict[str, Any] = {"platform_id": platform.id}
        if wanted:
            release["$nor"] = _pair_filter(wanted)
        await self._reservations.delete_many(release)

    async def _reserve(self, pair: tuple[str, str], platform_id: str) -> bool:
        """Reserve one pair; False when this platform already held it (a concurrent save of the same one)."""
        country_code, party_id = pair
        for _ in range(3):  # the owner may release the pair between our insert and our look-up
            try:
                await self._reservations.insert_one(
                    {"country_code": country_code, "party_id": party_id, "platform_id": platform_id}
                )
                return True
            except DuplicateKeyError:
                pass
            owner = await self._reservations.find_one(
                {"country_code": country_code, "party_id": party_id}, _NO_ID
            )
            if owner is None:
                continue
            if owner["platform_id"] == platform_id:
                return False
            raise PartyConflict(party_key(country_code, party_id), owner["platform_id"])
        raise PartyConflict(party_key(country_code, party_id))

    async def _replace_platform(self, platform: Platform) -> None:
        doc = platform_to_doc(platform, self.sealer)
        for attempt in range(2):
            try:
                await self._platforms.replace_one({"id": platform.id}, doc, upsert=True)
                return
            except DuplicateKeyError as exc:
                key = (exc.details or {}).get("keyPattern") or {}
                if "id" not in key:
                    raise ValueError(
                        f"platform {platform.id}: a token hash belongs to another platform"
                    ) from exc
                if attempt > 0:
                    raise
                # two upserts of a new id raced: the retry finds the winner's doc and replaces it

    async def get_platform(self, platform_id: str) -> Platform | None:
        doc = await self._platforms.find_one({"id": platform_id}, _NO_ID)
        return None if doc is None else platform_from_doc(doc, self.sealer)

    async def platform_revisions(self) -> dict[str, int]:
        cursor = self._platforms.find({}, {"_id": 0, "id": 1, "revision": 1}).sort(
            [("created_at_us", ASCENDING), ("id", ASCENDING)])
        return {d["id"]: int(d.get("revision", 0)) for d in await cursor.to_list(length=None)}

    async def get_platforms(self, platform_ids: Sequence[str]) -> list[Platform]:
        cursor = self._platforms.find({"id": {"$in": list(platform_ids)}}, _NO_ID)
        return [platform_from_doc(d, self.sealer) for d in await cursor.to_list(length=None)]

    async def find_platform_by_token_hash(self, token_hash: str) -> Platform | None:
        """Inbound token first: it is the hot path (every request); Token A only during registration."""
        for field in ("inbound_token_hash", "token_a_hash"):
            doc = await self._platforms.find_one({field: token_hash}, _NO_ID)
            if doc is not None:
                return platform_from_doc(doc, self.sealer)
        return None

    async def reseal_secrets(self) -> int:
        """Re-seal outbound tokens stored in clear or under an older key; returns how many platforms changed.

        Each update is conditional on the token fields read, so a concurrent save (or another worker re-sealing
        at its own start) is never overwritten with an older token.
        """
        changed = 0
        for doc in await self._platforms.find({}, _NO_ID).to_list(length=None):
            if not needs_reseal(doc, self.sealer):
                continue
            new = resealed(doc, self.sealer)
            flt = {"id": doc["id"], "outbound_token": doc.get("outbound_token"),
                   "outbound_token_sealed": doc.get("outbound_token_sealed")}
            result = await self._platforms.update_one(flt, {
                "$set": {"outbound_token_sealed": new["outbound_token_sealed"]}, "$unset": {"outbound_token": ""}})
            changed += int(result.modified_count)
        return changed

    async def insert_audit(self, records: Sequence[AuditRecord]) -> None:
        """Idempotent per record id: duplicates of a retried batch are skipped, other errors raise.

        ``AuditRecordRejected`` when a record itself cannot be written (the others of the batch may have been)."""
        if not records:
            return
        try:
            await self._audit.insert_many([_audit_doc(r) for r in records], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or exc.details.get("writeConcernErrors"):
                raise
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):  # a document the server refused
                raise AuditRecordRejected(str(errors[0].get("errmsg", exc))) from exc
        except (BSONError, ValueError, TypeError, OverflowError) as exc:  # BSON cannot encode it
            raise AuditRecordRejected(str(exc)) from exc

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Newest first; ``since`` is inclusive and ``until`` exclusive (as OCPI's date_from/date_to)."""
        if query.limit <= 0:
            return []  # Mongo's limit(0) would mean "no limit"
        cursor = (
            self._audit.find(_audit_filter(query))
            .sort(_AUDIT_SORT)
            .skip(max(query.offset, 0))
            .limit(query.limit)
        )
        return [_audit_record(d) for d in await cursor.to_list(length=None)]

    async def purge_audit(self, older_than: datetime) -> int:
        """The TTL index does this on its own; this is for operators and tests that cannot wait."""
        result = await self._audit.delete_many({"time_us": {"$lt": epoch_us(older_than)}})
        return int(result.deleted_count)

    async def _upsert(self, collection: Any, flt: dict[str, Any], update: dict[str, Any]) -> None:
        """An upsert that survives a race on the unique index: the loser retries and finds the winner's doc."""
        for attempt in range(2):
            try:
                await collection.update_one(flt, update, upsert=True)
                return
            except DuplicateKeyError:
                if attempt > 0:
                    raise

    async def save_object(self, obj: StoredObject) -> None:
        """Insert or replace data and last_updated; the created_at of the first save is kept."""
        doc = object_to_doc(obj)
        key = object_key(obj.module, obj.country_code, obj.party_id, obj.object_id)
        on_insert = {name: doc.pop(name) for name in _OBJECT_INSERT_ONLY}
        for name in key:
            doc.pop(name)  # an upsert copies the filter's equalities into the new document
        await self._upsert(self._objects, key, {"$set": doc, "$setOnInsert": on_insert})

    async def get_object(self, module: str, country_code: str, party_id: str, object_id: str) -> StoredObject | None:
        doc = await self._objects.find_one(object_key(module, country_code, party_id, object_id), _NO_ID)
        return None if doc is None else object_from_doc(doc)

    async def delete_object(self, module: str, country_code: str, party_id: str, object_id: str) -> bool:
        result = await self._objects.delete_one(object_key(module, country_code, party_id, object_id))
        return bool(result.deleted_count)

    async def list_objects(
        self,
        module: str,
        *,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
        owners: Collection[tuple[str, str]] | None = None,
    ) -> tuple[list[StoredObject], int]:
        """A page by (created_at, key) and the total matching the dates (and owners); limit <= 0 gives only the
        total."""
        if owners is not None and not owners:
            return [], 0  # an empty $or is refused by MongoDB
        flt = _objects_filter(module, date_from, date_to, owners)
        total = int(await self._objects.count_documents(flt))
        if limit <= 0:
            return [], total  # Mongo's limit(0) would mean "no limit"
        cursor = self._objects.find(flt, _NO_ID).sort(_OBJECT_SORT).skip(max(offset, 0)).limit(limit)
        return [object_from_doc(d) for d in await cursor.to_list(length=None)], total

    async def purge_objects(self, module: str, last_updated_before: datetime) -> int:
        """Retention of stored personal data (tokens): drop a module's objects not updated since the cut-off."""
        result = await self._objects.delete_many(
            {"module": module, "last_updated_us": {"$lt": epoch_us(last_updated_before)}})
        return int(result.deleted_count)

    async def purge_route_hints(self, seen_before: datetime) -> int:
        result = await self._hints.delete_many({"seen_us": {"$lt": epoch_us(seen_before)}})
        return int(result.deleted_count)

    async def add_route_hint(self, kind: str, key: str, party: str) -> None:
        await self.add_route_hints([(kind, key, party)])

    async def add_route_hints(self, hints: Sequence[tuple[str, str, str]]) -> None:
        """The batch's upserts concurrently: one round trip of latency for the batch, not one per hint.

        (A ``bulk_write`` would be one request, but mongomock, which the contract suite runs here, cannot run
        PyMongo 4's ``UpdateOne``: it stays untested, so it is not used.)
        """
        latest: dict[tuple[str, str, str], int] = {}
        for hint in hints:  # a repeat counts as seen at its later place; concurrent writes of one doc could not
            latest.pop(hint, None)
            latest[hint] = self._seen_us()
        await asyncio.gather(*(
            self._upsert(self._hints, {"kind": kind, "key": key, "party": party},
                         {"$set": {"seen": from_epoch_us(seen_us), "seen_us": seen_us}})
            for (kind, key, party), seen_us in latest.items()
        ))

    async def find_route_hint(self, kind: str, key: str) -> list[str]:
        cursor = self._hints.find({"kind": kind, "key": key}, {"_id": 0, "party": 1}).sort(_HINT_SORT)
        return [d["party"] for d in await cursor.to_list(length=None)]

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Each row an ``$inc`` upsert, the batch's concurrently (``bulk_write``: see ``add_route_hints``)."""
        await asyncio.gather(*(
            self._upsert(self._usage, {"day": r.day, "from_party": r.from_party, "to_party": r.to_party,
                                       "module": r.module, "currency": r.currency},
                         {"$inc": {"count": r.count, "kwh": r.kwh, "cost": r.cost}})
            for r in rows
        ))

    async def query_usage(self, since: str | None = None, until: str | None = None) -> list[UsageRow]:
        day: dict[str, str] = {}
        if since is not None:
            day["$gte"] = since
        if until is not None:
            day["$lte"] = until
        cursor = self._usage.find({"day": day} if day else {}, _NO_ID).sort(_USAGE_KEY)
        return [UsageRow(day=d["day"], from_party=d["from_party"], to_party=d["to_party"], module=d["module"],
                         currency=d["currency"], count=int(d["count"]), kwh=float(d["kwh"]), cost=float(d["cost"]))
                for d in await cursor.to_list(length=None)]
    async def keep_routed(self, obj: RoutedObject) -> None:
        """Insert or replace by key; the kept_at of the first keep stays."""
        doc = routed_to_doc(obj, self.sealer)
        key = {name: doc.pop(name) for name in ROUTED_KEY}
        on_insert = {name: doc.pop(name) for name in ("kept_at", "kept_at_us")}
        await self._upsert(self._routed, key, {"$set": doc, "$setOnInsert": on_insert})

    async def get_routed(self, module: str, receiver: str, country_code: str, party_id: str,
                         object_id: str) -> RoutedObject | None:
        key = routed_key(module, receiver, country_code, party_id, object_id)
        doc = await self._routed.find_one({**key, "expires_at_us": {"$gt": now_us()}}, _NO_ID)
        return None if doc is None else routed_from_doc(doc, self.sealer)

    async def change_routed(self, module: str, receiver: str, country_code: str, party_id: str, object_id: str,
                            change: Callable[[RoutedObject], RoutedObject | None]) -> bool:
        """Without a transaction: the write only lands if the sealed data is still the one read (every write seals
        anew, so any other writer changes it); otherwise read again and retry."""
        key = routed_key(module, receiver, country_code, party_id, object_id)
        for _ in range(_CHANGE_ATTEMPTS):
            doc = await self._routed.find_one({**key, "expires_at_us": {"$gt": now_us()}}, _NO_ID)
            if doc is None:
                return False
            new = change(routed_from_doc(doc, self.sealer))
            if new is None:
                return False
            fields = routed_to_doc(new, self.sealer)
            for name in (*ROUTED_KEY, "kept_at", "kept_at_us"):
                fields.pop(name)
            result = await self._routed.update_one({**key, "data_sealed": doc["data_sealed"]}, {"$set": fields})
            if result.matched_count:
                return True
        raise RuntimeError(f"{module} {object_id}: kept record changed by others {_CHANGE_ATTEMPTS} times in a row")

    async def list_routed(
        self,
        module: str,
        receiver: str,
        *,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
        owners: Collection[tuple[str, str]] | None = None,
    ) -> tuple[list[RoutedObject], int]:
        if owners is not None and not owners:
            return [], 0  # an empty $or is refused by MongoDB
        flt = _objects_filter(module, date_from, date_to, owners)
        flt.update(receiver=receiver.upper(), expires_at_us={"$gt": now_us()})
        total = int(await self._routed.count_documents(flt))
        if limit <= 0:
            return [], total  # Mongo's limit(0) would mean "no limit"
        cursor = self._routed.find(flt, _NO_ID).sort(_ROUTED_SORT).skip(max(offset, 0)).limit(limit)
        return [routed_from_doc(d, self.sealer) for d in await cursor.to_list(length=None)], total

    async def purge_routed(self, expired_before: datetime) -> int:
        """The TTL index does this on its own; this is for the embedded twin's schedule and for tests."""
        result = await self._routed.delete_many({"expires_at_us": {"$lt": epoch_us(expired_before)}})
        return int(result.deleted_count)

    async def reseal_routed(self) -> int:
        """In batches found by ``seal_key``; each update conditional on the sealed data read, so a concurrent keep
        (or another worker re-sealing at its own start) is never overwritten with older data."""
        changed = 0
        key_id = self.sealer.key_id
        while True:
            batch = await self._routed.find({"seal_key": {"$ne": key_id}},
                                            {"_id": 1, "data_sealed": 1}).limit(RESEAL_BATCH).to_list(length=None)
            for doc in batch:
                result = await self._routed.update_one(
                    {"_id": doc["_id"], "data_sealed": doc["data_sealed"]},
                    {"$set": resealed_routed(doc["data_sealed"], self.sealer)})
                changed += int(result.modified_count)
            if len(batch) < RESEAL_BATCH:
                return changed

    async def save_agreement(self, agreement: Agreement) -> None:
        await self._upsert(self._agreements, {"id": agreement.id}, {"$set": agreement_to_doc(agreement)})

    async def save_agreements(self, agreements: Sequence[Agreement]) -> None:
        """Without a transaction: the documents they replace are read first and put back (new ones deleted)
        when a write fails part-way, so an import lands whole or not at all."""
        ids = [a.id for a in agreements]
        before = {d["id"]: d for d in await self._agreements.find({"id": {"$in": ids}}, _NO_ID).to_list(length=None)}
        done: list[str] = []
        try:
            for agreement in agreements:
                await self.save_agreement(agreement)
                done.append(agreement.id)
        except BaseException:
            for agreement_id in done:
                old = before.get(agreement_id)
                if old is None:
                    await self._agreements.delete_one({"id": agreement_id})
                else:
                    await self._agreements.replace_one({"id": agreement_id}, old)
            raise

    async def get_agreement(self, agreement_id: str) -> Agreement | None:
        doc = await self._agreements.find_one({"id": agreement_id}, _NO_ID)
        return None if doc is None else agreement_from_doc(doc)

    async def list_agreements(self) -> list[Agreement]:
        cursor = self._agreements.find({}, _NO_ID).sort([("created_at_us", ASCENDING), ("id", ASCENDING)])
        return [agreement_from_doc(d) for d in await cursor.to_list(length=None)]

    async def delete_agreement(self, agreement_id: str) -> bool:
        result = await self._agreements.delete_one({"id": agreement_id})
        return bool(result.deleted_count)
