"""Secrets and personal data at rest (docs/security.md, "Secrets and personal data at rest").

Outbound tokens sealed with HUB_SECRET_KEYS (rotation by re-sealing at start), token uids neither in audit paths
nor in route hints, retention of stored tokens and hints, and /metrics behind HUB_METRICS_TOKEN.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from mongomock_motor import AsyncMongoMockClient
from pydantic import ValidationError

from hub.context import HUB_KEY
from hub.sealing import KEY_FILE_NAME, Sealer, SecretKeyError, load_sealer
from hub.settings import Settings
from hub.store import HubStore, StoredObject, open_store
from hub.store.mongo import MongoStore
from hub.store.names import PLATFORMS
from hub.store.sqlite import SqliteStore
from routing.open_routing import RouteHints
from routing.platform import Platform, utcnow
from tests.conftest import ADMIN_TOKEN, HubHarness, MakeHub, cpo, emsp, hub_settings, start_hub, stop_hub
from tests.test_open_routing import HUB, received, token
from tests.test_store_contract import all_platforms

# --- what lands on disk ---------------------------------------------------------------------------------------


async def test_the_store_file_holds_neither_token_b_nor_token_uids(tmp_path: Path) -> None:
    """A leaked SQLite file (WAL included) gives away no outbound token and no token uid; the kept key opens it."""
    settings = hub_settings(sqlite_path=str(tmp_path / "data" / "hub.sqlite3"))
    h = await start_hub(settings)
    cpa, ema = cpo(), emsp()
    try:
        for partner in (cpa, ema):
            await h.connect(partner)
        uid = "PRIVATEUID4711"
        # A direct push (no stored GET All copy): the hub keeps only the route hint and the audit record.
        status, _, doc = await ema.call(h.session, "PUT", "tokens", "RECEIVER", f"DE/EMA/{uid}", to=cpa.party,
                                        json=token(ema.party, uid))
        assert status == 200, doc
        status, _, doc = await cpa.call(h.session, "POST", "tokens", "SENDER", f"{uid}/authorize")
        assert status == 200 and doc["status_code"] == 1000, doc
        assert len(received(ema, "POST", f"/{uid}/authorize")) == 1
        token_b = {p.name: p.token_b for p in (cpa, ema)}
        status, records = await h.admin("GET", "/admin/audit?module=tokens")
        assert status == 200 and len(records) == 2, records
    finally:
        await stop_hub(h)
    key_file = tmp_path / "data" / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.name.startswith("hub.sqlite3"))
    assert uid.encode() not in raw and uid.upper().encode() not in raw
    for secret in token_b.values():
        assert secret.encode() not in raw
    # The kept key opens the stored tokens again (a restart finds them).
    store = await open_store(settings)
    try:
        by_name = {p.name: p for p in await all_platforms(store)}
        assert {name: by_name[name].outbound_token for name in token_b} == token_b
    finally:
        await store.close()


async def test_audit_paths_mask_token_uids_as_bodies_are_masked(make_hub: MakeHub) -> None:
    h = await make_hub(audit_bodies=True)
    cpa, ema = cpo(), emsp()
    for partner in (cpa, ema):
        await h.connect(partner)
    status, _, doc = await ema.call(h.session, "PUT", "tokens", "RECEIVER", "DE/EMA/SECRET77", to=HUB,
                                    json=token(ema.party, "SECRET77"))
    assert status == 200, doc
    status, _, doc = await cpa.call(h.session, "POST", "tokens", "SENDER", "SECRET77/authorize")
    assert status == 200, doc
    status, _, doc = await cpa.call(h.session, "GET", "locations", "SENDER", "LOC1", to=ema.party)
    status, records = await h.admin("GET", "/admin/audit")
    assert status == 200
    paths = {r["module"]: r["path"] for r in records if r["module"] in ("tokens", "locations")}
    tokens = [r["path"] for r in records if r["module"] == "tokens"]
    assert sorted(tokens) == ["/ocpi/2.2.1/receiver/tokens/DE/EMA/***", "/ocpi/2.2.1/sender/tokens/***/authorize"]
    assert "SECRET77" not in orjson.dumps(records).decode()
    assert paths["locations"] == "/ocpi/2.2.1/sender/locations/LOC1"  # not personal data: kept as sent


# --- sealing, migration and key rotation ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "mongomock"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Stores on one shared file / database, each opened with the keys the test gives."""
    client = AsyncMongoMockClient()
    opened: list[HubStore] = []

    async def make(sealer: Sealer) -> HubStore:
        store: HubStore
        if request.param == "sqlite":
            store = SqliteStore(str(tmp_path / "hub.sqlite3"), sealer=sealer)
        else:
            store = MongoStore(client, "hub", sealer=sealer)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def _raw_platform(store: HubStore, platform_id: str) -> dict[str, Any]:
    if isinstance(store, SqliteStore):
        async with store._read() as db:  # the stored document as it is on disk
            ((document,),) = await db.execute_fetchall(f"SELECT document FROM {PLATFORMS} WHERE id = ?",
                                                       (platform_id,))
        return dict(orjson.loads(document))
    assert isinstance(store, MongoStore)
    doc: dict[str, Any] = await store._platforms.find_one({"id": platform_id}, {"_id": 0})
    return doc


async def _write_raw_platform(store: HubStore, doc: dict[str, Any]) -> None:
    if isinstance(store, SqliteStore):
        async with store._write() as db:
            await db.execute(f"UPDATE {PLATFORMS} SET document = ? WHERE id = ?",
                             (orjson.dumps(doc).decode(), doc["id"]))
    else:
        assert isinstance(store, MongoStore)
        await store._platforms.replace_one({"id": doc["id"]}, doc)


async def test_a_clear_outbound_token_of_an_older_version_loads_and_is_sealed_at_open(make_store: Any) -> None:
    sealer = Sealer.generate()
    store = await make_store(sealer)
    await store.save_platform(Platform(id="p1", name="Old", outbound_token="clear-token-b"))
    doc = await _raw_platform(store, "p1")
    assert "clear-token-b" not in orjson.dumps(doc).decode() and doc["outbound_token_sealed"]
    # As an older hub version wrote it: the token in clear.
    doc.pop("outbound_token_sealed")
    doc["outbound_token"] = "clear-token-b"
    await _write_raw_platform(store, doc)
    loaded = await store.get_platform("p1")
    assert loaded is not None and loaded.outbound_token == "clear-token-b"
    assert await store.reseal_secrets() == 1
    doc = await _raw_platform(store, "p1")
    assert doc.get("outbound_token") is None and "clear-token-b" not in orjson.dumps(doc).decode()
    assert sealer.open(doc["outbound_token_sealed"]) == "clear-token-b"
    assert await store.reseal_secrets() == 0  # nothing left to do


async def test_key_rotation_reseals_with_the_new_key_and_then_the_old_key_can_go(make_store: Any) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    first = await make_store(Sealer([old]))
    await first.save_platform(Platform(id="p1", name="A", outbound_token="token-b-1"))
    await first.save_platform(Platform(id="p2", name="B"))  # no outbound token: nothing to seal
    hints = RouteHints(first, Sealer([old]).hint_keys)
    await hints.add("token", "UID1|RFID", "DE:EMA")
    await hints.flush()
    # Step 1: the new key in front; the start re-seals what the old key sealed.
    rotating = await make_store(Sealer([new, old]))
    assert await rotating.reseal_secrets() == 1
    # A hint learned under the old key is still found while both keys are listed.
    assert await RouteHints(rotating, Sealer([new, old]).hint_keys).find("token", "uid1|rfid") == ["DE:EMA"]
    # Step 2: the old key removed: everything opens with the new key alone.
    rotated = await make_store(Sealer([new]))
    loaded = await rotated.get_platform("p1")
    assert loaded is not None and loaded.outbound_token == "token-b-1"
    # ... and a store with only the old key cannot open it any more (the rotation is real).
    stale = await make_store(Sealer([old]))
    with pytest.raises(SecretKeyError, match="HUB_SECRET_KEYS"):
        await stale.get_platform("p1")


async def test_route_hints_keep_token_uids_only_as_keyed_hashes(make_store: Any) -> None:
    sealer = Sealer.generate()
    store = await make_store(sealer)
    hints = RouteHints(store, sealer.hint_keys)
    await hints.add("token", "TOK42|RFID", "DE:EMA")
    await hints.add("location", "LOC1", "NL:CPA")
    await hints.flush()
    assert await store.find_route_hint("token", "TOK42|RFID") == []  # not stored under the clear uid
    assert await store.find_route_hint("location", "LOC1") == ["NL:CPA"]  # not personal: kept as is
    # A fresh process (empty cache) with the same key finds it; one with another key does not.
    assert await RouteHints(store, sealer.hint_keys).find("token", "tok42|rfid") == ["DE:EMA"]
    assert await RouteHints(store, Sealer.generate().hint_keys).find("token", "TOK42|RFID") == []


# --- keys from settings ---------------------------------------------------------------------------------------


def test_mongo_without_secret_keys_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"HUB_MONGO_URL": "mongodb://127.0.0.1:1", "HUB_ADMIN_TOKEN": ADMIN_TOKEN,
                "HUB_SQLITE_PATH": str(tmp_path / "hub.sqlite3")})
    proc = subprocess.run([sys.executable, "-m", "hub", "serve"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "HUB_SECRET_KEYS is required with HUB_MONGO_URL" in lines[0], proc.stderr


def test_secret_key_command_prints_a_key_the_settings_accept() -> None:
    proc = subprocess.run([sys.executable, "-m", "hub", "secret-key"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    settings = Settings(secret_keys=f"{key}, {Fernet.generate_key().decode()}", mongo_url="mongodb://x")
    assert load_sealer(settings).seal("x") != "x"


@pytest.mark.parametrize("value", ["", "not-a-key", f"{Fernet.generate_key().decode()},short"])
def test_a_malformed_secret_keys_setting_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="secret_keys"):
        Settings(secret_keys=value)


def test_without_a_setting_the_embedded_store_keeps_one_key_next_to_its_file(tmp_path: Path) -> None:
    settings = Settings(sqlite_path=str(tmp_path / "d" / "hub.sqlite3"))
    sealed = load_sealer(settings).seal("token-b")
    assert stat.S_IMODE((tmp_path / "d" / KEY_FILE_NAME).stat().st_mode) == 0o600
    assert load_sealer(settings).open(sealed) == "token-b"  # the same key the next time


# --- retention ------------------------------------------------------------------------------------------------


async def test_old_stored_tokens_and_stale_hints_are_purged_at_start(tmp_path: Path) -> None:
    path = str(tmp_path / "data" / "hub.sqlite3")
    settings = hub_settings(sqlite_path=path, token_retention_days=30, route_hint_retention_days=30)
    store = await open_store(settings)
    now = utcnow()
    try:
        for oid, age in (("OLD|RFID", 31), ("NEW|RFID", 29)):
            await store.save_object(StoredObject("tokens", "DE", "EMA", oid, now - timedelta(days=age),
                                                 {"uid": oid}))
        await store.save_object(StoredObject("locations", "NL", "CPA", "L1", now - timedelta(days=400), {"id": "L1"}))
        await store.add_route_hints([("location", "LOC-OLD", "NL:CPA"), ("location", "LOC-NEW", "NL:CPA")])
        # Mark the first hint as last seen 31 days ago.
        assert isinstance(store, SqliteStore)
        async with store._write() as db:
            await db.execute("UPDATE route_hints SET seen_us = seen_us - ? WHERE key = 'LOC-OLD'",
                             (31 * 86400 * 10**6,))
    finally:
        await store.close()
    h = await start_hub(settings)
    try:
        hub_store = h.app[HUB_KEY].store
        for _ in range(200):  # the purge runs at start, in the background: bounded wait
            if await hub_store.get_object("tokens", "DE", "EMA", "OLD|RFID") is None:
                break
            await asyncio.sleep(0.02)
        assert await hub_store.get_object("tokens", "DE", "EMA", "OLD|RFID") is None
        assert await hub_store.get_object("tokens", "DE", "EMA", "NEW|RFID") is not None
        assert await hub_store.get_object("locations", "NL", "CPA", "L1") is not None  # not personal data
        assert await hub_store.find_route_hint("location", "LOC-OLD") == []
        assert await hub_store.find_route_hint("location", "LOC-NEW") == ["NL:CPA"]
    finally:
        await stop_hub(h)


async def test_purges_on_mongo_drop_only_what_is_past_the_cut_off() -> None:
    store = MongoStore(AsyncMongoMockClient(), "hub")
    await store.open()
    now = utcnow()
    for oid, age in (("OLD|RFID", 10), ("NEW|RFID", 1)):
        await store.save_object(StoredObject("tokens", "DE", "EMA", oid, now - timedelta(days=age), {"uid": oid}))
    await store.add_route_hints([("location", "L1", "NL:CPA")])
    assert await store.purge_objects("tokens", now - timedelta(days=5)) == 1
    assert await store.get_object("tokens", "DE", "EMA", "NEW|RFID") is not None
    assert await store.purge_route_hints(now - timedelta(days=1)) == 0
    assert await store.purge_route_hints(utcnow() + timedelta(seconds=1)) == 1
    assert await store.find_route_hint("location", "L1") == []


@pytest.mark.parametrize("refresh_after", [0.0, 86400.0])
async def test_a_hint_pushed_again_is_seen_again_at_most_once_per_refresh_interval(
        make_store: Any, refresh_after: float) -> None:
    """Retention counts from the last push; re-writing on every push would put a store write behind each one."""
    sealer = Sealer.generate()
    store = await make_store(sealer)
    hints = RouteHints(store, sealer.hint_keys, refresh_after=refresh_after)
    await hints.add("token", "TOK5|RFID", "DE:EMA")
    await hints.flush()
    await asyncio.sleep(0.01)
    between = utcnow()
    await asyncio.sleep(0.01)
    await hints.add("token", "TOK5|RFID", "DE:EMA")  # pushed again
    await hints.flush()
    purged = await store.purge_route_hints(between)
    assert purged == (0 if refresh_after == 0 else 1)


# --- /metrics -------------------------------------------------------------------------------------------------


async def test_metrics_require_the_bearer_token_when_one_is_set(make_hub: MakeHub) -> None:
    secret = "metrics-" + "x" * 24
    h: HubHarness = await make_hub(metrics_token=secret)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0000000000"}, {"Authorization": secret}):
        async with h.session.get(h.url + "/metrics", headers=headers) as resp:
            assert resp.status == 401, headers
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "ocpi_hub_" not in await resp.text()
    async with h.session.get(h.url + "/metrics", headers={"Authorization": f"Bearer {secret}"}) as resp:
        assert resp.status == 200
        assert "ocpi_hub_requests_total" in await resp.text()
    async with h.session.get(h.url + "/healthz") as resp:
        assert resp.status == 200  # probes stay open


async def test_metrics_stay_open_without_a_token(hub: HubHarness) -> None:
    async with hub.session.get(hub.url + "/metrics") as resp:
        assert resp.status == 200


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(metrics_token="short")
