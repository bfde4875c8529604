"""The embedded store: one SQLite file (or ``:memory:``) through aiosqlite, so the event loop never blocks.

WAL mode and a busy timeout let several local processes share the file. Within one process a lock
serialises access to the single connection: its transactions must not interleave, and readers must not
see another coroutine's uncommitted writes.

Stored objects live in ``objects`` (key columns, ``created_at_us``, ``last_updated_us``, ``data_json``);
a page and its total are read in one transaction, so another process's write cannot slip between them.
Route hints live in ``route_hints``, keyed by (kind, key, party). Sessions and CDRs kept for catch-up live in
``routed`` (index columns, ``data_sealed``), a table an older store gets when it is next opened.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from hub.audit import AuditQuery, AuditRecord, AuditRecordRejected
from hub.sealing import Sealer, process_sealer
from hub.store.names import (
    AGREEMENTS,
    AUDIT,
    AUDIT_FIELD_ORDER,
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

BUSY_TIMEOUT_MS: Final = 5000

# Audit fields with their own column (filterable, indexed); the rest of a record is JSON in ``rest``.
_AUDIT_COLUMNS: Final = (
    "id",
    "time_us",
    "request_id",
    "correlation_id",
    "platform_id",
    "from_party",
    "to_party",
    "module",
    "outcome",
)

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {PLATFORMS} (
    id TEXT PRIMARY KEY,
    created_at_us INTEGER NOT NULL,
    inbound_token_hash TEXT,
    token_a_hash TEXT,
    document TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS {PLATFORMS}_inbound_token_hash
    ON {PLATFORMS} (inbound_token_hash) WHERE inbound_token_hash IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS {PLATFORMS}_token_a_hash
    ON {PLATFORMS} (token_a_hash) WHERE token_a_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS {PLATFORMS}_created ON {PLATFORMS} (created_at_us, id);

CREATE TABLE IF NOT EXISTS {PARTY_RESERVATIONS} (
    country_code TEXT NOT NULL,
    party_id TEXT NOT NULL,
    platform_id TEXT NOT NULL,
    PRIMARY KEY (country_code, party_id)
);
CREATE INDEX IF NOT EXISTS {PARTY_RESERVATIONS}_platform ON {PARTY_RESERVATIONS} (platform_id);

CREATE TABLE IF NOT EXISTS {AUDIT} (
    id TEXT PRIMARY KEY,
    time_us INTEGER NOT NULL,
    request_id TEXT,
    correlation_id TEXT,
    platform_id TEXT,
    from_party TEXT,
    to_party TEXT,
    module TEXT,
    outcome TEXT,
    rest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {AUDIT}_time ON {AUDIT} (time_us, id);
CREATE INDEX IF NOT EXISTS {AUDIT}_correlation_id ON {AUDIT} (correlation_id);
CREATE INDEX IF NOT EXISTS {AUDIT}_request_id ON {AUDIT} (request_id);
-- The embedded store indexes audit by time and by id only: every extra index costs each routed request an
-- insert on this one machine. Other filters scan within the time range; MongoDB indexes them all.
DROP INDEX IF EXISTS {AUDIT}_platform_id;
DROP INDEX IF EXISTS {AUDIT}_from_party;
DROP INDEX IF EXISTS {AUDIT}_to_party;
DROP INDEX IF EXISTS {AUDIT}_module;
DROP INDEX IF EXISTS {AUDIT}_outcome;

CREATE TABLE IF NOT EXISTS {OBJECTS} (
    module TEXT NOT NULL,
    country_code TEXT NOT NULL,
    party_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    last_updated_us INTEGER NOT NULL,
    data_json TEXT NOT NULL,
    ocpi_version TEXT NOT NULL DEFAULT '2.2.1',
    PRIMARY KEY (module, country_code, party_id, object_id)
);
CREATE INDEX IF NOT EXISTS {OBJECTS}_page ON {OBJECTS} (module, {", ".join(OBJECT_ORDER)});
CREATE INDEX IF NOT EXISTS {OBJECTS}_last_updated ON {OBJECTS} (module, last_updated_us);

CREATE TABLE IF NOT EXISTS {ROUTE_HINTS} (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    party TEXT NOT NULL,
    seen_us INTEGER NOT NULL,
    PRIMARY KEY (kind, key, party)
);
CREATE INDEX IF NOT EXISTS {ROUTE_HINTS}_kind_key ON {ROUTE_HINTS} (kind, key, seen_us);
CREATE INDEX IF NOT EXISTS {ROUTE_HINTS}_seen ON {ROUTE_HINTS} (seen_us);

CREATE TABLE IF NOT EXISTS {USAGE} (
    day TEXT NOT NULL,
    from_party TEXT NOT NULL,
    to_party TEXT NOT NULL,
    module TEXT NOT NULL,
    currency TEXT NOT NULL,
    count INTEGER NOT NULL,
    kwh REAL NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (day, from_party, to_party, module, currency)
);

CREATE TABLE IF NOT EXISTS {ROUTED} (
    module TEXT NOT NULL,
    receiver TEXT NOT NULL,
    country_code TEXT NOT NULL,
    party_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    receiver_platform_id TEXT NOT NULL,
    ocpi_version TEXT NOT NULL,
    last_updated_us INTEGER NOT NULL,
    kept_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    seal_key TEXT NOT NULL,
    data_sealed TEXT NOT NULL,
    PRIMARY KEY ({", ".join(ROUTED_KEY)})
);
CREATE INDEX IF NOT EXISTS {ROUTED}_page ON {ROUTED} (module, receiver, {", ".join(ROUTED_ORDER)});
CREATE INDEX IF NOT EXISTS {ROUTED}_expires ON {ROUTED} (expires_at_us);
CREATE INDEX IF NOT EXISTS {ROUTED}_seal_key ON {ROUTED} (seal_key);

CREATE TABLE IF NOT EXISTS {AGREEMENTS} (
    id TEXT PRIMARY KEY,
    created_at_us INTEGER NOT NULL,
    document TEXT NOT NULL
);
"""

_AGREEMENT_UPSERT: Final = (f"INSERT INTO {AGREEMENTS} (id, created_at_us, document) VALUES (?, ?, ?) "
                            "ON CONFLICT (id) DO UPDATE SET created_at_us = excluded.created_at_us, "
                            "document = excluded.document")

_PLATFORM_UPSERT: Final = f"""
INSERT INTO {PLATFORMS} (id, created_at_us, inbound_token_hash, token_a_hash, document)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    created_at_us = excluded.created_at_us,
    inbound_token_hash = excluded.inbound_token_hash,
    token_a_hash = excluded.token_a_hash,
    document = excluded.document
"""

class _RowsInsert:
    """Batches of rows as multi-row INSERTs of fixed sizes (64, then 32, 16, ... 1 for the rest).

    Every size is compiled once and then found in the statement cache. ``executemany`` binds each row under the
    GIL and steps it without, which hands the GIL back and forth with the event loop once per row: under load
    that convoy cost the routing path more than the inserts themselves (audit records, route hints).
    """

    SIZES: Final = (64, 32, 16, 8, 4, 2, 1)

    def __init__(self, table: str, columns: Sequence[str], on_conflict: str) -> None:
        row = "(" + ", ".join("?" for _ in columns) + ")"
        self._sql = {n: f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * n)} {on_conflict}"
                     for n in self.SIZES}

    def statements(self, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
        out: list[tuple[str, list[Any]]] = []
        start = 0
        for size in self.SIZES:
            while len(rows) - start >= size:
                out.append((self._sql[size], list(chain.from_iterable(rows[start:start + size]))))
                start += size
        return out


_AUDIT_INSERT: Final = _RowsInsert(AUDIT, (*_AUDIT_COLUMNS, "rest"), "ON CONFLICT (id) DO NOTHING")


_OBJECT_COLUMNS: Final = (
    "module",
    "country_code",
    "party_id",
    "object_id",
    "created_at_us",
    "last_updated_us",
    "data_json",
    "ocpi_version",
)

# created_at_us is left alone on conflict: the first save fixes an object's place in the crawl order.
_OBJECT_UPSERT: Final = (
    f"INSERT INTO {OBJECTS} ({', '.join(_OBJECT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _OBJECT_COLUMNS)}) "
    "ON CONFLICT (module, country_code, party_id, object_id) DO UPDATE SET "
    "last_updated_us = excluded.last_updated_us, data_json = excluded.data_json, "
    "ocpi_version = excluded.ocpi_version"
)

_ROUTED_COLUMNS: Final = (*ROUTED_KEY, "sender", "receiver_platform_id", "ocpi_version", "last_updated_us",
                          "kept_at_us", "expires_at_us", "seal_key", "data_sealed")
# kept_at_us is left alone on conflict: the first keep fixes a record's place in the crawl order.
_ROUTED_UPSERT: Final = (
    f"INSERT INTO {ROUTED} ({', '.join(_ROUTED_COLUMNS)}) VALUES ({', '.join('?' for _ in _ROUTED_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(ROUTED_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ROUTED_COLUMNS if c not in (*ROUTED_KEY, "kept_at_us"))
)
_ROUTED_KEY_WHERE: Final = " AND ".join(f"{c} = ?" for c in ROUTED_KEY)
# One kept, unexpired record by its key (the key's values, then now in µs).
_ROUTED_UNEXPIRED: Final = (f"SELECT {', '.join(_ROUTED_COLUMNS)} FROM {ROUTED} "
                             f"WHERE {_ROUTED_KEY_WHERE} AND expires_at_us > ?")
RESEAL_BATCH: Final = 500
_IDS_PER_QUERY: Final = 500  # bound parameters per IN (...) query (SQLite's limit is 32,766 since 3.32)

_HINT_UPSERT: Final = _RowsInsert(ROUTE_HINTS, ("kind", "key", "party", "seen_us"),
                                  "ON CONFLICT (kind, key, party) DO UPDATE SET seen_us = excluded.seen_us")

_USAGE_COLUMNS: Final = ("day", "from_party", "to_party", "module", "currency", "count", "kwh", "cost")
_USAGE_ADD: Final = _RowsInsert(
    USAGE, _USAGE_COLUMNS,
    "ON CONFLICT (day, from_party, to_party, module, currency) DO UPDATE SET count = count + excluded.count, "
    "kwh = kwh + excluded.kwh, cost = cost + excluded.cost")


async def _migrate(db: aiosqlite.Connection) -> None:
    """Columns added after a store was first created (``CREATE TABLE IF NOT EXISTS`` leaves old tables as they
    are): objects stored before versions were bridged are 2.2.1."""
    columns = {row[1] for row in await db.execute_fetchall(f"PRAGMA table_info({OBJECTS})")}
    if "ocpi_version" not in columns:
        await db.executescript(f"BEGIN IMMEDIATE;\nALTER TABLE {OBJECTS} ADD COLUMN ocpi_version TEXT NOT NULL "
                               f"DEFAULT '2.2.1';\nCOMMIT;")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# A record's row straight from its attributes (one per routed request): the columns, then every other field but
# ``time`` (time_us is its exact copy, and a column) as JSON, as ``audit_to_doc`` would hold them. Written out
# attribute by attribute: the interpreter reads a slot attribute it sees by name in a few dozen instructions, where
# ``operator.attrgetter`` and ``dict(zip(...))`` over the names cost 12,000 more per record (of 31,500).
_AUDIT_REST: Final = tuple(n for n in AUDIT_FIELD_ORDER if n != "time" and n not in _AUDIT_COLUMNS)


def _audit_row(r: AuditRecord) -> tuple[Any, ...]:
    return (r.id, epoch_us(r.time), r.request_id, r.correlation_id, r.platform_id, r.from_party, r.to_party, r.module,
            r.outcome, _dumps({
                "interface_role": r.interface_role, "method": r.method, "path": r.path, "http_status": r.http_status,
                "ocpi_status": r.ocpi_status, "receiver_platform_id": r.receiver_platform_id,
                "receiver_http_status": r.receiver_http_status, "receiver_ocpi_status": r.receiver_ocpi_status,
                "latency_total_ms": r.latency_total_ms, "latency_receiver_ms": r.latency_receiver_ms,
                "request_size": r.request_size, "response_size": r.response_size, "body": r.body, "actor": r.actor,
                "ocpi_version": r.ocpi_version, "receiver_version": r.receiver_version, "translation": r.translation,
            }))


def _check_audit_row() -> None:
    """A field added to AuditRecord must be added to ``_audit_row`` too: checked once, at import."""
    values: dict[str, Any] = {name: f"v{i}" for i, name in enumerate(AUDIT_FIELD_ORDER)}  # distinct, any type
    values["time"] = from_epoch_us(0)
    row = _audit_row(AuditRecord(**values))
    want = (values["id"], 0, *(values[c] for c in _AUDIT_COLUMNS[2:]), {n: values[n] for n in _AUDIT_REST})
    if (*row[:-1], orjson.loads(row[-1])) != want:
        raise ImportError("hub.store.sqlite._audit_row does not write every AuditRecord field: update it")


_check_audit_row()


def _write_all(conn: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Runs on the connection's thread: one write transaction, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            conn.execute(sql, params)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _audit_from_row(row: Sequence[Any]) -> AuditRecord:
    doc: dict[str, Any] = orjson.loads(row[-1])
    doc.update(zip(_AUDIT_COLUMNS, row[:-1], strict=True))
    return audit_from_doc(doc)


def _object_from_row(row: Sequence[Any]) -> StoredObject:
    return object_from_doc(dict(zip(_OBJECT_COLUMNS, row, strict=True)))


def _objects_where(
    module: str, date_from: datetime | None, date_to: datetime | None,
    owners: Collection[tuple[str, str]] | None = None,
) -> tuple[str, list[Any]]:
    clauses = ["module = ?"]
    params: list[Any] = [module]
    if owners is not None:  # any number of pairs in one parameter (a JSON array), never a statement per size
        clauses.append("country_code || ':' || party_id IN (SELECT value FROM json_each(?))")
        params.append(_dumps(sorted(f"{cc}:{pid}" for cc, pid in owners)))
    if date_from is not None:
        clauses.append("last_updated_us >= ?")
        params.append(epoch_us(date_from))
    if date_to is not None:
        clauses.append("last_updated_us < ?")
        params.append(epoch_us(date_to))
    return " WHERE " + " AND ".join(clauses), params


def _routed_row(obj: RoutedObject, sealer: Sealer) -> tuple[Any, ...]:
    doc = routed_to_doc(obj, sealer)
    return tuple(doc[name] for name in _ROUTED_COLUMNS)


def _routed_from_row(row: Sequence[Any], sealer: Sealer) -> RoutedObject:
    return routed_from_doc(dict(zip(_ROUTED_COLUMNS, row, strict=True)), sealer)


def _audit_where(query: AuditQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.since is not None:
        clauses.append("time_us >= ?")
        params.append(epoch_us(query.since))
    if query.until is not None:
        clauses.append("time_us < ?")
        params.append(epoch_us(query.until))
    if query.party is not None:
        clauses.append("(from_party = ? OR to_party = ?)")
        params += [query.party, query.party]
    named: dict[str, Any] = {
        "platform_id": query.platform_id,
        "module": query.module,
        "outcome": query.outcome,
        "correlation_id": query.correlation_id,
        "request_id": query.request_id,
    }
    for name, value in named.items():
        if value is not None:
            clauses.append(f"{name} = ?")
            params.append(value)
    for name, value in audit_extra_filters(query.extra).items():
        # names are validated against AuditRecord's fields, so formatting them in is safe
        target = name if name in _AUDIT_COLUMNS else f"json_extract(rest, '$.{name}')"
        if value is None:
            clauses.append(f"{target} IS NULL")
        else:
            clauses.append(f"{target} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class SqliteStore:
    """The Store on SQLite: the embedded default when no MongoDB is configured."""

    def __init__(self, path: str, *, sealer: Sealer | None = None) -> None:
        self.path = path
        # Without a sealer: a key for this process only (``:memory:`` and tests); open_store always passes one.
        self.sealer = sealer or process_sealer()
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._seen_us = SeenClock()

    async def open(self) -> None:
        if self._db is not None:
            return
        if self.path != ":memory:":
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE takes the write lock up
        # front, so busy_timeout applies instead of a deadlock when two processes upgrade at once).
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            # fetchall: a PRAGMA returns a row, and an unread cursor keeps its statement (and a lock) open
            await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute_fetchall("PRAGMA journal_mode = WAL")
            # A multi-row upsert keeps a statement journal; in memory, not as a temp file per audit batch
            await db.execute_fetchall("PRAGMA temp_store = MEMORY")
            await db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
            await _migrate(db)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqliteStore is not open")
        return self._db

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self._conn()

    async def _write_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Statements known up front, as one write transaction in one trip to the connection's thread: each trip
        costs the event loop a GIL hand-over with that thread, and ``_write`` makes one per statement."""
        async with self._lock:
            db = self._conn()
            await db._execute(_write_all, db._conn, statements)  # type: ignore[no-untyped-call]  # aiosqlite runner

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; rolled back on any exception (cancellation included)."""
        async with self._lock:
            db = self._conn()
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """Several reads seeing one state of the file (a deferred read transaction, WAL keeps it cheap)."""
        async with self._lock:
            db = self._conn()
            await db.execute("BEGIN")
            try:
                yield db
            finally:
                await db.execute("ROLLBACK")

    async def ping(self) -> None:
        async with self._read() as db:
            await db.execute_fetchall("SELECT 1")

    async def save_platform(self, platform: Platform) -> None:
        doc = platform_to_doc(platform, self.sealer)
        row = (
            platform.id,
            doc["created_at_us"],
            platform.inbound_token_hash,
            platform.token_a_hash,
            _dumps(doc),
        )
        async with self._write() as db:
            try:
                await db.execute(_PLATFORM_UPSERT, row)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"platform {platform.id}: a token hash belongs to another platform") from exc
            await db.execute(f"DELETE FROM {PARTY_RESERVATIONS} WHERE platform_id = ?", (platform.id,))
            for country_code, party_id in party_pairs(platform):
                owner = await db.execute_fetchall(
                    f"SELECT platform_id FROM {PARTY_RESERVATIONS} WHERE country_code = ? AND party_id = ?",
                    (country_code, party_id),
                )
                for (owner_id,) in owner:
                    raise PartyConflict(party_key(country_code, party_id), owner_id)
                await db.execute(
                    f"INSERT INTO {PARTY_RESERVATIONS} (country_code, party_id, platform_id) "
                    "VALUES (?, ?, ?)",
                    (country_code, party_id, platform.id),
                )

    async def get_platform(self, platform_id: str) -> Platform | None:
        async with self._read() as db:
            rows = await db.execute_fetchall(f"SELECT document FROM {PLATFORMS} WHERE id = ?", (platform_id,))
        for (document,) in rows:
            return platform_from_doc(orjson.loads(document), self.sealer)
        return None

    async def platform_revisions(self) -> dict[str, int]:
        async with self._read() as db:  # the JSON is read by SQLite, in its thread: nothing decoded here
            rows = await db.execute_fetchall(
                f"SELECT id, json_extract(document, '$.revision') FROM {PLATFORMS} ORDER BY created_at_us, id")
        return {platform_id: int(revision or 0) for platform_id, revision in rows}

    async def get_platforms(self, platform_ids: Sequence[str]) -> list[Platform]:
        found: list[Platform] = []
        for start in range(0, len(platform_ids), _IDS_PER_QUERY):
            chunk = list(platform_ids[start:start + _IDS_PER_QUERY])
            async with self._read() as db:
                rows = await db.execute_fetchall(
                    f"SELECT document FROM {PLATFORMS} WHERE id IN ({', '.join('?' for _ in chunk)})", chunk)
            found += [platform_from_doc(orjson.loads(document), self.sealer) for (document,) in rows]
        return found

    async def find_platform_by_token_hash(self, token_hash: str) -> Platform | None:
        """Inbound token first: it is the hot path (every request); Token A only during registration."""
        async with self._read() as db:
            for column in ("inbound_token_hash", "token_a_hash"):
                rows = await db.execute_fetchall(
                    f"SELECT document FROM {PLATFORMS} WHERE {column} = ?", (token_hash,)
                )
                for (document,) in rows:
                    return platform_from_doc(orjson.loads(document), self.sealer)
        return None

    async def reseal_secrets(self) -> int:
        """Re-seal outbound tokens stored in clear or under an older key; returns how many platforms changed."""
        changed = 0
        async with self._write() as db:
            rows = await db.execute_fetchall(f"SELECT id, document FROM {PLATFORMS}")
            for platform_id, document in rows:
                doc = orjson.loads(document)
                if needs_reseal(doc, self.sealer):
                    await db.execute(f"UPDATE {PLATFORMS} SET document = ? WHERE id = ?",
                                     (_dumps(resealed(doc, self.sealer)), platform_id))
                    changed += 1
        return changed

    async def insert_audit(self, records: Sequence[AuditRecord]) -> None:
        """Idempotent per record id, so a retried batch does not duplicate what already landed.

        Raises ``AuditRecordRejected`` when a record cannot be written at all (nothing of the batch is then)."""
        if not records:
            return
        try:
            await self._write_batch(_AUDIT_INSERT.statements([_audit_row(r) for r in records]))
        except (ValueError, TypeError, OverflowError, sqlite3.DataError, sqlite3.IntegrityError,
                sqlite3.InterfaceError) as exc:  # the data (e.g. text that is not UTF-8), not the database
            raise AuditRecordRejected(str(exc)) from exc

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Newest first; ``since`` is inclusive and ``until`` exclusive (as OCPI's date_from/date_to)."""
        if query.limit <= 0:
            return []
        where, params = _audit_where(query)
        sql = (
            f"SELECT {', '.join(_AUDIT_COLUMNS)}, rest FROM {AUDIT}{where} "
            "ORDER BY time_us DESC, id DESC LIMIT ? OFFSET ?"
        )
        async with self._read() as db:
            rows = await db.execute_fetchall(sql, [*params, query.limit, max(query.offset, 0)])
        return [_audit_from_row(row) for row in rows]

    async def purge_audit(self, older_than: datetime) -> int:
        """SQLite has no TTL: the hub calls this periodically with now - retention."""
        async with self._write() as db:
            async with db.execute(
                f"DELETE FROM {AUDIT} WHERE time_us < ?", (epoch_us(older_than),)
            ) as cursor:
                return cursor.rowcount

    async def save_object(self, obj: StoredObject) -> None:
        """Insert or replace data and last_updated; the created_at of the first save is kept."""
        doc = object_to_doc(obj)
        row = tuple(doc[name] for name in _OBJECT_COLUMNS)
        async with self._write() as db:
            await db.execute(_OBJECT_UPSERT, row)

    async def get_object(self, module: str, country_code: str, party_id: str, object_id: str) -> StoredObject | None:
        key = object_key(module, country_code, party_id, object_id)
        async with self._read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {', '.join(_OBJECT_COLUMNS)} FROM {OBJECTS} "
                "WHERE module = ? AND country_code = ? AND party_id = ? AND object_id = ?",
                tuple(key.values()),
            )
        for row in rows:
            return _object_from_row(row)
        return None

    async def delete_object(self, module: str, country_code: str, party_id: str, object_id: str) -> bool:
        key = object_key(module, country_code, party_id, object_id)
        async with self._write() as db:
            cursor = await db.execute(
                f"DELETE FROM {OBJECTS} WHERE module = ? AND country_code = ? AND party_id = ? AND object_id = ?",
                tuple(key.values()),
            )
            return cursor.rowcount > 0

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
        where, params = _objects_where(module, date_from, date_to, owners)
        async with self._snapshot() as db:
            ((total,),) = await db.execute_fetchall(f"SELECT COUNT(*) FROM {OBJECTS}{where}", params)
            rows: Iterable[Any] = []
            if limit > 0:
                rows = await db.execute_fetchall(
                    f"SELECT {', '.join(_OBJECT_COLUMNS)} FROM {OBJECTS}{where} "
                    f"ORDER BY {', '.join(OBJECT_ORDER)} LIMIT ? OFFSET ?",
                    [*params, limit, max(offset, 0)],
                )
        return [_object_from_row(row) for row in rows], int(total)

    async def purge_objects(self, module: str, last_updated_before: datetime) -> int:
        """Retention of stored personal data (tokens): drop a module's objects not updated since the cut-off."""
        async with self._write() as db:
            async with db.execute(f"DELETE FROM {OBJECTS} WHERE module = ? AND last_updated_us < ?",
                                  (module, epoch_us(last_updated_before))) as cursor:
                return cursor.rowcount

    async def purge_route_hints(self, seen_before: datetime) -> int:
        async with self._write() as db:
            async with db.execute(f"DELETE FROM {ROUTE_HINTS} WHERE seen_us < ?",
                                  (epoch_us(seen_before),)) as cursor:
                return cursor.rowcount

    async def add_route_hint(self, kind: str, key: str, party: str) -> None:
        await self.add_route_hints([(kind, key, party)])

    async def add_route_hints(self, hints: Sequence[tuple[str, str, str]]) -> None:
        """Many hints in one transaction: the hub writes them behind the routing path, in batches."""
        if not hints:
            return
        await self._write_batch(_HINT_UPSERT.statements([(kind, key, party, self._seen_us())
                                                          for kind, key, party in hints]))

    async def find_route_hint(self, kind: str, key: str) -> list[str]:
        async with self._read() as db:
            rows = await db.execute_fetchall(
                f"SELECT party FROM {ROUTE_HINTS} WHERE kind = ? AND key = ? ORDER BY seen_us DESC, party",
                (kind, key),
            )
        return [party for (party,) in rows]

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """One transaction for the batch: the usage writer calls it every few seconds, behind the routing path."""
        if not rows:
            return
        await self._write_batch(_USAGE_ADD.statements([
            (r.day, r.from_party, r.to_party, r.module, r.currency, r.count, r.kwh, r.cost) for r in rows]))

    async def query_usage(self, since: str | None = None, until: str | None = None) -> list[UsageRow]:
        where, params = [], []
        if since is not None:
            where.append("day >= ?")
            params.append(since)
        if until is not None:
            where.append("day <= ?")
            params.append(until)
        sql = (f"SELECT {', '.join(_USAGE_COLUMNS)} FROM {USAGE}" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY day, from_party, to_party, module, currency")
        async with self._read() as db:
            rows = await db.execute_fetchall(sql, params)
        return [UsageRow(*row) for row in rows]

    async def keep_routed(self, obj: RoutedObject) -> None:
        """Insert or replace by key; the kept_at of the first keep stays."""
        row = _routed_row(obj, self.sealer)
        async with self._write() as db:
            await db.execute(_ROUTED_UPSERT, row)

    async def get_routed(self, module: str, receiver: str, country_code: str, party_id: str,
                         object_id: str) -> RoutedObject | None:
        key = tuple(routed_key(module, receiver, country_code, party_id, object_id).values())
        async with self._read() as db:
            rows = await db.execute_fetchall(_ROUTED_UNEXPIRED, (*key, now_us()))
        for row in rows:
            return _routed_from_row(row, self.sealer)
        return None

    async def change_routed(self, module: str, receiver: str, country_code: str, party_id: str, object_id: str,
                            change: Callable[[RoutedObject], RoutedObject | None]) -> bool:
        """Read, change and write in one write transaction: no other writer, in any process, comes in between."""
        key = tuple(routed_key(module, receiver, country_code, party_id, object_id).values())
        async with self._write() as db:
            rows = await db.execute_fetchall(_ROUTED_UNEXPIRED, (*key, now_us()))
            for row in rows:
                new = change(_routed_from_row(row, self.sealer))
                if new is None:
                    return False
                await db.execute(_ROUTED_UPSERT, _routed_row(new, self.sealer))
                return True
        return False

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
        where, params = _objects_where(module, date_from, date_to, owners)
        where += " AND receiver = ? AND expires_at_us > ?"
        params += [receiver.upper(), now_us()]
        async with self._snapshot() as db:
            ((total,),) = await db.execute_fetchall(f"SELECT COUNT(*) FROM {ROUTED}{where}", params)
            rows: Iterable[Any] = []
            if limit > 0:
                rows = await db.execute_fetchall(
                    f"SELECT {', '.join(_ROUTED_COLUMNS)} FROM {ROUTED}{where} "
                    f"ORDER BY {', '.join(ROUTED_ORDER)} LIMIT ? OFFSET ?",
                    [*params, limit, max(offset, 0)],
                )
        return [_routed_from_row(row, self.sealer) for row in rows], int(total)

    async def purge_routed(self, expired_before: datetime) -> int:
        async with self._write() as db:
            async with db.execute(f"DELETE FROM {ROUTED} WHERE expires_at_us < ?",
                                  (epoch_us(expired_before),)) as cursor:
                return cursor.rowcount

    async def reseal_routed(self) -> int:
        """In batches, each one write transaction: a rotation over many records never holds the file for long.
        ``seal_key`` tells which records need it (two index ranges, not a scan of the table)."""
        changed = 0
        key_id = self.sealer.key_id
        while True:
            async with self._write() as db:
                rows = list(await db.execute_fetchall(
                    f"SELECT rowid, data_sealed FROM {ROUTED} WHERE seal_key < ? OR seal_key > ? LIMIT ?",
                    (key_id, key_id, RESEAL_BATCH)))
                for rowid, sealed in rows:
                    new = resealed_routed(sealed, self.sealer)
                    await db.execute(f"UPDATE {ROUTED} SET data_sealed = ?, seal_key = ? WHERE rowid = ?",
                                     (new["data_sealed"], new["seal_key"], rowid))
            changed += len(rows)
            if len(rows) < RESEAL_BATCH:
                return changed

    async def save_agreement(self, agreement: Agreement) -> None:
        await self.save_agreements([agreement])

    async def save_agreements(self, agreements: Sequence[Agreement]) -> None:
        """One transaction: all of them or none."""
        rows = []
        for agreement in agreements:
            doc = agreement_to_doc(agreement)
            rows.append((_AGREEMENT_UPSERT, (agreement.id, doc["created_at_us"], _dumps(doc))))
        if rows:
            await self._write_batch(rows)

    async def get_agreement(self, agreement_id: str) -> Agreement | None:
        async with self._read() as db:
            rows = await db.execute_fetchall(f"SELECT document FROM {AGREEMENTS} WHERE id = ?", (agreement_id,))
        for (document,) in rows:
            return agreement_from_doc(orjson.loads(document))
        return None

    async def list_agreements(self) -> list[Agreement]:
        async with self._read() as db:
            rows = await db.execute_fetchall(f"SELECT document FROM {AGREEMENTS} ORDER BY created_at_us, id")
        return [agreement_from_doc(orjson.loads(document)) for (document,) in rows]

    async def delete_agreement(self, agreement_id: str) -> bool:
        async with self._write() as db:
            cursor = await db.execute(f"DELETE FROM {AGREEMENTS} WHERE id = ?", (agreement_id,))
            return cursor.rowcount > 0
