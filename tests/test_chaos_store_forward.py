"""Chaos test of store-and-forward: nothing a sender was answered 1000 for is lost, reordered or invented.

Two CPOs send CDRs (POST) and sessions (PUT, then PATCHes) to one eMSP that opted in to store-and-forward for
cdrs and sessions, all at once, while

- the eMSP flaps: down about 30 % of the time (connections refused, requests on open connections cut off), and
  while up it answers HTTP 500 to one request in ten;
- a random hub worker of ``ocpi-hub serve --workers 2`` is killed with SIGKILL every few seconds. The supervisor
  restarts no worker: it stops the others and exits, so the test kills what is left of the process group and
  starts the hub again, as systemd or Kubernetes would;
- Redis (the test's own, ``--appendonly yes --appendfsync always``) is killed with SIGKILL once, half-way, and
  started again from its append-only file.

Senders behave as OCPI senders do: what was not answered 1000 (connection error, 503, 5xx, a timeout) is sent
again, half the time under the X-Request-ID it had (the hub must not queue it twice), half the time under a new
one (a new message to the hub: docs/store-and-forward.md); what was answered 1000 is never sent again. Then the
eMSP stays up until every message answered 1000 reached it (bounded wait), and the test checks:

- every message answered 1000 was accepted by the eMSP, body for body;
- each session's PUT came before its PATCHes, and the PATCHes in order (nothing older after something newer);
- the hub's own account (``GET /admin/deliveries/{request_id}``) agrees: every message it accepted, under any
  X-Request-ID its sender used, is ``delivered``, under a forwarded X-Request-ID the eMSP accepted it with;
- a message that reached the eMSP more than once came again with the X-Request-ID it had (a retry of the hub),
  or with a new one only when its sender sent it under more than one X-Request-ID; both are counted and printed.

Size: ``HUB_CHAOS_FULL=1 .venv/bin/pytest -s tests/test_chaos_store_forward.py`` runs 1,000 CDRs and 200 sessions
(``make test`` runs 200 and 40). ``HUB_CHAOS_SEED`` replays one run's random choices (it is printed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
from aiohttp import web

from hub.context import HUB_KEY
from routing import keys
from tests.conftest import ADMIN_TOKEN, MakeHub, ScratchRedis, cpo, emsp
from tests.partners import FakePartner, Received, default_responder, envelope
from tests.test_dead_letters import eventually
from tests.test_processes import HubProcess, admin, hub_workers, onboard_and_register
from tests.test_store_forward import cdr as sf_cdr
from tests.test_store_forward import opt_in as sf_opt_in
from tests.test_store_forward import pair, send_cdr

FULL = os.environ.get("HUB_CHAOS_FULL") == "1"
CDRS, SESSIONS = (1000, 200) if FULL else (200, 40)
PATCHES = (2, 3)  # PATCHes per session: 2 or 3
WORKERS = 2
SENDERS_PER_CPO = 16  # requests one CPO has under way at once
LOAD_SECONDS = 30.0 if FULL else 12.0  # messages are first sent spread over this long, in the middle of the chaos
CHAOS_SECONDS = 40.0 if FULL else 20.0  # the chaos lasts at least this long, deliveries included, and the load
SENDER_PATIENCE = 60.0  # seconds one message is sent again before its sender gives up
DELIVERY_LIMIT = 120.0  # seconds, once the chaos ended, for everything answered 1000 to reach the eMSP
REQUEST_TIMEOUT = 10.0
ACCEPTED_FOR_DELIVERY = "accepted for delivery"
TS = "2025-03-01T10:00:00Z"
PREFIX = "chaos"  # HUB_KEY_PREFIX


# -- the messages ----------------------------------------------------------------------------------------------
@dataclass
class Sent:
    """One message a CPO must get answered 1000, and what happened to it on the way."""

    module: str  # cdrs or sessions
    object_id: str  # CDR id or session id
    step: int  # sessions: 0 = PUT, 1.. = the PATCHes in order; CDRs: 0
    method: str
    tail: str
    body: dict[str, Any]
    attempts: int = 0
    request_ids: list[str] = field(default_factory=list)  # every X-Request-ID its sender used, in order
    answered: str | None = None  # status_message of the 1000
    request_id: str | None = None  # X-Request-ID of the attempt answered 1000
    refusals: Counter[str] = field(default_factory=Counter)  # what the other attempts got
    gave_up: bool = False

    @property
    def key(self) -> tuple[str, str, int]:
        return self.module, self.object_id, self.step


def cdr(party: str, n: int) -> dict[str, Any]:
    return {"country_code": "NL", "party_id": party, "id": f"CDR-{party}-{n:05d}", "start_date_time": TS,
            "end_date_time": "2025-03-01T11:00:00Z", "currency": "EUR", "total_energy": round(1 + n / 100, 2),
            "total_time": 1.0, "total_cost": {"excl_vat": round(n / 10, 2)}, "last_updated": TS,
            "cdr_token": {"country_code": "DE", "party_id": "EMA", "uid": f"TOK{n}", "type": "RFID",
                          "contract_id": f"DE-EMA-C{n}"},
            "auth_method": "WHITELIST", "cdr_location": {"id": "LOC1", "evse_uid": "EVSE1", "connector_id": "1"},
            "charging_periods": []}


def session_messages(party: str, n: int, patches: int) -> list[Sent]:
    """The PUT of one session, then its PATCHes: each one a new kWh reading and last_updated."""
    sid = f"S-{party}-{n:04d}"
    tail = f"NL/{party}/{sid}"
    put = {"country_code": "NL", "party_id": party, "id": sid, "start_date_time": TS, "kwh": 0.0,
           "auth_method": "WHITELIST", "location_id": "LOC1", "evse_uid": "EVSE1", "connector_id": "1",
           "currency": "EUR", "status": "ACTIVE", "last_updated": TS,
           "cdr_token": {"country_code": "DE", "party_id": "EMA", "uid": f"TOK{n}", "type": "RFID",
                         "contract_id": f"DE-EMA-C{n}"}}
    out = [Sent("sessions", sid, 0, "PUT", tail, put)]
    for step in range(1, patches + 1):
        patch = {"kwh": float(step), "last_updated": f"2025-03-01T10:{step:02d}:00Z"}
        out.append(Sent("sessions", sid, step, "PATCH", tail, patch))
    return out


# -- the eMSP --------------------------------------------------------------------------------------------------
@dataclass
class Arrival:
    key: tuple[str, str, int] | None  # None: no message ever sent looks like this
    request_id: str
    accepted: bool  # the eMSP answered 200 / 1000
    method: str
    path: str


class FlakyEmsp:
    """The eMSP's functional modules: one request in ``fail_rate`` answered HTTP 500, every arrival recorded."""

    def __init__(self, rng: random.Random, expected: dict[tuple[str, str, str, str], tuple[str, str, int]]) -> None:
        self.rng = rng
        self.expected = expected  # (module, object id, method, canonical body) -> message key
        self.fail_rate = 0.1
        self.arrivals: list[Arrival] = []
        self.failed = 0

    def identify(self, rec: Received) -> tuple[str, str, int] | None:
        parts = rec.path.strip("/").split("/")  # ocpi 2.2.1 receiver <module> [cc pid id]
        if len(parts) < 4:
            return None
        module = parts[3]
        body = rec.json() if rec.body else None
        if not isinstance(body, dict):
            return None
        object_id = body.get("id") if module == "cdrs" else parts[-1]
        return self.expected.get((module, str(object_id), rec.method, canonical(body)))

    async def __call__(self, request: web.Request, rec: Received) -> web.StreamResponse:
        key = self.identify(rec)
        accepted = self.rng.random() >= self.fail_rate
        self.arrivals.append(Arrival(key, rec.headers.get("X-Request-ID", ""), accepted, rec.method, rec.path))
        if not accepted:
            self.failed += 1
            if self.rng.random() < 0.5:
                return web.Response(status=500, text="<html>Internal Server Error</html>", content_type="text/html")
            return web.json_response(envelope(status_code=3000, message="try later"), status=500)
        return await default_responder(request, rec)


def canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


# -- the senders -----------------------------------------------------------------------------------------------
class Sender:
    """One CPO: sends each message until it is answered 1000, at most ``SENDERS_PER_CPO`` at once."""

    def __init__(self, partner: FakePartner, to: FakePartner, rng: random.Random) -> None:
        self.partner = partner
        self.to = to
        self.rng = rng
        self.slots = asyncio.Semaphore(SENDERS_PER_CPO)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        self.done = 0

    async def send(self, m: Sent, after: float = 0.0) -> None:
        await asyncio.sleep(after)
        async with self.slots:
            await self._until_1000(m)

    async def send_in_order(self, messages: list[Sent], after: float) -> None:
        """A session: each step only once the one before it was answered 1000, a moment later."""
        await asyncio.sleep(after)
        for m in messages:
            await self.send(m, self.rng.uniform(0.05, 0.5))
            if m.gave_up:
                return

    async def _until_1000(self, m: Sent) -> None:
        give_up_at = time.monotonic() + SENDER_PATIENCE
        request_id = uuid.uuid4().hex
        while True:
            m.attempts += 1
            if m.request_ids and self.rng.random() < 0.5:
                request_id = uuid.uuid4().hex  # a new message, as far as the hub can tell
            if request_id not in m.request_ids:
                m.request_ids.append(request_id)
            try:
                status, _, doc = await self.partner.call(
                    self.session, m.method, m.module, "RECEIVER", m.tail if m.method != "POST" else "",
                    to=self.to.party, json=m.body, headers={"X-Request-ID": request_id})
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            else:
                code = doc.get("status_code") if isinstance(doc, dict) else None
                if status == 200 and code == 1000:
                    m.answered, m.request_id = str(doc.get("status_message", "")), request_id
                    self.done += 1
                    return
                outcome = f"HTTP {status} / {code}"
            m.refusals[outcome] += 1
            if time.monotonic() > give_up_at:
                m.gave_up = True
                self.done += 1
                return
            await asyncio.sleep(min(1.0, 0.1 * m.attempts) * self.rng.uniform(0.5, 1.5))

    async def close(self) -> None:
        await self.session.close()


# -- the chaos -------------------------------------------------------------------------------------------------
@dataclass
class Figures:
    worker_kills: int = 0
    hub_restarts: int = 0
    redis_restarts: int = 0
    emsp_outages: int = 0
    emsp_down_seconds: float = 0.0
    emsp_up_seconds: float = 0.0


class Chaos:
    """The eMSP flapping, hub workers killed, Redis restarted once: until ``stop``."""

    def __init__(self, rng: random.Random, hub: HubProcess, redis: ScratchRedis, target: FakePartner,
                 progress: Any, session: aiohttp.ClientSession) -> None:
        self.rng = rng
        self.hub = hub
        self.redis = redis
        self.target = target
        self.progress = progress  # () -> fraction of messages answered so far
        self.session = session
        self.figures = Figures()
        self.stopping = asyncio.Event()
        self.restarts = asyncio.Lock()  # the hub never starts while Redis is down (it would refuse to start)

    async def _pause(self, low: float, high: float) -> bool:
        """Sleep a random while; False when the chaos is over."""
        try:
            await asyncio.wait_for(self.stopping.wait(), self.rng.uniform(low, high))
        except TimeoutError:
            return True
        return False

    async def flap(self) -> None:
        while True:
            up = self.rng.uniform(0.8, 2.2)
            self.figures.emsp_up_seconds += up
            if not await self._pause(up, up):
                break
            down = self.rng.uniform(0.3, 0.9)
            await self.target.go_offline()
            self.figures.emsp_outages += 1
            self.figures.emsp_down_seconds += down
            await self._pause(down, down)
            await self.target.go_online()
            if self.stopping.is_set():
                break

    async def kill_workers(self) -> None:
        while await self._pause(1.5, 4.0):
            async with self.restarts:
                await self.kill_one_worker()

    async def kill_one_worker(self) -> None:
        """SIGKILL one worker; the supervisor does not replace it, so the hub is started again."""
        assert self.hub.proc is not None
        victim = self.rng.choice(await hub_workers(self.hub))
        os.kill(victim, signal.SIGKILL)
        self.figures.worker_kills += 1
        for _ in range(20):  # the supervisor stops the other worker and exits within a second, or we do it for it
            if self.hub.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        self.hub.kill(signal.SIGKILL)
        self.hub.start()
        self.figures.hub_restarts += 1
        await self.hub.wait_ready(self.session)
        # every worker past its start-up checks before Redis may go down: one answering /healthz is not enough
        await hub_workers(self.hub)

    async def restart_redis_once(self) -> None:
        while self.progress() < 0.4:
            if not await self._pause(0.1, 0.1):
                return
        async with self.restarts:
            await asyncio.to_thread(self.redis.stop, True)
            await asyncio.sleep(1.0)  # a real outage: the hub answers 503 meanwhile
            await asyncio.to_thread(self.redis.start)
            self.figures.redis_restarts += 1

    @contextmanager
    def running(self) -> Iterator[list[asyncio.Task[None]]]:
        tasks = [asyncio.create_task(c) for c in (self.flap(), self.kill_workers(), self.restart_redis_once())]
        try:
            yield tasks
        finally:
            self.stopping.set()
            for t in tasks:
                if not t.done():
                    t.cancel()


# -- the test --------------------------------------------------------------------------------------------------
async def opt_in(session: aiohttp.ClientSession, url: str, platform_id: str, modules: list[str]) -> None:
    status, body = await admin(session, url, "PUT", f"/admin/platforms/{platform_id}/store-and-forward",
                               {"modules": modules})
    assert status == 200 and body["store_and_forward"] == sorted(modules), body


async def delivery_states(session: aiohttp.ClientSession, url: str, messages: list[Sent]) -> list[Any]:
    """What the hub says of (at most 10) messages: per X-Request-ID their sender used, the delivery states."""
    out = []
    for m in messages[:10]:
        for rid in m.request_ids:
            status, body = await admin(session, url, "GET", f"/admin/deliveries/{rid}")
            out.append((m.key, rid, status, body))
    return out


def missing_at(emsp_: FlakyEmsp, messages: list[Sent]) -> list[Sent]:
    got = {a.key for a in emsp_.arrivals if a.accepted}
    return [m for m in messages if m.answered is not None and m.key not in got]


async def ledger_disagreements(session: aiohttp.ClientSession, url: str, messages: list[Sent],
                               emsp_: FlakyEmsp, redis_url: str) -> tuple[list[str], list[str]]:
    """What the hub's delivery states say that the eMSP contradicts: a message accepted under one of the sender's
    X-Request-IDs that is not ``delivered``, or delivered under a forwarded X-Request-ID the eMSP never accepted.

    Apart (second list): states left ``queued`` under an id the sender was NOT answered 1000 for, never
    attempted, whose forwarded X-Request-ID never reached the eMSP. The hub stopped (or lost Redis) between
    recording the state and queueing the message, and the sender went on under a new id: the hub must report
    such a state ``dropped`` (test_an_unqueued_message_is_not_reported_queued_for_ever), so this list stays empty.
    A ``dropped`` state under an id that was not answered 1000 is that honest report, not a disagreement.
    """
    seen: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    arrived: set[str] = set()
    for a in emsp_.arrivals:
        arrived.add(a.request_id)
        if a.key is not None and a.accepted:
            seen[a.key].add(a.request_id)
    slots = asyncio.Semaphore(16)
    client = sync_redis.Redis.from_url(redis_url)

    def queued(message_id: str) -> bool:
        """Diagnosis only: whether the hub's queue still holds that message."""
        return bool(client.exists(keys.message(PREFIX, message_id)))

    def orphan(m: Sent, rid: str, s: dict[str, Any]) -> bool:
        return (rid != m.request_id and s["state"] == "queued" and s["attempts"] == 0
                and s["forwarded_request_id"] not in arrived)

    async def check(m: Sent, rid: str) -> list[tuple[bool, str]]:
        async with slots:
            status, states = await admin(session, url, "GET", f"/admin/deliveries/{rid}")
        if status == 404:  # never accepted under this id (the attempt did not reach the hub, or was refused)
            return [(False, f"{m.key}: answered 1000 under {rid}, unknown to the hub")] if rid == m.request_id else []
        if status != 200:
            return [(False, f"{m.key}: GET /admin/deliveries/{rid} -> {status} {states}")]
        return [(orphan(m, rid, s), f"{m.key} under {rid} ({'' if rid == m.request_id else 'not '}answered 1000): "
                 f"{s}; its queue message {'exists' if queued(s['message_id']) else 'does not exist'} in Redis")
                for s in states if (s["state"] != "delivered" or s["forwarded_request_id"] not in seen[m.key])
                and not (s["state"] == "dropped" and rid != m.request_id)]

    found = [x for xs in await asyncio.gather(*(check(m, rid) for m in messages for rid in m.request_ids))
             for x in xs]
    return [line for is_orphan, line in found if not is_orphan], [line for is_orphan, line in found if is_orphan]


def order_violations(emsp_: FlakyEmsp) -> list[str]:
    """Per session, every arrival (accepted or not) in arrival order: a step never follows a later one."""
    seen: dict[str, list[int]] = defaultdict(list)
    for a in emsp_.arrivals:
        if a.key is not None and a.key[0] == "sessions":
            seen[a.key[1]].append(a.key[2])
    return [f"{sid}: steps arrived as {steps}" for sid, steps in seen.items()
            if any(later < earlier for earlier, later in itertools.pairwise(steps))]


def duplicates(emsp_: FlakyEmsp, by_key: dict[tuple[str, str, int], Sent]) -> tuple[int, int, list[Sent], list[str]]:
    """Repeats with the same X-Request-ID, repeats with a new one after a sender's retry, and the messages whose
    repeats no sender retry explains (with what the eMSP got of them)."""
    ids: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for a in emsp_.arrivals:
        if a.key is not None and a.accepted:
            ids[a.key].append(a.request_id)
    same = resent = 0
    unexplained: list[Sent] = []
    lines = []
    for key, rids in ids.items():
        distinct = len(set(rids))
        same += len(rids) - distinct
        resent += distinct - 1
        if distinct > len(by_key[key].request_ids):
            unexplained.append(by_key[key])
            lines.append(f"{key}: at the eMSP under {distinct} X-Request-IDs {sorted(set(rids))}; its sender used "
                         f"{len(by_key[key].request_ids)}: {by_key[key].request_ids}")
    return same, resent, unexplained, lines


async def until_loaded(load: asyncio.Future[Any], chaos_tasks: list[asyncio.Task[None]]) -> None:
    """Wait for the senders; a chaos step that failed (the hub did not come back, Redis did not restart) fails the
    test at once instead of leaving the senders retrying against a hub that is gone."""
    pending: set[asyncio.Future[Any]] = {load, *chaos_tasks}
    while not load.done():
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not load and task.exception() is not None:
                load.cancel()
                raise task.exception()  # type: ignore[misc]
    load.result()


@pytest.mark.timeout(400)  # bounded inside: senders give up, deliveries have DELIVERY_LIMIT
async def test_store_and_forward_loses_nothing_under_chaos(tmp_path: Path) -> None:
    seed = int(os.environ.get("HUB_CHAOS_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"\nchaos seed {seed} (HUB_CHAOS_SEED={seed} replays the same choices); "
          f"{CDRS} CDRs, {SESSIONS} sessions")
    redis = ScratchRedis(tmp_path)
    redis.start()
    hub = HubProcess(tmp_path, workers=WORKERS, HUB_ADMIN_TOKEN=ADMIN_TOKEN, HUB_REDIS_URL=redis.url,
                     HUB_FORWARD_TIMEOUT="2", HUB_REDIS_TIMEOUT="0.5",
                     HUB_KEY_PREFIX=PREFIX,
                     HUB_STORE_FORWARD_MAX_BACKOFF="5")  # bounds the wait after the chaos, not what is checked
    cpos = [cpo(name="CPO A", pid="CPA"), cpo(name="CPO B", pid="CPB")]
    ema = emsp()
    messages: list[Sent] = []
    sessions: dict[str, list[list[Sent]]] = {}
    for i, c in enumerate(cpos):
        party = c.party.party_id
        messages += [Sent("cdrs", f"CDR-{party}-{n:05d}", 0, "POST", "", cdr(party, n))
                     for n in range(i, CDRS, len(cpos))]
        sessions[party] = [session_messages(party, n, rng.choice(PATCHES)) for n in range(i, SESSIONS, len(cpos))]
        messages += [m for s in sessions[party] for m in s]
    by_key = {m.key: m for m in messages}
    expected = {(m.module, m.object_id, m.method, canonical(m.body)): m.key for m in messages}
    receiver = FlakyEmsp(rng, expected)
    ema.responder = receiver
    senders: list[Sender] = []
    started = time.monotonic()
    try:
        for p in (*cpos, ema):
            await p.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
            hub.start()
            await hub.wait_ready(session)
            for p in cpos:
                await onboard_and_register(session, hub.url, p)
            platform = await onboard_and_register(session, hub.url, ema)
            await opt_in(session, hub.url, platform["id"], ["cdrs", "sessions"])
            senders = [Sender(c, ema, random.Random(rng.random())) for c in cpos]

            def progress() -> float:
                return sum(s.done for s in senders) / len(messages)

            chaos = Chaos(rng, hub, redis, ema, progress, session)
            with chaos.running() as chaos_tasks:
                spread = rng.uniform  # when each CDR and session starts
                load = [s.send(m, spread(0, LOAD_SECONDS)) for s, c in zip(senders, cpos, strict=True)
                        for m in messages if m.module == "cdrs" and m.object_id.startswith(f"CDR-{c.party.party_id}")]
                load += [s.send_in_order(steps, spread(0, LOAD_SECONDS - 2)) for s, c in zip(senders, cpos, strict=True)
                         for steps in sessions[c.party.party_id]]
                await until_loaded(asyncio.gather(*load), chaos_tasks)
                answered_all = time.monotonic()
                await asyncio.sleep(max(0.0, started + CHAOS_SECONDS - time.monotonic()))  # deliveries meet it too
                chaos.stopping.set()
                await asyncio.gather(*chaos_tasks)  # a failed restart fails the test here
            loaded = time.monotonic()
            await ema.go_online()
            receiver.fail_rate = 0.0
            if hub.proc is None or hub.proc.poll() is not None:
                hub.start()
                await hub.wait_ready(session)
            deadline = time.monotonic() + DELIVERY_LIMIT
            while True:
                missing = missing_at(receiver, messages)
                if not missing or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            while True:  # the eMSP's answer reaches the hub's delivery states a moment after the eMSP has it
                disagreements, orphans = await ledger_disagreements(session, hub.url, messages, receiver, redis.url)
                if not disagreements or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            finished = time.monotonic()
            same, resent, unexplained, repeats = duplicates(receiver, by_key)
            states = await delivery_states(session, hub.url, missing + unexplained)
    finally:
        for s in senders:
            await s.close()
        hub.stop()
        for p in (*cpos, ema):
            await p.stop()
        redis.stop()

    answered = [m for m in messages if m.answered is not None]
    stored = sum(1 for m in answered if m.answered and m.answered.startswith(ACCEPTED_FOR_DELIVERY))
    refusals: Counter[str] = Counter()
    for m in messages:
        refusals.update(m.refusals)
    f = chaos.figures
    print(f"sent {len(messages)} messages ({CDRS} CDRs, {SESSIONS} sessions): {len(answered)} answered 1000, "
          f"{stored} of them '{ACCEPTED_FOR_DELIVERY}', {sum(m.gave_up for m in messages)} given up; "
          f"sender attempts {sum(m.attempts for m in messages)}; not 1000: {dict(refusals.most_common(8))}")
    print(f"chaos: {f.worker_kills} workers killed, {f.hub_restarts} hub restarts, {f.redis_restarts} Redis "
          f"restarts, eMSP down {f.emsp_outages} times ({f.emsp_down_seconds:.0f} s of "
          f"{f.emsp_down_seconds + f.emsp_up_seconds:.0f} s), {receiver.failed} eMSP HTTP 500s")
    print(f"eMSP: {len(receiver.arrivals)} arrivals, {sum(a.accepted for a in receiver.arrivals)} accepted, "
          f"{len(answered) - len(missing)} of {len(answered)} messages answered 1000 delivered; duplicates: {same} "
          f"hub retries (same X-Request-ID), {resent} after a sender's retry (new X-Request-ID)")
    print(f"time: senders done after {answered_all - started:.1f} s, chaos ended after {loaded - started:.1f} s, "
          f"then {finished - loaded:.1f} s until all was delivered (or the wait ended); "
          f"total {finished - started:.1f} s")
    print(f"delivery states left 'queued' for messages never queued (not answered 1000): {len(orphans)}")
    for line in [*repeats, *disagreements, *orphans][:20]:
        print("  ", line)

    assert not [m.key for m in messages if m.gave_up], "senders gave up: the hub never answered them 1000"
    lost = {m.key: [a for a in receiver.arrivals if a.key == m.key] for m in missing[:20]}
    assert missing == [], f"answered 1000, never accepted by the eMSP: {lost}; the hub's delivery states: {states}"
    assert [a for a in receiver.arrivals if a.key is None] == [], "the eMSP got what nobody sent"
    assert order_violations(receiver) == []
    assert disagreements == [], "the hub's delivery states disagree with what the eMSP got"
    assert orphans == [], "a message never queued is still reported queued"
    assert repeats == [], f"a message again under a new X-Request-ID no sender retry explains; states: {states}"
    assert stored > 0, f"no message was '{ACCEPTED_FOR_DELIVERY}': the chaos never reached store-and-forward"


# -- what the chaos found ----------------------------------------------------------------------------------------
async def test_an_unqueued_message_is_not_reported_queued_for_ever(
        make_hub: MakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, sender, receiver, receiver_id = await pair(make_hub)
    await sf_opt_in(hub, receiver_id, "cdrs")
    delivery = hub.app[HUB_KEY].delivery
    assert delivery.ledger is not None

    async def redis_gone(*_: Any, **__: Any) -> None:
        raise sync_redis.exceptions.ConnectionError("Connection refused")  # Redis was killed after the claim

    with monkeypatch.context() as patched:
        patched.setattr(delivery.queue, "enqueue", redis_gone)
        patched.setattr(delivery.ledger, "forget", redis_gone)
        status, body = await send_cdr(hub, sender, receiver, sf_cdr("CDR-LOST"), request_id="first-try")
    assert status == 503, body  # not accepted: the sender sends it again, under a new request id
    status, body = await send_cdr(hub, sender, receiver, sf_cdr("CDR-LOST"), request_id="second-try")
    assert status == 200 and body["status_code"] == 1000, body
    await eventually(lambda: [r for r in receiver.received if r.method == "POST"], what="the CDR at the eMSP")
    # Found by the chaos test: the state is written before the enqueue, which failed; within a few seconds (the
    # grace an enqueue in progress gets) it is reported dropped, not queued for the window + 1 day.
    reported: list[Any] = []

    async def not_queued() -> bool:
        status, states = await hub.admin("GET", "/admin/deliveries/first-try")
        reported[:] = [status, states]
        return status == 404 or all(s["state"] == "dropped" for s in states)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await not_queued():
        assert loop.time() < deadline, reported
        await asyncio.sleep(0.2)
