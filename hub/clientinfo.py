"""hubclientinfo: the hub tells every connected platform the connection status of the other parties (OCPI 2.2.1
and 2.3.0 hubclientinfo; 2.1.1 has no such module).

- SENDER interface: ``GET /ocpi/{2.2.1,2.3.0}/hubclientinfo``, paginated and date-filtered, full-list semantics.
- Pushes: every new or changed ClientInfo is PUT to each CONNECTED platform of a version with hubclientinfo that
  offers the RECEIVER interface (through the delivery queue, with retries); a newly connected platform also
  receives all existing ones. Parties of 2.1.1 platforms are listed like any other, but never pushed to.
- Still-alive: a platform silent for ``HUB_ALIVE_INTERVAL`` seconds gets ``GET versions``; failure turns its
  parties OFFLINE, success after that CONNECTED again (PLANNED → CONNECTED ⇄ OFFLINE → SUSPENDED).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from hub.access import authenticate
from hub.context import Hub, hub_of
from hub.envelope import ocpi_response, ocpi_timestamp
from hub.exchange import reply_headers
from routing import keys
from routing.agreements import Agreement
from routing.delivery import read_at_most
from routing.ocpi.auth import authorization_header
from routing.ocpi.headers import CORRELATION_ID, new_id, own_request_ids
from routing.ocpi.pagination import page_headers, parse_page
from routing.ocpi.versions import HAS_HUBCLIENTINFO, V221, token_encoding
from routing.platform import ConnectionStatus, Party, Platform, utcnow
from routing.queue import Message
from routing.tasks import stop_task
from routing.wire import ForwardRequest

log = logging.getLogger("hub.clientinfo")


def client_info(party: Party) -> dict[str, Any]:
    return {
        "party_id": party.party_id,
        "country_code": party.country_code,
        "role": party.role,
        "status": party.status.value,
        "last_updated": ocpi_timestamp(party.last_updated),
    }


def _visible(hub: Hub, viewer: Platform) -> list[tuple[Platform, Party]]:
    """Every party of every other platform, in onboarding order (stable pages), one ClientInfo per party.

    ClientInfo objects are never deleted, so parties of removed platforms stay (SUSPENDED) — unless their pair
    was onboarded again, by another platform or the viewer itself: then the current holder is the only truth.
    Under roaming agreements only the parties the viewer has an agreement in force with (routing/roaming.py).
    """
    platforms = hub.registry.all()
    own = {party.key for party in viewer.parties}
    live = {party.key for p in platforms if not p.removed and p.id != viewer.id for party in p.parties}
    chosen: dict[tuple[str, str], tuple[Platform, Party]] = {}
    for p in platforms:
        if p.id == viewer.id:
            continue
        for party in p.parties:
            if party.key in own or (p.removed and party.key in live):
                continue
            chosen[(party.key, party.role)] = (p, party)  # a later onboarding of the same pair and role wins
    roaming = hub.roaming
    if roaming.idle:
        return list(chosen.values())
    return [(p, party) for p, party in chosen.values() if roaming.sees(viewer, p, party)]


async def get_client_infos(request: web.Request) -> web.Response:
    hub = hub_of(request)
    caller = await authenticate(request, hub, allow_token_a=False)  # notes the caller's platform for the audit
    page = parse_page(dict(request.query))
    rows = [
        party for _, party in _visible(hub, caller.platform)
        if (page.date_from is None or party.last_updated >= page.date_from)
        and (page.date_to is None or party.last_updated < page.date_to)
    ]
    chunk = rows[page.offset: page.offset + page.limit]
    headers = dict(reply_headers(request) or {})
    headers.update(page_headers(f"{hub.version_url(request.path.split('/')[2])}/hubclientinfo", page, len(chunk),
                                len(rows)))
    return ocpi_response([client_info(p) for p in chunk], headers=headers)


def _push_message(receiver: Platform, party: Party) -> Message:
    fwd = ForwardRequest(
        method="PUT", module="hubclientinfo", interface_role="RECEIVER",
        tail=f"{party.country_code}/{party.party_id}", query="",
        headers={"Content-Type": "application/json", CORRELATION_ID: new_id()},
        body=orjson.dumps(client_info(party)), receiver_revision=receiver.revision,
        receiver_version=receiver.version or V221,
        subject=f"{party.key}:{party.role}",  # judged again at delivery (roaming agreements)
    )
    return Message(receiver=receiver.id, group=f"clientinfo:{party.key}", payload=fwd.encode(), kind="clientinfo")


def _listens(platform: Platform) -> bool:
    """Offers the hubclientinfo RECEIVER interface in a version that has the module (never 2.1.1)."""
    return (platform.version or V221) in HAS_HUBCLIENTINFO and \
        platform.endpoint_url("hubclientinfo", "RECEIVER") is not None


def _listeners(hub: Hub) -> list[Platform]:
    return [p for p in hub.registry.all()
            if not p.removed and p.status == ConnectionStatus.CONNECTED and _listens(p)]


async def announce(hub: Hub, old: Platform | None, new: Platform) -> None:
    """Push what changed in ``new`` to every listener; a platform that just connected gets everything."""
    before = {(p.key, p.role): p.status for p in (old.parties if old else [])}
    changed = [p for p in new.parties if before.get((p.key, p.role)) != p.status]
    roaming = hub.roaming
    messages = [_push_message(listener, party) for listener in _listeners(hub) if listener.id != new.id
                for party in changed if roaming.sees(listener, new, party)]
    just_connected = new.status == ConnectionStatus.CONNECTED and (old is None or old.status != new.status
                                                                   or old.outbound_token != new.outbound_token)
    if just_connected and _listens(new) and not new.removed:
        messages += [_push_message(new, party) for _, party in _visible(hub, new)]
    # Enqueued together: the calls share one Redis pipeline (routing/batching.py) instead of a round trip each.
    await asyncio.gather(*(hub.queue.enqueue(msg) for msg in messages))
    if messages:
        hub.delivery.wake()


async def introduce(hub: Hub, agreements: Sequence[Agreement]) -> None:
    """An agreement coming into force: each side's listening platform gets the ClientInfo of the other side's
    parties it may now see (a PUT of the same status again is harmless; without it a party would learn of its new
    partner only at that partner's next status change)."""
    messages = []
    for agreement in agreements:
        sides = [hub.registry.by_party(p.country_code, p.party_id) for p in (agreement.party_a, agreement.party_b)]
        if sides[0] is None or sides[1] is None:
            continue
        for (listener, _), (platform, party) in ((sides[0], sides[1]), (sides[1], sides[0])):
            if listener.id != platform.id and _listens(listener) and not listener.removed \
                    and hub.roaming.sees(listener, platform, party):
                messages.append(_push_message(listener, party))
    await asyncio.gather(*(hub.queue.enqueue(msg) for msg in messages))
    if messages:
        hub.delivery.wake()


# -- still-alive ------------------------------------------------------------------------------------------

class Liveness:
    """Tracks when each platform was last heard from and checks silent ones (one process per platform)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def seen(self, platform_id: str) -> None:
        self._seen[platform_id] = time.time()

    async def last_seen(self) -> dict[str, float]:
        """When each platform was last heard from (unix time): every process's flushed notes, this one's newest."""
        raw = await self.hub.redis.hgetall(keys.last_seen(self.hub.settings.key_prefix))
        last = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        for platform_id, at in self._seen.items():
            last[platform_id] = max(at, last.get(platform_id, 0.0))
        return last

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="liveness")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)

    async def flush(self) -> None:
        if self._seen:
            seen, self._seen = self._seen, {}
            await self.hub.redis.hset(keys.last_seen(self.hub.settings.key_prefix),
                                      mapping={k: str(v) for k, v in seen.items()})

    async def _run(self) -> None:
        interval = self.hub.settings.alive_check_every
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.hub.health.report(exc, log, "still-alive round failed")

    async def check_all(self) -> None:
        await self.flush()
        prefix = self.hub.settings.key_prefix
        raw = await self.hub.redis.hgetall(keys.last_seen(prefix))
        last = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        now = time.time()
        for platform in self.hub.registry.all():
            if platform.removed or not platform.registered or platform.status not in (
                    ConnectionStatus.CONNECTED, ConnectionStatus.OFFLINE):
                continue
            # Registration or a credentials update counts as hearing from it too.
            silent_since = max(last.get(platform.id, 0.0), platform.updated_at.timestamp())
            if platform.status == ConnectionStatus.CONNECTED and now - silent_since < self.hub.settings.alive_interval:
                continue
            lock = keys.liveness_lock(prefix, platform.id)
            if not await self.hub.redis.set(lock, b"1", nx=True, ex=max(int(self.hub.settings.alive_check_every), 1)):
                continue
            await self.check(platform)

    async def check(self, platform: Platform) -> bool:
        """GET the partner's versions endpoint; move its parties CONNECTED ⇄ OFFLINE on the result."""
        alive = await self._ping(platform)
        if alive:
            await self.hub.redis.hset(keys.last_seen(self.hub.settings.key_prefix), platform.id, str(time.time()))
            self.hub.delivery.answered_again(platform.id)  # what waits out a backoff for it goes now
        target = ConnectionStatus.CONNECTED if alive else ConnectionStatus.OFFLINE
        current = self.hub.registry.get(platform.id)
        if current is None or current.status == target or current.status not in (
                ConnectionStatus.CONNECTED, ConnectionStatus.OFFLINE):
            return alive
        # The whole record is saved: never from a view that lags behind another worker's change. A ping made
        # with a Token B or URL the partner has replaced meanwhile says nothing; the next round asks again.
        current = await self.hub.registry.refresh(platform.id)
        if current is None or current.revision != platform.revision or current.status == target or (
                current.status not in (ConnectionStatus.CONNECTED, ConnectionStatus.OFFLINE)):
            return alive
        updated = copy.deepcopy(current)
        now = utcnow()
        updated.status, updated.updated_at = target, now
        for party in updated.parties:
            if party.status in (ConnectionStatus.CONNECTED, ConnectionStatus.OFFLINE):
                party.status, party.last_updated = target, now
        log.info("platform %s is %s", platform.id, target.value)
        await self.hub.registry.save(updated)
        return alive

    async def _ping(self, platform: Platform) -> bool:
        if not platform.versions_url or not platform.outbound_token:
            return False
        if self.hub.outbound.refusal(platform.versions_url) is not None:  # e.g. HUB_ALLOW_PRIVATE_URLS turned off
            return False
        try:
            async with self.hub.session.get(
                platform.versions_url,
                headers={"Authorization": authorization_header(platform.outbound_token,
                                                               token_encoding(platform.version or V221)),
                         **own_request_ids()},
                timeout=aiohttp.ClientTimeout(total=self.hub.settings.registration_timeout), allow_redirects=False,
            ) as resp:
                await read_at_most(resp, self.hub.settings.max_reply_bytes)  # a partner cannot make it buffer more
                return resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False


LIVENESS_KEY = web.AppKey("liveness", Liveness)


def add_routes(app: web.Application) -> None:
    # Which platforms are talking reaches Liveness.seen through hub.on_seen, called by authenticate().
    for version in sorted(HAS_HUBCLIENTINFO):
        app.router.add_get(f"/ocpi/{version}/hubclientinfo", get_client_infos)
