"""The Store contract: one suite, run against every backend (SQLite file and memory, mongomock, real MongoDB).

Real MongoDB runs when ``HUB_TEST_MONGO_URL`` is set (each test gets its own database, dropped after).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from cryptography.fernet import Fernet
from mongomock_motor import AsyncMongoMockClient

from hub.audit import AuditQuery, AuditRecord
from hub.sealing import Sealer
from hub.settings import Settings
from hub.store import HubStore, PartyConflict, RoutedObject, Store, StoredObject, open_store
from hub.store.mongo import AUDIT_TTL_INDEX, ROUTED_TTL_INDEX, MongoStore
from hub.store.names import AUDIT, ROUTED, epoch_us
from hub.store.sqlite import SqliteStore
from routing.agreements import Agreement, AgreementStatus, PartyRef, Policy
from routing.platform import ConnectionStatus, Endpoint, Party, Platform, RateLimit, utcnow

MONGO_URL = os.environ.get("HUB_TEST_MONGO_URL")
NEEDS_MONGO = pytest.mark.skipif(
    not MONGO_URL, reason="set HUB_TEST_MONGO_URL=mongodb://... to run on MongoDB"
)


def _db_name() -> str:
    return f"hub_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "mongomock", "mongodb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HubStore]:
    kind: str = request.param
    db_name = _db_name()
    backend: SqliteStore | MongoStore
    if kind == "sqlite-file":
        backend = SqliteStore(str(tmp_path / "data" / "hub.sqlite3"))
    elif kind == "sqlite-memory":
        backend = SqliteStore(":memory:")
    elif kind == "mongomock":
        backend = MongoStore(AsyncMongoMockClient(), db_name)
    else:
        if not MONGO_URL:
            pytest.skip("real MongoDB backend: set HUB_TEST_MONGO_URL=mongodb://... to run")
        backend = MongoStore.from_url(MONGO_URL, db_name)
    await backend.open()
    try:
        yield backend
    finally:
        if kind == "mongodb" and isinstance(backend, MongoStore):
            await backend.client.drop_database(db_name)
        await backend.close()


# Recent (mongomock applies the 90-day TTL on read) and with odd microseconds (BSON would round them).
BASE = utcnow().replace(microsecond=123457) - timedelta(hours=1)


def at(seconds: float = 0.0, base: datetime | None = None) -> datetime:
    """``BASE`` shifted by some seconds: the audit tests' clock."""
    base = base or BASE
    return base + timedelta(seconds=seconds)


async def all_platforms(store: Store) -> list[Platform]:
    """Every platform, oldest first, read as a process's view reads them (hub/registry.py)."""
    ids = list(await store.platform_revisions())
    by_id = {p.id: p for p in await store.get_platforms(ids)}
    return [by_id[platform_id] for platform_id in ids]


def make_platform(platform_id: str, *pairs: str, **fields: Any) -> Platform:
    """A platform hosting ``"CC:PID"`` or ``"CC:PID:ROLE"`` parties (role defaults to CPO)."""
    parties = []
    for pair in pairs:
        cc, pid, *role = pair.split(":")
        parties.append(Party(cc, pid, role[0] if role else "CPO"))
    fields.setdefault("name", f"Platform {platform_id}")
    return Platform(id=platform_id, parties=parties, **fields)


def make_audit(record_id: str, time: datetime, **fields: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "id": record_id,
        "time": time,
        "request_id": f"req-{record_id}",
        "correlation_id": f"corr-{record_id}",
        "platform_id": "p1",
        "from_party": "NL:CPA",
        "to_party": "DE:EMS",
        "module": "locations",
        "interface_role": "RECEIVER",
        "method": "GET",
        "path": "/ocpi/2.2.1/locations/NL/CPA/LOC1",
        "outcome": "forwarded",
        "http_status": 200,
        "ocpi_status": 1000,
    }
    values.update(fields)
    return AuditRecord(**values)


async def owner_of(store: Store, pair: str) -> str | None:
    """Who holds a pair, seen only through the protocol: try to claim it with a throwaway platform."""
    probe = make_platform(f"probe-{uuid.uuid4().hex[:8]}", pair)
    try:
        await store.save_platform(probe)
    except PartyConflict as exc:
        return exc.platform_id
    probe.removed = True
    await store.save_platform(probe)
    return None


def ids(records: list[AuditRecord]) -> list[str]:
    return [r.id for r in records]


# --- platforms -----------------------------------------------------------------------------------------


async def test_saved_platform_round_trips_every_field(store: Store) -> None:
    platform = Platform(
        id="p-full",
        name="Full Platform",
        status=ConnectionStatus.CONNECTED,
        parties=[
            Party(
                "nl",
                "cpa",
                "cpo",
                status=ConnectionStatus.CONNECTED,
                business_details={"name": "CPA", "logo": {"url": "https://cpa.example/l.png", "width": 64}},
                last_updated=at(-30),
            ),
            Party("NL", "EMA", "EMSP", status=ConnectionStatus.OFFLINE, last_updated=at(-20)),
        ],
        token_a_hash="a" * 64,
        inbound_token_hash="b" * 64,
        outbound_token="token-for-the-platform",
        versions_url="https://cpa.example/ocpi/versions",
        version="2.2.1",
        endpoints=[
            Endpoint("locations", "SENDER", "https://cpa.example/ocpi/2.2.1/locations"),
            Endpoint("commands", "RECEIVER", "https://cpa.example/ocpi/2.2.1/commands"),
        ],
        allowed_hosts=["results.cpa.example", "192.0.2.7"],
        removed=False,
        created_at=at(-100),
        updated_at=at(-10),
        last_seen=at(-1),
    )
    await store.save_platform(platform)

    loaded = await store.get_platform("p-full")

    assert loaded == platform
    assert loaded is not None
    instants = [
        loaded.created_at,
        loaded.updated_at,
        loaded.last_seen,
        *(p.last_updated for p in loaded.parties),
    ]
    assert all(t is not None and t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in instants)


async def test_platform_with_only_defaults_round_trips(store: Store) -> None:
    platform = Platform(id="p-min", name="Minimal")
    await store.save_platform(platform)

    assert await store.get_platform("p-min") == platform


async def test_datetimes_in_other_offsets_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    plus_two = datetime(2030, 5, 6, 7, 8, 9, 999999, tzinfo=timezone(timedelta(hours=2)))
    await store.save_platform(Platform(id="p-tz", name="TZ", created_at=plus_two, updated_at=plus_two))

    loaded = await store.get_platform("p-tz")

    assert loaded is not None
    assert loaded.created_at == plus_two
    assert loaded.created_at.tzinfo == UTC
    assert loaded.created_at.microsecond == 999999


async def test_a_platform_rate_limit_round_trips_and_can_be_cleared(store: Store) -> None:
    platform = make_platform("p-rl", "NL:CPA", rate_limit=RateLimit(rps=2.5, burst=7))
    await store.save_platform(platform)
    loaded = await store.get_platform("p-rl")
    assert loaded is not None and loaded.rate_limit == RateLimit(rps=2.5, burst=7)
    assert await all_platforms(store) == [platform]

    platform.rate_limit = None  # back to the hub-wide default
    await store.save_platform(platform)
    loaded = await store.get_platform("p-rl")
    assert loaded is not None and loaded.rate_limit is None


async def test_get_unknown_platform_returns_none(store: Store) -> None:
    assert await store.get_platform("nope") is None


async def test_saving_again_replaces_the_whole_platform(store: Store) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA", versions_url="https://old.example/versions"))
    updated = make_platform("p1", "NL:CPB", versions_url=None, status=ConnectionStatus.CONNECTED)

    await store.save_platform(updated)

    assert await store.get_platform("p1") == updated
    assert len(await all_platforms(store)) == 1


async def test_find_platform_by_inbound_token_hash_and_by_token_a_hash(store: Store) -> None:
    registered = make_platform("p1", "NL:CPA", inbound_token_hash="in-1")
    pending = make_platform("p2", "NL:CPB", token_a_hash="a-2")
    await store.save_platform(registered)
    await store.save_platform(pending)

    assert await store.find_platform_by_token_hash("in-1") == registered
    assert await store.find_platform_by_token_hash("a-2") == pending
    assert await store.find_platform_by_token_hash("unknown") is None


async def test_rotated_token_hash_no_longer_finds_the_platform(store: Store) -> None:
    await store.save_platform(make_platform("p1", token_a_hash="a-1"))
    await store.save_platform(make_platform("p1", inbound_token_hash="in-1"))

    assert await store.find_platform_by_token_hash("a-1") is None
    found = await store.find_platform_by_token_hash("in-1")
    assert found is not None and found.id == "p1"


async def test_platforms_without_tokens_do_not_collide(store: Store) -> None:
    for i in range(3):
        await store.save_platform(make_platform(f"p{i}"))

    assert len(await all_platforms(store)) == 3


async def test_token_hash_of_another_platform_is_refused_and_reserves_nothing(store: Store) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA", inbound_token_hash="shared"))

    with pytest.raises(ValueError, match="token hash"):
        await store.save_platform(make_platform("p2", "NL:NEW", inbound_token_hash="shared"))

    assert await store.get_platform("p2") is None
    assert await owner_of(store, "NL:NEW") is None


async def test_platforms_are_listed_oldest_first(store: Store) -> None:
    for platform_id, age in [("middle", 20), ("newest", 10), ("oldest", 30)]:
        await store.save_platform(
            make_platform(platform_id, created_at=at(-age), removed=platform_id == "oldest")
        )

    assert [p.id for p in await all_platforms(store)] == ["oldest", "middle", "newest"]


async def test_platform_revisions_are_listed_oldest_first_and_platforms_read_by_ids(store: Store) -> None:
    """What a process compares its view with (hub/registry.py): ids and revisions only, then the changed ones."""
    assert await store.platform_revisions() == {}
    for platform_id, age, revision in [("middle", 20, 7), ("newest", 10, 0), ("oldest", 30, 1_700_000_000_000_001)]:
        await store.save_platform(make_platform(platform_id, f"NL:P{age}", created_at=at(-age), revision=revision,
                                                removed=platform_id == "oldest"))
    revisions = await store.platform_revisions()
    assert list(revisions.items()) == [("oldest", 1_700_000_000_000_001), ("middle", 7), ("newest", 0)]

    await store.save_platform(make_platform("middle", "NL:P20", created_at=at(-20), revision=8, name="changed"))
    assert (await store.platform_revisions())["middle"] == 8
    read = {p.id: p for p in await store.get_platforms(["middle", "oldest", "unknown"])}
    assert sorted(read) == ["middle", "oldest"]
    assert read["middle"] == await store.get_platform("middle") and read["middle"].name == "changed"
    assert await store.get_platforms([]) == []
    many = [f"bulk-{n:04d}" for n in range(1100)]  # more than one query's worth of ids
    for platform_id in many[:3]:
        await store.save_platform(make_platform(platform_id))
    assert sorted(p.id for p in await store.get_platforms(many)) == many[:3]


# --- party reservations --------------------------------------------------------------------------------


async def test_party_pair_reserved_by_another_platform_raises_conflict(store: Store) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA"))

    with pytest.raises(PartyConflict) as caught:
        await store.save_platform(make_platform("p2", "nl:cpa:emsp"))

    assert caught.value.party == "NL:CPA"
    assert caught.value.platform_id == "p1"
    assert await store.get_platform("p2") is None


async def test_conflict_leaves_existing_reservations_untouched(store: Store) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA"))
    before = make_platform("p2", "NL:EMA")
    await store.save_platform(before)

    # NL:AAA sorts before NL:CPA, so it is reserved before the conflict is met, then must be undone.
    with pytest.raises(PartyConflict):
        await store.save_platform(make_platform("p2", "NL:EMA", "NL:AAA", "NL:CPA", name="changed"))

    assert await store.get_platform("p2") == before
    assert await owner_of(store, "NL:AAA") is None
    assert await owner_of(store, "NL:EMA") == "p2"
    assert await owner_of(store, "NL:CPA") == "p1"


async def test_resaving_a_platform_keeps_its_own_pairs(store: Store) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA", "NL:CPB"))
    await store.save_platform(make_platform("p1", "NL:CPA", "NL:CPB", name="renamed"))

    assert await owner_of(store, "NL:CPA") == "p1"
    assert await owner_of(store, "NL:CPB") == "p1"


async def test_dropping_a_party_releases_its_pair(store: Store) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA", "NL:CPB"))
    await store.save_platform(make_platform("p1", "NL:CPA"))

    assert await owner_of(store, "NL:CPB") is None
    assert await owner_of(store, "NL:CPA") == "p1"


async def test_removed_platform_releases_its_party_pairs(store: Store) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA"))
    await store.save_platform(make_platform("p1", "NL:CPA", removed=True))

    await store.save_platform(make_platform("p2", "NL:CPA"))

    removed = await store.get_platform("p1")
    assert removed is not None and removed.removed and removed.parties[0].key == "NL:CPA"
    assert await owner_of(store, "NL:CPA") == "p2"


async def test_removed_platform_does_not_conflict_but_cannot_return_while_its_pair_is_taken(
    store: Store,
) -> None:
    await store.save_platform(make_platform("p1", "NL:CPA", removed=True))
    await store.save_platform(make_platform("p2", "NL:CPA"))
    await store.save_platform(make_platform("p1", "NL:CPA", removed=True, name="still removed"))

    with pytest.raises(PartyConflict):
        await store.save_platform(make_platform("p1", "NL:CPA", removed=False))


async def test_same_pair_with_two_roles_on_one_platform_is_allowed(store: Store) -> None:
    platform = make_platform("p1", "NL:ABC:CPO", "NL:ABC:EMSP")
    await store.save_platform(platform)

    assert await store.get_platform("p1") == platform
    assert await owner_of(store, "NL:ABC") == "p1"


async def test_concurrent_claims_of_one_pair_have_one_winner(store: Store) -> None:
    results = await asyncio.gather(
        *(store.save_platform(make_platform(f"p{i}", "NL:CPA")) for i in range(5)), return_exceptions=True
    )

    winners = [f"p{i}" for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, PartyConflict) for r in results if r is not None)
    assert [p.id for p in await all_platforms(store)] == winners
    assert await owner_of(store, "NL:CPA") == winners[0]


async def test_concurrent_saves_of_different_platforms_all_land(store: Store) -> None:
    await asyncio.gather(*(store.save_platform(make_platform(f"p{i}", f"NL:C{i:02d}")) for i in range(20)))

    assert len(await all_platforms(store)) == 20


# --- audit ---------------------------------------------------------------------------------------------


async def test_audit_round_trips_every_field(store: Store) -> None:
    full = make_audit(
        "a-full",
        at(),
        receiver_platform_id="p2",
        receiver_http_status=201,
        receiver_ocpi_status=1000,
        latency_total_ms=12.345,
        latency_receiver_ms=9.875,
        request_size=321,
        response_size=4567,
        body={"request": {"id": "LOC1", "evses": [{"uid": "E1"}]}, "response": None},
    )
    bare = make_audit(
        "a-bare", at(1), platform_id=None, from_party=None, to_party=None, module=None, ocpi_status=None
    )
    await store.insert_audit([full, bare])

    assert await store.query_audit(AuditQuery()) == [bare, full]


# r1..r4, one second apart, on top of make_audit's defaults (NL:CPA -> DE:EMS, locations, forwarded).
AUDIT_DATASET: list[dict[str, Any]] = [
    {"platform_id": "p1", "correlation_id": "c1", "request_id": "q1", "receiver_platform_id": "p2"},
    {
        "platform_id": "p2",
        "from_party": "DE:EMS",
        "to_party": "NL:CPA",
        "module": "sessions",
        "outcome": "timeout",
        "correlation_id": "c1",
        "request_id": "q2",
        "http_status": 504,
    },
    {
        "platform_id": "p1",
        "to_party": "NL:HUB",
        "outcome": "hub_error",
        "correlation_id": "c2",
        "request_id": "q3",
    },
    {
        "platform_id": "p3",
        "from_party": "FR:XYZ",
        "to_party": None,
        "module": None,
        "outcome": "rejected",
        "correlation_id": "c3",
        "request_id": "q4",
        "interface_role": "SENDER",
    },
]

# (name, AuditQuery fields with since/until as seconds after r1, expected ids newest first)
AUDIT_FILTER_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("since", {"since": 1}, ["r4", "r3", "r2"]),
    ("until", {"until": 2}, ["r2", "r1"]),
    ("since-and-until", {"since": 1, "until": 3}, ["r3", "r2"]),
    ("platform_id", {"platform_id": "p1"}, ["r3", "r1"]),
    ("party-as-from-or-to", {"party": "NL:CPA"}, ["r3", "r2", "r1"]),
    ("party-as-to-only", {"party": "NL:HUB"}, ["r3"]),
    ("module", {"module": "locations"}, ["r3", "r1"]),
    ("outcome", {"outcome": "timeout"}, ["r2"]),
    ("correlation_id", {"correlation_id": "c1"}, ["r2", "r1"]),
    ("request_id", {"request_id": "q3"}, ["r3"]),
    ("combined", {"platform_id": "p1", "module": "locations", "since": 1}, ["r3"]),
    ("extra-interface_role", {"extra": {"interface_role": "SENDER"}}, ["r4"]),
    ("extra-two-fields", {"extra": {"receiver_platform_id": "p2", "http_status": 200}}, ["r1"]),
    ("extra-null", {"extra": {"to_party": None}}, ["r4"]),
    ("no-match", {"outcome": "nothing"}, []),
]


@pytest.mark.parametrize(
    ("query", "expected"), [c[1:] for c in AUDIT_FILTER_CASES], ids=[c[0] for c in AUDIT_FILTER_CASES]
)
async def test_audit_query_filters(store: Store, query: dict[str, Any], expected: list[str]) -> None:
    await store.insert_audit(
        [make_audit(f"r{i}", at(i - 1), **fields) for i, fields in enumerate(AUDIT_DATASET, start=1)]
    )
    for bound in ("since", "until"):
        if bound in query:
            query = {**query, bound: at(query[bound])}

    assert ids(await store.query_audit(AuditQuery(**query))) == expected


async def test_audit_since_is_inclusive_and_until_exclusive_to_the_microsecond(store: Store) -> None:
    one_us = timedelta(microseconds=1)
    await store.insert_audit([make_audit("r", at())])

    assert ids(await store.query_audit(AuditQuery(since=at()))) == ["r"]
    assert ids(await store.query_audit(AuditQuery(since=at() + one_us))) == []
    assert ids(await store.query_audit(AuditQuery(until=at()))) == []
    assert ids(await store.query_audit(AuditQuery(until=at() + one_us))) == ["r"]


async def test_audit_filter_on_unknown_field_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot filter"):
        await store.query_audit(AuditQuery(extra={"no_such_field": 1}))


async def test_audit_newest_first_with_limit_offset(store: Store) -> None:
    await store.insert_audit([make_audit(f"r{i}", at(i)) for i in (3, 0, 4, 1, 2)])

    assert ids(await store.query_audit(AuditQuery(limit=2))) == ["r4", "r3"]
    assert ids(await store.query_audit(AuditQuery(limit=2, offset=2))) == ["r2", "r1"]
    assert ids(await store.query_audit(AuditQuery(limit=2, offset=4))) == ["r0"]
    assert ids(await store.query_audit(AuditQuery(limit=2, offset=5))) == []
    assert ids(await store.query_audit(AuditQuery(limit=0))) == []


async def test_insert_audit_skips_ids_already_stored(store: Store) -> None:
    await store.insert_audit([make_audit("a", at(0)), make_audit("b", at(1))])
    await store.insert_audit([make_audit("b", at(1)), make_audit("c", at(2))])
    await store.insert_audit([])

    assert ids(await store.query_audit(AuditQuery())) == ["c", "b", "a"]


async def test_purge_audit_removes_old_records(store: Store) -> None:
    now = utcnow()
    await store.insert_audit(
        [
            make_audit("old", now - timedelta(days=10)),
            make_audit("older", now - timedelta(days=6)),
            make_audit("recent", now - timedelta(hours=1)),
        ]
    )

    assert await store.purge_audit(now - timedelta(days=5)) == 2
    assert ids(await store.query_audit(AuditQuery())) == ["recent"]
    assert await store.purge_audit(now - timedelta(days=5)) == 0


async def test_ping_succeeds_on_an_open_store(store: Store) -> None:
    await store.ping()


# --- stored objects ------------------------------------------------------------------------------------


def make_object(object_id: str, seconds: float = 0.0, **fields: Any) -> StoredObject:
    """A location of NL:CPA last updated ``seconds`` after BASE and created then too, unless told."""
    values: dict[str, Any] = {
        "module": "locations",
        "country_code": "NL",
        "party_id": "CPA",
        "object_id": object_id,
        "last_updated": at(seconds),
        "data": {"id": object_id, "last_updated": at(seconds).isoformat()},
        "created_at": at(seconds),
    }
    values.update(fields)
    return StoredObject(**values)


def keys(objects: list[StoredObject]) -> list[str]:
    return [f"{o.country_code}:{o.party_id}:{o.object_id}" for o in objects]


async def test_stored_object_round_trips_nested_unicode_data_to_the_microsecond(store: HubStore) -> None:
    data: dict[str, Any] = {
        "id": "LOC1",
        "name": "Gare de Lyon – Parking Ünderground 駐車場 ⚡",
        "coordinates": {"latitude": "48.844", "longitude": "2.374"},
        "evses": [
            {"uid": "E1", "status": "AVAILABLE", "connectors": [{"id": "1", "max_voltage": 230, "tariff_ids": []}]},
            {"uid": "E2", "status": "CHARGING", "capabilities": None, "power": 22.5, "reservable": True},
        ],
        "empty": {},
    }
    plus_two = timezone(timedelta(hours=2))
    obj = StoredObject(
        module="locations",
        country_code="nl",
        party_id="cpa",
        object_id="LOC1",
        last_updated=datetime(2030, 5, 6, 7, 8, 9, 999999, tzinfo=plus_two),
        data=data,
        created_at=at(-5),
    )
    await store.save_object(obj)

    loaded = await store.get_object("locations", "NL", "CPA", "LOC1")

    assert loaded == StoredObject(
        "locations", "NL", "CPA", "LOC1", obj.last_updated, data, created_at=obj.created_at
    )
    assert loaded is not None
    assert loaded.last_updated.tzinfo == UTC and loaded.last_updated.microsecond == 999999
    assert loaded.created_at.tzinfo == UTC and loaded.created_at.microsecond == obj.created_at.microsecond
    assert list(loaded.data) == list(data)  # key order kept
    assert await store.get_object("locations", "nl", "cpa", "LOC1") == loaded


async def test_stored_object_data_keys_mongo_would_refuse_round_trip(store: HubStore) -> None:
    data: dict[str, Any] = {"$set": 1, "a.b": {"$gt": [1, 2]}, "": None, "big": 2**62, "tiny": 1e-300}
    await store.save_object(make_object("odd", data=data))

    loaded = await store.get_object("locations", "NL", "CPA", "odd")

    assert loaded is not None and loaded.data == data


async def test_get_unknown_object_returns_none(store: HubStore) -> None:
    await store.save_object(make_object("LOC1"))

    assert await store.get_object("locations", "NL", "CPA", "LOC2") is None
    assert await store.get_object("locations", "NL", "CPB", "LOC1") is None
    assert await store.get_object("tariffs", "NL", "CPA", "LOC1") is None
    assert await store.get_object("locations", "NL", "CPA", "loc1") is None  # object ids are case-sensitive


async def test_deleting_an_object_removes_only_that_one(store: HubStore) -> None:
    await store.save_object(make_object("A"))
    await store.save_object(make_object("B"))

    assert await store.delete_object("locations", "nl", "cpa", "A") is True  # the pair is case-insensitive
    assert await store.delete_object("locations", "NL", "CPA", "A") is False, "already gone"
    assert await store.delete_object("tariffs", "NL", "CPA", "B") is False, "another module's key"

    assert await store.get_object("locations", "NL", "CPA", "A") is None
    page, total = await store.list_objects("locations")
    assert (keys(page), total) == (["NL:CPA:B"], 1)


async def test_object_with_naive_datetime_is_refused(store: HubStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.save_object(make_object("LOC1", last_updated=datetime(2030, 1, 1)))

    assert await store.get_object("locations", "NL", "CPA", "LOC1") is None


async def test_saving_an_object_again_replaces_data_and_last_updated_but_keeps_created_at(
    store: HubStore,
) -> None:
    await store.save_object(make_object("A", 0, data={"v": 1, "gone": True}))
    await store.save_object(make_object("B", 1))
    await store.save_object(make_object("A", 10, data={"v": 2}, created_at=at(20), country_code="nl"))

    loaded = await store.get_object("locations", "NL", "CPA", "A")

    assert loaded is not None
    assert loaded.data == {"v": 2}
    assert loaded.last_updated == at(10)
    assert loaded.created_at == at(0)
    page, total = await store.list_objects("locations")
    assert (keys(page), total) == (["NL:CPA:A", "NL:CPA:B"], 2)  # A keeps its place in the crawl order


async def test_concurrent_saves_of_one_new_object_store_it_once(store: HubStore) -> None:
    await asyncio.gather(
        *(store.save_object(make_object("A", i, data={"v": i}, created_at=at(0))) for i in range(5))
    )

    page, total = await store.list_objects("locations")
    assert (keys(page), total) == (["NL:CPA:A"], 1)
    assert page[0].created_at == at(0)


async def test_list_objects_date_from_is_inclusive_and_date_to_exclusive_to_the_microsecond(
    store: HubStore,
) -> None:
    one_us = timedelta(microseconds=1)
    for i in range(4):
        await store.save_object(make_object(f"O{i}", i))

    async def listed(date_from: datetime | None = None, date_to: datetime | None = None) -> tuple[list[str], int]:
        page, total = await store.list_objects("locations", date_from=date_from, date_to=date_to)
        return [o.object_id for o in page], total

    assert await listed() == (["O0", "O1", "O2", "O3"], 4)
    assert await listed(date_from=at(1)) == (["O1", "O2", "O3"], 3)
    assert await listed(date_from=at(1) + one_us) == (["O2", "O3"], 2)
    assert await listed(date_to=at(2)) == (["O0", "O1"], 2)
    assert await listed(date_to=at(2) + one_us) == (["O0", "O1", "O2"], 3)
    assert await listed(date_from=at(1), date_to=at(3)) == (["O1", "O2"], 2)
    assert await listed(date_from=at(2), date_to=at(2)) == ([], 0)


async def test_list_objects_filters_on_last_updated_not_created_at(store: HubStore) -> None:
    await store.save_object(make_object("old-but-updated", 0))
    await store.save_object(make_object("old-but-updated", 100))

    page, total = await store.list_objects("locations", date_from=at(50))

    assert ([o.object_id for o in page], total) == (["old-but-updated"], 1)


async def test_list_objects_pages_in_created_order_then_by_key(store: HubStore) -> None:
    # Saved out of order; several share a created_at, so the key (country_code, party_id, object_id) decides.
    saves = [
        ("DE", "EMS", "Z", 2),
        ("NL", "CPA", "B", 1),
        ("NL", "CPB", "A", 1),
        ("NL", "CPA", "A", 1),
        ("DE", "EMS", "Y", 0),
        ("BE", "XYZ", "Q", 3),
        ("NL", "CPA", "A2", 1),
    ]
    for cc, pid, oid, seconds in saves:
        await store.save_object(make_object(oid, seconds, country_code=cc, party_id=pid))
    expected = ["DE:EMS:Y", "NL:CPA:A", "NL:CPA:A2", "NL:CPA:B", "NL:CPB:A", "DE:EMS:Z", "BE:XYZ:Q"]

    pages = [await store.list_objects("locations", offset=offset, limit=3) for offset in (0, 3, 6)]

    assert [keys(page) for page, _ in pages] == [expected[0:3], expected[3:6], expected[6:]]
    assert [total for _, total in pages] == [7, 7, 7]
    assert await store.list_objects("locations", offset=3, limit=3) == pages[1]  # stable when asked again
    assert await store.list_objects("locations", offset=7, limit=3) == ([], 7)
    assert await store.list_objects("locations", offset=0, limit=0) == ([], 7)
    assert await store.list_objects("locations", offset=0, limit=-1) == ([], 7)
    page, total = await store.list_objects("locations", offset=-5, limit=2)
    assert (keys(page), total) == (expected[:2], 7)


async def test_list_objects_total_counts_the_date_filter_not_the_page(store: HubStore) -> None:
    for i in range(6):
        await store.save_object(make_object(f"O{i}", i))

    page, total = await store.list_objects("locations", date_from=at(1), date_to=at(5), offset=1, limit=2)

    assert ([o.object_id for o in page], total) == (["O2", "O3"], 4)


async def test_objects_of_different_modules_are_kept_apart(store: HubStore) -> None:
    await store.save_object(make_object("X1", 0, data={"kind": "location"}))
    await store.save_object(make_object("X1", 1, module="tariffs", data={"kind": "tariff"}))
    await store.save_object(make_object("T1|RFID", 2, module="tokens", data={"kind": "token"}))

    location = await store.get_object("locations", "NL", "CPA", "X1")
    tariff = await store.get_object("tariffs", "NL", "CPA", "X1")

    assert location is not None and location.data == {"kind": "location"}
    assert tariff is not None and tariff.data == {"kind": "tariff"}
    assert [(keys(p), t) for p, t in [await store.list_objects(m) for m in ("locations", "tariffs", "tokens")]] == [
        (["NL:CPA:X1"], 1),
        (["NL:CPA:X1"], 1),
        (["NL:CPA:T1|RFID"], 1),
    ]
    assert await store.list_objects("sessions") == ([], 0)


# --- route hints ---------------------------------------------------------------------------------------


async def test_route_hints_are_idempotent_and_most_recently_seen_first(store: HubStore) -> None:
    await store.add_route_hint("token", "DE*EMS*T1", "NL:CPA")
    await store.add_route_hint("token", "DE*EMS*T1", "NL:CPA")
    assert await store.find_route_hint("token", "DE*EMS*T1") == ["NL:CPA"]

    await store.add_route_hint("token", "DE*EMS*T1", "DE:EMS")
    assert await store.find_route_hint("token", "DE*EMS*T1") == ["DE:EMS", "NL:CPA"]

    await store.add_route_hint("token", "DE*EMS*T1", "NL:CPA")
    assert await store.find_route_hint("token", "DE*EMS*T1") == ["NL:CPA", "DE:EMS"]


async def test_a_batch_of_route_hints_lands_at_once_repeats_included(store: HubStore) -> None:
    hints = [("location", f"LOC{i}", "NL:CPA") for i in range(70)]  # more than one multi-row statement
    await store.add_route_hints([*hints, ("location", "LOC1", "BE:XYZ"), ("location", "LOC1", "NL:CPA")])

    assert await store.find_route_hint("location", "LOC69") == ["NL:CPA"]
    assert await store.find_route_hint("location", "LOC1") == ["NL:CPA", "BE:XYZ"], "the later repeat is newest"
    await store.add_route_hints([])


async def test_route_hints_for_two_parties_of_one_key_are_both_returned(store: HubStore) -> None:
    await store.add_route_hint("location", "LOC1", "NL:CPA")
    await store.add_route_hint("location", "LOC1", "BE:XYZ")

    assert sorted(await store.find_route_hint("location", "LOC1")) == ["BE:XYZ", "NL:CPA"]


async def test_route_hints_are_kept_apart_by_kind_and_case_sensitive_key(store: HubStore) -> None:
    await store.add_route_hint("session", "S1", "NL:CPA")
    await store.add_route_hint("location", "S1", "DE:EMS")

    assert await store.find_route_hint("session", "S1") == ["NL:CPA"]
    assert await store.find_route_hint("location", "S1") == ["DE:EMS"]
    assert await store.find_route_hint("session", "s1") == []
    assert await store.find_route_hint("token", "S1") == []


async def test_concurrent_route_hints_of_one_party_store_it_once(store: HubStore) -> None:
    await asyncio.gather(*(store.add_route_hint("token", "T1", "NL:CPA") for _ in range(5)))
    await asyncio.gather(*(store.add_route_hint("token", "T1", f"NL:C{i:02d}") for i in range(5)))

    found = await store.find_route_hint("token", "T1")
    assert sorted(found) == ["NL:C00", "NL:C01", "NL:C02", "NL:C03", "NL:C04", "NL:CPA"]
    assert found[-1] == "NL:CPA"


# --- retention and secrets at rest (docs/security.md) -------------------------------------------------------


async def test_purge_route_hints_drops_those_last_seen_before_the_cut_off(store: HubStore) -> None:
    await store.add_route_hint("location", "OLD", "NL:CPA")
    await asyncio.sleep(0.01)
    cutoff = utcnow()
    await asyncio.sleep(0.01)
    await store.add_route_hint("location", "NEW", "NL:CPA")

    assert await store.purge_route_hints(cutoff) == 1
    assert await store.find_route_hint("location", "OLD") == []
    assert await store.find_route_hint("location", "NEW") == ["NL:CPA"]


async def test_purge_objects_drops_only_that_modules_objects_updated_before_the_cut_off(store: HubStore) -> None:
    now = utcnow()
    for module, oid, age in (("tokens", "T-OLD|RFID", 10), ("tokens", "T-NEW|RFID", 1), ("locations", "L-OLD", 10)):
        await store.save_object(StoredObject(module, "NL", "CPA", oid, now - timedelta(days=age), {"id": oid}))

    assert await store.purge_objects("tokens", now - timedelta(days=5)) == 1
    assert await store.get_object("tokens", "NL", "CPA", "T-OLD|RFID") is None
    assert await store.get_object("tokens", "NL", "CPA", "T-NEW|RFID") is not None
    assert await store.get_object("locations", "NL", "CPA", "L-OLD") is not None


async def test_a_freshly_saved_outbound_token_needs_no_resealing(store: HubStore) -> None:
    await store.save_platform(Platform(id="p1", name="A", outbound_token="token-b"))
    await store.save_platform(Platform(id="p2", name="B"))

    assert await store.reseal_secrets() == 0
    loaded = await store.get_platform("p1")
    assert loaded is not None and loaded.outbound_token == "token-b"


# --- SQLite only ---------------------------------------------------------------------------------------


async def test_sqlite_file_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    platform = make_platform("p1", "NL:CPA", inbound_token_hash="in-1")
    first = SqliteStore(path)
    await first.open()
    await first.save_platform(platform)
    await first.insert_audit([make_audit("r1", at())])
    await first.close()

    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.get_platform("p1") == platform
        assert ids(await again.query_audit(AuditQuery())) == ["r1"]
        assert await owner_of(again, "NL:CPA") == "p1"
    finally:
        await again.close()


async def test_two_sqlite_connections_share_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    a, b = SqliteStore(path), SqliteStore(path)
    await a.open()
    await b.open()
    try:
        await a.save_platform(make_platform("p1", "NL:CPA"))
        await b.insert_audit([make_audit("r1", at())])

        assert (await b.get_platform("p1")) is not None
        assert ids(await a.query_audit(AuditQuery())) == ["r1"]
        with pytest.raises(PartyConflict):
            await b.save_platform(make_platform("p2", "NL:CPA"))
    finally:
        await a.close()
        await b.close()


async def test_sqlite_file_keeps_objects_and_route_hints_across_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.sqlite3")
    obj = make_object("LOC1", 0, data={"id": "LOC1", "ü": [1, {"x": None}]})
    first = SqliteStore(path)
    await first.open()
    await first.save_object(obj)
    await first.add_route_hint("token", "T1", "NL:CPA")
    await first.close()

    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.get_object("locations", "NL", "CPA", "LOC1") == obj
        assert await again.find_route_hint("token", "T1") == ["NL:CPA"]
        await again.add_route_hint("token", "T1", "DE:EMS")  # a new instance's clock still orders after
        assert await again.find_route_hint("token", "T1") == ["DE:EMS", "NL:CPA"]
    finally:
        await again.close()


async def test_sqlite_indexes_for_objects_and_route_hints(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()

    async with aiosqlite.connect(path) as db:

        async def index_columns(table: str) -> dict[tuple[str, ...], bool]:
            found: dict[tuple[str, ...], bool] = {}
            for row in await db.execute_fetchall(f"PRAGMA index_list({table})"):
                name, unique = row[1], bool(row[2])
                columns = tuple(r[2] for r in await db.execute_fetchall(f"PRAGMA index_info({name})"))
                found[columns] = unique
            return found

        objects = await index_columns("objects")
        hints = await index_columns("route_hints")

    assert objects[("module", "country_code", "party_id", "object_id")] is True
    assert objects[("module", "created_at_us", "country_code", "party_id", "object_id")] is False
    assert objects[("module", "last_updated_us")] is False
    assert hints[("kind", "key", "party")] is True
    assert hints[("kind", "key", "seen_us")] is False


async def test_sqlite_creates_missing_parent_directory_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "hub.sqlite3"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()

    assert path.exists()
    async with aiosqlite.connect(path) as db:
        assert [tuple(row) for row in await db.execute_fetchall("PRAGMA journal_mode")] == [("wal",)]


# --- MongoDB only --------------------------------------------------------------------------------------


async def _ttl_seconds(store: MongoStore) -> Any:
    indexes = await store.client[store.db_name][AUDIT].index_information()
    return indexes[AUDIT_TTL_INDEX].get("expireAfterSeconds")


async def test_mongo_ttl_index_expires_after_the_retention_days() -> None:
    client: Any = AsyncMongoMockClient()
    store = MongoStore(client, "hub", audit_retention_days=7)
    await store.open()

    indexes = await client["hub"][AUDIT].index_information()

    assert indexes[AUDIT_TTL_INDEX]["key"] == [("time", 1)]
    assert indexes[AUDIT_TTL_INDEX]["expireAfterSeconds"] == 7 * 86400


async def test_mongo_reopen_with_other_retention_updates_the_ttl() -> None:
    client: Any = AsyncMongoMockClient()
    await MongoStore(client, "hub", audit_retention_days=7).open()
    store = MongoStore(client, "hub", audit_retention_days=30)
    await store.open()

    assert await _ttl_seconds(store) == 30 * 86400


async def test_mongo_from_url_bounds_its_timeouts() -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:1", "hub")
    try:
        options = store.client.options
        assert options.server_selection_timeout == 5
        assert options.pool_options.connect_timeout == 5
        assert options.pool_options.socket_timeout == 10
    finally:
        await store.close()


async def test_mongo_indexes_for_objects_and_route_hints() -> None:
    client: Any = AsyncMongoMockClient()
    await MongoStore(client, "hub").open()

    objects = await client["hub"]["objects"].index_information()
    hints = await client["hub"]["route_hints"].index_information()

    assert objects["key"]["key"] == [("module", 1), ("country_code", 1), ("party_id", 1), ("object_id", 1)]
    assert objects["key"]["unique"] is True
    assert objects["page"]["key"] == [
        ("module", 1), ("created_at_us", 1), ("country_code", 1), ("party_id", 1), ("object_id", 1)
    ]
    assert objects["last_updated"]["key"] == [("module", 1), ("last_updated_us", 1)]
    assert hints["hint"]["key"] == [("kind", 1), ("key", 1), ("party", 1)]
    assert hints["hint"]["unique"] is True
    assert hints["kind_key"]["key"][:2] == [("kind", 1), ("key", 1)]


async def test_mongo_keeps_object_data_as_json_text_and_dates_readable() -> None:
    client: Any = AsyncMongoMockClient()
    store = MongoStore(client, "hub")
    await store.open()
    await store.save_object(make_object("LOC1", 0, data={"a.b": {"$c": 1}}))

    doc = await client["hub"]["objects"].find_one({})

    assert doc["data_json"] == '{"a.b":{"$c":1}}'
    assert doc["last_updated_us"] == epoch_us(at(0))
    assert isinstance(doc["last_updated"], datetime)  # a BSON date too, for people reading the collection


@NEEDS_MONGO
async def test_real_mongo_ttl_index_and_reopen_with_other_retention() -> None:
    assert MONGO_URL
    db_name = _db_name()
    first = MongoStore.from_url(MONGO_URL, db_name, audit_retention_days=7)
    await first.open()
    await first.close()
    store = MongoStore.from_url(MONGO_URL, db_name, audit_retention_days=30)
    try:
        await store.open()
        assert await _ttl_seconds(store) == 30 * 86400
    finally:
        await store.client.drop_database(db_name)
        await store.close()


# --- open_store ----------------------------------------------------------------------------------------


async def test_open_store_uses_sqlite_without_mongo_url(tmp_path: Path) -> None:
    store = await open_store(Settings(mongo_url=None, sqlite_path=str(tmp_path / "x" / "hub.sqlite3")))
    try:
        assert isinstance(store, SqliteStore)
        await store.ping()
    finally:
        await store.close()


@NEEDS_MONGO
async def test_open_store_uses_mongo_when_url_set() -> None:
    db_name = _db_name()
    key = Fernet.generate_key().decode()
    store = await open_store(Settings(mongo_url=MONGO_URL, mongo_db=db_name, secret_keys=key))
    try:
        assert isinstance(store, MongoStore)
        await store.ping()
        await store.client.drop_database(db_name)
    finally:
        await store.close()


async def test_stored_object_keeps_the_ocpi_version_it_is_written_in(store: HubStore) -> None:
    await store.save_object(make_object("L211", ocpi_version="2.1.1"))
    await store.save_object(make_object("L230", 1, ocpi_version="2.3.0"))
    await store.save_object(make_object("L221", 2))
    assert (await store.get_object("locations", "NL", "CPA", "L211")).ocpi_version == "2.1.1"  # type: ignore[union-attr]
    items, _ = await store.list_objects("locations", date_from=None, date_to=None, offset=0, limit=10)
    assert {o.object_id: o.ocpi_version for o in items} == {"L211": "2.1.1", "L230": "2.3.0", "L221": "2.2.1"}
    # the owner moved to 2.2.1 and pushed it again
    await store.save_object(make_object("L211", 3, ocpi_version="2.2.1"))
    assert (await store.get_object("locations", "NL", "CPA", "L211")).ocpi_version == "2.2.1"  # type: ignore[union-attr]


async def test_an_sqlite_store_from_before_version_bridging_reads_its_objects_as_2_2_1(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path) as db:  # the objects table as it was created before the column existed
        await db.executescript(
            "CREATE TABLE objects (module TEXT NOT NULL, country_code TEXT NOT NULL, party_id TEXT NOT NULL, "
            "object_id TEXT NOT NULL, created_at_us INTEGER NOT NULL, last_updated_us INTEGER NOT NULL, "
            "data_json TEXT NOT NULL, PRIMARY KEY (module, country_code, party_id, object_id));"
            "INSERT INTO objects VALUES ('tariffs', 'NL', 'CPA', 'T1', 0, 0, '{\"id\": \"T1\"}');")
    store = SqliteStore(str(path))
    await store.open()
    try:
        old = await store.get_object("tariffs", "NL", "CPA", "T1")
        assert old is not None and old.ocpi_version == "2.2.1" and old.data == {"id": "T1"}
        await store.save_object(make_object("L1", ocpi_version="2.1.1"))
        new = await store.get_object("locations", "NL", "CPA", "L1")
        assert new is not None and new.ocpi_version == "2.1.1"
    finally:
        await store.close()


async def test_usage_increments_add_up_per_day_pair_module_and_currency(store: HubStore) -> None:
    from hub.usage import UsageRow

    await store.add_usage([
        UsageRow("2026-03-01", "NL:CPA", "DE:EMA", "cdrs", "EUR", 1, 12.5, 4.25),
        UsageRow("2026-03-01", "NL:CPA", "DE:EMA", "sessions", "EUR", 2, 0.0, 0.0),
        UsageRow("2026-03-02", "NL:CPA", "DE:EMA", "cdrs", "EUR", 1, 1.0, 0.5),
    ])
    # A second batch (another flush, or another hub process) adds to the same totals and opens new ones.
    await store.add_usage([
        UsageRow("2026-03-01", "NL:CPA", "DE:EMA", "cdrs", "EUR", 2, 7.5, 1.75),
        UsageRow("2026-03-01", "NL:CPA", "DE:EMA", "cdrs", "CHF", 1, 3.0, 2.0),
        UsageRow("2026-02-28", "BE:CPB", "DE:EMA", "cdrs", "", 1, 0.25, 0.0),
    ])
    rows = await store.query_usage()
    assert [(r.day, r.from_party, r.module, r.currency, r.count, r.kwh, r.cost) for r in rows] == [
        ("2026-02-28", "BE:CPB", "cdrs", "", 1, 0.25, 0.0),
        ("2026-03-01", "NL:CPA", "cdrs", "CHF", 1, 3.0, 2.0),
        ("2026-03-01", "NL:CPA", "cdrs", "EUR", 3, 20.0, 6.0),
        ("2026-03-01", "NL:CPA", "sessions", "EUR", 2, 0.0, 0.0),
        ("2026-03-02", "NL:CPA", "cdrs", "EUR", 1, 1.0, 0.5),
    ]
    assert all(r.to_party == "DE:EMA" for r in rows)
    # Both bounds inclusive.
    window = await store.query_usage(since="2026-03-01", until="2026-03-01")
    assert {(r.day, r.module, r.currency) for r in window} == {
        ("2026-03-01", "cdrs", "CHF"), ("2026-03-01", "cdrs", "EUR"), ("2026-03-01", "sessions", "EUR")}
    assert [r.day for r in await store.query_usage(since="2026-03-02")] == ["2026-03-02"]
    assert [r.day for r in await store.query_usage(until="2026-02-28")] == ["2026-02-28"]
    await store.add_usage([])  # nothing to add: no error, nothing changes
    assert len(await store.query_usage()) == 5
async def test_list_objects_of_some_owners_only_pages_and_counts_them(store: HubStore) -> None:
    """GET All under roaming agreements (docs/agreements.md): the filter is in the query, so pages stay full."""
    saves = [("NL", "CPA", "A", 0), ("NL", "CPB", "B", 1), ("DE", "CPA", "C", 2), ("NL", "CPA", "D", 3),
             ("NL", "CPB", "E", 4), ("BE", "XYZ", "F", 5)]
    for cc, pid, oid, seconds in saves:
        await store.save_object(make_object(oid, seconds, country_code=cc, party_id=pid))

    page, total = await store.list_objects("locations", owners={("NL", "CPA"), ("NL", "CPB")}, limit=3)
    assert (keys(page), total) == (["NL:CPA:A", "NL:CPB:B", "NL:CPA:D"], 4)
    page, total = await store.list_objects("locations", owners=[("NL", "CPA"), ("NL", "CPB")], offset=3)
    assert (keys(page), total) == (["NL:CPB:E"], 4)
    # Pairs, not fields: DE:CPA shares NL:CPA's party id and NL:CPB its country code, neither is listed.
    page, total = await store.list_objects("locations", owners={("NL", "CPA")}, date_from=at(1))
    assert (keys(page), total) == (["NL:CPA:D"], 1)
    assert await store.list_objects("locations", owners=set()) == ([], 0)
    assert (await store.list_objects("locations", owners=None))[1] == 6


# --- roaming agreements ------------------------------------------------------------------------------------


def make_agreement(agreement_id: str, seconds: float = 0.0, **fields: Any) -> Agreement:
    values: dict[str, Any] = {
        "id": agreement_id,
        "party_a": PartyRef("NL", "CPA", "CPO"),
        "party_b": PartyRef("DE", "EMA", "EMSP"),
        "valid_from": at(seconds),
        "created_at": at(seconds),
        "updated_at": at(seconds),
    }
    values.update(fields)
    return Agreement(**values)


async def test_agreement_round_trips_every_field_to_the_microsecond(store: HubStore) -> None:
    agreement = make_agreement(
        "A12", modules=("cdrs", "sessions"), valid_until=at(86400.5), status=AgreementStatus.SUSPENDED,
        reference="contract 2024/17 – signed é", valid_from=at(-3600).astimezone(timezone(timedelta(hours=2))),
        updated_at=at(10),
    )
    await store.save_agreement(agreement)

    got = await store.get_agreement("A12")

    assert got == agreement
    assert got is not None and got.valid_from.utcoffset() == timedelta(0) and got.valid_until is not None


async def test_agreement_without_end_round_trips_and_unknown_is_none(store: HubStore) -> None:
    agreement = make_agreement("open-ended")
    await store.save_agreement(agreement)
    assert await store.get_agreement("open-ended") == agreement
    assert (await store.get_agreement("open-ended")).valid_until is None  # type: ignore[union-attr]
    assert await store.get_agreement("nope") is None


async def test_saving_an_agreement_again_replaces_it(store: HubStore) -> None:
    await store.save_agreement(make_agreement("A1"))
    changed = make_agreement("A1", status=AgreementStatus.SUSPENDED, modules=("locations",), reference="new")
    await store.save_agreement(changed)
    assert await store.list_agreements() == [changed]


async def test_list_agreements_oldest_first_then_by_id(store: HubStore) -> None:
    for agreement_id, seconds in (("B", 1), ("C", 0), ("A", 1), ("D", 2)):
        await store.save_agreement(make_agreement(agreement_id, seconds))
    assert [a.id for a in await store.list_agreements()] == ["C", "A", "B", "D"]


async def test_delete_agreement_removes_only_that_one(store: HubStore) -> None:
    await store.save_agreement(make_agreement("A1"))
    await store.save_agreement(make_agreement("A2", 1))
    assert await store.delete_agreement("A1") is True
    assert await store.delete_agreement("A1") is False
    assert [a.id for a in await store.list_agreements()] == ["A2"]


async def test_save_agreements_lands_a_batch_inserting_and_replacing(store: HubStore) -> None:
    await store.save_agreement(make_agreement("A1", reference="old"))
    batch = [make_agreement("A1", reference="replaced"), make_agreement("A2", 1), make_agreement("A3", 2)]
    await store.save_agreements(batch)
    assert await store.list_agreements() == batch
    await store.save_agreements([])
    assert len(await store.list_agreements()) == 3


async def test_save_agreements_that_fails_part_way_leaves_the_store_as_it_was(store: HubStore) -> None:
    before = make_agreement("A1", reference="kept")
    await store.save_agreement(before)
    naive = make_agreement("A3", 2, valid_until=datetime(2030, 1, 1))  # naive: the store refuses it
    with pytest.raises(ValueError):
        await store.save_agreements([make_agreement("A1", reference="lost"), make_agreement("A2", 1), naive])
    assert await store.list_agreements() == [before]


async def test_concurrent_saves_of_one_new_agreement_store_it_once(store: HubStore) -> None:
    await asyncio.gather(*(store.save_agreement(make_agreement("same")) for _ in range(5)))
    assert [a.id for a in await store.list_agreements()] == ["same"]


async def test_a_platform_roaming_policy_override_round_trips_and_can_be_cleared(store: Store) -> None:
    platform = make_platform("p-rp", "NL:CPA", roaming_policy=Policy.AGREEMENTS)
    await store.save_platform(platform)
    loaded = await store.get_platform("p-rp")
    assert loaded is not None and loaded.roaming_policy is Policy.AGREEMENTS
    platform.roaming_policy = None  # back to HUB_ROAMING_POLICY
    await store.save_platform(platform)
    loaded = await store.get_platform("p-rp")
    assert loaded is not None and loaded.roaming_policy is None


# --- sessions and CDRs kept for catch-up ------------------------------------------------------------------------

TOKEN_UID = "UID-SECRET-4711"


def make_routed(object_id: str, seconds: float = 0.0, **fields: Any) -> RoutedObject:
    """A CDR NL:CPA sent to DE:EMA, last updated and first kept ``seconds`` after BASE, expiring in a day."""
    values: dict[str, Any] = {
        "module": "cdrs", "country_code": "NL", "party_id": "CPA", "object_id": object_id, "receiver": "DE:EMA",
        "sender": "NL:CPA", "receiver_platform_id": "p-ema", "ocpi_version": "2.2.1",
        "last_updated": at(seconds), "expires_at": utcnow() + timedelta(days=1), "kept_at": at(seconds),
        "data": {"id": object_id, "cdr_token": {"uid": TOKEN_UID}, "ü": [1.5, None]},
    }
    values.update(fields)
    return RoutedObject(**values)


def routed_ids(objects: list[RoutedObject]) -> list[str]:
    return [f"{o.country_code}:{o.party_id}:{o.object_id}" for o in objects]


async def test_a_kept_record_round_trips_every_field_to_the_microsecond(store: HubStore) -> None:
    kept = make_routed("CDR1", 0.5, ocpi_version="2.1.1", receiver_platform_id="p-9")
    await store.keep_routed(kept)

    items, total = await store.list_routed("cdrs", "DE:EMA")

    assert (items, total) == ([kept], 1)


async def test_kept_records_are_listed_only_to_their_receiver_and_module(store: HubStore) -> None:
    await store.keep_routed(make_routed("C1"))
    await store.keep_routed(make_routed("C1", receiver="DE:EMB"))  # the same CDR sent to another party: its own
    await store.keep_routed(make_routed("S1", module="sessions"))

    assert routed_ids((await store.list_routed("cdrs", "de:ema"))[0]) == ["NL:CPA:C1"]
    assert routed_ids((await store.list_routed("cdrs", "DE:EMB"))[0]) == ["NL:CPA:C1"]
    assert routed_ids((await store.list_routed("sessions", "DE:EMA"))[0]) == ["NL:CPA:S1"]
    assert await store.list_routed("cdrs", "DE:EMC") == ([], 0)


async def test_keeping_again_replaces_the_record_but_keeps_its_first_kept_at(store: HubStore) -> None:
    await store.keep_routed(make_routed("C1", 0))
    await store.keep_routed(make_routed("C2", 1))
    again = make_routed("C1", 5, data={"id": "C1", "v": 2}, kept_at=at(9))
    await store.keep_routed(again)

    items, _ = await store.list_routed("cdrs", "DE:EMA")

    assert routed_ids(items) == ["NL:CPA:C1", "NL:CPA:C2"]  # C1 keeps its place in the crawl order
    assert items[0].data == {"id": "C1", "v": 2} and items[0].last_updated == at(5) and items[0].kept_at == at(0)


async def test_list_routed_pages_by_kept_at_then_key_with_dates_on_last_updated(store: HubStore) -> None:
    for oid, kept, updated in [("B", 0, 10), ("A", 0, 11), ("C", 1, 12), ("D", 2, 13), ("E", 3, 14)]:
        await store.keep_routed(make_routed(oid, updated, kept_at=at(kept)))

    first, total = await store.list_routed("cdrs", "DE:EMA", offset=0, limit=2)
    second, _ = await store.list_routed("cdrs", "DE:EMA", offset=2, limit=2)
    dated, dated_total = await store.list_routed("cdrs", "DE:EMA", date_from=at(11), date_to=at(13), limit=10)
    counted = await store.list_routed("cdrs", "DE:EMA", date_from=at(11), limit=0)

    assert (routed_ids(first), routed_ids(second), total) == (["NL:CPA:A", "NL:CPA:B"], ["NL:CPA:C", "NL:CPA:D"], 5)
    assert (routed_ids(dated), dated_total) == (["NL:CPA:A", "NL:CPA:C"], 2)  # from inclusive, to exclusive
    assert counted == ([], 4)


async def test_list_routed_of_some_owners_only(store: HubStore) -> None:
    await store.keep_routed(make_routed("C1"))
    await store.keep_routed(make_routed("C2", 1, party_id="CPB", sender="NL:CPB"))

    assert routed_ids((await store.list_routed("cdrs", "DE:EMA", owners={("NL", "CPB")}))[0]) == ["NL:CPB:C2"]
    assert await store.list_routed("cdrs", "DE:EMA", owners=set()) == ([], 0)


async def test_expired_records_are_never_listed_nor_changed_and_the_purge_drops_only_them(store: HubStore) -> None:
    await store.keep_routed(make_routed("OLD", 0, expires_at=utcnow() - timedelta(seconds=1)))
    await store.keep_routed(make_routed("NEW", 1))

    assert routed_ids((await store.list_routed("cdrs", "DE:EMA"))[0]) == ["NL:CPA:NEW"]
    assert (await store.list_routed("cdrs", "DE:EMA"))[1] == 1
    assert await store.change_routed("cdrs", "DE:EMA", "NL", "CPA", "OLD", lambda kept: kept) is False
    assert await store.get_routed("cdrs", "DE:EMA", "NL", "CPA", "OLD") is None
    found = await store.get_routed("cdrs", "de:ema", "nl", "cpa", "NEW")
    assert found is not None and routed_ids([found]) == ["NL:CPA:NEW"]
    assert await store.get_routed("cdrs", "DE:EMB", "NL", "CPA", "NEW") is None  # kept for another receiver
    assert await store.purge_routed(utcnow()) in (0, 1)  # MongoDB's TTL monitor may have been first
    assert await store.purge_routed(utcnow()) == 0
    assert routed_ids((await store.list_routed("cdrs", "DE:EMA"))[0]) == ["NL:CPA:NEW"]


async def test_change_routed_replaces_atomically_and_loses_no_concurrent_change(store: HubStore) -> None:
    await store.keep_routed(make_routed("S1", module="sessions", data={"id": "S1", "n": 0}))

    def bump(kept: RoutedObject) -> RoutedObject:
        kept.data = {**kept.data, "n": kept.data["n"] + 1}
        return kept

    results = await asyncio.gather(*(store.change_routed("sessions", "DE:EMA", "nl", "cpa", "S1", bump)
                                     for _ in range(10)))
    items, _ = await store.list_routed("sessions", "DE:EMA")

    assert all(results) and items[0].data == {"id": "S1", "n": 10}
    assert await store.change_routed("sessions", "DE:EMA", "NL", "CPA", "S1", lambda kept: None) is False
    assert await store.change_routed("sessions", "DE:EMA", "NL", "CPA", "S2", bump) is False  # never kept


async def test_a_key_rotation_reseals_kept_records_with_the_first_key(store: HubStore) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    store.sealer = Sealer([old])
    await store.keep_routed(make_routed("C1"))
    await store.keep_routed(make_routed("C2", 1))
    store.sealer = Sealer([new, old])

    assert await store.reseal_routed() == 2
    assert await store.reseal_routed() == 0
    store.sealer = Sealer([new])  # the old key retired: everything still opens
    assert [o.data["cdr_token"] for o in (await store.list_routed("cdrs", "DE:EMA"))[0]] == [{"uid": TOKEN_UID}] * 2


async def test_sqlite_keeps_routed_bodies_sealed_and_an_older_file_gets_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path) as db:  # a store file from before catch-up existed
        await db.executescript("CREATE TABLE objects (module TEXT NOT NULL, country_code TEXT NOT NULL, "
                               "party_id TEXT NOT NULL, object_id TEXT NOT NULL, created_at_us INTEGER NOT NULL, "
                               "last_updated_us INTEGER NOT NULL, data_json TEXT NOT NULL, "
                               "PRIMARY KEY (module, country_code, party_id, object_id));")
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.keep_routed(make_routed("C1"))
    finally:
        await store.close()
    async with aiosqlite.connect(path) as db:
        rows = [tuple(r) for r in await db.execute_fetchall(f"SELECT * FROM {ROUTED}")]
    assert len(rows) == 1 and "DE:EMA" in rows[0] and "C1" in rows[0]
    assert TOKEN_UID not in repr(rows)


async def test_mongo_keeps_routed_bodies_sealed_with_unique_key_and_ttl_indexes() -> None:
    client: Any = AsyncMongoMockClient()
    store = MongoStore(client, "hub")
    await store.open()
    await store.keep_routed(make_routed("C1"))

    doc = await client["hub"][ROUTED].find_one({})
    indexes = await client["hub"][ROUTED].index_information()

    assert (doc["receiver"], doc["object_id"], doc["seal_key"]) == ("DE:EMA", "C1", store.sealer.key_id)
    assert TOKEN_UID not in repr(doc)
    assert isinstance(doc["expires_at"], datetime)
    assert indexes["key"]["key"] == [("module", 1), ("receiver", 1), ("country_code", 1), ("party_id", 1),
                                     ("object_id", 1)]
    assert indexes["key"]["unique"] is True
    assert indexes[ROUTED_TTL_INDEX]["key"] == [("expires_at", 1)]
    assert indexes[ROUTED_TTL_INDEX]["expireAfterSeconds"] == 0
