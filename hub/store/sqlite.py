"""The embedded store: one SQLite file (or ``:memory:``) through aiosqlite, so the event loop never blocks.

WAL mode and a busy timeout let several local processes share the file. Within one process a lock
serialises access to the single connection: its transactions must not interleave, and readers must not
see another coroutine's uncommitted writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from hub.audit import AuditQuery, AuditRecord
from hub.platform import Platform, party_key
from hub.store.names import (
    AUDIT,
    PARTY_RESERVATIONS,
    PLATFORMS,
    audit_extra_filters,
    audit_from_doc,
    audit_to_doc,
    epoch_us,
    party_pairs,
    platform_from_doc,
    platform_to_doc,
)
from hub.store.protocol import PartyConflict

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
CREATE INDEX IF NOT EXISTS {AUDIT}_platform_id ON {AUDIT} (platform_id, time_us, id);
CREATE INDEX IF NOT EXISTS {AUDIT}_from_party ON {AUDIT} (from_party, time_us, id);
CREATE INDEX IF NOT EXISTS {AUDIT}_to_party ON {AUDIT} (to_party, time_us, id);
CREATE INDEX IF NOT EXISTS {AUDIT}_module ON {AUDIT} (module, time_us, id);
CREATE INDEX IF NOT EXISTS {AUDIT}_outcome ON {AUDIT} (outcome, time_us, id);
"""

_PLATFORM_UPSERT: Final = f"""
INSERT INTO {PLATFORMS} (id, created_at_us, inbound_token_hash, token_a_hash, document)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    created_at_us = excluded.created_at_us,
    inbound_token_hash = excluded.inbound_token_hash,
    token_a_hash = excluded.token_a_hash,
    document = excluded.document
"""

_AUDIT_INSERT: Final = (
    f"INSERT INTO {AUDIT} ({', '.join(_AUDIT_COLUMNS)}, rest) "
    f"VALUES ({', '.join('?' for _ in _AUDIT_COLUMNS)}, ?) ON CONFLICT (id) DO NOTHING"
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _audit_row(record: AuditRecord) -> tuple[Any, ...]:
    doc = audit_to_doc(record)
    doc.pop("time")  # time_us is the exact copy, and a column
    columns = tuple(doc.pop(name) for name in _AUDIT_COLUMNS)
    return (*columns, _dumps(doc))


def _audit_from_row(row: Sequence[Any]) -> AuditRecord:
    doc: dict[str, Any] = orjson.loads(row[-1])
    doc.update(zip(_AUDIT_COLUMNS, row[:-1], strict=True))
    return audit_from_doc(doc)


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

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

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
            await db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
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

    async def ping(self) -> None:
        async with self._read() as db:
            await db.execute_fetchall("SELECT 1")

    async def save_platform(self, platform: Platform) -> None:
        doc = platform_to_doc(platform)
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
            return platform_from_doc(orjson.loads(document))
        return None

    async def list_platforms(self) -> list[Platform]:
        async with self._read() as db:
            rows = await db.execute_fetchall(f"SELECT document FROM {PLATFORMS} ORDER BY created_at_us, id")
        return [platform_from_doc(orjson.loads(document)) for (document,) in rows]

    async def find_platform_by_token_hash(self, token_hash: str) -> Platform | None:
        """Inbound token first: it is the hot path (every request); Token A only during registration."""
        async with self._read() as db:
            for column in ("inbound_token_hash", "token_a_hash"):
                rows = await db.execute_fetchall(
                    f"SELECT document FROM {PLATFORMS} WHERE {column} = ?", (token_hash,)
                )
                for (document,) in rows:
                    return platform_from_doc(orjson.loads(document))
        return None

    async def insert_audit(self, records: Sequence[AuditRecord]) -> None:
        """Idempotent per record id, so a retried batch does not duplicate what already landed."""
        if not records:
            return
        rows = [_audit_row(r) for r in records]
        async with self._write() as db:
            await db.executemany(_AUDIT_INSERT, rows)

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
