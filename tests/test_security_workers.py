"""Registration is visible on every worker before anything uses it (docs/security.md, "Registration across workers").

Under ``ocpi-hub serve --workers 4`` on the real Redis, any worker's dispatcher may deliver a ClientInfo push the
registering worker queued. A newly registered platform, one whose Token B was just rotated, and one just resumed
must receive every ClientInfo with its current token, and nothing may be dead-lettered as "not connected".
The in-process tests hold one hub's platform view back on purpose (two hub apps, one store, one Redis), which
makes the race deterministic.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub.app import LIVENESS_KEY
from hub.context import HUB_KEY, Hub
from routing.platform import ConnectionStatus
from tests.conftest import (
    ADMIN_TOKEN,
    REDIS_URL,
    HubHarness,
    cleanup_prefix,
    cpo,
    emsp,
    hub_settings,
    real_redis_available,
    start_hub,
    stop_hub,
)
from tests.partners import ALL_MODULES, FakePartner, ocpi_token
from tests.test_broadcast import HUB, LOCATION
from tests.test_processes import HubProcess, admin, onboard_and_register

needs_redis = pytest.mark.skipif(not real_redis_available(), reason="no Redis at 127.0.0.1:6379")

WORKERS = 4


def listener(name: str, pid: str, country: str = "NL") -> FakePartner:
    """A platform that implements the hubclientinfo RECEIVER interface, so it is pushed every ClientInfo."""
    modules: dict[str, tuple[str, ...]] = {m: ("SENDER", "RECEIVER") for m in ALL_MODULES}
    modules["hubclientinfo"] = ("RECEIVER",)
    partner = cpo(name=name, pid=pid, modules=modules) if country == "NL" else emsp(name=name, pid=pid,
                                                                                      modules=modules)
    return partner


def pushed_parties(partner: FakePartner, token: str | None = None) -> set[str]:
    """Parties the partner was told about, counting only pushes it accepted (sent with ``token``)."""
    want = ocpi_token(token or partner.token_b)
    return {r.path.rsplit("/", 2)[-2] + "/" + r.path.rsplit("/", 1)[-1]
            for r in partner.received if "/hubclientinfo/" in r.path and r.headers.get("Authorization") == want}


def stale_token_pushes(partner: FakePartner) -> list[str]:
    return [r.headers.get("Authorization", "") for r in partner.received
            if "/hubclientinfo/" in r.path and r.headers.get("Authorization") != ocpi_token(partner.token_b)]


async def eventually(check: Callable[[], Any], what: str, limit: float = 20.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def party_names(partners: list[FakePartner]) -> set[str]:
    return {f"{p.country_code}/{p.party_id}" for partner in partners for p in partner.parties}


async def dead_letters(session: aiohttp.ClientSession, url: str) -> list[Any]:
    status, letters = await admin(session, url, "GET", "/admin/dead-letters")
    assert status == 200, letters
    return list(letters)


async def drained(session: aiohttp.ClientSession, url: str) -> None:
    """Wait until no queue holds an undelivered message (bounded)."""
    deadline = time.monotonic() + 20
    while True:
        status, queues = await admin(session, url, "GET", "/admin/queues")
        assert status == 200, queues
        if all(q["depth"] == 0 for q in queues):
            return
        assert time.monotonic() < deadline, queues
        await asyncio.sleep(0.05)


async def put_credentials(session: aiohttp.ClientSession, partner: FakePartner) -> None:
    """The partner rotates its Token B and tells the hub (credentials PUT, OCPI 2.2.1 credentials §1.2)."""
    partner.token_b = "B-rotated-" + uuid.uuid4().hex[:8]
    async with session.put(partner.hub_endpoints[("credentials", "SENDER")], json=partner.credentials(),
                           headers={"Authorization": ocpi_token(partner.token_c or "")}) as resp:
        doc = await resp.json()
        assert resp.status == 200, doc
    partner.token_c = doc["data"]["token"]


# -- several workers ----------------------------------------------------------------------------------------
@needs_redis
async def test_with_four_workers_registration_rotation_and_resume_never_dead_letter_a_connected_receiver(
        tmp_path: Path) -> None:
    prefix = "test-workers-" + uuid.uuid4().hex[:8]
    hub = HubProcess(tmp_path, workers=WORKERS, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_REDIS_URL=REDIS_URL,
                     HUB_KEY_PREFIX=prefix)
    existing = [listener(f"Existing {i}", f"X{i:02d}") for i in range(3)]
    newcomers = [listener(f"New {i}", f"N{i:02d}", country="DE") for i in range(4)]
    for p in (*existing, *newcomers):
        await p.start()
    try:
        async with aiohttp.ClientSession() as session:
            hub.start()
            await hub.wait_ready(session)
            for p in existing:
                await onboard_and_register(session, hub.url, p)
            known = party_names(existing)
            # 1. A newly registered platform receives the ClientInfo of every existing party.
            for i, p in enumerate(newcomers):
                await onboard_and_register(session, hub.url, p)
                want = known | party_names(newcomers[:i])
                await eventually(lambda p=p, want=want: pushed_parties(p) >= want,  # type: ignore[misc]
                                 f"{p.name} to receive every ClientInfo")
            assert await dead_letters(session, hub.url) == []
            everyone = party_names([*existing, *newcomers])
            # 2. A credentials PUT rotates Token B: the re-push goes out with the new token only.
            for p in newcomers:
                p.received.clear()
                await put_credentials(session, p)
                await eventually(lambda p=p: pushed_parties(p) >= everyone - party_names([p]),  # type: ignore[misc]
                                 f"{p.name} to receive every ClientInfo again")
                assert stale_token_pushes(p) == [], f"{p.name} was pushed with a Token B it had replaced"
            assert await dead_letters(session, hub.url) == []
            # 3. Suspend, then resume: the resumed platform is pushed everything again.
            status, platforms = await admin(session, hub.url, "GET", "/admin/platforms")
            assert status == 200
            ids = {pl["name"]: pl["id"] for pl in platforms}
            for p in newcomers:
                await drained(session, hub.url)  # what is still queued for it would rightly be dropped
                status, body = await admin(session, hub.url, "POST", f"/admin/platforms/{ids[p.name]}/suspend")
                assert status == 200, body
                p.received.clear()
                status, body = await admin(session, hub.url, "POST", f"/admin/platforms/{ids[p.name]}/resume")
                assert status == 200 and body["status"] == "CONNECTED", body
                await eventually(lambda p=p: pushed_parties(p) >= everyone - party_names([p]),  # type: ignore[misc]
                                 f"{p.name} to receive every ClientInfo after resume")
            assert await dead_letters(session, hub.url) == []
    finally:
        hub.stop()
        for p in (*existing, *newcomers):
            await p.stop()
        cleanup_prefix(prefix)


# -- one worker holds the change notices back (deterministic) -----------------------------------------------
class _Pair:
    """Two hub apps ("workers") on one SQLite file and one real Redis prefix.

    ``front`` answers partners and the operator but delivers nothing (its dispatcher is stopped), so every push
    is claimed by ``behind``, whose view is held back while ``hold`` is cleared: it hears the change notices but
    applies them only once the test sets ``hold`` again, like a worker too busy to keep up.
    """

    def __init__(self, front: HubHarness, behind: HubHarness) -> None:
        self.front, self.behind = front, behind
        self.hold = asyncio.Event()
        self.hold.set()
        registry = self.hub(behind).registry
        apply_notice, full_reload = registry.reload, registry.load

        async def held_reload(platform_id: str) -> None:
            await self.hold.wait()
            await apply_notice(platform_id)

        async def held_load() -> None:  # the feed's periodic full reload (every 15 s) is held back too
            await self.hold.wait()
            await full_reload()

        registry.reload = held_reload  # type: ignore[method-assign]
        registry.load = held_load  # type: ignore[method-assign]

    @staticmethod
    def hub(h: HubHarness) -> Hub:
        return h.app[HUB_KEY]

    def status_behind(self, platform_id: str) -> ConnectionStatus | None:
        platform = self.hub(self.behind).registry.get(platform_id)
        return None if platform is None else platform.status


async def start_pair(tmp_path: Path) -> _Pair:
    prefix = "test-workers-" + uuid.uuid4().hex[:8]
    common = {"redis_url": REDIS_URL, "key_prefix": prefix, "sqlite_path": str(tmp_path / "hub.sqlite3")}
    front = await start_hub(hub_settings(**common))
    behind = await start_hub(hub_settings(**common))
    await _Pair.hub(front).delivery.stop()  # only `behind` claims queued messages
    return _Pair(front, behind)


async def stop_pair(pair: _Pair) -> None:
    pair.hold.set()
    for h in (pair.front, pair.behind):
        await stop_hub(h)
    cleanup_prefix(pair.front.settings.key_prefix)


@pytest.fixture
async def pair(tmp_path: Path) -> Any:
    if not real_redis_available():
        pytest.skip("no Redis at 127.0.0.1:6379")
    p = await start_pair(tmp_path)
    try:
        yield p
    finally:
        await stop_pair(p)


async def connect_listeners(pair: _Pair) -> tuple[FakePartner, FakePartner, dict[str, Any]]:
    """An existing listener registered through ``front``, and a newcomer onboarded (PLANNED) on both workers."""
    old, new = listener("Existing", "X01"), listener("Newcomer", "N01", country="DE")
    existing = await pair.front.connect(old)
    await eventually(lambda: pair.status_behind(existing["id"]) == ConnectionStatus.CONNECTED,
                     "the other worker to see the existing platform")
    await new.start()
    pair.front.partners.append(new)
    platform = await pair.front.onboard(new)
    await eventually(lambda: pair.status_behind(platform["id"]) == ConnectionStatus.PLANNED,
                     "the other worker to see the newcomer PLANNED")
    return old, new, platform


async def test_a_worker_that_still_sees_a_new_platform_planned_delivers_its_client_info(pair: _Pair) -> None:
    old, new, platform = await connect_listeners(pair)
    pair.hold.clear()
    await new.register(pair.front.session, platform["versions_url"], platform["token_a"])
    # The delivering worker hears of the registration only through its held notices: it is behind until the
    # push it claims makes it read the platform from the store (what this test is about). Asserting its view here
    # would race with that read.
    await eventually(lambda: pushed_parties(new) >= party_names([old]), "the newcomer to receive ClientInfo")
    assert await dead_letters(pair.front.session, pair.front.url) == []


async def registered(pair: _Pair) -> tuple[FakePartner, FakePartner, str]:
    old, new, platform = await connect_listeners(pair)
    await new.register(pair.front.session, platform["versions_url"], platform["token_a"])
    await eventually(lambda: pushed_parties(new) >= party_names([old]), "the newcomer to receive ClientInfo")
    await eventually(lambda: pair.status_behind(platform["id"]) == ConnectionStatus.CONNECTED,
                     "the registration everywhere")
    return old, new, str(platform["id"])


async def test_a_worker_holding_the_old_token_b_pushes_with_the_rotated_one(pair: _Pair) -> None:
    old, new, _ = await registered(pair)
    pair.hold.clear()
    new.received.clear()
    await put_credentials(pair.front.session, new)
    await eventually(lambda: pushed_parties(new) >= party_names([old]), "ClientInfo again after the rotation")
    assert stale_token_pushes(new) == []
    assert await dead_letters(pair.front.session, pair.front.url) == []


async def test_a_worker_that_still_sees_a_resumed_platform_suspended_delivers_its_client_info(pair: _Pair) -> None:
    old, new, new_id = await registered(pair)
    status, body = await pair.front.admin("POST", f"/admin/platforms/{new_id}/suspend")
    assert status == 200, body
    await eventually(lambda: pair.status_behind(new_id) == ConnectionStatus.SUSPENDED, "the suspension everywhere")
    pair.hold.clear()
    new.received.clear()
    status, body = await pair.front.admin("POST", f"/admin/platforms/{new_id}/resume")
    assert status == 200 and body["status"] == "CONNECTED", body
    # Behind: the resume reaches the delivering worker only through its held notices, or through the store
    # read its push makes it do (asserting its view here would race with that read).
    await eventually(lambda: pushed_parties(new) >= party_names([old]), "ClientInfo after resume")
    assert await dead_letters(pair.front.session, pair.front.url) == []


async def test_a_push_queued_before_a_token_rotation_is_resent_with_the_new_token_not_dead_lettered(
        pair: _Pair) -> None:
    """A worker still on the old view routes a broadcast to the partner with its old Token B; the partner answers
    401. The store shows a newer revision: the hub sends again with the rotated token instead of giving up."""
    modules = {m: ("SENDER", "RECEIVER") for m in ALL_MODULES}  # no hubclientinfo: the rotation queues nothing
    sender, receiver = cpo(name="Sender", pid="X02"), emsp(name="Receiver", pid="R02", modules=modules)
    await pair.front.connect(sender)
    platform = await pair.front.connect(receiver)
    await eventually(lambda: pair.status_behind(platform["id"]) == ConnectionStatus.CONNECTED,
                     "the registration everywhere")
    pair.hold.clear()
    await put_credentials(pair.front.session, receiver)
    sender.hub_endpoints = {k: v.replace(pair.front.url, pair.behind.url) for k, v in sender.hub_endpoints.items()}
    location = {**LOCATION, "party_id": "X02"}
    status, _, body = await sender.call(pair.behind.session, "PUT", "locations", "RECEIVER", "NL/X02/LOC1",
                                        to=HUB, json=location)
    assert status == 200, body
    got = await eventually(lambda: [r for r in receiver.received if r.path.endswith("/locations/NL/X02/LOC1")
                                    and r.headers["Authorization"] == ocpi_token(receiver.token_b)],
                           "the broadcast with the rotated token")
    assert len(got) == 1
    refused = [r for r in receiver.received if r.headers["Authorization"] != ocpi_token(receiver.token_b)]
    assert len(refused) == 1, "the race did not happen: the held-back worker should have tried the old token once"
    assert await dead_letters(pair.front.session, pair.front.url) == []


async def test_a_still_alive_check_with_a_replaced_token_b_never_writes_the_old_registration_back(
        pair: _Pair) -> None:
    _, new, new_id = await registered(pair)
    pair.hold.clear()
    await put_credentials(pair.front.session, new)
    stale = pair.hub(pair.behind).registry.get(new_id)
    assert stale is not None and stale.outbound_token != new.token_b  # this worker still holds the old Token B
    assert await pair.behind.app[LIVENESS_KEY].check(stale) is False  # pinged with it: the partner says 401
    stored = await pair.hub(pair.front).store.get_platform(new_id)
    assert stored is not None
    assert (stored.status, stored.outbound_token) == (ConnectionStatus.CONNECTED, new.token_b)
    async with pair.front.session.get(new.hub_endpoints[("credentials", "SENDER")],
                                      headers={"Authorization": ocpi_token(new.token_c or "")}) as resp:
        assert resp.status == 200, "the partner's current Token C must still open the hub"


async def test_an_operator_action_on_a_worker_that_lags_behind_keeps_the_newer_registration(pair: _Pair) -> None:
    _, new, new_id = await registered(pair)
    pair.hold.clear()
    await put_credentials(pair.front.session, new)
    stale = pair.hub(pair.behind).registry.get(new_id)
    assert stale is not None and stale.outbound_token != new.token_b  # this worker still holds the old Token B
    status, body = await pair.behind.admin("POST", f"/admin/platforms/{new_id}/suspend")
    assert status == 200 and body["status"] == "SUSPENDED", body
    stored = await pair.hub(pair.front).store.get_platform(new_id)
    assert stored is not None
    assert (stored.status, stored.outbound_token) == (ConnectionStatus.SUSPENDED, new.token_b)
    status, body = await pair.behind.admin("POST", f"/admin/platforms/{new_id}/resume")
    assert status == 200 and body["status"] == "CONNECTED", body
    async with pair.front.session.get(new.hub_endpoints[("credentials", "SENDER")],
                                      headers={"Authorization": ocpi_token(new.token_c or "")}) as resp:
        assert resp.status == 200, "the partner's current Token C must open the hub again after resume"
